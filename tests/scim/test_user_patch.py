"""The simple-PATCH path (scim_server.user_patch) ends where scim2-models'
``PatchOp.patch`` ends, and leaves every other request to it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from scim2_models import Context, PatchOp

from identity_store.read_models import Entry, UserRow
from identity_store.user_changes import WRITABLE_COLUMNS
from identity_store.users import UserInput
from scim_server import entra, user_patch, users_api
from scim_server.discovery import provider
from scim_server.mapping import user_input
from scim_server.schemas import PATCH_POLICY, ScimUser

from .helpers import ENTERPRISE, PRODUCT, USER_SCHEMA, patch_body
from .helpers import patch_operation as _op

CURRENT: dict[str, Any] = {
    "schemas": [USER_SCHEMA, PRODUCT],
    "id": "01JZ0000000000000000000000",
    "userName": "bjensen@example.com",
    "displayName": "Barbara",
    "active": True,
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
    "title": "Tour Guide",
    "meta": {"resourceType": "User", "version": 'W/"3"'},
    PRODUCT: {"idpUsername": "bjensen", "tags": ["a"], "lifecycle": "ACTIVE"},
}


SIMPLE = [
    [_op("Replace", "displayName", "Babs")],
    [_op("replace", "DISPLAYNAME", "Babs")],
    [_op("Replace", "name.familyName", "Jensen-Smith")],
    [_op("Add", "name.middleName", "Q")],
    [_op("Replace", "active", "False")],
    [_op("Replace", "active", False)],
    [_op("Replace", "active", "True")],
    [_op("Replace", "userName", "babs@example.com")],
    [_op("Replace", "title", "Tour Guide")],  # the value it has: no change
    [_op("replace", "name.givenName", "Barbara"), _op("Add", f"{PRODUCT}:idpUsername", "bjensen")],
    [_op("Replace", "title", "Tour Guide"), _op("Replace", "name.givenName", "Babs")],
    [_op("Replace", f"{ENTERPRISE}:department", "Sales")],  # a new extension
    [_op("Add", f"{ENTERPRISE}:employeeNumber", "701984")],
    [_op("Replace", f"{PRODUCT}:idpUsername", "barbara")],
    [
        _op("Replace", "displayName", "Patched"),
        _op("Replace", "name.familyName", "F"),
        _op("Replace", f"{ENTERPRISE}:department", "D"),
    ],
]

GENERAL = [
    [_op("Replace", 'emails[type eq "work"].value', "b@example.com")],
    [_op("Add", "emails", [{"value": "x@example.com", "type": "home"}])],
    [_op("Remove", "title")],
    [_op("Replace", value={"displayName": "Babs"})],
    [_op("Replace", "name", {"givenName": "B"})],
    [_op("Replace", f"{ENTERPRISE}:manager", "01JZ0000000000000000000001")],
    [_op("Add", f"{PRODUCT}:tags", ["b"])],
    [_op("Replace", "displayName", "Babs"), _op("Remove", "title")],
]


def _operations(operations: list[dict[str, Any]]) -> PatchOp[ScimUser]:
    return PatchOp[ScimUser].model_validate(
        entra.normalise_patch(patch_body(*operations)),
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )


@pytest.mark.parametrize("operations", SIMPLE)
def test_simple_requests_end_where_patchop_ends(operations: list[dict[str, Any]]) -> None:
    with provider():
        before = copy.deepcopy(CURRENT)
        simple = user_patch.apply_simple(_operations(operations), CURRENT)
        assert before == CURRENT  # the current document is not touched
        assert simple is not None
        fast, fast_changed = simple
        general = ScimUser.model_validate(CURRENT)
        changed = _operations(operations).patch(general, scim_policy=PATCH_POLICY)
        assert fast.model_dump() == general.model_dump()
        assert fast_changed == changed


@pytest.mark.parametrize("operations", GENERAL)
def test_other_requests_are_left_to_patchop(operations: list[dict[str, Any]]) -> None:
    with provider():
        assert user_patch.apply_simple(_operations(operations), CURRENT) is None


def test_an_invalid_value_is_refused_like_the_general_path() -> None:
    """A value of the wrong type is a validation error either way (the
    handler turns it into 400 invalidValue)."""
    from pydantic import ValidationError

    with provider(), pytest.raises(ValidationError):
        user_patch.apply_simple(_operations([_op("Replace", "active", "maybe")]), CURRENT)


LARGE: dict[str, Any] = {
    **CURRENT,
    "emails": [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@example.org", "type": "home"},
    ],
    "phoneNumbers": [{"value": "+15550100", "type": "work"}],
    "roles": [{"value": "guide"}, {"value": "lead", "primary": True}],
    "addresses": [{"streetAddress": "1 Main St", "type": "work"}],
}

NARROWED = [
    [_op("Add", "emails", [{"value": "x@example.com", "type": "home"}])],
    [_op("Add", "emails", [{"value": "babs@example.org", "type": "home"}])],  # present
    [_op("Add", "emails", [{"value": "n@example.com", "primary": True}])],
    [_op("Replace", "emails", [{"value": "only@example.com"}])],
    [_op("Replace", 'emails[type eq "work"].value', "b@example.com")],
    [_op("Replace", 'emails[type eq "home"].primary', True)],
    [_op("Remove", 'emails[type eq "home"]')],
    [_op("Replace", 'emails[type eq "none"].value', "a@x.com")],  # matches nothing
    [_op("Remove", "emails")],
    [_op("Remove", "title"), _op("Add", "roles", [{"value": "new"}])],
    [_op("Replace", "name", {"givenName": "B"}), _op("Remove", "phoneNumbers")],
    [_op("Replace", "displayName", "Babs"), _op("Replace", "addresses", [{"locality": "X"}])],
]


@pytest.mark.parametrize("operations", NARROWED)
def test_narrowed_requests_end_where_patchop_ends(operations: list[dict[str, Any]]) -> None:
    """Operations on core attributes, applied to those attributes alone,
    leave the same user and report the same change as ``PatchOp.patch``."""
    with provider():
        before = copy.deepcopy(LARGE)
        narrowed = user_patch.apply_narrowed(_operations(operations), LARGE)
        assert before == LARGE
        assert narrowed is not None
        fast, fast_changed = narrowed
        general = ScimUser.model_validate(LARGE)
        changed = _operations(operations).patch(general, scim_policy=PATCH_POLICY)
        assert fast.model_dump() == general.model_dump()
        assert fast_changed == changed


@pytest.mark.parametrize(
    "operations",
    [
        [_op("Replace", value={"displayName": "Babs"})],
        [_op("Replace", f"{ENTERPRISE}:department", "Sales")],
        [_op("Add", f"{PRODUCT}:tags", ["b"]), _op("Remove", "title")],
    ],
)
def test_extension_or_pathless_requests_are_not_narrowed(operations: list[dict[str, Any]]) -> None:
    with provider():
        assert user_patch.apply_narrowed(_operations(operations), LARGE) is None


def test_narrowed_requests_fail_as_patchop_fails() -> None:
    """Two primary values fail either way."""
    from scim2_models import SCIMException

    two_primaries = [{"value": "a@x.com", "primary": True}, {"value": "b@x.com", "primary": True}]
    operations = [_op("Add", "emails", two_primaries)]
    with provider():
        with pytest.raises(SCIMException) as narrowed:
            user_patch.apply_narrowed(_operations(operations), LARGE)
        with pytest.raises(SCIMException) as general:
            _operations(operations).patch(ScimUser.model_validate(LARGE), scim_policy=PATCH_POLICY)
    assert type(narrowed.value) is type(general.value)


def _stored(document: dict[str, Any]) -> UserRow:
    """The user of ``document`` as the store holds it (its writable state)."""
    data = user_input(ScimUser.model_validate(document))
    row = UserRow({"user_name": data.user_name, **dict.fromkeys(WRITABLE_COLUMNS)})
    row.__dict__.update(data.columns)
    row.multi_values = [
        Entry({**entry, "verified": None, "position": n})
        for n, entry in enumerate(data.multi_values)
    ]
    row.addresses = [Entry({**a, "position": n}) for n, a in enumerate(data.addresses)]
    return row


def _comparable(data: UserInput) -> tuple[Any, ...]:
    columns = {c: data.columns.get(c) for c in WRITABLE_COLUMNS}
    entries = [{k: v for k, v in e.items() if k != "verified"} for e in data.multi_values]
    return data.user_name, columns, entries, data.addresses, data.password


@pytest.mark.parametrize("operations", SIMPLE)
def test_simple_inputs_are_what_patchop_and_user_input_make(
    operations: list[dict[str, Any]],
) -> None:
    """The store's state a simple PATCH computes from the stored user alone
    is the one the general path computes from the user's SCIM document:
    ``PatchOp.patch``, then ``user_input``."""
    with provider():
        simple = user_patch.simple_input(_operations(operations), _stored(CURRENT))
        assert simple is not None
        general = ScimUser.model_validate(CURRENT)
        changed = _operations(operations).patch(general, scim_policy=PATCH_POLICY)
        assert simple.changed == changed
        assert _comparable(simple.data) == _comparable(user_input(general))


@pytest.mark.parametrize("operations", GENERAL)
def test_other_inputs_are_left_to_patchop(operations: list[dict[str, Any]]) -> None:
    with provider():
        assert user_patch.simple_input(_operations(operations), _stored(CURRENT)) is None


def test_an_invalid_simple_value_is_refused() -> None:
    from pydantic import ValidationError

    with provider(), pytest.raises(ValidationError):
        user_patch.simple_input(_operations([_op("Replace", "active", "maybe")]), _stored(CURRENT))


@pytest.mark.parametrize("operations", SIMPLE)
def test_a_simple_request_of_a_known_shape_needs_no_new_patchop(
    operations: list[dict[str, Any]],
) -> None:
    """Once ``PatchOp[ScimUser]`` accepted a simple request, a request of its
    shape with other values is applied without validating the message
    again, to the same state."""
    user_patch._SHAPES.clear()
    with provider():
        body = entra.normalise_patch(patch_body(*operations))
        validated = users_api.validate_patch(patch_body(*operations))
        assert isinstance(validated, PatchOp)  # the first time: scim2-models
        known = users_api.validate_patch(patch_body(*operations))
        assert isinstance(known, user_patch.KnownSimple)
        assert user_patch.known_simple(body) is not None
        fast = user_patch.simple_input(known, _stored(CURRENT))
        general = user_patch.simple_input(_operations(operations), _stored(CURRENT))
        assert fast is not None
        assert general is not None
        assert (fast.changed, _comparable(fast.data)) == (
            general.changed,
            _comparable(general.data),
        )


@pytest.mark.parametrize(
    "operations",
    [
        *GENERAL,
        [_op("Replace", "active", None)],  # null: not simple
        [_op("Replace", "displayName", 1.5)],  # not a string, boolean or integer
    ],
)
def test_other_requests_never_become_known(operations: list[dict[str, Any]]) -> None:
    with provider():
        for _ in range(2):
            users_api.validate_patch(patch_body(*operations))
        assert user_patch.known_simple(entra.normalise_patch(patch_body(*operations))) is None


@pytest.mark.parametrize(
    "operations",
    [
        [_op("Replace", "id", "x")],
        [_op("Replace", "meta.created", "x")],
        [_op("Replace", "nope", "x")],
    ],
)
def test_a_refused_request_is_refused_every_time(operations: list[dict[str, Any]]) -> None:
    """A read-only or unknown attribute: scim2-models refuses it, each time."""
    from pydantic import ValidationError

    with provider():
        for _ in range(2):
            with pytest.raises(ValidationError):
                users_api.validate_patch(patch_body(*operations))


def test_a_bad_value_in_a_known_shape_is_refused() -> None:
    from pydantic import ValidationError

    with provider():
        users_api.validate_patch(patch_body(_op("Replace", "active", "True")))
        known = users_api.validate_patch(patch_body(_op("Replace", "active", "maybe")))
        assert isinstance(known, user_patch.KnownSimple)
        with pytest.raises(ValidationError):
            user_patch.simple_input(known, _stored(CURRENT))


def test_an_extension_is_read_from_the_field_scim2_models_gives_it() -> None:
    """``_value`` reads an extension by its field, the object
    ``resource[Extension]`` returns; absent, ``None`` both ways."""
    document = {**CURRENT, ENTERPRISE: {"department": "Sales"}}
    document["schemas"] = [*CURRENT["schemas"], ENTERPRISE]
    models = ScimUser.get_extension_models()
    assert set(user_patch._EXTENSION_FIELDS) == set(models)
    for resource in (ScimUser.model_validate(document), ScimUser.model_validate({"userName": "x"})):
        for schema, model in models.items():
            assert getattr(resource, user_patch._EXTENSION_FIELDS[schema]) is resource[model]
