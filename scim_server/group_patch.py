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

from typing import Any

from scim2_models import Group, PatchOp
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

from .errors import ScimError
from .schemas import ScimGroup


def changes(operations: PatchOp[ScimGroup]) -> GroupChanges:
    """What ``operations`` do to a group, in their order."""
    found = GroupChanges()
    for operation in operations.operations or []:
        _apply_operation(found, operation.op.value.lower(), operation.path, operation.value)
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
