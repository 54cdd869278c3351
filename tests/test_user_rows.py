"""A user's rows as a write builds them (identity_store.user_changes), and
its new id (identity_store.models.new_id): the cheaper ways they are built
give what the plain ways give, on tables of inputs."""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import ulid
from ulid import ULID

from identity_store import user_changes
from identity_store.errors import ValidationError
from identity_store.limits import check_free_form, check_lengths, check_moment
from identity_store.models import User, UserAddress, UserMultiValue, UserType, new_id
from identity_store.models.base import ulid_text
from identity_store.users import UserInput


def _reference_row_values(model: type[Any], given: dict[str, Any]) -> dict[str, Any]:
    """``_row_values`` as it was: three passes over the columns."""
    keys = user_changes._COLUMN_KEYS[model]
    values = {k: v for k, v in given.items() if k in keys}
    for key, default in user_changes._DEFAULTS[model].items():
        if key not in values:
            arg = getattr(default, "arg", None)
            values[key] = arg(None) if callable(arg) else arg
    return {k: values[k] for k in user_changes._COLUMN_ORDER[model] if k in values}


_NOW = datetime(2026, 12, 3, tzinfo=UTC)
_GIVEN: list[tuple[type[Any], dict[str, Any]]] = [
    (User, {}),
    (User, {"id": "X", "version": 1}),
    (User, {"version": 7, "id": "X", "not_a_column": 1, "multi_values": [], "tags": None}),
    (User, {"active": None, "lifecycle": "", "tags": ["a"], "created_at": _NOW}),
    (User, {c.key: f"v-{c.key}" for c in User.__table__.columns}),
    (UserMultiValue, {"attribute": "emails", "value": "a", "user_id": "U"}),
    (UserMultiValue, {"position": None, "primary": False}),
    (UserAddress, {}),
    (UserAddress, {"position": 2, "country": "DE", "extra": 1}),
]


@pytest.mark.parametrize(("model", "given"), _GIVEN)
def test_row_values_are_the_columns_given_and_the_defaults_in_column_order(
    model: type[Any], given: dict[str, Any]
) -> None:
    """One pass over a precomputed plan gives the keys, values and order of
    the three passes; a default made per row (``list``, ``utcnow``) is made
    again for each."""
    values = user_changes._row_values(model, given)
    expected = _reference_row_values(model, given)
    assert list(values) == list(expected)
    made = {k for k, v in values.items() if isinstance(v, datetime) and k not in given}
    assert {k: v for k, v in values.items() if k not in made} == {
        k: v for k, v in expected.items() if k not in made
    }
    for key in made:
        assert abs(values[key] - expected[key]) < timedelta(seconds=5)
    for key, value in values.items():
        if isinstance(value, list) and key not in given:
            assert value is not expected[key]
            assert value is not user_changes._row_values(model, given)[key]


def test_a_new_user_has_every_column_and_the_defaults_a_row_of_its_id_has() -> None:
    """``_new_user`` from its template: every column in order, ``None`` but
    where a default applies, each made-per-row default made for this user."""
    user = user_changes._new_user()
    values = dict(user.__dict__)
    assert values.pop("multi_values") == []
    assert values.pop("addresses") == []
    expected = dict.fromkeys(user_changes._COLUMN_ORDER[User])
    expected.update(_reference_row_values(User, {"id": user.id, "version": 1}))
    assert list(values) == list(expected)
    for key, value in expected.items():
        if isinstance(value, datetime):
            assert abs(values[key] - value) < timedelta(seconds=5)
        else:
            assert values[key] == value, key
    other = user_changes._new_user()
    assert other.id > user.id
    assert other.tags is not user.tags
    assert other.status is not user.status
    assert user.lifecycle_changed_at is not None
    assert user.created_at is not None


def _reference_validate(data: UserInput, max_values: int) -> None:
    """``_validate`` with every check run."""
    if not data.user_name or not data.user_name.strip():
        raise ValidationError("userName is required and may not be empty")
    sizes = Counter(mv["attribute"] for mv in data.multi_values)
    sizes["addresses"] = len(data.addresses)
    for attribute, size in sizes.items():
        if size > max_values:
            raise ValidationError(f"{attribute} has {size} values; at most {max_values} allowed")
    check_lengths(User, {"user_name": data.user_name, **data.columns})
    for entry in data.multi_values:
        check_lengths(UserMultiValue, entry, entry.get("attribute"))
    for address in data.addresses:
        check_lengths(UserAddress, address, "addresses")
    unknown = set(data.columns) - user_changes.WRITABLE_COLUMNS
    if unknown:
        raise ValidationError(f"not writable: {', '.join(sorted(unknown))}")
    for column in user_changes.FREE_FORM_COLUMNS:
        check_free_form(column, data.columns.get(column))
    for column, value in data.columns.items():
        if isinstance(value, datetime):
            check_moment(column, value)
    user_type = data.columns.get("user_type")
    if user_type is not None and user_type not in {t.value for t in UserType}:
        raise ValidationError(f"userType must be one of {[t.value for t in UserType]}")
    for attribute in {mv["attribute"] for mv in data.multi_values}:
        primaries = [
            mv for mv in data.multi_values if mv["attribute"] == attribute and mv.get("primary")
        ]
        if len(primaries) > 1:
            raise ValidationError(f"{attribute} has more than one primary value")
    if sum(1 for a in data.addresses if a.get("primary")) > 1:
        raise ValidationError("addresses has more than one primary value")


def _email(value: str, **more: Any) -> dict[str, Any]:
    return {"attribute": "emails", "value": value, **more}


def _phone(value: str, **more: Any) -> dict[str, Any]:
    return {"attribute": "phoneNumbers", "value": value, **more}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": [value]}
    return value


_EARLY = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
_INPUTS: list[tuple[str, UserInput]] = [
    ("valid", UserInput("a", {"display_name": "A", "active": True}, [_email("a", primary=True)])),
    ("empty userName", UserInput(" ", {})),
    ("three e-mails", UserInput("a", {}, [_email("a"), _email("b"), _email("c")])),
    ("two e-mails", UserInput("a", {}, [_email("a"), _email("b")])),
    ("e-mails and phones", UserInput("a", {}, [_email("a"), _phone("1"), _phone("2")])),
    ("three addresses", UserInput("a", {}, addresses=[{}, {}, {}])),
    ("long userName", UserInput("a" * 300, {})),
    ("long display name", UserInput("a", {"display_name": "d" * 300})),
    ("user_name in columns", UserInput("a", {"user_name": "b" * 300})),
    ("short user_name in columns", UserInput("a" * 300, {"user_name": "b"})),
    ("long e-mail type", UserInput("a", {}, [_email("a", type="t" * 100)])),
    ("long address", UserInput("a", {}, addresses=[{"country": "c" * 300}])),
    ("not writable", UserInput("a", {"version": 3, "lifecycle": "X"})),
    ("deep custom data", UserInput("a", {"custom_data": _nested(40)})),
    ("custom data", UserInput("a", {"custom_data": _nested(5), "tags": ["t"]})),
    ("big custom data", UserInput("a", {"custom_data": {"a": "x" * 70_000}})),
    ("moment out of range", UserInput("a", {"expiration_date": _EARLY})),
    ("user type", UserInput("a", {"user_type": "robot"})),
    ("known user type", UserInput("a", {"user_type": UserType.PERSON.value})),
    (
        "two primary e-mails",
        UserInput("a", {}, [_email("a", primary=True), _email("b", primary=1)]),
    ),
    (
        "primary e-mail and phone",
        UserInput("a", {}, [_email("a", primary=True), _phone("1", primary=True)]),
    ),
    (
        "two primary phones",
        UserInput("a", {}, [_email("a", primary=True), *[_phone("1", primary=True)] * 2]),
    ),
    (
        "two primaries of each",
        UserInput("a", {}, [_email("a", primary=True), _phone("1", primary=True)] * 2),
    ),
    ("two primary addresses", UserInput("a", {}, addresses=[{"primary": True}] * 2)),
    ("one primary address", UserInput("a", {}, addresses=[{"primary": True}, {"primary": False}])),
]


def _outcome(check: Any, data: UserInput, max_values: int) -> str | None:
    try:
        check(data, max_values)
    except ValidationError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("name", "data"), _INPUTS, ids=[name for name, _ in _INPUTS])
@pytest.mark.parametrize("max_values", [1, 2, 100])
def test_validation_has_the_outcome_of_every_check_run(
    name: str, data: UserInput, max_values: int
) -> None:
    """``_validate`` skips the checks a cheaper test decides; its outcome
    (the error, or none) is the one of every check run."""
    assert _outcome(user_changes._validate, data, max_values) == _outcome(
        _reference_validate, data, max_values
    )


def test_the_validation_table_has_each_outcome() -> None:
    """The table above reaches each error the checks raise, and no error."""
    outcomes = {_outcome(_reference_validate, data, 2) for _, data in _INPUTS}
    outcomes |= {_outcome(_reference_validate, data, 100) for _, data in _INPUTS}
    for part in (
        "values; at most",
        "characters long",
        "not writable",
        "nests deeper",
        "bytes as JSON",
        "out of range",
        "userType must be",
        "emails has more than one primary",
        "phoneNumbers has more than one primary",
        "addresses has more than one primary",
        "userName is required",
    ):
        assert any(o is not None and part in o for o in outcomes), part
    assert None in outcomes


_ULID_BYTES = [
    bytes(16),
    b"\xff" * 16,
    b"\x00" * 15 + b"\x01",
    *(int.to_bytes(1 << bit, 16, "big") for bit in range(128)),
    *(os.urandom(16) for _ in range(200)),
]


def test_an_ids_text_is_python_ulids() -> None:
    """``ulid_text`` writes every bit where python-ulid's ``str`` does."""
    for value in _ULID_BYTES:
        assert ulid_text(value) == str(ULID.from_bytes(value)), value.hex()


def test_new_ids_come_from_python_ulids_generator_in_order() -> None:
    """New ids are python-ulid's default generator's: now's time, strictly
    increasing within a millisecond (its monotonic randomness), in the
    pattern the store checks ids against."""
    before = int(time.time() * 1000)
    ids = [new_id() for _ in range(2000)]
    after = int(time.time() * 1000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert user_changes.ULID_PATTERN.fullmatch(value)
        assert before <= ULID.from_str(value).milliseconds <= after
    generator = ulid.default_generator
    made: list[bytes] = []

    class Recording(ulid.ULIDGenerator):
        def generate(self, timestamp: Any = None) -> ULID:
            value = super().generate(timestamp)
            made.append(value.bytes)
            return value

    ulid.default_generator = Recording()
    try:
        value = new_id()
    finally:
        ulid.default_generator = generator
    assert [value] == [str(ULID.from_bytes(b)) for b in made]


_STORED = [
    None,
    [],
    ["a", "ü"],
    ["a", 1],
    [["a"]],
    {},
    {"k": [1, {"n": None}]},
    "text",
    ("a",),
]


@pytest.mark.parametrize("value", _STORED, ids=repr)
def test_a_stored_free_form_value_is_copied_as_deepcopy_copies_it(value: Any) -> None:
    """``current_input`` copies ``tags`` and ``customData`` so that a change
    does not alter the stored objects: an equal value, sharing no list or
    dict with the stored one."""
    copied = user_changes._copy(value)
    assert copied == copy.deepcopy(value)
    assert type(copied) is type(value)

    def containers(item: Any) -> list[int]:
        if isinstance(item, dict):
            return [id(item), *(i for v in item.values() for i in containers(v))]
        if isinstance(item, list):
            return [id(item), *(i for v in item for i in containers(v))]
        return []

    assert not set(containers(copied)) & set(containers(value))
