"""The profile's two paths answer alike, on both databases.

``GET /api/v1/users/{id}/profile`` is served by a plain Starlette route
(:class:`~scim_server.api.profile.FastProfileRoute`) that, on PostgreSQL,
passes through the document the database built
(:func:`identity_store.user_profiles.cidaas_document_json`). The reference
is FastAPI's operation with the document built in Python: the same
application without the fast route. Both answer the same requests here,
for users whose every adaptation is exercised (groups, nested groups,
roles, providers of every shape, odd phone numbers, long e-mails, custom
data, names, times), and for the requests the fast route declines or
refuses; and PostgreSQL is shown to build every document whose values are
ASCII where Python's Unicode rules would decide."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Match, Mount

from identity_store import user_profiles
from identity_store.models import UserMultiValue
from identity_store.settings import Settings
from scim_server.api.profile import FastProfileRoute, document, json_bytes
from scim_server.app import create_app

from .conftest import PRODUCT, Directory, assert_problem
from .described import assert_described
from .test_profile import grant, role, scim_user, set_columns

REQUEST_ID = "same-request-id"


def _api_of(app: Starlette) -> FastAPI:
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/api/v1":
            assert isinstance(route.app, FastAPI)
            return route.app
    raise AssertionError("no /api/v1 mount")


@pytest.fixture
async def reference_app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Starlette]:
    """The same application without its fast route: FastAPI answers every request."""
    application = create_app(settings)
    fast = [r for r in application.router.routes if isinstance(r, FastProfileRoute)]
    assert len(fast) == 1
    application.router.routes.remove(fast[0])
    assert not any(isinstance(r, FastProfileRoute) for r in _api_of(application).router.routes)
    async with application.router.lifespan_context(application):
        yield application


def _client(app: Starlette, secret: str | None) -> httpx.AsyncClient:
    headers = {"X-Request-Id": REQUEST_ID}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/api/v1",
        headers=headers,
    )


async def _answer(app: Starlette, secret: str | None, method: str, path: str) -> dict[str, Any]:
    """What matters of a response: status, the headers a client reads, the JSON."""
    async with _client(app, secret) as client:
        response = await client.request(method, path)
    return {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "allow": response.headers.get("allow"),
        "www-authenticate": response.headers.get("www-authenticate"),
        "x-request-id": response.headers.get("x-request-id"),
        "body": response.json() if response.content else None,
    }


async def set_entries(engine: AsyncEngine, user_id: str, attribute: str, **values: Any) -> None:
    """Every stored entry of the user's ``attribute`` (``emails``,
    ``phoneNumbers``) set to ``values``, as a writer other than SCIM could."""
    async with engine.begin() as connection:
        await connection.execute(
            update(UserMultiValue)
            .where(UserMultiValue.user_id == user_id, UserMultiValue.attribute == attribute)
            .values(**values)
        )


PHONES = [
    "+49 30 1234567",
    "tel:+1-201-555-0123;ext=42",
    "TEL:+1 (201) 555.0123",
    "0049 (30) 123.4567",
    "00 1 555 0100",
    "+1 555 0100",
    "\t+44 20 7946 0958\x1c\x1f",
    "+44\x0b20\x0c7946\r0958",
    "030 1234567",
    "01 555 0100",
    "+0 123",
    "+1234567890123456",
    "+" + "1" * 63,
    "+" + "1" * 64,
    "+49 30 1234567".ljust(64),  # 64 characters: read
    "+49 30 1234567".ljust(65),  # 65: no phone number
    "call me",
    "tel:",
    "00",
]
"""Stored phone numbers of ASCII characters: PostgreSQL normalises them."""

UNICODE_PHONES = [
    "+49\u00a030\u20031234567",  # no-break and em spaces: Python's \s takes them
    "\u3000+1 555 0100\u2028",
    "\uff0b49 30 1234567",  # a full-width plus: no E.164 number
    "+\uff14\uff19 30 1234567",  # full-width digits: no E.164 number
]
"""Stored phone numbers beyond ASCII: the Python path adapts them."""

PROVIDERS: list[Any] = [
    {"type": "social", "name": "google", "reference": "g-1", "username": "ada.l"},
    {"type": "Enterprise", "name": "azure", "reference": "", "username": 7},
    {"type": "CLASSICAL", "name": "idstore", "reference": 12, "extra": {"x": 1}},
    {"type": "carrier-pigeon", "name": "coo"},
    {"type": "SOCIAL"},
    {"type": "SOCIAL", "name": ""},
    {"type": "SOCIAL", "name": 5},
    {"type": 3, "name": "three"},
    {"name": "typeless"},
    "not an object",
    None,
    42,
    ["SOCIAL", "google"],
]
"""Every shape a stored provider can take; ASCII types."""

CUSTOM: dict[str, Any] = {
    "plan": "gold",
    "nested": {"list": [1, "two", None, True, {"deep": [0.5, -3]}], "empty": {}},
    "unicode": "Zoë 東京 \u2028 \U0001f600",
    "float": 0.1,
    "small": 1e-7,
    "large": 1.5e300,
    "big": 2**70,
    "negative": -12.25,
    "": "empty key",
    "null": None,
}


async def make_users(
    api: httpx.AsyncClient, directory: Directory, engine: AsyncEngine
) -> tuple[list[str], set[str]]:
    """Users covering every adaptation; the ids, and those whose values
    Python's Unicode rules decide."""
    ids: list[str] = []
    unicode_ids: set[str] = set()

    full = await scim_user(
        directory,
        "ada",
        name={
            "formatted": "Ada King, Countess of Lovelace",
            "givenName": "Ada",
            "middleName": "Augusta",
            "familyName": "Lovelace",
        },
        displayName="Ada Lovelace",
        emails=[
            {"value": "other@example.com", "type": "home"},
            {"value": "ada@example.com", "type": "work", "primary": True},
        ],
        phoneNumbers=[
            {"value": "+1 555 0100", "type": "mobile"},
            {"value": "+44 20 7946 0958", "type": "work", "primary": True},
        ],
        **{PRODUCT: {"idpUsername": "ada", "idpCloudUsername": "ada@corp", "customData": CUSTOM}},
    )
    await set_columns(
        engine,
        full,
        providers=PROVIDERS,
        last_logged_in_at=datetime(2026, 11, 30, 8, 15, 42, 999999, tzinfo=UTC),
    )
    await set_entries(engine, full, "emails", verified=True)
    await set_entries(engine, full, "phoneNumbers", verified=True)
    ids.append(full)

    # Groups three deep, a group without roles, roles without permissions,
    # a role held both directly and through a group.
    team = await directory.group("Engineers", [full])
    division = await directory.group("Division", [team])
    await directory.group("Company", [division])
    await directory.group("Unrelated", [])
    await role(api, "reader", ["doc.read", "code.read"])
    await role(api, "boss", ["budget.approve"])
    await role(api, "empty", [])
    await grant(api, f"/groups/{team}/roles", ["reader", "empty"])
    await grant(api, f"/groups/{division}/roles", ["boss", "reader"])
    await grant(api, f"/users/{full}/roles", ["empty", "reader"])

    ids.append(await directory.user("bare"))
    ids.append(await scim_user(directory, "grace@example.com"))
    suspended = await scim_user(directory, "suspended", displayName="Only Display")
    await directory.suspend(suspended)
    await set_columns(engine, suspended, blocked=True)
    ids.append(suspended)
    ids.append(await scim_user(directory, "middle", name={"middleName": "Mid"}))
    ids.append(
        await scim_user(
            directory,
            "parts",
            name={"formatted": "", "givenName": "Given", "familyName": "Family"},
            displayName="",
        )
    )

    long_email = "a" * 116 + "@example.com"
    fits = await scim_user(directory, "fits", emails=[{"value": long_email}])
    await set_entries(engine, fits, "emails", verified=True)
    too_long = await scim_user(directory, "toolong", emails=[{"value": "b" + long_email}])
    await set_entries(engine, too_long, "emails", verified=True)
    long_name = await scim_user(directory, "c" * 120 + "@example.com")
    ids += [fits, too_long, long_name]
    unicode_mail = await scim_user(
        directory, "zoe", emails=[{"value": "zoë@exämple.com", "primary": True}]
    )
    ids.append(unicode_mail)

    for i, phone in enumerate(PHONES):
        user_id = await scim_user(directory, f"phone{i}", phoneNumbers=[{"value": "+1 555 0100"}])
        await set_entries(engine, user_id, "phoneNumbers", value=phone, verified=i % 2 == 0)
        ids.append(user_id)
    for i, phone in enumerate(UNICODE_PHONES):
        user_id = await scim_user(directory, f"uphone{i}", phoneNumbers=[{"value": "+1 555 0100"}])
        await set_entries(engine, user_id, "phoneNumbers", value=phone, verified=True)
        ids.append(user_id)
        unicode_ids.add(user_id)

    for i, providers in enumerate([{"type": "SOCIAL", "name": "not a list"}, "text", []]):
        user_id = await directory.user(f"providers{i}")
        await set_columns(engine, user_id, providers=providers)
        ids.append(user_id)
    # Python upper-cases the long s (U+017F) and the dotless i (U+0131) to
    # ASCII: both types are SOCIAL there.
    for i, kind in enumerate(["\u017focial", "soc\u0131al", "soziäl"]):
        user_id = await directory.user(f"uprovider{i}")
        await set_columns(engine, user_id, providers=[{"type": kind, "name": "g"}])
        ids.append(user_id)
        unicode_ids.add(user_id)

    for i, custom in enumerate([[1, 2], "text", {}, {"only": None}]):
        user_id = await directory.user(f"custom{i}")
        await set_columns(engine, user_id, custom_data=custom)
        ids.append(user_id)

    old = await directory.user("old")
    await set_columns(
        engine,
        old,
        created_at=datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC),
        last_logged_in_at=datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    )
    ids.append(old)
    return ids, unicode_ids


async def test_both_paths_answer_every_user_alike(
    app: Starlette,
    reference_app: Starlette,
    api: httpx.AsyncClient,
    api_tokens: dict[str, str],
    directory: Directory,
    engine: AsyncEngine,
) -> None:
    """The fast route's document is the reference's, for every user; on
    PostgreSQL the database built it for every user whose values are ASCII,
    and the same document as the Python path."""
    ids, unicode_ids = await make_users(api, directory, engine)
    store = app.state.idstore.store
    built_by_database: set[str] = set()
    for user_id in ids:
        path = f"/users/{user_id}/profile"
        fast = await _answer(app, api_tokens["admin"], "GET", path)
        reference = await _answer(reference_app, api_tokens["admin"], "GET", path)
        assert fast["status"] == 200, fast
        assert fast == reference, user_id
        assert_described(fast["body"], "UserProfileDocument")
        python = json.loads(json_bytes(document(await user_profiles.user_profile(store, user_id))))
        assert fast["body"] == python
        built = await user_profiles.cidaas_document_json(store, user_id)
        if built is not None:
            assert json.loads(built) == python, user_id
            built_by_database.add(user_id)

    if store.prepared is not None:
        assert built_by_database == set(ids) - unicode_ids
    else:
        assert built_by_database == set()

    # Spot checks that the users exercise what they are meant to.
    documents = {
        user_id: (await _answer(app, api_tokens["admin"], "GET", f"/users/{user_id}/profile"))[
            "body"
        ]
        for user_id in ids
    }
    ada = documents[ids[0]]
    assert [g["group_name"] for g in ada["groups"]] == ["Company", "Division", "Engineers"]
    assert ada["groups"][2]["roles_obj"] == [
        {"role_key": "empty", "permissions": []},
        {"role_key": "reader", "permissions": ["code.read", "doc.read"]},
    ]
    assert [p["provider_name"] for p in ada["providers"]] == ["google", "azure", "idstore"]
    assert (ada["email_verified"], ada["phone_number"]) == (True, "+442079460958")
    assert ada["customFields"]["big"] == 2**70
    phones = [documents[i]["phone_number"] for i in ids if documents[i]["username"][:5] == "phone"]
    assert phones == [
        "+49301234567",
        "+12015550123",
        "+12015550123",
        "+49301234567",
        "+15550100",
        "+15550100",
        "+442079460958",
        "+442079460958",
        None,
        None,
        None,
        None,
        None,
        None,
        "+49301234567",
        None,
        None,
        None,
        None,
    ]
    uphones = [
        documents[i]["phone_number"] for i in ids if documents[i]["username"][:6] == "uphone"
    ]
    assert uphones == ["+49301234567", "+15550100", None, None]
    kinds = [
        [p["provider_type"] for p in documents[i]["providers"]]
        for i in ids
        if documents[i]["username"][:9] == "uprovider"
    ]
    assert kinds == [["SOCIAL"], ["SOCIAL"], []]


async def test_both_paths_refuse_alike(
    app: Starlette,
    reference_app: Starlette,
    api_tokens: dict[str, str],
    directory: Directory,
) -> None:
    """Unknown, deleted and malformed ids, query parameters, other methods,
    missing, unknown and insufficient tokens: the same status, headers and
    problem from both applications."""
    kept = await directory.user("kept")
    gone = await directory.user("gone")
    assert (await directory.scim.delete(f"/Users/{gone}")).status_code == 204
    requests = [
        ("GET", f"/users/{gone}/profile"),
        ("GET", "/users/01J00000000000000000000000/profile"),
        ("GET", f"/users/{kept.lower()}/profile"),
        ("GET", "/users/not-an-id/profile"),
        ("GET", f"/users/{'x' * 27}/profile"),
        ("GET", "/users/a%00b/profile"),
        ("GET", "/users/a%0Ab/profile"),
        ("GET", f"/users/{kept}/profile?expand=all"),
        ("GET", f"/users/{kept}/profile/"),
        ("HEAD", f"/users/{kept}/profile"),
        ("POST", f"/users/{kept}/profile"),
        ("DELETE", f"/users/{kept}/profile"),
    ]
    callers = [api_tokens[s] for s in ("admin", "scim:read", "scim:write", "authz:check")]
    for secret in [*callers, None, "idst_unknown_token"]:
        for method, path in requests:
            fast = await _answer(app, secret, method, path)
            reference = await _answer(reference_app, secret, method, path)
            assert fast == reference, (method, path)
            assert fast["status"] >= 400 or method == "GET", fast
    # The empty query string is no query parameter: the fast route answers.
    fast = await _answer(app, api_tokens["admin"], "GET", f"/users/{kept}/profile?")
    assert fast == await _answer(
        reference_app, api_tokens["admin"], "GET", f"/users/{kept}/profile"
    )


@pytest.mark.parametrize(
    ("method", "path", "query", "taken"),
    [
        ("GET", "/api/v1/users/01J00000000000000000000000/profile", b"", True),
        ("GET", "/api/v1/users/71J00000000000000000000000/profile", b"", True),
        ("GET", "/api/v1/users/81J00000000000000000000000/profile", b"", False),
        ("GET", "/api/v1/users/01j00000000000000000000000/profile", b"", False),
        ("GET", "/api/v1/users/01J0000000000000000000000/profile", b"", False),
        ("GET", "/api/v1/users/01J000000000000000000000000/profile", b"", False),
        ("GET", "/api/v1/users/01J0000000000000000000000I/profile", b"", False),
        ("GET", "/api/v1/users/01J00000000000000000000000/profile", b"a=1", False),
        ("HEAD", "/api/v1/users/01J00000000000000000000000/profile", b"", False),
        ("POST", "/api/v1/users/01J00000000000000000000000/profile", b"", False),
        ("GET", "/api/v1/users/01J00000000000000000000000", b"", False),
        ("GET", "/api/v1/users/01J00000000000000000000000/history", b"", False),
    ],
)
def test_the_fast_route_takes_only_well_formed_plain_gets(
    method: str, path: str, query: bytes, taken: bool
) -> None:
    """``GET``, no query string, a ULID id: anything else is FastAPI's."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [],
    }
    match, child = FastProfileRoute().matches(scope)
    assert (match is Match.FULL) is taken
    assert match in (Match.FULL, Match.NONE)
    if taken:
        assert child["path_params"] == {"id": path.split("/")[4]}


async def test_a_row_that_cannot_be_read_is_a_500_from_both_paths(
    app: Starlette,
    reference_app: Starlette,
    api_tokens: dict[str, str],
    directory: Directory,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected failure of the fast route is the API's: 500
    ``internal`` with a generic detail, the traceback logged, as FastAPI
    answers it. SQLite stores what a writer outside the server wrote, JSON
    it cannot decode included; PostgreSQL refuses such a value."""
    user_id = await directory.user("corrupt")
    corrupt = text("UPDATE users SET custom_data = :bad WHERE id = :id")
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="invalid input syntax for type json"):
            async with engine.begin() as connection:
                await connection.execute(corrupt, {"bad": "{not json", "id": user_id})
        return
    async with engine.begin() as connection:
        await connection.execute(corrupt, {"bad": "{not json", "id": user_id})
    answers = []
    for application in (app, reference_app):
        caplog.clear()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application, raise_app_exceptions=False),
            base_url="http://testserver/api/v1",
            headers={"Authorization": f"Bearer {api_tokens['admin']}", "X-Request-Id": "r1"},
        ) as client:
            with caplog.at_level(logging.ERROR, logger="idstore.errors"):
                response = await client.get(f"/users/{user_id}/profile")
        body = assert_problem(response, 500, "internal", "internal server error")
        assert "not json" not in response.text
        logged = [r for r in caplog.records if r.name == "idstore.errors"]
        assert logged
        assert logged[0].exc_info is not None
        answers.append(body)
    assert answers[0] == answers[1]
