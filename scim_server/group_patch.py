"""Group PATCH requests (RFC 7644 §3.5.2) read into the store's
:class:`~identity_store.groups.GroupChanges`.

Members are never loaded to patch a group: each operation becomes members to
add, to remove, or a whole new member list, and the store applies them with
statements whose cost does not depend on the group's size. Paths and values
are read as RFC 7644 writes them and as Microsoft Entra ID and Microsoft's
SCIM test collection send them (a ``remove`` with a value list, a bare id
string as a member); anything else is refused with the right ``scimType``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from scim2_models import Context, Group
from scim2_models.path.expressions import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    ValuePath,
)

from identity_store.groups import GroupChanges

from . import entra
from .errors import ScimError
from .schemas import PATCH_POLICY, GroupPatchOp, patch_envelope

Operation = tuple[str, Any, Any]
"""One operation as ``PatchOp[ScimGroup]`` validated it: its ``op`` (lower
case), its ``Path`` (``None``: no path) and its value."""

Shape = tuple[Any, ...]

MAX_SHAPES = 1024
"""Shapes of membership requests remembered (:func:`validate`); the memo is
emptied when it is full."""

_SHAPES: dict[Shape, tuple[tuple[str, Any], ...]] = {}
"""Shapes of membership requests ``PatchOp[ScimGroup]`` accepted, with the
``op`` and ``Path`` it validated for each of their operations."""

_PLAIN = re.compile(r"[A-Za-z0-9._@+-]{1,256}")
"""A member id that ``PatchOp``'s reading of a ``remove`` value (a filter
``members[value eq "..."]`` built and parsed) reads the same whatever its
characters: letters, digits and ``._@+-`` (ULIDs, UUIDs, e-mail-like ids).
scim2-models 0.12.3 escapes any string there; this keeps the memo from
depending on it."""


def validate(body: dict[str, Any]) -> list[Operation]:
    """The operations of a group PATCH body, validated by scim2-models
    (``PatchOp[ScimGroup]``, after :func:`entra.normalise_patch`).

    A membership request (each operation an ``add`` or a ``remove`` of path
    ``members`` with a list of member objects: what Microsoft Entra ID and
    the benchmark send, 16 at a time per group) of a shape scim2-models
    accepted before is not validated as a message again (:func:`_shape`
    says what its verdict depends on); its values are read as the first
    one's were, by :func:`changes`. Anything else is validated every time,
    and a refused request is never remembered."""
    normalised = entra.normalise_patch(body)
    shape = _shape(normalised)
    if shape is not None:
        known = _SHAPES.get(shape)
        if known is not None:
            return [
                (op, path, operation["value"])
                for (op, path), operation in zip(known, normalised["Operations"], strict=True)
            ]
    message = GroupPatchOp.model_validate(
        normalised, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=PATCH_POLICY
    )
    found = [(o.op.value.lower(), o.path, o.value) for o in message.operations or []]
    if shape is not None:
        if len(_SHAPES) >= MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[shape] = tuple((op, path) for op, path, _ in found)
    return found


def _shape(body: Any) -> Shape | None:
    """What ``PatchOp[ScimGroup]``'s verdict on a membership request depends
    on; ``None`` for any other request.

    For an operation of path ``members`` (a multi-valued attribute, no
    filter), scim2-models reads: the members of the message and of each
    operation, ``schemas``, each ``op`` and ``path``, and of the value: for
    an ``add``, only whether it is null or empty (the objects in it are
    checked when the patch is applied, here by :func:`changes`); for a
    ``remove`` with a value (Entra's way), that each entry is a non-empty
    object, each key an attribute name and each item a single value, and
    that the filter they make (``members[value eq "id" or ...]``) parses.
    So the shape holds the keys, ``schemas``, each ``op`` and ``path``, and
    the keys and value types of every entry (of a ``remove``, entry by entry:
    their number too); a ``remove`` is a membership request only when every
    item of its entries is a plain id (:data:`_PLAIN`), whose characters
    cannot change how the filter parses."""
    envelope = patch_envelope(body)
    if envelope is None:
        return None
    shape, operations = envelope
    for operation, op, path, value in operations:
        if path.lower() != "members":
            return None
        if type(value) is not list or not value:
            return None
        entries: list[tuple[tuple[str, str], ...]] = []
        for entry in value:
            if type(entry) is not dict or not entry:
                return None
            entries.append(tuple(sorted((k, type(v).__name__) for k, v in entry.items())))
        kind = op.lower()
        if kind == "add":
            value_shape: Any = frozenset(entries)
        elif kind == "remove":
            plain = all(
                type(item) is str and _PLAIN.fullmatch(item) for e in value for item in e.values()
            )
            if not plain:
                return None
            value_shape = tuple(entries)
        else:
            return None
        shape.append((tuple(sorted(operation)), op, path, value_shape))
    return tuple(shape)


def changes(operations: Sequence[Operation]) -> GroupChanges:
    """What ``operations`` (:func:`validate`) do to a group, in their order."""
    found = GroupChanges()
    for op, path, value in operations:
        _apply_operation(found, op, path, value)
    return found


def _values(value: Any) -> list[str]:
    """Member ids from a PATCH value: a list of ``{"value": id}`` objects, one
    such object, or a bare id string (Microsoft's SCIM test collection sends
    that)."""
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        if isinstance(item, str) and item:
            ids.append(item)
        elif isinstance(item, dict) and isinstance(item.get("value"), str) and item["value"]:
            ids.append(item["value"])
        else:
            raise ScimError(400, f"a member needs a 'value', got {item!r}", "invalidValue")
    return ids


def _ids_from_filter(node: FilterNode) -> list[str]:
    """Member ids named by ``value eq "id"`` terms joined with ``or``."""
    if isinstance(node, Comparison):
        if (
            node.attr_path.attr.lower() == "value"
            and node.op == CompareOperator.eq
            and isinstance(node.value, str)
            and node.attr_path.sub_attr is None
        ):
            return [node.value]
    elif isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        return [i for term in node.terms for i in _ids_from_filter(term)]
    raise ScimError(
        400,
        f'member filters may only name members by value (value eq "id"), not {node}',
        "invalidFilter",
    )


def _is(path: AttrPath, name: str) -> bool:
    return path.attr.lower() == name.lower() and path.uri in (None, str(Group.__schema__))


def _apply_operation(changes: GroupChanges, op: str, path: Any, value: Any) -> None:
    node = path.ast if path is not None else None
    if node is None:
        if op == "remove":
            raise ScimError(400, "remove needs a path", "noTarget")
        if not isinstance(value, dict):
            raise ScimError(400, "a PATCH without path needs an object value", "invalidValue")
        for key, item in value.items():
            _apply_operation(changes, op, _Attr(key), item)
        return
    if isinstance(node, ValuePath):
        if not _is(node.attr_path, "members") or node.sub_attr is not None:
            raise ScimError(400, f"unsupported path {path}", "invalidPath")
        ids = _ids_from_filter(node.val_filter)
        if op == "remove":
            changes.remove_members(ids)
            return
        raise ScimError(
            400, f"{op} on {path} is not supported; add or remove members", "invalidPath"
        )
    if not isinstance(node, AttrPath):
        raise ScimError(400, f"unsupported path {path}", "invalidPath")
    if _is(node, "members") and node.sub_attr is None:
        if op == "add":
            changes.add_members(_values(value))
        elif op == "remove":
            if value is None:
                changes.set_members([])
            else:  # Microsoft Entra ID: remove with a value list removes those members
                changes.remove_members(_values(value))
        else:
            changes.set_members(_values(value) if value is not None else [])
    elif _is(node, "displayName") and node.sub_attr is None:
        if op == "remove" or not isinstance(value, str):
            raise ScimError(400, "displayName is required and must be a string", "invalidValue")
        changes.display_name = value
    elif _is(node, "externalId") and node.sub_attr is None:
        if op == "remove":
            changes.external_id = None
        elif value is None or isinstance(value, str):
            changes.external_id = value
        else:
            raise ScimError(400, "externalId must be a string", "invalidValue")
    elif node.attr.lower() in ("id", "meta"):
        raise ScimError(400, f"{node} is read-only", "mutability")
    else:
        raise ScimError(400, f"no attribute {node} on Group", "invalidPath")


class _Attr:
    """A path-less PATCH value key seen as a path."""

    def __init__(self, key: str) -> None:
        uri, _, attr = key.rpartition(":") if key.lower().startswith("urn:") else ("", "", key)
        name, _, sub = attr.partition(".")
        self.ast = AttrPath(attr=name, sub_attr=sub or None, uri=uri or None)

    def __str__(self) -> str:
        return str(self.ast)
