"""Errors are RFC 7644 §3.12 bodies with the right status and scimType; auth is
enforced (RFC 7644 §2)."""

from __future__ import annotations

import json

import httpx

from .helpers import PRODUCT, USER_SCHEMA, assert_error, create_user, patch_body, user_body


async def test_missing_or_invalid_token_is_401_with_a_challenge(
    scim: httpx.AsyncClient,
) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer idst_x_y"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = await scim.get("/Users", headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_read_scope_cannot_write(
    scim: httpx.AsyncClient, tokens_by_scope: dict[str, str]
) -> None:
    reader = {"Authorization": f"Bearer {tokens_by_scope['scim:read']}"}
    assert (await scim.get("/Users", headers=reader)).status_code == 200
    response = await scim.post("/Users", json=user_body("nope"), headers=reader)
    assert_error(response, 403)
    assert "insufficient_scope" in response.headers["www-authenticate"]
    assert (await scim.get("/Users")).json()["totalResults"] == 0


async def test_malformed_json_is_400_invalid_syntax(scim: httpx.AsyncClient) -> None:
    for raw in (b"{", b"[]", b"", b"\xff\xfe"):
        response = await scim.post("/Users", content=raw)
        assert_error(response, 400, "invalidSyntax")


async def test_wrong_media_type_is_415(scim: httpx.AsyncClient) -> None:
    response = await scim.post(
        "/Users",
        content=b"userName=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 415)


async def test_wrong_method_is_405_and_unknown_path_404(scim: httpx.AsyncClient) -> None:
    assert_error(await scim.put("/Users"), 405)
    assert_error(await scim.get("/Nothing"), 404)


async def test_too_large_body_is_413(scim: httpx.AsyncClient) -> None:
    huge = user_body("big", displayName="x" * 1_100_000)
    assert_error(await scim.post("/Users", json=huge), 413, "tooLarge")


async def test_invalid_values_are_400(scim: httpx.AsyncClient) -> None:
    cases = [
        user_body("a", emails=[{"value": "not-an-email"}]),
        user_body("b", active="perhaps"),
        {"userName": "no-schemas"},
        user_body(
            "c",
            emails=[
                {"value": "a@b.example", "primary": True},
                {"value": "c@d.example", "primary": True},
            ],
        ),
    ]
    for payload in cases:
        response = await scim.post("/Users", json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["scimType"] in {"invalidValue", "invalidSyntax"}, response.text
    assert (await scim.get("/Users")).json()["totalResults"] == 0


async def test_me_without_a_bound_user_is_501(scim: httpx.AsyncClient) -> None:
    assert_error(await scim.get("/Me"), 501)


async def test_me_aliases_the_bound_user(scim: httpx.AsyncClient, engine: object) -> None:
    """A token bound to a user reads and patches that user through /Me."""
    from identity_store import tokens
    from identity_store.database import create_session_factory

    user = await create_user(scim, "self")
    async with create_session_factory(engine)() as session:  # type: ignore[arg-type]
        _, secret = await tokens.create_token(session, "self", ["scim:write"], user_id=user["id"])
        await session.commit()
    me = {"Authorization": f"Bearer {secret}"}
    read = await scim.get("/Me", headers=me)
    assert read.status_code == 200
    assert read.json()["id"] == user["id"]
    patched = await scim.patch(
        "/Me", headers=me, json=patch_body({"op": "replace", "path": "nickName", "value": "Me"})
    )
    assert patched.json()["nickName"] == "Me"


async def test_case_insensitive_resource_paths(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "case")
    assert (await scim.get(f"/users/{user['id']}")).json()["id"] == user["id"]
    assert (await scim.get("/GROUPS")).status_code == 200


async def test_a_revoked_token_is_refused_once_the_cache_expires(
    settings: object, engine: object, tokens_by_scope: dict[str, str]
) -> None:
    """Verified tokens are cached for IDSTORE_TOKEN_CACHE_SECONDS; a revocation
    is seen when the entry expires (0 here: at once)."""
    from identity_store import tokens
    from identity_store.settings import Settings
    from scim_server.app import create_app

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"token_cache_seconds": 0}))
    headers = {"Authorization": f"Bearer {tokens_by_scope['scim:read']}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t/scim/v2"
        ) as client,
    ):
        assert (await client.get("/Users", headers=headers)).status_code == 200
        await tokens.revoke_token(settings, "test-scim:read")
        assert_error(await client.get("/Users", headers=headers), 401)


async def test_a_verified_token_is_not_looked_up_again_within_the_cache_time(
    settings: object, engine: object, tokens_by_scope: dict[str, str]
) -> None:
    """Within IDSTORE_TOKEN_CACHE_SECONDS the server trusts what it verified."""
    from identity_store import tokens
    from identity_store.settings import Settings
    from scim_server.app import create_app

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"token_cache_seconds": 300}))
    headers = {"Authorization": f"Bearer {tokens_by_scope['scim:read']}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t/scim/v2"
        ) as client,
    ):
        assert (await client.get("/Users", headers=headers)).status_code == 200
        await tokens.revoke_token(settings, "test-scim:read")
        assert (await client.get("/Users", headers=headers)).status_code == 200
        other = {"Authorization": f"Bearer {tokens_by_scope['scim:read']}x"}
        assert_error(await client.get("/Users", headers=other), 401)


async def test_json_beyond_the_fast_parser_is_still_read_and_written(
    scim: httpx.AsyncClient,
) -> None:
    """Integers beyond 64 bits (which orjson cannot write) go through the
    standard library; a surrogate pair escape is one character, a lone one
    is refused with 400, never a 500."""
    big = 2**70
    body = json.dumps(
        {
            "schemas": [USER_SCHEMA, PRODUCT],
            "userName": "big@example.com",
            PRODUCT: {"customData": {"n": big}},
        }
    )
    response = await scim.post(
        "/Users", content=body, headers={"content-type": "application/scim+json"}
    )
    assert response.status_code == 201, response.text
    fetched = await scim.get(f"/Users/{response.json()['id']}")
    assert fetched.json()[PRODUCT]["customData"] == {"n": big}

    def with_escape(escape: str) -> str:
        """A body whose userName holds ``escape`` as written (JSON escapes)."""
        return json.dumps({"schemas": [USER_SCHEMA], "userName": "ESC@x.org"}).replace(
            "ESC", escape
        )

    pair = with_escape("\\ud83d\\ude00")
    response = await scim.post(
        "/Users", content=pair, headers={"content-type": "application/scim+json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["userName"] == "\U0001f600@x.org"

    for escape in ("\\ud800", "\\uDC00x", "\\ude00\\ud83d"):
        lone = with_escape(escape)
        response = await scim.post(
            "/Users", content=lone, headers={"content-type": "application/scim+json"}
        )
        assert_error(response, 400, "invalidSyntax")
