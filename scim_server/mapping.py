"""Translation between the store's rows and SCIM resources (RFC 7643 §4).

Reading builds the SCIM document of a row as a plain dict (camelCase, RFC
names); writing turns a resource validated by scim2-models into the store's
:class:`~identity_store.users.UserInput`.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from scim2_models import EnterpriseUser

from identity_store.attributes import USER_ATTRIBUTES, Attribute, Rows
from identity_store.groups import GroupRecord
from identity_store.users import UNSET, UserInput, UserRecord

from .schemas import (
    CORE_GROUP_SCHEMA,
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    PRODUCT_USER_SCHEMA,
    IdentityStoreUser,
    ScimUser,
)


def _snake(name: str) -> str:
    """The scim2-models field name of a SCIM attribute name (``givenName`` → ``given_name``)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _top_level(schema: str) -> list[Attribute]:
    return [a for a in USER_ATTRIBUTES.values() if a.schema == schema and "." not in a.path]


def _columns(attributes: Iterable[Attribute], *, sub: bool = False) -> dict[str, str]:
    """SCIM name (of the sub-attribute, with ``sub``) → column."""
    return {
        (a.path.partition(".")[2] if sub else a.path): a.column
        for a in attributes
        if a.column is not None
    }


# How this module renders and reads documents, as views of the store's attribute
# table (identity_store.attributes); tests/test_attributes.py holds what they are.

MULTI_VALUED = {
    a.path: _snake(a.path) for a in _top_level(CORE_USER_SCHEMA) if a.rows is Rows.ENTRIES
}
"""SCIM attribute name → scim2-models field name, for ``user_multi_values``."""

NAME_COLUMNS = _columns(USER_ATTRIBUTES.sub_attributes(f"{CORE_USER_SCHEMA}:name"), sub=True)
CORE_COLUMNS = _columns(
    a
    for a in _top_level(CORE_USER_SCHEMA)
    if a.writable and a.own_column and a.type is str and a.normalized is None
)
"""Core strings rendered and written as they are; not ``userName``, written with
its comparison key, nor ``active``, a boolean."""
ENTERPRISE_COLUMNS = _columns(a for a in _top_level(ENTERPRISE_USER_SCHEMA) if a.own_column)
PRODUCT_COLUMNS = _columns(
    a for a in _top_level(PRODUCT_USER_SCHEMA) if a.writable and a.rows is None
)
"""The product's attributes rendered and written as they are; not ``tags``, a list."""
PRODUCT_READ_ONLY = _columns(
    a
    for a in _top_level(PRODUCT_USER_SCHEMA)
    if not a.writable and a.rows is None and a.type is not None
)
"""The store's own product attributes; not ``status``, a list of complex steps."""
ADDRESS_COLUMNS = _columns(
    USER_ATTRIBUTES.sub_attributes(f"{CORE_USER_SCHEMA}:addresses"), sub=True
)
STEP_KEYS = {
    a.path.partition(".")[2]: _snake(a.path.partition(".")[2])
    for a in USER_ATTRIBUTES.sub_attributes(f"{PRODUCT_USER_SCHEMA}:status")
}
"""SCIM sub-attribute of a ``status`` step → its key in the stored step
(``updatedAt`` → ``updated_at``, identity_store.status_steps)."""


# (SCIM name, scim2-models field, column), computed once rather than per request.
_CORE_FIELDS = [(k, _snake(k), c) for k, c in CORE_COLUMNS.items()]
_NAME_FIELDS = [(k, _snake(k), c) for k, c in NAME_COLUMNS.items()]
_ENTERPRISE_FIELDS = [(k, _snake(k), c) for k, c in ENTERPRISE_COLUMNS.items()]
_PRODUCT_FIELDS = [(k, _snake(k), c) for k, c in PRODUCT_COLUMNS.items()]


def etag(version: int) -> str:
    """SCIM ``meta.version`` and the HTTP ``ETag``: a weak validator (RFC 7644 §3.14)."""
    return f'W/"{version}"'


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != [] and value != {}:
        target[key] = value


# The (SCIM name, column) pairs user_document reads, as tuples built once; it
# tests "a value" (not None, [] or {}: _put's rule) inline, not by a call per
# attribute (about 45 per user).
_CORE_ITEMS = tuple(CORE_COLUMNS.items())
_NAME_ITEMS = tuple(NAME_COLUMNS.items())
_ADDRESS_ITEMS = tuple(ADDRESS_COLUMNS.items())
_ENTERPRISE_ITEMS = tuple(ENTERPRISE_COLUMNS.items())
_PRODUCT_ITEMS = tuple({**PRODUCT_COLUMNS, **PRODUCT_READ_ONLY}.items())


def user_document(record: UserRecord, base_url: str) -> dict[str, Any]:
    """The SCIM representation of a user as read (all attributes; the caller
    trims): its groups are those of ``record`` (none when they were not read)."""
    user, groups, manager_display = record.user, record.groups, record.manager_display
    location = f"{base_url}/Users/{user.id}"
    doc: dict[str, Any] = {
        "schemas": [CORE_USER_SCHEMA],
        "id": user.id,
        "userName": user.user_name,
        "meta": {
            "resourceType": "User",
            "created": _iso(user.created_at),
            "lastModified": _iso(user.updated_at),
            "location": location,
            "version": etag(user.version),
        },
    }
    if user.active is not None:  # unassigned by a PATCH remove or a PUT without it
        doc["active"] = user.active
    for key, column in _CORE_ITEMS:
        value = getattr(user, column)
        if value is not None and value != [] and value != {}:
            doc[key] = value
    name: dict[str, Any] = {}
    for key, column in _NAME_ITEMS:
        value = getattr(user, column)
        if value is not None and value != [] and value != {}:
            name[key] = value
    if name:
        doc["name"] = name

    values: dict[str, list[dict[str, Any]]] = {}
    for row in user.multi_values:
        entry: dict[str, Any] = {}
        for key in _ENTRY_KEYS:
            value = getattr(row, key)
            # primary: false as sent, absent when not sent
            if value is not None and value != [] and value != {}:
                entry[key] = value
        found = values.get(row.attribute)
        if found is None:
            values[row.attribute] = [entry]
        else:
            found.append(entry)
    doc.update(values)
    addresses = []
    for address in user.addresses:
        entry = {}
        for key, column in _ADDRESS_ITEMS:
            value = getattr(address, column)
            if value is not None and value != [] and value != {}:
                entry[key] = value
        addresses.append(entry)
    if addresses:
        doc["addresses"] = addresses
    if groups:
        doc["groups"] = [
            {
                "value": g.id,
                "$ref": f"{base_url}/Groups/{g.id}",
                "display": g.display_name,
                "type": "direct",
            }
            for g in groups
        ]

    enterprise: dict[str, Any] = {}
    for key, column in _ENTERPRISE_ITEMS:
        value = getattr(user, column)
        if value is not None and value != [] and value != {}:
            enterprise[key] = value
    if user.manager_id:
        manager = {"value": user.manager_id, "$ref": f"{base_url}/Users/{user.manager_id}"}
        _put(manager, "displayName", manager_display)
        enterprise["manager"] = manager
    if enterprise:  # RFC 7643 §3: "schemas" names the extensions the resource holds
        doc["schemas"].append(ENTERPRISE_USER_SCHEMA)
        doc[ENTERPRISE_USER_SCHEMA] = enterprise

    product: dict[str, Any] = {}
    for key, column in _PRODUCT_ITEMS:
        value = getattr(user, column)
        if isinstance(value, datetime):
            product[key] = _iso(value)
        elif value is not None and value != [] and value != {}:
            product[key] = value
    if user.custom_data is not None:  # an empty object is a value, not an absence
        product["customData"] = user.custom_data
    _put(product, "tags", list(user.tags or []))
    _put(product, "status", [_step(step) for step in user.status or [] if isinstance(step, dict)])
    doc["schemas"].append(PRODUCT_USER_SCHEMA)
    doc[PRODUCT_USER_SCHEMA] = product
    return doc


_ENTRY_KEYS = ("value", "display", "type", "primary")
"""What an entry of a multi-valued attribute shows, in this order."""


def _step(stored: dict[str, Any]) -> dict[str, Any]:
    """A ``status`` step as the schema names it, its time as every SCIM time."""
    step: dict[str, Any] = {}
    for key, stored_key in STEP_KEYS.items():
        value = stored.get(stored_key)
        if key == "updatedAt" and isinstance(value, str):
            with contextlib.suppress(ValueError):  # else kept as the job wrote it
                value = _iso(datetime.fromisoformat(value))
        _put(step, key, value)
    return step


def group_document(record: GroupRecord, base_url: str) -> dict[str, Any]:
    """The SCIM representation of a group; without ``members`` when they were
    not read (``excludedAttributes=members``)."""
    group, members = record.group, record.members
    doc: dict[str, Any] = {
        "schemas": [CORE_GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
        "meta": {
            "resourceType": "Group",
            "created": _iso(group.created_at),
            "lastModified": _iso(group.updated_at),
            "location": f"{base_url}/Groups/{group.id}",
            "version": etag(group.version),
        },
    }
    _put(doc, "externalId", group.external_id)
    if members:
        doc["members"] = [
            {
                "value": m.id,
                "$ref": f"{base_url}/{'Users' if m.type == 'User' else 'Groups'}/{m.id}",
                "type": m.type,
                **({"display": m.display} if m.display is not None else {}),
            }
            for m in members
        ]
    return doc


def text_value(value: Any) -> str | None:
    """A validated value as its column holds it: a string (bytes in base64)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


_EXTENSION_FIELDS = {
    ScimUser.__scim_info__.attribute_urns[name]: name for name in ScimUser.__scim_info__.extensions
}
"""Extension schema → the field of :class:`ScimUser` holding it."""


def extension(resource: ScimUser, model: type[Any]) -> Any:
    """``resource[model]`` (the extension's object, or ``None``) read as the
    field holding it: scim2-models' item access resolves a path each time."""
    return getattr(resource, _EXTENSION_FIELDS[model.__schema__])


def user_input(resource: ScimUser) -> UserInput:
    """The store's view of a validated SCIM user (create or full replace)."""
    columns: dict[str, Any] = {}
    for _, field, column in _CORE_FIELDS:
        columns[column] = text_value(getattr(resource, field))
    columns["active"] = resource.active  # None: unassigned (a new user is active)
    if resource.name is not None:
        for _, field, column in _NAME_FIELDS:
            columns[column] = getattr(resource.name, field)

    enterprise = extension(resource, EnterpriseUser)
    if enterprise is not None:
        for _, field, column in _ENTERPRISE_FIELDS:
            columns[column] = getattr(enterprise, field)
        manager = enterprise.manager
        columns["manager_id"] = manager.value if manager is not None else None

    product = extension(resource, IdentityStoreUser)
    if product is not None:
        for key, field, column in _PRODUCT_FIELDS:
            value = getattr(product, field)
            if value is not None:
                columns[column] = str(value) if key == "userType" else value
        if product.tags is not None:
            columns["tags"] = list(product.tags)

    multi_values: list[dict[str, Any]] = []
    for attribute, field_name in MULTI_VALUED.items():
        for entry in getattr(resource, field_name) or []:
            multi_values.append(
                {
                    "attribute": attribute,
                    "value": text_value(entry.value),
                    "display": entry.display,
                    "type": text_value(entry.type),
                    "primary": entry.primary,
                }
            )
    addresses = [
        {
            column: (text_value(getattr(a, column)) if column != "primary" else a.primary)
            for column in ADDRESS_COLUMNS.values()
        }
        for a in resource.addresses or []
    ]
    password: Any = UNSET
    if "password" in resource.model_fields_set:
        password = resource.password
    return UserInput(
        user_name=resource.user_name or "",
        columns=columns,
        multi_values=multi_values,
        addresses=addresses,
        password=password,
    )
