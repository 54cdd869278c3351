"""``GET /api/v1/userinfo`` over HTTP, on both databases, with the server
wired as ``idstore serve`` wires it (:func:`idstore.asgi.server_app`): end
users' access tokens signed by the Auth0 emulator's keys (RSA keys the
emulator generates, served at its ``/.well-known/jwks.json``), idstore API
tokens bound to a user, each refusal, and the JWKS client's limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import tokens
from identity_store.database import create_session_factory
from identity_store.models import User
from identity_store.settings import Settings
from identity_sync.jwks import MAX_JWKS_BYTES, JwksClient, JwksUnavailable
from idstore.asgi import server_app
from tests.emulators.auth0 import JWKS_PATH, Auth0Emulator, SigningKey

from .conftest import PRODUCT, USER, Directory, assert_problem
from .described import assert_described

AUDIENCE = "https://api.idstore.example/"
ALL_PROPERTIES = (
    "userName",
    "externalId",
    "authUserId",
    "userGroup",
    "userType",
    "customData",
    "lifecycle",
    "blocked",
    "expirationDate",
    "roles",
    "groups",
    "permissions",
    "providers",
    "createdAt",
    "lastLoggedInTime",
)

Client = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def userinfo(
    settings: Settings, engine: AsyncEngine, auth0: Auth0Emulator
) -> AsyncIterator[Client]:
    """``await userinfo(**settings)``: a client of ``/api/v1`` of a server
    wired to the emulator's tenant, each with its own JWKS client."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            fields: dict[str, Any] = {
                "DATABASE_URL": settings.database_url,
                **auth0.settings_fields(),
                "userinfo_audience": AUDIENCE,
                "userinfo_jwks_min_refresh_seconds": 0,
                **overrides,
            }
            app = server_app(Settings(**fields))
            await stack.enter_async_context(app.router.lifespan_context(app))
            return await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://testserver/api/v1",
                )
            )

        yield make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(
    directory: Directory, engine: AsyncEngine, name: str, *, active: bool = True, **product: Any
) -> tuple[str, str]:
    """A user made over SCIM, given an Auth0 account id as the sync would;
    its id and that Auth0 id."""
    body = {
        "schemas": [USER, PRODUCT],
        "userName": name,
        "active": active,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": f"{name}@example.com", "primary": True}],
        "phoneNumbers": [{"value": "+44 20 7946 0958"}],
        "locale": "en-GB",
        "timezone": "Europe/London",
        PRODUCT: {"idpUsername": name, "idpCloudUsername": f"{name}@corp", **product},
    }
    response = await directory.scim.post("/Users", json=body)
    assert response.status_code == 201, response.text
    user_id = str(response.json()["id"])
    auth_id = f"auth0|{user_id}"
    async with engine.begin() as connection:
        await connection.execute(
            update(User).where(User.id == user_id).values(auth_user_id=auth_id)
        )
    return user_id, auth_id


async def test_an_auth0_token_answers_the_user_s_claims_and_properties(
    userinfo: Client,
    directory: Directory,
    engine: AsyncEngine,
    auth0: Auth0Emulator,
    api: httpx.AsyncClient,
) -> None:
    """OIDC claims of the user (``sub`` its id), and each configured
    property, ``permissions`` its effective permissions held everywhere."""
    user_id, auth_id = await make_user(
        directory, engine, "ada", customData={"team": "engines"}, userGroup=None
    )
    group = await directory.group("Engineers", [user_id])
    role = {"roleId": "reader", "name": "Reader", "permissions": ["doc.read", "code.read"]}
    assert (await api.post("/roles", json=role)).status_code == 201
    assert (await api.put(f"/groups/{group}/roles", json={"roles": ["reader"]})).status_code == 200
    client = await userinfo(userinfo_additional_properties=ALL_PROPERTIES)

    response = await client.get(
        "/userinfo", headers=bearer(auth0.access_token(auth_id, audience=AUDIENCE))
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert_described(body, "UserInfo")
    created = body.pop("createdAt")
    updated = body.pop("updated_at")
    assert (type(updated), created[-1]) == (int, "Z")
    assert body == {
        "sub": user_id,
        "name": "Ada Lovelace",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "preferred_username": "ada",
        "email": "ada@example.com",
        "email_verified": False,
        "phone_number": "+442079460958",
        "phone_number_verified": False,
        "zoneinfo": "Europe/London",
        "locale": "en-GB",
        "userName": "ada",
        "authUserId": auth_id,
        "userType": "PERSON",
        "customData": {"team": "engines"},
        "lifecycle": "ACTIVE",
        "blocked": False,
        "roles": ["reader"],
        "groups": [{"id": group, "name": "Engineers"}],
        "permissions": ["code.read", "doc.read"],
        "providers": [],
    }


async def test_the_id_key_and_an_audience_list(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """With ``IDSTORE_USERINFO_ID_KEY=userId`` the user's id is under
    ``userId`` and ``sub`` is the token's subject; an ``aud`` list holding
    the audience is accepted (Auth0 adds its own /userinfo to it)."""
    user_id, auth_id = await make_user(directory, engine, "grace")
    client = await userinfo(userinfo_id_key="userId")
    token = auth0.access_token(auth_id, audience=[AUDIENCE, f"{auth0.url}/userinfo"])
    body = (await client.get("/userinfo", headers=bearer(token))).json()
    assert (body["sub"], body["userId"]) == (auth_id, user_id)


async def test_an_idstore_token_bound_to_a_user(
    userinfo: Client, directory: Directory, engine: AsyncEngine, api_tokens: dict[str, str]
) -> None:
    """Any scope; ``sub`` is the user's id. A token bound to no user is 403;
    a made-up idstore token, or one whose user was deleted, 401."""
    user_id, _ = await make_user(directory, engine, "lin")
    async with create_session_factory(engine)() as session:
        _, own = await tokens.create_token(session, "lin-own", ["authz:check"], user_id=user_id)
        await session.commit()
    client = await userinfo()
    body = (await client.get("/userinfo", headers=bearer(own))).json()
    assert (body["sub"], body["preferred_username"]) == (user_id, "lin")
    refused = await client.get("/userinfo", headers=bearer(api_tokens["admin"]))
    assert_problem(refused, 403, "not-a-user-token")
    fake = f"idst_{user_id}_{'x' * 43}"
    assert_problem(await client.get("/userinfo", headers=bearer(fake)), 401, "unauthorized")
    assert (await directory.scim.delete(f"/Users/{user_id}")).status_code == 204
    gone = await client.get("/userinfo", headers=bearer(own))
    assert_problem(gone, 401, "unauthorized", "the token's user does not exist any more")


def _b64(data: bytes | dict[str, Any]) -> str:
    raw = orjson.dumps(data) if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(header)}.{_b64(claims)}."


def hs256_with_public_key(auth0: Auth0Emulator, claims: dict[str, Any]) -> str:
    """Key confusion: HS256 with the tenant's public key (PEM) as the secret."""
    pem = auth0.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': auth0.signing_key.kid})}.{_b64(claims)}"
    signature = hmac.new(pem, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(signature)}"


def claims_of(auth0: Auth0Emulator, sub: str) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": f"{auth0.url}/", "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 600}


REFUSED: list[tuple[str, Callable[[Auth0Emulator, str], str], str]] = [
    (
        "expired",
        lambda a, s: a.access_token(s, audience=AUDIENCE, lifetime=-120),
        "the token has expired",
    ),
    (
        "not yet valid",
        lambda a, s: a.access_token(
            s, audience=AUDIENCE, nbf=int(datetime.now(UTC).timestamp()) + 600
        ),
        "the token is not valid yet",
    ),
    (
        "issued in the future",
        lambda a, s: a.access_token(
            s, audience=AUDIENCE, iat=int(datetime.now(UTC).timestamp()) + 600
        ),
        "the token is not valid yet",
    ),
    (
        "forged signature",
        lambda a, s: a.access_token(
            s, audience=AUDIENCE, key=SigningKey(a.signing_key.kid, FORGER.private_key, b"")
        ),
        "the token's signature does not verify",
    ),
    (
        "foreign issuer",
        lambda a, s: a.access_token(s, audience=AUDIENCE, iss="https://evil.example/"),
        "the token is not issued by the configured tenant",
    ),
    (
        "wrong audience",
        lambda a, s: a.access_token(s, audience="https://other-api.example/"),
        "the token is not issued for this API (aud)",
    ),
    (
        "no audience",
        lambda a, s: a.access_token(s, audience=AUDIENCE, aud=None),
        "the token has no 'aud' claim",
    ),
    (
        "no expiry",
        lambda a, s: a.access_token(s, audience=AUDIENCE, exp=None),
        "the token has no 'exp' claim",
    ),
    (
        "a subject that is not a string",
        lambda a, s: a.access_token(s, audience=AUDIENCE, sub=12345),
        "the token is not valid",
    ),
    (
        "a subject with a control character",
        lambda a, s: a.access_token(s + "\x00", audience=AUDIENCE),
        "the token's subject is not a user id",
    ),
    (
        "alg none",
        lambda a, s: unsigned({"alg": "none", "kid": a.signing_key.kid}, claims_of(a, s)),
        "the token's algorithm 'none' is not accepted (RS256)",
    ),
    (
        "HS256 with the public key",
        lambda a, s: hs256_with_public_key(a, claims_of(a, s)),
        "the token's algorithm 'HS256' is not accepted (RS256)",
    ),
    (
        "RS512",
        lambda a, s: a.access_token(s, audience=AUDIENCE, headers={"alg": "RS512"}),
        "the token's algorithm 'RS512' is not accepted (RS256)",
    ),
    (
        "no key id",
        lambda a, s: unsigned({"alg": "RS256"}, claims_of(a, s)) + "c2ln",
        "the token's header names no key id",
    ),
    (
        "an unknown key id",
        lambda a, s: a.access_token(s, audience=AUDIENCE, headers={"kid": "no-such-key"}),
        "the token is signed with a key the issuer does not list",
    ),
    ("garbage", lambda a, s: "garbage", "the token is not a JSON Web Token"),
    ("three garbage parts", lambda a, s: "a.b.c", "the token's header cannot be read"),
    (
        "a header that is not JSON",
        lambda a, s: f"{_b64(b'{not json')}.{_b64(b'{}')}.c2ln",
        "the token's header cannot be read",
    ),
    (
        "a header nested 2,000 deep",
        lambda a, s: f"{_b64(b'[' * 2000 + b']' * 2000)}.{_b64(b'{}')}.c2ln",
        "the token's header cannot be read",
    ),
    (
        "a huge token",
        lambda a, s: "a." + "b" * 100_000 + ".c",
        "the token is longer than 8,192 characters",
    ),
]

FORGER = SigningKey.generate("forger")


async def test_tokens_that_are_refused(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """Each of :data:`REFUSED`: 401 ``unauthorized`` with
    ``error="invalid_token"``, naming why."""
    _, auth_id = await make_user(directory, engine, "refused")
    client = await userinfo()
    good = auth0.access_token(auth_id, audience=AUDIENCE)
    assert (await client.get("/userinfo", headers=bearer(good))).status_code == 200
    for case, make, detail in REFUSED:
        response = await client.get("/userinfo", headers=bearer(make(auth0, auth_id)))
        assert response.status_code == 401, (case, response.text)
        assert_problem(response, 401, "unauthorized", detail)
        challenge = response.headers["www-authenticate"]
        assert challenge == 'Bearer realm="idstore", error="invalid_token"', case


async def test_users_the_token_cannot_speak_for(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """No user with the subject: 401. A user suspended, blocked or past its
    expiration date: 403 ``user-not-active``. Within the leeway an expired
    token still passes; no bearer at all is 401 without an error code."""
    client = await userinfo()
    unknown = auth0.access_token("auth0|nobody", audience=AUDIENCE)
    refused = await client.get("/userinfo", headers=bearer(unknown))
    assert_problem(refused, 401, "unauthorized", "the token's subject is no user of this store")
    _, suspended = await make_user(directory, engine, "suspended", active=False)
    _, blocked = await make_user(directory, engine, "blocked", blocked=True)
    expired_id, expired = await make_user(directory, engine, "expired")
    async with engine.begin() as connection:
        past = datetime.now(UTC) - timedelta(minutes=5)
        await connection.execute(
            update(User).where(User.id == expired_id).values(expiration_date=past)
        )
    for auth_id, why in (
        (suspended, "the user is SUSPENDED"),
        (blocked, "the user is SUSPENDED"),
        (expired, "the user's expirationDate has passed"),
    ):
        response = await client.get(
            "/userinfo", headers=bearer(auth0.access_token(auth_id, audience=AUDIENCE))
        )
        assert_problem(response, 403, "user-not-active", f"{why}: it may not use its token now")
    _, fine = await make_user(directory, engine, "fine")
    late = auth0.access_token(fine, audience=AUDIENCE, lifetime=-10)  # leeway 30 s
    assert (await client.get("/userinfo", headers=bearer(late))).status_code == 200
    anonymous = await client.get("/userinfo")
    assert_problem(anonymous, 401, "unauthorized", "a bearer token is required")
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="idstore"'
    query = await client.get("/userinfo?schema=openid", headers=bearer(late))
    assert_problem(query, 400, "invalid-request")


async def test_without_an_audience_only_idstore_tokens_are_taken(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """No ``IDSTORE_USERINFO_AUDIENCE``: an Auth0 token is 401, and the
    tenant's keys are never fetched."""
    _, auth_id = await make_user(directory, engine, "plain")
    client = await userinfo(userinfo_audience=None)
    token = auth0.access_token(auth_id, audience=AUDIENCE)
    response = await client.get("/userinfo", headers=bearer(token))
    assert_problem(
        response,
        401,
        "unauthorized",
        "only idstore API tokens are accepted here: no Auth0 audience is configured",
    )
    assert auth0.seen(f"GET {JWKS_PATH}") == []


async def test_a_rotated_key_is_fetched_on_its_first_token(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """The keys are fetched once for many tokens; a token signed with a new
    key makes one more fetch, and both keys verify afterwards."""
    _, auth_id = await make_user(directory, engine, "rotated")
    client = await userinfo()
    old = auth0.access_token(auth_id, audience=AUDIENCE)
    for _ in range(3):
        assert (await client.get("/userinfo", headers=bearer(old))).status_code == 200
    assert len(auth0.seen(f"GET {JWKS_PATH}")) == 1
    new_key = auth0.rotate_signing_key()
    new = auth0.access_token(auth_id, audience=AUDIENCE, key=new_key)
    assert (await client.get("/userinfo", headers=bearer(new))).status_code == 200
    assert (await client.get("/userinfo", headers=bearer(old))).status_code == 200
    assert len(auth0.seen(f"GET {JWKS_PATH}")) == 2


async def test_made_up_key_ids_cannot_hammer_the_tenant(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """Fifty tokens with random key ids, twenty of them at once on a cold
    server: one fetch in all (one in flight at a time, then none before
    ``userinfo_jwks_min_refresh_seconds``); every one is 401."""
    _, auth_id = await make_user(directory, engine, "flood")
    client = await userinfo(userinfo_jwks_min_refresh_seconds=3600)

    async def made_up(i: int) -> int:
        token = auth0.access_token(auth_id, audience=AUDIENCE, headers={"kid": f"made-up-{i}"})
        return (await client.get("/userinfo", headers=bearer(token))).status_code

    assert await asyncio.gather(*(made_up(i) for i in range(20))) == [401] * 20
    assert [await made_up(i) for i in range(20, 50)] == [401] * 30
    assert len(auth0.seen(f"GET {JWKS_PATH}")) == 1
    good = auth0.access_token(auth_id, audience=AUDIENCE)
    assert (await client.get("/userinfo", headers=bearer(good))).status_code == 200


async def test_a_tenant_whose_keys_cannot_be_fetched(
    userinfo: Client, directory: Directory, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """Keys never fetched and the JWKS down: 503 ``keys-unavailable`` with
    ``Retry-After`` (the token may be good), and not asked again before the
    interval; back up: 200."""
    _, auth_id = await make_user(directory, engine, "outage")
    token = auth0.access_token(auth_id, audience=AUDIENCE)
    auth0.outage = 503
    waiting = await userinfo(userinfo_jwks_min_refresh_seconds=3600)
    for _ in range(3):
        response = await waiting.get("/userinfo", headers=bearer(token))
        assert_problem(response, 503, "keys-unavailable")
        assert response.headers["retry-after"] == "3600"  # the refresh interval
    assert len(auth0.seen(f"GET {JWKS_PATH}")) == 1
    eager = await userinfo()
    assert_problem(await eager.get("/userinfo", headers=bearer(token)), 503, "keys-unavailable")
    auth0.outage = None
    assert (await eager.get("/userinfo", headers=bearer(token))).status_code == 200


# -- The JWKS client on its own, with a clock the test moves ---------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def jwks(auth0: Auth0Emulator) -> AsyncIterator[tuple[JwksClient, Clock]]:
    clock = Clock()
    settings = Settings(
        **auth0.settings_fields(),
        userinfo_jwks_cache_seconds=600,
        userinfo_jwks_min_refresh_seconds=30,
    )
    client = JwksClient(settings, monotonic=clock)
    yield client, clock
    await client.aclose()


async def test_held_keys_outlive_a_failed_refresh(
    jwks: tuple[JwksClient, Clock], auth0: Auth0Emulator
) -> None:
    """After the cache time the keys are fetched again; if that fails the
    held keys still answer, and the next try waits for the interval."""
    client, clock = jwks
    kid = auth0.signing_key.kid
    assert (await client.signing_key(kid) or {})["kid"] == kid
    clock.now += 601
    auth0.outage = 503
    assert (await client.signing_key(kid) or {})["kid"] == kid  # stale, kept
    assert client.fetches == 2
    clock.now += 10
    assert await client.signing_key(kid) is not None
    assert client.fetches == 2  # within the interval: not asked again
    auth0.outage = None
    clock.now += 30
    assert await client.signing_key("unknown") is None
    assert client.fetches == 3


HOSTILE: list[tuple[str, bytes, int, str]] = [
    ("not JSON", b"<html>busy</html>", 200, "the key set is not JSON"),
    ("no keys list", b'{"keys": {}}', 200, 'the key set has no "keys" list'),
    ("a list, not an object", b"[]", 200, 'the key set has no "keys" list'),
    (
        "too many keys",
        orjson.dumps({"keys": [{"kid": str(i)} for i in range(51)]}),
        200,
        "the key set lists 51 keys; at most 50 read",
    ),
    (
        "larger than the limit",
        b'{"keys": [], "pad": "' + b"x" * MAX_JWKS_BYTES + b'"}',
        200,
        "the JWKS's answer is",
    ),
    ("a 500", b'{"error": "boom"}', 500, "the tenant answered 500"),
    ("a redirect", b"", 302, "the tenant answered 302"),
]


@pytest.mark.parametrize(("case", "body", "status", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_a_hostile_key_set_is_refused_whole(
    jwks: tuple[JwksClient, Clock],
    auth0: Auth0Emulator,
    case: str,
    body: bytes,
    status: int,
    error: str,
) -> None:
    client, _ = jwks
    auth0.answer_next(
        status=status,
        body=body,
        only=f"GET {JWKS_PATH}",
        headers={"location": "http://127.0.0.1:1/"},
    )
    with pytest.raises(JwksUnavailable) as caught:
        await client.signing_key("any")
    assert str(caught.value).startswith(error)


async def test_a_tenant_slower_than_the_timeout(auth0: Auth0Emulator) -> None:
    """The JWKS is read with the Auth0 client's timeout: a tenant that does
    not answer in time is unavailable, not waited for."""
    client = JwksClient(Settings(**auth0.settings_fields(), auth0_timeout_seconds=0.2))
    auth0.delay = 1.0
    try:
        with pytest.raises(JwksUnavailable, match="Timeout"):
            await client.signing_key("any")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"userinfo_additional_properties": "userGroup,permission"}, "unknown ['permission']"),
        ({"userinfo_id_key": "email"}, "'email' is a standard OpenID Connect claim"),
        ({"userinfo_id_key": "user id"}, "'user id' is not a claim name"),
        ({"userinfo_id_key": "x" * 65}, "is not a claim name"),
        (
            {"userinfo_id_key": "userGroup", "userinfo_additional_properties": "userGroup"},
            "is also one of IDSTORE_USERINFO_ADDITIONAL_PROPERTIES",
        ),
        (
            {"userinfo_audience": "https://api/", "auth0_base_url": None},
            "needs IDSTORE_AUTH0_BASE_URL",
        ),
        ({"userinfo_leeway_seconds": 3600}, "less than or equal to 300"),
    ],
)
def test_settings_that_stop_the_server_at_start(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], error: str
) -> None:
    """Read from the environment as ``idstore serve`` reads them."""
    monkeypatch.setenv("IDSTORE_AUTH0_BASE_URL", "https://tenant.example")
    for name, value in fields.items():
        variable = f"IDSTORE_{name.upper()}"
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, str(value))
    with pytest.raises(ValueError, match=re.escape(error)):
        Settings()


async def test_only_rs256_signing_keys_with_an_id_are_kept(
    jwks: tuple[JwksClient, Clock], auth0: Auth0Emulator
) -> None:
    """Keys of another type, use or algorithm, or without an id, are skipped."""
    client, _ = jwks
    good = auth0.signing_key.jwk()
    others = [
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "ps", "alg": "PS256"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"},
        {**{k: v for k, v in good.items() if k != "kid"}},
        {**good, "kid": "x" * 300},
        "not a key",
    ]
    auth0.answer_next(body=json.dumps({"keys": [*others, good]}).encode(), only=f"GET {JWKS_PATH}")
    assert await client.signing_key(good["kid"]) is not None
    for kid in ("enc", "ps", "ec"):
        assert await client.signing_key(kid) is None
