"""User PATCH requests that only set single-valued attributes, without
scim2-models' ``PatchOp.patch``.

Nearly every user PATCH a provisioning client sends (Entra ID's updates and
disables) is a list of ``replace``/``add`` operations, each naming one
single-valued attribute by its path and giving a plain value:
``displayName``, ``name.familyName``, the enterprise ``department``,
``active``. ``PatchOp.patch`` applies them through its general machinery
(snapshots, per-operation mutability bookkeeping, re-validation of the
resource after each operation): about 2 ms of a user PATCH's 8 ms of CPU.

For that shape only, :func:`apply_simple` sets the values in the current
document and has scim2-models validate the result once, which is what the
general path ends with too. Which operations qualify is decided from
scim2-models' own resolution of each path (its :class:`AttributeBinding`)
and its mutability annotations, never from the path text. Anything else
(value filters, multi-valued or complex targets, ``remove``, path-less
operations, ``null`` values) returns ``None`` and takes ``PatchOp.patch``.
The tests compare both on a table of requests.

The handler goes one step further for that shape (:func:`changed_input`):
:func:`simple_input` computes the store's new state from the stored user
itself, scim2-models validating only the attributes the request sets, so
the user's whole SCIM document is neither built nor validated; and a
request of a shape ``PatchOp[ScimUser]`` accepted before (same members,
ops, paths and value types: :func:`known_simple`) is not validated as a
message again, its values being validated when applied. Everything else
goes through ``PatchOp[ScimUser]`` and :func:`patched` as before.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from scim2_models import Mutability, PatchOp, PatchOperation
from scim2_models.path import AttributeBinding
from scim2_models.path import resolution as scim2_resolution

from identity_store.users import UserInput, UserRecord, UserRow, current_input

from .mapping import (
    CORE_COLUMNS,
    ENTERPRISE_COLUMNS,
    NAME_COLUMNS,
    PRODUCT_COLUMNS,
    text_value,
    user_document,
    user_input,
)
from .schemas import (
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    PATCH_POLICY,
    PRODUCT_USER_SCHEMA,
    ScimUser,
    patch_envelope,
)

_uncached_adapter = TypeAdapter


class _ValueFilterAdapter:
    """A pydantic ``TypeAdapter`` that remembers the values it validated:
    scim2-models converts a PATCH value filter's operand once per value it
    compares it with (an e-mail address is validated again for each of a
    user's e-mails)."""

    def __init__(self, annotated_type: Any) -> None:
        self._adapter = _uncached_adapter(annotated_type)
        self._validated: dict[tuple[type, Any], Any] = {}

    def validate_python(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(value, str | int | float | bool):
            return self._adapter.validate_python(value, *args, **kwargs)
        key = (type(value), value)
        if key not in self._validated:
            if len(self._validated) >= 1024:
                self._validated.clear()
            self._validated[key] = self._adapter.validate_python(value)
        return self._validated[key]


@functools.cache
def _cached_adapter(annotated_type: Any) -> _ValueFilterAdapter:
    return _ValueFilterAdapter(annotated_type)


def _type_adapter(annotated_type: Any) -> Any:
    try:
        return _cached_adapter(annotated_type)
    except TypeError:  # an unhashable annotation
        return _uncached_adapter(annotated_type)


# scim2-models 0.12 builds a pydantic TypeAdapter for every comparison of a
# PATCH value filter (``emails[value eq "x"]``), once per value compared;
# for an e-mail, building one reads the installed packages' metadata
# (pydantic's email-validator version check) and validating the operand
# runs email-validator again: 2.4 ms per value, 0.24 s for one operation
# on a user with 100 e-mails. The adapter depends on the attribute's type
# only and the operand is the same for every value: both are kept.
scim2_resolution.TypeAdapter = _type_adapter  # type: ignore[attr-defined,assignment]

_SCALARS = (str, bool, int)
_SETS = (PatchOperation.Op.replace_, PatchOperation.Op.add)


def _location(binding: AttributeBinding) -> tuple[str | None, list[str]] | None:
    """The extension holding the attribute (``None``: the core schema) and
    the attribute's keys under it (``["name", "familyName"]``), in the
    attribute's own case."""
    urn = binding.urn
    for schema in (CORE_USER_SCHEMA, *ScimUser.get_extension_models()):
        if urn.lower().startswith(schema.lower() + ":"):
            path = urn[len(schema) + 1 :].split(".")
            return (None if schema == CORE_USER_SCHEMA else schema), path
    return None


def _settable(binding: AttributeBinding) -> bool:
    if binding.target_is_multivalued or getattr(binding, "is_multivalued", False):
        return False
    target = binding.target_type
    if not isinstance(target, type) or not issubclass(target, _SCALARS):
        return False
    return bool(binding.get_annotation(Mutability) == Mutability.read_write)


def apply_simple(
    operations: PatchOp[ScimUser], current: dict[str, Any]
) -> tuple[ScimUser, bool] | None:
    """The resource after ``operations``, and whether any value changed,
    when each operation sets a single-valued, writable string, boolean or
    integer attribute to a plain value; ``None`` otherwise."""
    document = copy.deepcopy(current)
    targets: list[tuple[list[str], str | None, AttributeBinding]] = []
    for operation in operations.operations or ():
        if operation.op not in _SETS or operation.path is None:
            return None
        if not isinstance(operation.value, _SCALARS):
            return None
        binding = operation.path.resolve(ScimUser)
        if binding is None or not _settable(binding):
            return None
        location = _location(binding)
        if location is None:
            return None
        extension, keys = location
        if extension is not None:
            keys = [extension, *keys]
            if extension not in document["schemas"]:
                document["schemas"].append(extension)
        target = document
        for key in keys[:-1]:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                return None
            target = child
        target[keys[-1]] = operation.value
        targets.append((keys, extension, binding))
    patched = ScimUser.model_validate(document)
    changed = any(
        _value(patched, extension, binding) != _get(current, keys)
        for keys, extension, binding in targets
    )
    return patched, changed


def _get(document: dict[str, Any], keys: list[str]) -> Any:
    value: Any = document
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


_EXTENSION_FIELDS = {
    schema: model.__name__ for schema, model in ScimUser.get_extension_models().items()
}
"""The field of ``ScimUser`` holding each extension (scim2-models names it
after the extension's class): ``resource[Extension]`` resolves a path to
reach the same object, about a tenth of a simple PATCH's CPU."""


def _value(resource: ScimUser, extension: str | None, binding: AttributeBinding) -> Any:
    """The validated value at ``binding``: a string, boolean or integer, as
    the JSON document holds it."""
    holder: Any = resource
    if extension is not None:
        holder = getattr(resource, _EXTENSION_FIELDS[extension])
    if binding.sub_field_name:
        holder = getattr(holder, binding.field_name, None) if holder is not None else None
    name = binding.sub_field_name or binding.field_name
    return getattr(holder, name, None) if holder is not None else None


def _core_targets(operations: PatchOp[ScimUser]) -> set[str] | None:
    """The scim2-models field names of the core attributes ``operations``
    name by their paths; ``None`` when one has no path or names an extension."""
    fields: set[str] = set()
    for operation in operations.operations or ():
        if operation.path is None:
            return None
        binding = operation.path.resolve(ScimUser)
        if binding is None:
            return None
        location = _location(binding)
        if location is None or location[0] is not None:
            return None
        fields.add(binding.field_name)
    return fields


def apply_narrowed(
    operations: PatchOp[ScimUser], current: dict[str, Any]
) -> tuple[ScimUser, bool] | None:
    """``PatchOp.patch`` applied to the attributes the operations name only,
    then written into the whole resource; ``None`` when an operation has no
    path or names an extension's attribute.

    ``PatchOp.patch`` compares the whole resource before and after each
    operation (its mutability and ``primary`` rules), so on a user holding
    hundreds of values its cost is operations x size of the user: 100
    operations on a user with 500 phone numbers, addresses and roles took
    1.1 s. Run on a resource holding the named attributes (with ``id`` and
    the required ``userName``) it applies the same rules to the same values,
    for a cost that follows the request's size."""
    fields = _core_targets(operations)
    if fields is None:
        return None
    resource = ScimUser.model_validate(current)
    names = {"id", "user_name", *fields}
    narrow = ScimUser.model_validate(
        {
            "schemas": [CORE_USER_SCHEMA],
            **resource.model_dump(include=names, by_alias=True, exclude_none=True),
        }
    )
    changed = operations.patch(narrow, scim_policy=PATCH_POLICY)
    for name in fields:
        setattr(resource, name, getattr(narrow, name))
    return resource, changed


def patched(operations: PatchOp[ScimUser], document: dict[str, Any]) -> ScimUser | None:
    """The user ``document`` after ``operations`` (RFC 7644 §3.5.2), or
    ``None`` when they change nothing: :func:`apply_simple` for the shape
    nearly every provisioning client sends, :func:`apply_narrowed` for other
    operations on core attributes, ``PatchOp.patch`` otherwise."""
    result = apply_simple(operations, document) or apply_narrowed(operations, document)
    if result is not None:
        resource, changed = result
    else:
        resource = ScimUser.model_validate(document)
        changed = operations.patch(resource, scim_policy=PATCH_POLICY)
    return resource if changed else None


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a simple operation's value goes: its place in a SCIM document
    (extension, keys), its binding, and the store's column (``None``:
    ``userName``); ``convert`` turns the validated value into the column's
    as :func:`~scim_server.mapping.user_input` does."""

    extension: str | None
    keys: list[str]
    binding: AttributeBinding
    column: str | None
    convert: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _column(extension: str | None, keys: list[str]) -> tuple[str | None, Callable[[Any], Any]]:
    """The column of a single-valued attribute and how its value converts
    (:func:`~scim_server.mapping.user_input`); ``KeyError`` for none."""
    if extension is None:
        if keys == ["userName"]:
            return None, _same
        if keys == ["active"]:
            return "active", _same
        if len(keys) == 2 and keys[0] == "name":
            return NAME_COLUMNS[keys[1]], _same
        if len(keys) == 1:
            return CORE_COLUMNS[keys[0]], text_value
    elif len(keys) == 1 and extension == ENTERPRISE_USER_SCHEMA:
        return ENTERPRISE_COLUMNS[keys[0]], _same
    elif len(keys) == 1 and extension == PRODUCT_USER_SCHEMA:
        return PRODUCT_COLUMNS[keys[0]], (str if keys[0] == "userType" else _same)
    raise KeyError(keys)


_TARGETS: dict[str, _Target | None] = {}


def _target(operation: PatchOperation[ScimUser]) -> _Target | None:
    """The target of a simple operation (:func:`apply_simple`'s rules),
    ``None`` for any other; resolved once per path text."""
    if operation.op not in _SETS or operation.path is None:
        return None
    if not isinstance(operation.value, _SCALARS):
        return None
    text = str(operation.path)
    if text in _TARGETS:
        return _TARGETS[text]
    target = None
    binding = operation.path.resolve(ScimUser)
    if binding is not None and _settable(binding):
        location = _location(binding)
        if location is not None:
            try:
                column, convert = _column(*location)
            except KeyError:
                pass
            else:
                target = _Target(location[0], location[1], binding, column, convert)
    if len(_TARGETS) >= 1024:
        _TARGETS.clear()
    _TARGETS[text] = target
    return target


@dataclass(slots=True)
class Simple:
    """A simple PATCH's outcome (:func:`simple_input`): the user's new state,
    and whether any value changed."""

    data: UserInput
    changed: bool


@dataclass(frozen=True, slots=True)
class KnownSimple:
    """The operations of a request whose shape scim2-models accepted before
    (:func:`known_simple`): each operation's target and its value, as sent."""

    operations: list[tuple[_Target, Any]]


Shape = tuple[Any, ...]
_SHAPES: set[Shape] = set()
"""Shapes of simple requests ``PatchOp[ScimUser]`` validated (:func:`remember`)."""


def _shape(body: Any) -> Shape | None:
    """What ``PatchOp[ScimUser]``'s verdict on a request depends on when each
    operation sets a path to a string, boolean or integer: the members of
    the message and of each operation, ``schemas``, each ``op`` and
    ``path`` and the type of each value. Its checks of such an operation
    (the op's name, the path's syntax, that it names a declared attribute
    that is not read-only, that a value is given and is not null) read
    nothing else; the value itself is validated against the attribute when
    the operation is applied (:func:`simple_input`). ``None``: another
    request."""
    envelope = patch_envelope(body)
    if envelope is None:
        return None
    shape, operations = envelope
    for operation, op, path, value in operations:
        if type(value) not in _SCALARS:
            return None
        shape.append((tuple(sorted(operation)), op, path, type(value)))
    return tuple(shape)


def known_simple(body: Any) -> KnownSimple | None:
    """The operations of ``body`` (normalised: :func:`entra.normalise_patch`)
    when its shape is that of a simple request scim2-models accepted before
    (:func:`remember`), which it would accept again: the request needs no
    ``PatchOp`` validation, its values are validated when applied."""
    shape = _shape(body)
    if shape is None or shape not in _SHAPES:
        return None
    found: list[tuple[_Target, Any]] = []
    for operation in body["Operations"]:
        target = _TARGETS.get(operation["path"])
        if target is None:
            return None
        found.append((target, operation["value"]))
    return KnownSimple(found)


def remember(body: Any, operations: PatchOp[ScimUser]) -> None:
    """Note the shape of ``body`` when ``PatchOp[ScimUser]`` validated it
    into ``operations`` and each of them is simple (:func:`_target`)."""
    shape = _shape(body)
    if shape is None or shape in _SHAPES:
        return
    if not all(_target(operation) is not None for operation in operations.operations or ()):
        return
    if len(_SHAPES) >= 1024:
        _SHAPES.clear()
    _SHAPES.add(shape)


def _simple_operations(
    operations: PatchOp[ScimUser] | KnownSimple,
) -> list[tuple[_Target, Any]] | None:
    if isinstance(operations, KnownSimple):
        return operations.operations
    found: list[tuple[_Target, Any]] = []
    for operation in operations.operations or ():
        target = _target(operation)
        if target is None:
            return None
        found.append((target, operation.value))
    return found


def simple_input(operations: PatchOp[ScimUser] | KnownSimple, user: UserRow | Any) -> Simple | None:
    """The store's new state of ``user`` (as stored) after ``operations``,
    when :func:`apply_simple` would take them; ``None`` otherwise.

    scim2-models validates the attributes the operations set, in a document
    holding those only (with ``userName``): the rest of the user is as it was
    stored, valid when it was written, and a document of it would be built
    and validated for nothing (e-mail addresses are the slowest values to
    validate). The values validated are written into the user's state as
    :func:`~scim_server.mapping.user_input` would map them."""
    targets = _simple_operations(operations)
    if targets is None:
        return None
    document: dict[str, Any] = {"schemas": [CORE_USER_SCHEMA], "userName": user.user_name}
    for target, value in targets:
        holder = document
        if target.extension is not None:
            if target.extension not in document["schemas"]:
                document["schemas"].append(target.extension)
            holder = document.setdefault(target.extension, {})
        for key in target.keys[:-1]:
            holder = holder.setdefault(key, {})
        holder[target.keys[-1]] = value
    patched = ScimUser.model_validate(document)
    data = current_input(user)
    changed = False
    for target, _ in targets:
        value = target.convert(_value(patched, target.extension, target.binding))
        if target.column is None:
            changed = changed or value != data.user_name
            data.user_name = value
        else:
            changed = changed or value != data.columns[target.column]
            data.columns[target.column] = value
    return Simple(data, changed)


def changed_input(
    operations: PatchOp[ScimUser] | KnownSimple, record: UserRecord, base_url: str
) -> UserInput | None:
    """The store's new state of the user of ``record`` after ``operations``
    (RFC 7644 §3.5.2), or ``None`` when they change nothing:
    :func:`simple_input` for the requests provisioning clients send most,
    :func:`patched` on the user's SCIM document otherwise."""
    simple = simple_input(operations, record.user)
    if simple is not None:
        return simple.data if simple.changed else None
    assert isinstance(operations, PatchOp)  # a known simple request is simple
    resource = patched(operations, user_document(record, base_url))
    return user_input(resource) if resource is not None else None
