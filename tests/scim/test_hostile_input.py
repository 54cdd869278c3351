"""Hostile input is a 4xx SCIM Error, never a 500 (issue 10): NUL
characters, raw surrogates, deep nesting, huge integers and indexes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from identity_store.settings import Settings
from scim_server.app import create_app

from .helpers import (
    BULK_REQUEST,
    GROUP_SCHEMA,
    PRODUCT,
    SEARCH_SCHEMA,
    assert_error,
    create_group,
    create_user,
    patch_body,
    user_body,
)

NUL = "a\u0000b"


async def _total(scim: httpx.AsyncClient, path: str) -> int:
    return int((await scim.get(path)).json()["totalResults"])


@pytest.mark.parametrize(
    "payload",
    [
        user_body(NUL),
        user_body("u1", displayName=NUL),
        user_body("u2", externalId=NUL),
        user_body("u3", emails=[{"value": "x@example.com", "type": NUL}]),
        user_body("u4", schemas=None)
        | {"schemas": [user_body("x")["schemas"][0], PRODUCT]}
        | {PRODUCT: {"tags": ["ok", NUL]}},
        user_body("u5")
        | {"schemas": [user_body("x")["schemas"][0], PRODUCT]}
        | {PRODUCT: {"customData": {NUL: 1}}},
        user_body("u6")
        | {"schemas": [user_body("x")["schemas"][0], PRODUCT]}
        | {PRODUCT: {"customData": {"k": [{"deep": NUL}]}}},
    ],
    ids=[
        "userName",
        "displayName",
        "externalId",
        "email type",
        "tags",
        "customData key",
        "customData value",
    ],
)
async def test_a_nul_character_in_a_new_user_is_400_invalid_value(
    scim: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    """A NUL anywhere in a user's strings is refused, and nothing is stored."""
    assert_error(await scim.post("/Users", json=payload), 400, "invalidValue")
    assert await _total(scim, "/Users") == 0


async def test_a_nul_character_in_groups_and_patches_is_400_invalid_value(
    scim: httpx.AsyncClient,
) -> None:
    """Group names, member values and PATCH values with a NUL are refused."""
    user = await create_user(scim, "nul-target")
    group = await create_group(scim, "nul-group")
    cases = [
        ("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": NUL}),
        (
            "POST",
            "/Groups",
            {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"value": NUL}]},
        ),
        (
            "PATCH",
            f"/Groups/{group['id']}",
            patch_body({"op": "add", "path": "members", "value": [{"value": NUL}]}),
        ),
        (
            "PATCH",
            f"/Users/{user['id']}",
            patch_body({"op": "replace", "path": "displayName", "value": NUL}),
        ),
        ("PATCH", f"/Users/{user['id']}", patch_body({"op": "add", "value": {"nickName": NUL}})),
        ("PUT", f"/Users/{user['id']}", user_body("nul-target", title=NUL)),
        ("POST", "/Users/.search", {"schemas": [SEARCH_SCHEMA], "attributes": [NUL]}),
    ]
    for method, path, payload in cases:
        response = await scim.request(method, path, json=payload)
        assert_error(response, 400, "invalidValue")
    stored = (await scim.get(f"/Users/{user['id']}")).json()
    assert stored["meta"]["version"] == user["meta"]["version"]
    assert await _total(scim, "/Groups") == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("resource", ["Users", "Groups"])
async def test_a_nul_character_in_a_path_id_is_400(
    scim: httpx.AsyncClient, method: str, resource: str
) -> None:
    """``GET /Groups/%00`` and the like: no resource can have that id."""
    bodies: dict[str, Any] = {
        "PATCH": patch_body({"op": "replace", "path": "displayName", "value": "x"}),
        "PUT": user_body("x")
        if resource == "Users"
        else {"schemas": [GROUP_SCHEMA], "displayName": "x"},
    }
    body = bodies.get(method)
    response = await scim.request(method, f"/{resource}/%00", json=body)
    assert_error(response, 400, "invalidValue")


async def test_a_nul_character_fails_only_its_bulk_operation(scim: httpx.AsyncClient) -> None:
    """Inside /Bulk the operation with a NUL gets a 400 of its own; the
    others run (RFC 7644 §3.7.3)."""
    request = {
        "schemas": [BULK_REQUEST],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "bad", "data": user_body(NUL)},
            {"method": "POST", "path": "/Users", "bulkId": "good", "data": user_body("fine")},
            {"method": "DELETE", "path": "/Groups/\u0000"},
        ],
    }
    response = await scim.post("/Bulk", json=request)
    assert response.status_code == 200, response.text
    statuses = [(op.get("bulkId"), op["status"]) for op in response.json()["Operations"]]
    assert statuses == [("bad", "400"), ("good", "201"), (None, "400")]
    assert response.json()["Operations"][0]["response"]["scimType"] == "invalidValue"
    assert await _total(scim, "/Users") == 1


async def test_raw_utf8_surrogates_are_400_invalid_syntax(scim: httpx.AsyncClient) -> None:
    """Surrogate code points encoded as UTF-8 bytes are not UTF-8."""
    raw = b'{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"s\xed\xa0\x80"}'
    assert_error(await scim.post("/Users", content=raw), 400, "invalidSyntax")
    assert await _total(scim, "/Users") == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":' * 2000,
        b'{"schemas":[],"a":' + b"[" * 1500 + b"]" * 1500 + b"}",
        b'{"a":' + b'{"b":' * 100 + b"1" + b"}" * 101,
    ],
    ids=["unterminated", "1500 arrays", "101 objects"],
)
async def test_deep_nesting_is_refused_before_parsing(scim: httpx.AsyncClient, raw: bytes) -> None:
    assert_error(await scim.post("/Users", content=raw), 400, "invalidSyntax")


@pytest.fixture
async def shallow(
    settings: Settings, tokens_by_scope: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server that accepts bodies at most 4 levels deep."""
    application = create_app(settings.model_copy(update={"max_json_depth": 4}))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/scim/v2",
            headers={"Authorization": f"Bearer {tokens_by_scope['scim:write']}"},
        ) as client,
    ):
        yield client


async def test_the_depth_limit_is_a_setting_counted_outside_strings(
    shallow: httpx.AsyncClient,
) -> None:
    """``IDSTORE_MAX_JSON_DEPTH``: 4 levels pass, 5 do not; brackets inside
    strings do not count."""
    four = user_body("four", displayName="[[[[{{{{", emails=[{"value": "a@example.com"}])
    four["schemas"] = [*four["schemas"], PRODUCT]
    four[PRODUCT] = {"customData": {"a": [1]}}  # body → PRODUCT → customData → a: 4
    response = await shallow.post("/Users", json=four)
    assert response.status_code == 201, response.text
    five = user_body("five") | {"schemas": [*four["schemas"]], PRODUCT: {"customData": {"a": [[]]}}}
    five[PRODUCT]["customData"]["a"] = [[1]]
    assert_error(await shallow.post("/Users", json=five), 400, "invalidSyntax")


async def test_an_integer_of_5000_digits_is_400(scim: httpx.AsyncClient) -> None:
    raw = json.dumps(user_body("big")).encode()[:-1] + b',"x":' + b"9" * 5000 + b"}"
    assert_error(await scim.post("/Users", content=raw), 400, "invalidSyntax")


async def test_an_if_match_of_5000_digits_is_412(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "etag")
    tag = 'W/"' + "9" * 5000 + '"'
    change = patch_body({"op": "replace", "path": "displayName", "value": "x"})
    for method, body in (("PATCH", change), ("DELETE", None)):
        response = await scim.request(
            method, f"/Users/{user['id']}", json=body, headers={"If-Match": tag}
        )
        assert_error(response, 412)
    response = await scim.get(f"/Users/{user['id']}", headers={"If-None-Match": tag})
    assert response.status_code == 200


@pytest.mark.parametrize("start", ["100000000000000000000", "9" * 5000, "-" + "9" * 30])
async def test_a_huge_start_index_is_an_empty_page_on_every_list(
    scim: httpx.AsyncClient, start: str
) -> None:
    """``startIndex`` beyond any table (and beyond int64) is an empty page,
    or 400 when it is no integer Python reads; never a 500."""
    await create_user(scim, "one")
    await create_group(scim, "grp")
    for path in ("/Users", "/Groups"):
        for extra in ({}, {"filter": "id pr"}, {"sortBy": "meta.created"}):
            response = await scim.get(path, params={"startIndex": start, "count": start, **extra})
            if len(start) > 4000:
                assert_error(response, 400, "invalidValue")
                continue
            assert response.status_code == 200, response.text
            expected = [] if not start.startswith("-") else response.json()["Resources"]
            assert response.json()["Resources"] == expected
            assert response.json()["totalResults"] == 1
    for path in ("/Users/.search", "/Groups/.search", "/.search"):
        if len(start) > 4000:
            raw = json.dumps({"schemas": [SEARCH_SCHEMA]}).encode()[:-1]
            raw += b',"startIndex":' + start.encode() + b"}"
            assert_error(await scim.post(path, content=raw), 400, "invalidSyntax")
            continue
        search = {"schemas": [SEARCH_SCHEMA], "startIndex": int(start), "count": int(start)}
        response = await scim.post(path, json=search)
        assert response.status_code == 200, response.text
        if not start.startswith("-"):
            assert response.json()["Resources"] == []


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _with_product(user_name: str, **product: Any) -> dict[str, Any]:
    body = user_body(user_name)
    body["schemas"] = [*body["schemas"], PRODUCT]
    body[PRODUCT] = product
    return body


@pytest.mark.parametrize(
    "product",
    [
        {"customData": _nested(33)},
        {"customData": {"k": "x" * 70_000}},
        {"expirationDate": "0001-01-01T00:00:00+05:00"},
    ],
    ids=["customData 33 deep", "customData 70 KB", "year 1 with an offset"],
)
async def test_out_of_bounds_values_are_400_at_write(
    scim: httpx.AsyncClient, product: dict[str, Any]
) -> None:
    """Free-form data deeper than 32 levels or larger than 64 KiB, and a
    moment with no UTC equivalent, are refused by create, replace and patch."""
    assert_error(await scim.post("/Users", json=_with_product("w", **product)), 400, "invalidValue")
    user = await create_user(scim, "w2")
    replaced = await scim.put(f"/Users/{user['id']}", json=_with_product("w2", **product))
    assert_error(replaced, 400, "invalidValue")
    ((name, value),) = product.items()
    patched = await scim.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "add", "path": f"{PRODUCT}:{name}", "value": value}),
    )
    assert_error(patched, 400, "invalidValue")
    assert await _total(scim, "/Users") == 1


async def test_free_form_data_at_the_limits_is_stored(scim: httpx.AsyncClient) -> None:
    custom = {"deep": _nested(31), "big": "x" * 60_000}
    response = await scim.post("/Users", json=_with_product("edge", customData=custom))
    assert response.status_code == 201, response.text
    assert response.json()[PRODUCT]["customData"] == custom


async def test_a_stored_deep_document_breaks_no_read(scim: httpx.AsyncClient, engine: Any) -> None:
    """A user stored before the limits with ``customData`` 300 levels deep is
    read, trimmed or not, alone or in a list, with everyone else."""
    from sqlalchemy import update

    from identity_store.models import User

    deep = await create_user(scim, "deep")
    await create_user(scim, "plain")
    async with engine.begin() as connection:
        await connection.execute(
            update(User).where(User.id == deep["id"]).values(custom_data=_nested(300))
        )
    for params in ({}, {"attributes": "userName"}, {"excludedAttributes": "emails"}):
        listed = await scim.get("/Users", params=params)
        assert listed.status_code == 200, listed.text
        assert sorted(r["id"] for r in listed.json()["Resources"]) == sorted(
            [
                deep["id"],
                (await scim.get("/Users", params={"filter": 'userName eq "plain"'})).json()[
                    "Resources"
                ][0]["id"],
            ]
        )
        one = await scim.get(f"/Users/{deep['id']}", params=params)
        assert one.status_code == 200, one.text
        kept = one.json().get(PRODUCT, {}).get("customData")
        assert kept == (None if "attributes" in params else _nested(300))
