"""The caches around scim2-models' validation (``scim_server.validation``)
change no outcome: every body below is validated with scim2-models alone and
with the caches, twice, and the models or the errors must be identical; the
HTTP answers to bad bodies keep their status, ``scimType`` and detail."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pydantic
import pydantic.networks
import pydantic_core
import pytest
from scim2_models import Context, PatchOp, SCIMException

from scim_server import entra, errors, user_patch, validation
from scim_server.errors import ScimError
from scim_server.groups_api import validate_group
from scim_server.schemas import PATCH_POLICY, GroupPatchOp, ScimGroup, ScimUser, UserPatchOp
from scim_server.users_api import validate_patch_message as validate_patch
from scim_server.users_api import validate_user
from tests.entra import payloads as entra_payloads

from .helpers import (
    ENTERPRISE,
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    PRODUCT,
    USER_SCHEMA,
    assert_error,
    create_user,
    patch_body,
    user_body,
)
from .helpers import patch_operation as _op

CREATE = Context.RESOURCE_CREATION_REQUEST
REPLACE = Context.RESOURCE_REPLACEMENT_REQUEST
DEFAULT_MODE = "default"


ENTRA_USER = entra_payloads.create_user("ada@contoso.com", "o-1", "Ada", "Lovelace", dept="R&D")

USER_BODIES: dict[str, dict[str, Any]] = {
    "entra": ENTRA_USER,
    "entra flagged active string": {**ENTRA_USER, "active": "False"},
    "minimal": user_body("min"),
    "bad e-mail": user_body("a", emails=[{"value": "not-an-email"}]),
    "bad e-mail domain": user_body("a", emails=[{"value": "x@-bad-.com"}]),
    "e-mail with display name": user_body("a", emails=[{"value": "Ada <ada@contoso.com>"}]),
    "e-mail upper case domain": user_body("a", emails=[{"value": "Ada@CONTOSO.COM"}]),
    "two primaries": user_body(
        "a",
        emails=[
            {"value": "a@contoso.com", "primary": True},
            {"value": "b@contoso.com", "primary": True},
        ],
    ),
    "missing userName": {"schemas": [USER_SCHEMA], "displayName": "x"},
    "empty userName": user_body(""),
    "userName not a string": user_body(5),  # type: ignore[arg-type]
    "active not a boolean": user_body("a", active="maybe"),
    "name not an object": user_body("a", name="Ada"),
    "emails not a list": user_body("a", emails="a@contoso.com"),
    "core schema missing": {"schemas": [ENTERPRISE], "userName": "a"},
    "unknown extension schema": {
        "schemas": [USER_SCHEMA, "urn:example:unknown:2.0:User"],
        "userName": "a",
        "urn:example:unknown:2.0:User": {"x": 1},
    },
    "read-only id and meta": user_body("a", id="given", meta={"resourceType": "User"}),
    "read-only product lifecycle": {
        "schemas": [USER_SCHEMA, PRODUCT],
        "userName": "a",
        PRODUCT: {"lifecycle": "ACTIVE", "userType": "PERSON"},
    },
    "product user type invalid": {
        "schemas": [USER_SCHEMA, PRODUCT],
        "userName": "a",
        PRODUCT: {"userType": "ROBOT"},
    },
    "manager string": {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": "a",
        ENTERPRISE: {"manager": "271"},
    },
    "unknown attribute": user_body("a", favouriteColour="green"),
    "case-folded keys": {"SCHEMAS": [USER_SCHEMA], "USERNAME": "a", "DisplayName": "A"},
}

USER_PATCHES: dict[str, dict[str, Any]] = {
    "entra three replaces": entra_payloads.replace_attributes(
        DEFAULT_MODE,
        {"displayName": "A", "name.familyName": "B", f"{ENTERPRISE}:department": "C"},
    ),
    "entra flagged path-less replace": entra_payloads.replace_attributes(
        entra_payloads.FLAG,
        {"displayName": "A", 'emails[type eq "work"].value': "a@contoso.com"},
    ),
    "entra active False": entra_payloads.set_active(DEFAULT_MODE, False),
    "entra active boolean": entra_payloads.set_active(entra_payloads.FLAG, True),
    "entra manager": entra_payloads.set_manager(DEFAULT_MODE, "271"),
    "read-only id": patch_body(_op("replace", "id", "x")),
    "read-only meta sub-attribute": patch_body(_op("replace", "meta.created", "x")),
    "read-only product attribute": patch_body(_op("replace", f"{PRODUCT}:lifecycle", "x")),
    "unknown attribute": patch_body(_op("replace", "favouriteColour", "x")),
    "unknown schema URN": patch_body(_op("replace", "urn:example:nothing:2.0:User:x", "y")),
    "bare extension schema": patch_body(_op("replace", ENTERPRISE, {"department": "D"})),
    "bare product schema": patch_body(_op("add", PRODUCT, {"idpUsername": "ada"})),
    "bare product schema upper case": patch_body(_op("add", PRODUCT.upper(), {"tags": ["a"]})),
    "product attribute": patch_body(_op("replace", f"{PRODUCT}:idpWorkforceId", "w-1")),
    "bare core schema": patch_body(_op("replace", USER_SCHEMA, {"displayName": "D"})),
    "case-folded extension": patch_body(_op("replace", f"{ENTERPRISE.upper()}:department", "D")),
    "remove required userName": patch_body(_op("remove", "userName")),
    "replace userName with null": patch_body(_op("replace", "userName", None)),
    "path-less replace": patch_body(_op("replace", None, {"displayName": "x", "nickName": "y"})),
    "path-less with unknown key": patch_body(_op("replace", None, {"nothing": "y"})),
    "value filter": patch_body(_op("replace", 'emails[type eq "work"].value', "a@contoso.com")),
    "bad filter": patch_body(_op("replace", 'emails[type eq "work".value', "x")),
    "bad op": patch_body(_op("frobnicate", "displayName", "x")),
    "no Operations": {"schemas": [PATCH_SCHEMA]},
    "empty Operations": patch_body(),
    "wrong message schema": {"schemas": [USER_SCHEMA], "Operations": [_op("add", "title", "x")]},
    "operations not a list": {"schemas": [PATCH_SCHEMA], "Operations": "x"},
    "remove with value filter": patch_body(_op("remove", "emails", [{"value": "a@contoso.com"}])),
}

GROUP_PATCHES: dict[str, dict[str, Any]] = {
    "entra add members": entra_payloads.add_members(DEFAULT_MODE, ["m-1", "m-2"]),
    "entra remove members": entra_payloads.remove_members(DEFAULT_MODE, ["m-1"]),
    "flagged remove members": entra_payloads.remove_members(entra_payloads.FLAG, ["m-1", "m-2"]),
    "rename": patch_body(_op("Replace", "displayName", "new")),
    "read-only id": patch_body(_op("replace", "id", "x")),
    "unknown attribute": patch_body(_op("add", "owners", [{"value": "x"}])),
    "remove required displayName": patch_body(_op("remove", "displayName")),
    "user attribute on a group": patch_body(_op("replace", "userName", "x")),
}

GROUP_BODIES: dict[str, dict[str, Any]] = {
    "entra": entra_payloads.create_group("Team", "o-9"),
    "members": {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"value": "u-1"}]},
    "missing displayName": {"schemas": [GROUP_SCHEMA]},
    "members not a list": {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": "u-1"},
}


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a validation produced: the dumped model and the attributes set
    aside, or the error as the client would see it plus pydantic's list."""
    try:
        result = call()
    except pydantic.ValidationError as exc:
        listed = [(e["type"], e["loc"], e["msg"], e.get("ctx")) for e in exc.errors()]
        return ("refused", errors.describe(exc)[:3], repr(listed))
    except (SCIMException, ScimError) as exc:
        return ("refused", errors.describe(exc)[:3])
    if result is None:
        return ("unchanged",)
    unknown = getattr(result, "unknown_attributes", {})
    return ("accepted", type(result).__name__, result.model_dump(), unknown)


@pytest.fixture
def caches() -> Iterator[None]:
    """The caches stay installed after a test that took them out."""
    try:
        yield
    finally:
        validation.install()


def _same_with_and_without(call: Callable[[], Any]) -> tuple[Any, ...]:
    validation.uninstall()
    try:
        alone = _outcome(call)
    finally:
        validation.install()
    first = _outcome(call)
    again = _outcome(call)
    assert first == alone
    assert again == alone
    return alone


@pytest.mark.parametrize("name", USER_BODIES)
@pytest.mark.parametrize("context", [CREATE, REPLACE])
def test_user_bodies_validate_the_same(name: str, context: Context, caches: None) -> None:
    """A user body is accepted or refused the same way with the caches, in a
    creation and a replacement."""
    body = USER_BODIES[name]
    _same_with_and_without(lambda: validate_user(entra.normalise_resource(body), context))


@pytest.mark.parametrize("name", USER_PATCHES)
def test_user_patches_validate_the_same(name: str, caches: None) -> None:
    """A user PATCH is accepted or refused the same way with the caches, and
    validating it with the class built once gives what subscripting gives."""
    body = USER_PATCHES[name]
    outcome = _same_with_and_without(lambda: validate_patch(body))
    hoisted = _outcome(
        lambda: UserPatchOp.model_validate(
            entra.normalise_patch(body),
            scim_ctx=Context.RESOURCE_PATCH_REQUEST,
            scim_policy=PATCH_POLICY,
        )
    )
    assert hoisted == outcome


def _group_patch(body: dict[str, Any], cls: Any = None) -> Any:
    return (cls or PatchOp[ScimGroup]).model_validate(
        entra.normalise_patch(body),
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )


@pytest.mark.parametrize("name", GROUP_PATCHES)
def test_group_patches_validate_the_same(name: str, caches: None) -> None:
    """A group PATCH is accepted or refused the same way with the caches."""
    body = GROUP_PATCHES[name]
    outcome = _same_with_and_without(lambda: _group_patch(body))
    assert _outcome(lambda: _group_patch(body, GroupPatchOp)) == outcome


@pytest.mark.parametrize("name", GROUP_BODIES)
def test_group_bodies_validate_the_same(name: str, caches: None) -> None:
    """A group body is accepted or refused the same way with the caches."""
    body = GROUP_BODIES[name]
    _same_with_and_without(lambda: validate_group(body, CREATE))


def _stored(**changes: Any) -> dict[str, Any]:
    resource = validate_user(entra.normalise_resource(ENTRA_USER), CREATE)
    document = resource.model_dump(scim_ctx=Context.RESOURCE_CREATION_RESPONSE)
    document.update(id="u-1", meta={"resourceType": "User", "version": 'W/"1"'}, **changes)
    return document


VALID_USER_PATCHES = [
    name
    for name, body in USER_PATCHES.items()
    if _outcome(lambda body=body: validate_patch(body))[0] == "accepted"
]


def test_the_table_has_valid_and_invalid_patches() -> None:
    """Both halves of the user PATCH table are exercised."""
    assert 10 <= len(VALID_USER_PATCHES) <= len(USER_PATCHES) - 10


@pytest.mark.parametrize("name", VALID_USER_PATCHES)
def test_applying_user_patches_gives_the_same_user(name: str, caches: None) -> None:
    """Applying a valid PATCH to a stored user gives the same user, or the
    same error, with the caches."""
    operations = validate_patch(USER_PATCHES[name])
    stored = _stored()
    _same_with_and_without(lambda: user_patch.patched(operations, copy.deepcopy(stored)))


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_stored(), id="complete"),
        pytest.param({k: v for k, v in _stored().items() if k != "id"}, id="id missing"),
        pytest.param(_stored(password="secret"), id="password returned"),
    ],
)
@pytest.mark.parametrize(
    "context", [Context.RESOURCE_QUERY_RESPONSE, Context.RESOURCE_CREATION_RESPONSE]
)
def test_response_checks_are_the_same(
    document: dict[str, Any], context: Context, caches: None
) -> None:
    """The response checks (``returned`` always / never) run the same way:
    a response without ``id`` or with a password is refused either way."""
    outcome = _same_with_and_without(lambda: ScimUser.model_validate(document, scim_ctx=context))
    valid = "id" in document and "password" not in document
    assert outcome[0] == ("accepted" if valid else "refused")


@pytest.mark.parametrize(
    "context", [Context.RESOURCE_QUERY_REQUEST, Context.SEARCH_REQUEST, Context.BULK_REQUEST]
)
def test_other_request_contexts_are_the_same(context: Context, caches: None) -> None:
    """A write-only attribute in a query is refused, a read-only one in a bulk
    request dropped, as by scim2-models alone."""
    for body in (user_body("a", password="secret"), user_body("a", id="x"), user_body("")):
        _same_with_and_without(lambda b=body: ScimUser.model_validate(b, scim_ctx=context))


def test_the_caches_are_installed_by_the_schemas() -> None:
    """Importing the server's schemas puts the caches in place."""
    assert validation.installed()


def test_scim2_models_is_the_version_the_patches_were_read_against() -> None:
    """The caches replace private functions of scim2-models: an upgrade must
    re-read its source (``scim_server/validation.py``) and move this pin."""
    assert validation.scim2_models_version() == validation.CHECKED_SCIM2_MODELS


def test_email_validator_is_the_version_the_domain_cache_was_read_against() -> None:
    """The domain cache replaces a function of email-validator: an upgrade
    must re-read it and move this pin."""
    assert validation.email_validator_version() == validation.CHECKED_EMAIL_VALIDATOR


def test_a_domain_is_checked_once_and_refusals_every_time(caches: None) -> None:
    """Two addresses at one domain check the domain once; a bad domain is
    refused with the same message each time."""
    validation.uninstall()
    validation.install()
    first = validation._validate_email("a@fabrikam.example.org")
    second = validation._validate_email("b@fabrikam.example.org")
    assert (first, second) == (
        ("a", "a@fabrikam.example.org"),
        ("b", "b@fabrikam.example.org"),
    )
    info = validation._cached_validate_domain.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (1, 1)
    messages = set()
    for check in (pydantic.networks.validate_email, validation._original_validate_email):
        for _ in range(2):
            with pytest.raises(pydantic_core.PydanticCustomError) as refused:
                check("c@bad_domain.org")
            messages.add(str(refused.value))
    assert messages == {
        "value is not a valid email address: The part after the @-sign contains invalid "
        "characters: '_'."
    }


def test_an_accepted_address_is_validated_once(caches: None) -> None:
    """The second validation of an address is answered from the cache; a
    refused address is validated, and refused the same way, every time."""
    validation.uninstall()
    validation.install()
    body = user_body("a", emails=[{"value": "once@contoso.com"}])
    validate_user(body, CREATE)
    validate_user(body, CREATE)
    info = validation.email_cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)
    bad = user_body("a", emails=[{"value": "never@"}])
    refusals = {_outcome(lambda: validate_user(bad, CREATE)) for _ in range(3)}
    assert len(refusals) == 1
    assert next(iter(refusals))[0] == "refused"
    assert validation.email_cache_info().currsize == 1


def test_the_email_cache_is_bounded(caches: None) -> None:
    """The cache keeps at most ``EMAIL_CACHE_SIZE`` addresses."""
    validation.uninstall()
    validation.install()
    for i in range(validation.EMAIL_CACHE_SIZE + 10):
        validation._validate_email(f"user{i}@contoso.com")
    assert validation.email_cache_info().currsize == validation.EMAIL_CACHE_SIZE


def test_a_model_given_its_schema_later_is_designated_by_it(caches: None) -> None:
    """A resource model whose ``__schema__`` changes after a PATCH path was
    resolved against it answers to the new schema (scim2-models builds models
    from a ``Schema`` that way)."""
    from scim2_models.path import resolution

    class Thing(ScimGroup):
        __schema__ = "urn:example:old:2.0:Thing"  # type: ignore[assignment]

    assert resolution._designated_model(Thing, "urn:example:old:2.0:Thing") is Thing
    Thing.__schema__ = "urn:example:new:2.0:Thing"  # type: ignore[assignment]
    assert resolution._designated_model(Thing, "urn:example:new:2.0:Thing") is Thing
    assert resolution._designated_model(Thing, "urn:example:old:2.0:Thing") is None


BAD_POSTS: list[tuple[dict[str, Any], int, str, str]] = [
    (user_body("a", emails=[{"value": "not-an-email"}]), 400, "invalidValue", "email"),
    ({"userName": "no-schemas"}, 400, "invalidSyntax", "schemas"),
    ({"schemas": [ENTERPRISE], "userName": "a"}, 400, "invalidSyntax", "base schema"),
    (user_body(5), 400, "invalidValue", "string"),  # type: ignore[arg-type]
    (user_body("a", active="maybe"), 400, "invalidValue", "bool"),
    ({"schemas": [USER_SCHEMA], "displayName": "x"}, 400, "invalidValue", "userName"),
    (
        user_body(
            "a",
            emails=[
                {"value": "a@contoso.com", "primary": True},
                {"value": "b@contoso.com", "primary": True},
            ],
        ),
        400,
        "invalidValue",
        "primary",
    ),
]


async def test_bad_posts_are_refused_the_same_way_each_time(scim: httpx.AsyncClient) -> None:
    """Each bad POST /Users is a 400 with its scimType and a detail naming the
    problem, the same body the second time (after the caches saw it)."""
    for body, status, scim_type, word in BAD_POSTS:
        first = await scim.post("/Users", json=body)
        assert_error(first, status, scim_type)
        assert word.lower() in first.json()["detail"].lower(), first.json()
        second = await scim.post("/Users", json=body)
        assert second.json() == first.json()
    assert (await scim.get("/Users")).json()["totalResults"] == 0


async def test_bad_patches_are_refused_the_same_way_each_time(scim: httpx.AsyncClient) -> None:
    """A PATCH naming an unknown schema or attribute is a 400 ``invalidPath``,
    one writing a read-only attribute a 400 ``mutability``, every time."""
    user = await create_user(scim, "patched", emails=[{"value": "patched@contoso.com"}])
    cases = [
        (patch_body(_op("replace", "urn:example:nothing:2.0:User:x", "y")), "invalidPath"),
        (patch_body(_op("replace", "favouriteColour", "green")), "invalidPath"),
        (patch_body(_op("replace", f"{PRODUCT}:lifecycle", "ACTIVE")), "mutability"),
        (patch_body(_op("replace", "id", "x")), "mutability"),
    ]
    for body, scim_type in cases:
        first = await scim.patch(f"/Users/{user['id']}", json=body)
        assert_error(first, 400, scim_type)
        second = await scim.patch(f"/Users/{user['id']}", json=body)
        assert second.json() == first.json()
    unchanged = await scim.get(f"/Users/{user['id']}")
    assert unchanged.json()["meta"]["version"] == user["meta"]["version"]


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in USER_BODIES
        if _outcome(lambda n=n: validate_user(USER_BODIES[n], CREATE))[0] == "accepted"
    ],
)
def test_an_extension_read_as_its_field_is_item_access(name: str) -> None:
    """``mapping.extension`` answers what scim2-models' ``resource[Extension]`` does."""
    from scim2_models import EnterpriseUser

    from scim_server.mapping import extension
    from scim_server.schemas import IdentityStoreUser

    resource = validate_user(copy.deepcopy(USER_BODIES[name]), CREATE)
    for model in (EnterpriseUser, IdentityStoreUser):
        assert extension(resource, model) is resource[model]
    with_both = validate_user(
        {
            "schemas": [USER_SCHEMA, ENTERPRISE, PRODUCT],
            "userName": "a",
            ENTERPRISE: {"department": "D"},
            PRODUCT: {"idpUsername": "a"},
        },
        CREATE,
    )
    for model in (EnterpriseUser, IdentityStoreUser):
        assert extension(with_both, model) is with_both[model] is not None
