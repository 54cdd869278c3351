"""``GET /api/v1/users/{id}/profile`` over HTTP, on both databases: the
whole cidaas-style profile of a user made through SCIM and the management
API, the adaptations of values cidaas cannot hold (long e-mails, phone
numbers without a country code), refusals, and a read whose number of
statements does not grow with the user's groups and roles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store.models import User
from scim_server.api.profile import e164

from .conftest import PRODUCT, USER, Directory, assert_problem
from .described import assert_described

LOGIN = datetime(2026, 11, 30, 8, 15, 42, tzinfo=UTC)


async def scim_user(directory: Directory, user_name: str, /, **fields: Any) -> str:
    body: dict[str, Any] = {
        "schemas": [USER, PRODUCT],
        "userName": user_name,
        PRODUCT: {"idpUsername": user_name, "idpCloudUsername": f"{user_name}@corp.example"},
        **fields,
    }
    response = await directory.scim.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def set_columns(engine: AsyncEngine, user_id: str, **values: Any) -> None:
    """Columns no endpoint writes yet (``providers``) or that only the Auth0
    sync writes (``last_logged_in_at``, tested end to end in
    tests/sync/test_last_login.py), set as a writer would."""
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.id == user_id).values(**values))


async def grant(api: httpx.AsyncClient, path: str, roles: list[str]) -> None:
    response = await api.put(path, json={"roles": roles})
    assert response.status_code == 200, response.text


async def role(api: httpx.AsyncClient, role_id: str, permissions: list[str]) -> None:
    body = {"roleId": role_id, "name": role_id.title(), "permissions": permissions}
    response = await api.post("/roles", json=body)
    assert response.status_code == 201, response.text


async def test_the_whole_profile_in_cidaas_s_shape(
    api: httpx.AsyncClient, directory: Directory, engine: AsyncEngine
) -> None:
    """Names, the primary e-mail and phone number, providers, custom data,
    times in epoch seconds, every group whose roles the user holds (nested
    ones too) with each role's permissions, and the roles assigned directly."""
    user_id = await scim_user(
        directory,
        "ada",
        name={"givenName": "Ada", "middleName": "Augusta", "familyName": "Lovelace"},
        displayName="Ada Lovelace",
        emails=[
            {"value": "other@example.com", "type": "home"},
            {"value": "ada@example.com", "type": "work", "primary": True},
        ],
        phoneNumbers=[
            {"value": "+44 20 7946 0958", "type": "work", "primary": True},
            {"value": "+1 555 0100", "type": "mobile"},
        ],
        **{PRODUCT: {"idpUsername": "ada", "idpCloudUsername": "ada@corp", "customData": {"a": 1}}},
    )
    await set_columns(
        engine,
        user_id,
        providers=[
            {"type": "social", "name": "google", "reference": "g-123", "username": "ada.l"},
            {"type": "ENTERPRISE", "name": "azure", "reference": "e-9"},
            {"type": "carrier-pigeon", "name": "coo"},  # not a cidaas provider type: left out
            {"type": "SOCIAL"},  # no name: left out
        ],
        last_logged_in_at=LOGIN,
    )
    team = await directory.group("Engineers", [user_id])
    division = await directory.group("Division", [team])
    await directory.group("Unrelated", [])
    await role(api, "reader", ["doc.read", "code.read"])
    await role(api, "boss", ["budget.approve"])
    await role(api, "self", ["profile.edit"])
    await grant(api, f"/groups/{team}/roles", ["reader"])
    await grant(api, f"/groups/{division}/roles", ["boss", "reader"])
    await grant(api, f"/users/{user_id}/roles", ["self"])

    response = await api.get(f"/users/{user_id}/profile")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_described(body, "UserProfileDocument")
    created, updated = body.pop("created_at"), body.pop("updated_at")
    assert (type(created), type(updated)) == (int, int)
    assert abs(created - datetime.now(UTC).timestamp()) < 300
    assert updated >= created
    assert body == {
        "sub": user_id,
        "username": "ada",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "middle_name": "Augusta",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "email_verified": False,
        "phone_number": "+442079460958",
        "phone_number_verified": False,
        "last_logged_in_time": int(LOGIN.timestamp()),
        "providers": [
            {
                "provider_type": "SOCIAL",
                "provider_name": "google",
                "social_identity_ref": "g-123",
                "username": "ada.l",
            },
            {
                "provider_type": "ENTERPRISE",
                "provider_name": "azure",
                "social_identity_ref": "e-9",
                "username": None,
            },
        ],
        "customFields": {"a": 1},
        "groups": [
            {
                "group_id": division,
                "group_name": "Division",
                "roles": ["boss", "reader"],
                "roles_obj": [
                    {"role_key": "boss", "permissions": ["budget.approve"]},
                    {"role_key": "reader", "permissions": ["code.read", "doc.read"]},
                ],
            },
            {
                "group_id": team,
                "group_name": "Engineers",
                "roles": ["reader"],
                "roles_obj": [{"role_key": "reader", "permissions": ["code.read", "doc.read"]}],
            },
        ],
        "roles": ["self"],
        "lifecycle": "ACTIVE",
        "blocked": False,
    }


async def test_a_bare_user_has_empty_lists_and_nulls(
    api: httpx.AsyncClient, directory: Directory
) -> None:
    """No e-mail (a userName that is not an address), no phone, no groups:
    nulls and empty lists, ``customFields`` an empty object."""
    user_id = await directory.user("bare")
    body = (await api.get(f"/users/{user_id}/profile")).json()
    assert_described(body, "UserProfileDocument")
    assert (body["email"], body["email_verified"]) == (None, False)
    assert (body["phone_number"], body["phone_number_verified"]) == (None, False)
    assert (body["name"], body["last_logged_in_time"]) == (None, None)
    assert (body["groups"], body["roles"], body["providers"], body["customFields"]) == (
        [],
        [],
        [],
        {},
    )


async def test_values_cidaas_cannot_hold_are_null_not_cut(
    api: httpx.AsyncClient, directory: Directory
) -> None:
    """An e-mail of 129 characters is ``null`` (cut, it would be someone
    else's); a phone number without a country code is ``null``; the
    userName stands in for a user without e-mail when it is an address."""
    long_email = "a" * 116 + "@example.com"
    assert len(long_email) == 128
    fits = await scim_user(directory, "fits", emails=[{"value": long_email, "primary": True}])
    too_long = await scim_user(
        directory, "toolong", emails=[{"value": "b" + long_email, "primary": True}]
    )
    national = await scim_user(directory, "national", phoneNumbers=[{"value": "030 1234567"}])
    by_name = await scim_user(directory, "grace@example.com")
    assert (await api.get(f"/users/{fits}/profile")).json()["email"] == long_email
    refused = (await api.get(f"/users/{too_long}/profile")).json()
    assert_described(refused, "UserProfileDocument")
    assert refused["email"] is None
    assert (await api.get(f"/users/{national}/profile")).json()["phone_number"] is None
    assert (await api.get(f"/users/{by_name}/profile")).json()["email"] == "grace@example.com"


@pytest.mark.parametrize(
    ("stored", "answered"),
    [
        ("+49 30 1234567", "+49301234567"),
        ("tel:+1-201-555-0123;ext=42", "+12015550123"),
        ("0049 (30) 123.4567", "+49301234567"),
        ("+1 555 0100", "+15550100"),
        ("030 1234567", None),
        ("+0 123", None),
        ("+1234567890123456", None),  # 16 digits: more than E.164 allows
        ("+" + "1" * 100, None),
        ("call me", None),
        ("", None),
    ],
)
def test_phone_numbers_are_answered_in_e164_or_not_at_all(
    stored: str, answered: str | None
) -> None:
    """Separators and prefixes go; what has no country code is no E.164 number."""
    assert e164(stored) == answered


async def test_refusals(
    api: httpx.AsyncClient, as_scope: Any, directory: Directory, app: Starlette
) -> None:
    """404 for an unknown or SCIM-deleted user, 400 for an id that cannot be
    one or an unknown query parameter, 401 without a token, 403 for every
    scope but ``admin``."""
    user_id = await directory.user("gone")
    kept = await directory.user("kept")
    assert (await directory.scim.delete(f"/Users/{user_id}")).status_code == 204
    assert_problem(await api.get(f"/users/{user_id}/profile"), 404, "not-found")
    assert_problem(await api.get("/users/01J00000000000000000000000/profile"), 404, "not-found")
    assert_problem(await api.get(f"/users/{'x' * 27}/profile"), 400, "invalid-request")
    assert_problem(await api.get("/users/a%00b/profile"), 400, "invalid-request")
    assert_problem(await api.get(f"/users/{kept}/profile?expand=all"), 400, "invalid-request")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1"
    ) as anonymous:
        assert_problem(await anonymous.get(f"/users/{kept}/profile"), 401, "unauthorized")
    for scope in ("scim:read", "scim:write", "authz:check"):
        refused = await as_scope(scope).get(f"/users/{kept}/profile")
        assert_problem(refused, 403, "insufficient-scope")


@pytest.fixture
def statements(app: Starlette) -> Iterator[list[str]]:
    """Every SQL statement the application's store sends through SQLAlchemy."""
    seen: list[str] = []
    engine = app.state.idstore.store.engine.sync_engine

    def count(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


async def test_the_read_does_not_grow_with_groups_and_roles(
    api: httpx.AsyncClient, directory: Directory, statements: list[str], app: Starlette
) -> None:
    """The same number of statements for a user in one group with one role
    and for one in 12 nested groups with 12 roles (PostgreSQL: one prepared
    statement, none through SQLAlchemy; SQLite: five)."""
    small = await directory.user("small")
    large = await directory.user("large")
    await role(api, "r0", ["p0"])
    await grant(api, f"/groups/{await directory.group('g-small', [small])}/roles", ["r0"])
    member = large
    for i in range(12):
        await role(api, f"r{i + 1}", [f"p{i}", f"q{i}"])
        member = await directory.group(f"g{i}", [member])
        await grant(api, f"/groups/{member}/roles", [f"r{i + 1}"])

    counts = []
    for user_id, groups in ((small, 1), (large, 12)):
        statements.clear()
        body = (await api.get(f"/users/{user_id}/profile")).json()
        assert len(body["groups"]) == groups
        counts.append(len([s for s in statements if "api_tokens" not in s]))
    assert counts[0] == counts[1]
    expected = 0 if app.state.idstore.store.prepared is not None else 5
    assert counts[0] == expected
