"""Group PATCH membership requests of a known shape skip the message's
validation (``group_patch.validate``): every body below gets the same
operations, group changes or error with the memo primed by a body of the
same shape as with scim2-models alone; refused and non-membership requests
are never remembered; the memo keeps within its bound."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from scim2_models import SCIMException

from scim_server import errors, group_patch
from scim_server.errors import ScimError
from tests.entra import payloads as entra_payloads

from .helpers import PATCH_SCHEMA, patch_body
from .helpers import patch_operation as _op

DEFAULT_MODE = "default"
A, B, C = "01JD0000000000000000000001", "01JD0000000000000000000002", "01JD0000000000000000000003"


BODIES: dict[str, dict[str, Any]] = {
    "entra add": entra_payloads.add_members(DEFAULT_MODE, [A, B]),
    "entra add, flag": entra_payloads.add_members(entra_payloads.FLAG, [A]),
    "entra remove": entra_payloads.remove_members(DEFAULT_MODE, [A]),
    "entra remove two": entra_payloads.remove_members(DEFAULT_MODE, [A, B]),
    "entra remove, flag (filter path)": entra_payloads.remove_members(entra_payloads.FLAG, [A]),
    "add and remove": patch_body(
        _op("Add", "members", [{"$ref": None, "value": A}]),
        _op("Remove", "members", [{"value": B}]),
    ),
    "add, bare ids": patch_body(_op("add", "members", [A, B])),
    "add, member without value": patch_body(_op("add", "members", [{"display": "x"}])),
    "add, value not a string": patch_body(_op("add", "members", [{"value": 5}])),
    "add, empty list": patch_body(_op("add", "members", [])),
    "add, null": patch_body(_op("add", "members", None)),
    "add, no value": patch_body(_op("add", "members")),
    "add, unknown op": patch_body(_op("append", "members", [{"value": A}])),
    "add, op not a string": patch_body(_op(1, "members", [{"value": A}])),  # type: ignore[arg-type]
    "add, unknown key in operation": patch_body({**_op("add", "members", [{"value": A}]), "x": 1}),
    "add, NUL in id": patch_body(_op("add", "members", [{"value": "a\x00b"}])),
    "add, nested value": patch_body(_op("add", "members", [{"value": {"a": [[[]]]}}])),
    "replace members": patch_body(_op("replace", "members", [{"value": A}])),
    "remove, no value": patch_body(_op("remove", "members")),
    "remove, quote in id": patch_body(_op("remove", "members", [{"value": 'a"b'}])),
    "remove, backslash in id": patch_body(_op("remove", "members", [{"value": "a\\"}])),
    "remove, bracket in id": patch_body(_op("remove", "members", [{"value": "a]b"}])),
    "remove, space in id": patch_body(_op("remove", "members", [{"value": "a or b"}])),
    "remove, empty id": patch_body(_op("remove", "members", [{"value": ""}])),
    "remove, number": patch_body(_op("remove", "members", [{"value": 5}])),
    "remove, object item": patch_body(_op("remove", "members", [{"value": {"a": 1}}])),
    "remove, list item": patch_body(_op("remove", "members", [{"value": [A]}])),
    "remove, bad key": patch_body(_op("remove", "members", [{"va lue": A}])),
    "remove, empty entry": patch_body(_op("remove", "members", [{}])),
    "remove, bare id": patch_body(_op("remove", "members", [A])),
    "remove, long id": patch_body(_op("remove", "members", [{"value": "a" * 300}])),
    "path in upper case": patch_body(_op("Add", "Members", [{"value": A}])),
    "path with schema": patch_body(
        _op("add", "urn:ietf:params:scim:schemas:core:2.0:Group:members", [{"value": A}])
    ),
    "rename": patch_body(_op("replace", "displayName", "new")),
    "no schemas": {"Operations": [_op("add", "members", [{"value": A}])]},
    "wrong schema": {"schemas": ["urn:x"], "Operations": [_op("add", "members", [{"value": A}])]},
    "no operations": {"schemas": [PATCH_SCHEMA], "Operations": []},
    "operations not a list": {"schemas": [PATCH_SCHEMA], "Operations": {"op": "add"}},
    "operation not an object": {"schemas": [PATCH_SCHEMA], "Operations": ["add"]},
    "unknown message key": {**patch_body(_op("add", "members", [{"value": A}])), "x": 1},
    "add without path": patch_body(_op("add", None, {"members": [{"value": A}]})),
    "path not a string": patch_body({"op": "add", "path": 1, "value": [{"value": A}]}),
    "schemas not strings": {"schemas": [1], "Operations": [_op("add", "members", [A])]},
    "schemas holding a list": {
        "schemas": [[PATCH_SCHEMA]],
        "Operations": [_op("add", "members", [A])],
    },
}


def _sibling(body: Any) -> Any:
    """The body with a plain member id in place of every id and of every
    string ``value``: the same shape, or for an odd id (a quote, a NUL) the
    shape of a membership request that is remembered."""
    if isinstance(body, dict):
        return {
            k: C if k == "value" and isinstance(v, str) else _sibling(v) for k, v in body.items()
        }
    if isinstance(body, list):
        return [_sibling(v) for v in body]
    if body in (A, B):
        return C
    return body


def _outcome(body: dict[str, Any]) -> tuple[Any, ...]:
    try:
        operations = group_patch.validate(copy.deepcopy(body))
    except pydantic.ValidationError as exc:
        listed = [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]
        return ("refused", errors.describe(exc)[:3], repr(listed))
    except (SCIMException, ScimError) as exc:
        return ("refused", errors.describe(exc)[:3])
    shown = [(op, None if path is None else str(path), value) for op, path, value in operations]
    try:
        changes = group_patch.changes(operations)
    except ScimError as exc:
        return ("accepted", shown, "refused", errors.describe(exc)[:3])
    return ("accepted", shown, repr(changes))


@pytest.fixture(autouse=True)
def empty_memo() -> Iterator[None]:
    group_patch._SHAPES.clear()
    yield
    group_patch._SHAPES.clear()


@pytest.mark.parametrize("name", BODIES)
def test_a_body_gets_the_same_outcome_with_the_memo_primed(name: str) -> None:
    body = BODIES[name]
    alone = _outcome(body)
    assert not group_patch._SHAPES or alone[0] == "accepted"
    group_patch._SHAPES.clear()
    _outcome(_sibling(body))  # remembers its shape when it is accepted
    assert _outcome(body) == alone
    assert _outcome(body) == alone


REMEMBERED = [
    "entra add",
    "entra add, flag",
    "entra remove",
    "entra remove two",
    "add and remove",
    "path in upper case",
]


@pytest.mark.parametrize("name", REMEMBERED)
def test_membership_requests_are_remembered(name: str) -> None:
    body = BODIES[name]
    _outcome(body)
    assert len(group_patch._SHAPES) == 1
    _outcome(_sibling(body))
    assert len(group_patch._SHAPES) == 1


@pytest.mark.parametrize(
    "name",
    [name for name in BODIES if name not in REMEMBERED and not name.startswith("add, ")]
    + ["add, empty list", "add, null", "add, no value", "add, unknown op"],
)
def test_other_requests_are_never_remembered(name: str) -> None:
    for _ in range(2):
        _outcome(BODIES[name])
    assert group_patch._SHAPES == {}


def test_a_refused_add_of_a_known_shape_is_still_refused_when_applied() -> None:
    """scim2-models accepts any objects in an add; reading them refuses one
    without a string ``value``, whether or not the shape was remembered."""
    _outcome(patch_body(_op("add", "members", [{"value": A}])))
    assert _outcome(patch_body(_op("add", "members", [{"value": ""}])))[2] == "refused"


def test_the_memo_keeps_within_its_bound() -> None:
    for n in range(group_patch.MAX_SHAPES + 10):
        # A key of its own in the member object: a shape of its own each time.
        body = patch_body(_op("add", "members", [{"value": A, f"x{n}": None}]))
        assert group_patch.validate(body)[0][0] == "add"
        assert len(group_patch._SHAPES) <= group_patch.MAX_SHAPES
    assert 0 < len(group_patch._SHAPES) <= group_patch.MAX_SHAPES
    again = patch_body(_op("add", "members", [{"value": B, "x0": None}]))
    assert [(op, str(path), value) for op, path, value in group_patch.validate(again)] == [
        ("add", "members", [{"value": B, "x0": None}])
    ]


def test_every_body_gets_its_own_outcome_with_every_shape_remembered() -> None:
    """A shape that left out something scim2-models reads would let a body
    that differs in it through as one remembered before."""
    alone = {}
    for name, body in BODIES.items():
        group_patch._SHAPES.clear()
        alone[name] = _outcome(body)
    group_patch._SHAPES.clear()
    for body in BODIES.values():
        _outcome(_sibling(body))
    assert group_patch._SHAPES
    for name, body in BODIES.items():
        assert _outcome(body) == alone[name], name
