"""A PUT's immutability check (scim_server.users_api.replace_immutable)
gives what scim2-models' ``Resource.replace`` against the whole stored
document gives, while validating the stored user only for the attributes
that check compares."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import pytest
from scim2_models import URN, Context, Extension, Mutability, User
from scim2_models.exceptions import MutabilityException

from scim_server import entra, users_api
from scim_server.discovery import provider
from scim_server.mapping import user_input
from scim_server.schemas import ScimUser

from .helpers import ENTERPRISE, PRODUCT, USER_SCHEMA

STORED: dict[str, Any] = {
    "schemas": [USER_SCHEMA, ENTERPRISE, PRODUCT],
    "id": "01JZ0000000000000000000000",
    "userName": "bjensen@example.com",
    "displayName": "Barbara",
    "active": True,
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
    "groups": [{"value": "01JZ0000000000000000000009", "display": "Staff"}],
    "meta": {"resourceType": "User", "version": 'W/"3"', "location": "http://x/Users/1"},
    ENTERPRISE: {
        "department": "Tours",
        "manager": {
            "value": "01JZ0000000000000000000001",
            "$ref": "http://x/Users/01JZ0000000000000000000001",
            "displayName": "The Boss",
        },
    },
    PRODUCT: {"idpUsername": "bjensen", "tags": ["a"], "lifecycle": "ACTIVE"},
}


def _body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(STORED)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


BODIES = [
    _body(),
    _body(displayName="Babs", id="01JZ0000000000000000000002", meta=None),
    _body(groups=[{"value": "01JZ0000000000000000000008"}]),  # readOnly: ignored
    _body(password="s3cret-Passw0rd"),
    _body(password=None),
    _body(**{ENTERPRISE: None, PRODUCT: None}, schemas=[USER_SCHEMA]),
    _body(**{ENTERPRISE: {"manager": {"value": "3", "$ref": "http://x/U/3", "displayName": "X"}}}),
    _body(**{PRODUCT: {"lifecycle": "SUSPENDED", "tags": ["b"], "authUserId": "auth0|1"}}),
    _body(emails=None, name=None, active=False),
]


def _resource(body: dict[str, Any]) -> ScimUser:
    context = Context.RESOURCE_REPLACEMENT_REQUEST
    return users_api.validate_user(entra.normalise_resource(copy.deepcopy(body)), context)


@pytest.mark.parametrize("body", BODIES)
def test_a_put_makes_the_input_the_whole_stored_document_makes(body: dict[str, Any]) -> None:
    with provider():
        whole = _resource(body)
        whole.replace(ScimUser.model_validate(copy.deepcopy(STORED)))
        narrowed = _resource(body)
        if users_api.IMMUTABLE_FIELDS:
            users_api.replace_immutable(narrowed, STORED, users_api.IMMUTABLE_FIELDS)
        assert user_input(narrowed) == user_input(whole)


class Pinned(Extension):
    __schema__ = URN("urn:example:params:scim:schemas:extension:pinned:2.0:User")

    badge: Annotated[str | None, Mutability.immutable] = None
    note: str | None = None


PinnedUser = User[Pinned]
PINNED = "urn:example:params:scim:schemas:extension:pinned:2.0:User"


class BadgedUser(PinnedUser):  # type: ignore[misc,valid-type]
    employee_code: Annotated[str | None, Mutability.immutable] = None


def test_the_immutable_attributes_are_found_where_they_are() -> None:
    assert users_api.immutable_fields(PinnedUser) == {"Pinned": PINNED}
    expected = {"employee_code": "employeeCode", "Pinned": PINNED}
    assert users_api.immutable_fields(BadgedUser) == expected
    assert users_api.IMMUTABLE_FIELDS == users_api.immutable_fields(ScimUser) == {}


STORED_PINNED = {
    "schemas": [USER_SCHEMA, PINNED],
    "id": "1",
    "userName": "a",
    "displayName": "A",
    PINNED: {"badge": "B-1", "note": "n"},
}


@pytest.mark.parametrize(
    "pinned",
    [{"badge": "B-1"}, {"badge": "B-2"}, {"note": "m"}, None, {"badge": "B-1", "note": None}],
)
def test_an_immutable_attribute_is_checked_and_kept_as_replace_does(
    pinned: dict[str, Any] | None,
) -> None:
    body: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": "a", "displayName": "Z"}
    if pinned is not None:
        body = {**body, "schemas": [USER_SCHEMA, PINNED], PINNED: pinned}
    outcomes = []
    for narrowed in (False, True):
        resource = PinnedUser.model_validate(body)
        try:
            if narrowed:
                fields = users_api.immutable_fields(PinnedUser)
                users_api.replace_immutable(resource, STORED_PINNED, fields)
            else:
                resource.replace(PinnedUser.model_validate(STORED_PINNED))
        except MutabilityException as exc:
            outcomes.append(("refused", str(exc)))
        else:
            outcomes.append(("kept", resource[Pinned], resource.display_name))
    assert outcomes[0] == outcomes[1]
    if pinned == {"badge": "B-2"}:
        assert outcomes[0][0] == "refused"
