"""user_document renders every user as its former implementation did (kept
below as the reference, in the same order of keys): values that are None,
``[]`` or ``{}`` left out, empty strings and false kept, datetimes as SCIM
times, entries grouped by attribute in order, groups, manager, extensions."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from identity_store.models import User
from identity_store.read_models import (
    ADDRESS_COLUMNS as ADDRESS_ROW_COLUMNS,
)
from identity_store.read_models import (
    USER_COLUMNS,
    VALUE_COLUMNS,
    Entry,
    GroupRef,
    UserRecord,
    UserRow,
)
from scim_server.mapping import (
    ADDRESS_COLUMNS,
    CORE_COLUMNS,
    ENTERPRISE_COLUMNS,
    MULTI_VALUED,
    NAME_COLUMNS,
    PRODUCT_COLUMNS,
    PRODUCT_READ_ONLY,
    STEP_KEYS,
    _iso,
    _put,
    etag,
    user_document,
)
from scim_server.schemas import (
    CORE_USER_SCHEMA,
    ENTERPRISE_USER_SCHEMA,
    PRODUCT_USER_SCHEMA,
)

BASE = "http://testserver/scim/v2"
MOMENT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _step(stored: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = {}
    for key, stored_key in STEP_KEYS.items():
        value = stored.get(stored_key)
        if key == "updatedAt" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = _iso(datetime.fromisoformat(value))
        _put(step, key, value)
    return step


def _reference(record: UserRecord, base_url: str) -> dict[str, Any]:
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
    for key, column in CORE_COLUMNS.items():
        _put(doc, key, getattr(user, column))
    name: dict[str, Any] = {}
    for key, column in NAME_COLUMNS.items():
        _put(name, key, getattr(user, column))
    _put(doc, "name", name)

    values: dict[str, list[dict[str, Any]]] = {}
    for row in user.multi_values:
        entry: dict[str, Any] = {}
        _put(entry, "value", row.value)
        _put(entry, "display", row.display)
        _put(entry, "type", row.type)
        _put(entry, "primary", row.primary)  # false as sent, absent when not sent
        values.setdefault(row.attribute, []).append(entry)
    for attribute, entries in values.items():
        doc[attribute] = entries
    addresses = []
    for address in user.addresses:
        entry = {}
        for key, column in ADDRESS_COLUMNS.items():
            _put(entry, key, getattr(address, column))
        addresses.append(entry)
    _put(doc, "addresses", addresses)
    _put(
        doc,
        "groups",
        [
            {
                "value": g.id,
                "$ref": f"{base_url}/Groups/{g.id}",
                "display": g.display_name,
                "type": "direct",
            }
            for g in groups
        ],
    )

    enterprise: dict[str, Any] = {}
    for key, column in ENTERPRISE_COLUMNS.items():
        _put(enterprise, key, getattr(user, column))
    if user.manager_id:
        manager = {"value": user.manager_id, "$ref": f"{base_url}/Users/{user.manager_id}"}
        _put(manager, "displayName", manager_display)
        enterprise["manager"] = manager
    if enterprise:  # RFC 7643 §3: "schemas" names the extensions the resource holds
        doc["schemas"].append(ENTERPRISE_USER_SCHEMA)
        doc[ENTERPRISE_USER_SCHEMA] = enterprise

    product: dict[str, Any] = {}
    for key, column in {**PRODUCT_COLUMNS, **PRODUCT_READ_ONLY}.items():
        value = getattr(user, column)
        _put(product, key, _iso(value) if isinstance(value, datetime) else value)
    if user.custom_data is not None:  # an empty object is a value, not an absence
        product["customData"] = user.custom_data
    _put(product, "tags", list(user.tags or []))
    _put(product, "status", [_step(step) for step in user.status or [] if isinstance(step, dict)])
    doc["schemas"].append(PRODUCT_USER_SCHEMA)
    doc[PRODUCT_USER_SCHEMA] = product
    return doc


def _candidates(column: str) -> list[Any]:
    if column == "tags":
        return [None, [], ["a", "b"]]
    if column == "status":
        return [
            None,
            [],
            [{"name": "n", "status": "ok", "updated_at": "2024-01-02T03:04:05+00:00"}],
        ]
    if column == "custom_data":
        return [None, {}, {"k": [1, {"x": None}]}]
    if column == "providers":
        return [[], ["auth0"]]
    kind = User.__table__.c[column].type.python_type
    if kind is str:
        return [None, "", "Ünïcode x"]
    if kind is bool:
        return [None, True, False]
    if kind is datetime:
        return [None, MOMENT]
    if kind is int:
        return [0, 7]
    return [None]


def _entry(chooser: random.Random, columns: list[str], attribute: str | None) -> Entry:
    values: dict[str, Any] = {}
    for column in columns:
        if column == "attribute":
            values[column] = attribute
        elif column in ("id", "position"):
            values[column] = chooser.randint(1, 9)
        elif column in ("primary", "verified"):
            values[column] = chooser.choice([None, True, False])
        else:
            values[column] = chooser.choice([None, "", "v"])
    return Entry(values)


def _record(seed: int) -> UserRecord:
    chooser = random.Random(seed)
    row = UserRow({column: chooser.choice(_candidates(column)) for column in USER_COLUMNS})
    row.id, row.user_name, row.version = f"u{seed}", f"User{seed}", seed
    row.created_at = row.updated_at = MOMENT
    attributes = list(MULTI_VALUED)
    row.multi_values = [
        _entry(chooser, VALUE_COLUMNS, chooser.choice(attributes))
        for _ in range(chooser.randint(0, 5))
    ]
    row.addresses = [
        _entry(chooser, ADDRESS_ROW_COLUMNS, None) for _ in range(chooser.randint(0, 2))
    ]
    groups = [GroupRef(f"g{i}", f"Group {i}") for i in range(chooser.randint(0, 2))]
    manager = chooser.choice([None, "", "The Boss"])
    return UserRecord(row, groups, manager)


@pytest.mark.parametrize("seed", range(300))
def test_user_document_renders_as_the_reference(seed: int) -> None:
    """The same document, and the same bytes (the order of keys included)."""
    record = _record(seed)
    expected = _reference(record, BASE)
    document = user_document(record, BASE)
    assert document == expected
    assert orjson.dumps(document) == orjson.dumps(expected)


def test_user_document_of_a_bare_user_renders_as_the_reference() -> None:
    """A user with nothing but its required columns: no name, no entries, no
    extension values."""
    row = UserRow({column: _candidates(column)[0] for column in USER_COLUMNS})
    row.id, row.user_name, row.version = "u", "User", 1
    row.created_at = row.updated_at = MOMENT
    record = UserRecord(row, [], None)
    document = user_document(record, BASE)
    assert document == _reference(record, BASE)
    assert "name" not in document
    assert orjson.dumps(document) == orjson.dumps(_reference(record, BASE))
