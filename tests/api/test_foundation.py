"""The ``/api/v1`` foundation: every error is an RFC 9457 problem (401 and
403 per scope, 404, 405, 413, 415, hostile input, store errors, 500, 503),
the request id is echoed, and the OpenAPI description is complete."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Mount

from identity_store import tokens
from identity_store.database import create_session_factory
from identity_store.errors import (
    ConcurrentUpdateError,
    ConflictError,
    InvalidCursorError,
    NotFoundError,
    StateError,
    UnavailableError,
    ValidationError,
    ValueRefusedError,
)
from identity_store.models import User
from identity_store.settings import Settings
from scim_server.api.problems import describe_problem
from scim_server.app import create_app
from tests.scim.test_outages import _closed_port, _Proxy

from .conftest import Directory, assert_problem

UNKNOWN = "01JZ0000000000000000000000"


@dataclass(frozen=True)
class Upload:
    """A ``multipart/form-data`` body: a CSV file."""

    data: bytes


ROLE = {"roleId": "reader", "name": "Reader", "permissions": ["doc.read"]}
CHECK = {"userId": UNKNOWN, "permission": "doc.read"}

OPERATIONS: list[tuple[str, str, Any]] = [
    ("GET", "/roles", None),
    ("POST", "/roles", ROLE),
    ("GET", "/roles/reader", None),
    ("PUT", "/roles/reader", {"name": "R", "permissions": []}),
    ("DELETE", "/roles/reader", None),
    ("GET", "/bindings", None),
    ("POST", "/bindings", {"subjects": [UNKNOWN], "permissions": ["p"]}),
    ("GET", "/bindings/b1", None),
    ("PUT", "/bindings/b1", {"subjects": [UNKNOWN], "permissions": ["p"]}),
    ("DELETE", "/bindings/b1", None),
    ("GET", f"/groups/{UNKNOWN}/roles", None),
    ("PUT", f"/groups/{UNKNOWN}/roles", {"roles": []}),
    ("GET", f"/users/{UNKNOWN}/roles", None),
    ("PUT", f"/users/{UNKNOWN}/roles", {"roles": []}),
    ("POST", "/authz/check", CHECK),
    ("POST", "/authz/check-batch", {"checks": [CHECK]}),
    ("GET", f"/users/{UNKNOWN}/permissions", None),
    ("GET", "/authz/subjects?permission=doc.read", None),
    ("POST", "/rond/grant/bindings", {"subjects": [UNKNOWN], "permissions": ["p"]}),
    (
        "POST",
        "/rond/grant/bindings/resource/doc",
        {"resourceId": "1", "subjects": [UNKNOWN], "permissions": ["p"]},
    ),
    ("POST", "/rond/revoke/bindings", {"subjects": [UNKNOWN]}),
    ("POST", "/rond/revoke/bindings/resource/doc", {"resourceIds": ["1"]}),
    ("GET", "/rbac/export", None),
    ("GET", "/user-groups", None),
    ("POST", "/user-groups", {"userGroup": "g", "crudSchema": {}}),
    ("GET", "/user-groups/g", None),
    ("PUT", "/user-groups/g", {"crudSchema": {}}),
    ("DELETE", "/user-groups/g", None),
    ("GET", "/users", None),
    ("GET", "/users/count", None),
    ("POST", "/users", {"userGroup": "g", "email": "a@example.com"}),
    ("POST", "/users/with-id", {"id": UNKNOWN, "userGroup": "g", "email": "a@example.com"}),
    ("GET", f"/users/{UNKNOWN}", None),
    ("PATCH", f"/users/{UNKNOWN}", {"givenName": "A"}),
    ("DELETE", f"/users/{UNKNOWN}", None),
    ("POST", f"/users/{UNKNOWN}/state", {"action": "block"}),
    ("POST", f"/users/{UNKNOWN}/restore", None),
    ("POST", "/jobs/bulk-activation", {"ids": [UNKNOWN]}),
    ("POST", "/jobs/bulk-change-password", {"filter": {"userGroup": "staff"}}),
    ("GET", f"/jobs/{UNKNOWN}/tickets", None),
    ("POST", "/users/change-password", {"id": UNKNOWN}),
    ("GET", f"/users/{UNKNOWN}/profile", None),
    ("GET", f"/users/{UNKNOWN}/history", None),
    ("GET", f"/users/{UNKNOWN}/sync", None),
    ("POST", "/outbox/1/retry", None),
    ("GET", "/userinfo", None),
    ("POST", "/users/import", Upload(b"userName\nada@corp.example\n")),
    ("GET", "/jobs", None),
    ("GET", f"/jobs/{UNKNOWN}", None),
    ("GET", f"/jobs/{UNKNOWN}/report.csv", None),
]
"""One request of every operation."""

END_USER = {("GET", "/userinfo")}
"""The operations for the end user's own token (scheme ``userBearer``):
any token bound to a user, whatever its scopes; one bound to none is 403
``not-a-user-token``."""


def _body(body: Any) -> dict[str, Any]:
    """httpx's arguments of an operation's body: JSON, or a file upload."""
    if isinstance(body, Upload):
        return {"files": {"file": ("users.csv", body.data, "text/csv")}}
    return {"json": body}


CHECKS = {
    ("POST", "/authz/check"),
    ("POST", "/authz/check-batch"),
    ("GET", "/users/{id}/permissions"),
    ("GET", "/authz/subjects"),
}
"""The operations an ``authz:check`` token may call."""


def _template(method: str, path: str, spec: dict[str, Any]) -> tuple[str, str]:
    """The operation of the description a concrete request calls."""
    concrete = path.split("?")[0].strip("/").split("/")
    for template in spec["paths"]:
        parts = template.strip("/").split("/")
        if (
            len(parts) == len(concrete)
            and all(t == c or t.startswith("{") for t, c in zip(parts, concrete, strict=True))
            and method.lower() in spec["paths"][template]
        ):
            return method, template
    raise AssertionError(f"no operation for {method} {path}")


async def test_the_table_of_operations_covers_the_whole_description(
    api: httpx.AsyncClient,
) -> None:
    """Each operation the description lists has a row in OPERATIONS (so the
    scope and outage tests below reach every endpoint), and no more."""
    spec = (await api.get("/openapi.json")).json()
    described = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert {_template(m, p, spec) for m, p, _ in OPERATIONS} == described


@pytest.mark.parametrize(
    "header",
    ["", "Bearer ", "Bearer idst_x_y", "Basic dXNlcjpwYXNz", "Bearer idst_01J_" + "x" * 43],
    ids=["none", "empty bearer", "unknown", "basic", "well-formed unknown"],
)
async def test_a_missing_or_unknown_token_is_401_with_a_bearer_challenge(
    api: httpx.AsyncClient, header: str
) -> None:
    """401 ``unauthorized`` with ``WWW-Authenticate: Bearer``, on every operation."""
    for method, path, body in OPERATIONS:
        response = await api.request(method, path, **_body(body), headers={"Authorization": header})
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith('Bearer realm="idstore"')


async def test_an_unauthenticated_request_is_401_before_its_body_is_read(
    api: httpx.AsyncClient,
) -> None:
    """Authentication comes first: a bad token with a malformed body is 401, not 400."""
    response = await api.post(
        "/roles", content=b"[" * 5000, headers={"Authorization": "Bearer nope"}
    )
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize("scope", ["scim:read", "scim:write"])
async def test_scim_tokens_are_403_on_every_operation(as_scope: Any, scope: str) -> None:
    """A SCIM token gets nothing on /api/v1: 403 ``insufficient-scope``, naming the scope needed."""
    client = as_scope(scope)
    for method, path, body in OPERATIONS:
        response = await client.request(method, path, **_body(body))
        if (method, path) in END_USER:
            assert_problem(response, 403, "not-a-user-token")
            continue
        problem = assert_problem(response, 403, "insufficient-scope")
        assert "insufficient_scope" in response.headers["www-authenticate"]
        assert problem["detail"] in (
            "the token lacks the 'admin' scope",
            "the token lacks the 'authz:check' scope",
        )


async def test_an_authz_check_token_may_call_the_checks_only(
    as_scope: Any, api: httpx.AsyncClient
) -> None:
    """``authz:check``: the four check operations answer (200 or 404 for an
    unknown user); every other operation is 403 naming ``admin``."""
    client = as_scope("authz:check")
    spec = (await api.get("/openapi.json")).json()
    for method, path, body in OPERATIONS:
        response = await client.request(method, path, **_body(body))
        if _template(method, path, spec) in CHECKS:
            assert response.status_code in (200, 404), (path, response.text)
            if response.status_code == 404:
                assert_problem(response, 404, "not-found")
        elif (method, path) in END_USER:
            assert_problem(response, 403, "not-a-user-token")
        else:
            assert_problem(response, 403, "insufficient-scope", "the token lacks the 'admin' scope")


async def test_an_authz_check_token_gets_nothing_on_scim(as_scope: Any) -> None:
    """``authz:check`` is no SCIM scope: reads and writes are 403."""
    scim = as_scope("authz:check", "/scim/v2")
    assert (await scim.get("/Users")).status_code == 403
    assert (await scim.get("/Groups")).status_code == 403
    response = await scim.post(
        "/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"},
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "the token lacks the 'scim:write' scope"


async def test_the_request_id_is_echoed_in_the_header_and_the_problem(
    api: httpx.AsyncClient,
) -> None:
    """A sane ``X-Request-Id`` is kept; an insane one replaced; both echoed in the body."""
    response = await api.get("/roles/nothing", headers={"X-Request-Id": "req-42"})
    assert assert_problem(response, 404, "not-found")["requestId"] == "req-42"
    response = await api.get("/roles/nothing", headers={"X-Request-Id": "bad id!"})
    assert assert_problem(response, 404, "not-found")["requestId"] != "bad id!"


async def test_an_unknown_path_is_a_404_problem(api: httpx.AsyncClient) -> None:
    """Routing's 404 is a problem too, distinct from a missing resource."""
    for path in ("/nothing", "/roles/a/b", "/authz"):
        assert_problem(await api.get(path), 404, "no-such-endpoint", "no endpoint at this path")


async def test_a_wrong_method_is_a_405_problem_with_allow(api: httpx.AsyncClient) -> None:
    """405 ``method-not-allowed``, with the methods the path takes in ``Allow``."""
    response = await api.patch("/roles/reader", json={})
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "DELETE, GET, PUT"
    response = await api.delete("/authz/check")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


async def test_a_body_past_the_payload_limit_is_413(api: httpx.AsyncClient) -> None:
    """``IDSTORE_MAX_PAYLOAD_SIZE`` (1 MiB), declared or streamed: 413
    ``too-large``; nothing stored."""
    huge = dict(ROLE, description="x" * 1_100_000)
    assert_problem(await api.post("/roles", json=huge), 413, "too-large")

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 100_000
        yield json.dumps(ROLE).encode()

    response = await api.post(
        "/roles", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "too-large", "the request body exceeds 1048576 bytes")
    assert (await api.get("/roles")).json()["items"] == []


async def test_a_body_that_is_not_json_is_415(api: httpx.AsyncClient) -> None:
    """A form, or no media type at all, is 415 ``unsupported-media-type``."""
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = await api.post("/roles", content=b"roleId=r", headers=headers)
        assert_problem(response, 415, "unsupported-media-type")
    response = await api.post(
        "/roles",
        content=json.dumps(ROLE).encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[1,", b'{"roleId": "r",}', b"\xff\xfe", b'{"a": tru}'],
    ids=["unterminated", "array", "trailing comma", "not utf-8", "bad literal"],
)
async def test_malformed_json_is_a_400_problem(api: httpx.AsyncClient, raw: bytes) -> None:
    """400 ``invalid-body``, never a 500."""
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "invalid-body")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":' * 2000,
        b'{"roleId":"r","name":"n","permissions":' + b"[" * 1500 + b"]" * 1500 + b"}",
        b'{"a":' + b'{"b":' * 64 + b"1" + b"}" * 65,
    ],
    ids=["unterminated", "1500 arrays", "65 objects"],
)
async def test_json_deeper_than_the_limit_is_refused_before_parsing(
    api: httpx.AsyncClient, raw: bytes
) -> None:
    """``IDSTORE_MAX_JSON_DEPTH`` (64): 400 ``invalid-body`` naming the limit."""
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "invalid-body", "the request body nests deeper than 64 levels")


async def test_the_depth_limit_is_the_shared_setting(
    settings: Settings, engine: AsyncEngine, api_tokens: dict[str, str]
) -> None:
    """With ``max_json_depth`` 2, a batch of checks with a resource (3 levels) is refused."""
    application = create_app(settings.model_copy(update={"max_json_depth": 2}))
    check = dict(CHECK, resource={"type": "doc", "id": "1"})
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/api/v1",
            headers={"Authorization": f"Bearer {api_tokens['admin']}"},
        ) as client,
    ):
        assert (await client.post("/authz/check", json=CHECK)).status_code == 200
        response = await client.post("/authz/check-batch", json={"checks": [check]})
        assert_problem(response, 400, "invalid-body", "the request body nests deeper than 2 levels")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (dict(ROLE, name="a\u0000b"), "name"),
        (dict(ROLE, description="a\u0000b"), "description"),
        (dict(ROLE, permissions=["ok", "a\u0000"]), "permissions[1]"),
        (dict(ROLE, **{"x\u0000": 1}), "'x\\x00'"),
    ],
    ids=["name", "description", "permission", "key"],
)
async def test_a_nul_character_anywhere_in_a_body_is_400(
    api: httpx.AsyncClient, body: dict[str, Any], where: str
) -> None:
    """400 ``invalid-value`` naming where the NUL is; nothing stored."""
    response = await api.post("/roles", json=body)
    assert_problem(response, 400, "invalid-value", f"{where} contains a NUL character")
    assert (await api.get("/roles")).json()["items"] == []


async def test_a_nul_character_in_a_path_or_query_is_400(api: httpx.AsyncClient) -> None:
    """Path and query ids refuse control characters: 400 naming the parameter."""
    problem = assert_problem(await api.get("/roles/a%00b"), 400, "invalid-request")
    assert problem["errors"][0]["location"] == ["path", "roleId"]
    response = await api.get("/authz/subjects", params={"permission": "a\u0000b"})
    problem = assert_problem(response, 400, "invalid-request")
    assert problem["errors"][0]["location"] == ["query", "permission"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"roleId":"r","name":"\\ud800","permissions":[]}',
        b'{"roleId":"r","name":"\\udfff x","permissions":[]}',
        b'{"roleId":"r","name":"s\xed\xa0\x80","permissions":[]}',
    ],
    ids=["escaped high", "escaped low", "raw utf-8 surrogate"],
)
async def test_a_lone_surrogate_is_400(api: httpx.AsyncClient, raw: bytes) -> None:
    """Escaped or raw, a lone surrogate is 400 ``invalid-body``; nothing stored."""
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "invalid-body")
    assert (await api.get("/roles")).json()["items"] == []


async def test_a_paired_surrogate_escape_is_a_character(api: httpx.AsyncClient) -> None:
    """``\\ud83d\\ude00`` is one character (😀), accepted."""
    raw = b'{"roleId":"smile","name":"\\ud83d\\ude00","permissions":[]}'
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "\U0001f600"


async def test_twenty_digit_numbers_are_400_not_500(api: httpx.AsyncClient) -> None:
    """A 20-digit number where a string or a page size goes, and a 5,000-digit one anywhere."""
    twenty = "12345678901234567890"
    response = await api.get("/roles", params={"count": twenty})
    assert assert_problem(response, 400, "invalid-request")["errors"][0]["location"] == [
        "query",
        "count",
    ]
    raw = b'{"roleId":' + twenty.encode() + b',"name":"n","permissions":[]}'
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert assert_problem(response, 400, "invalid-request")["errors"][0]["location"] == [
        "body",
        "roleId",
    ]
    raw = b'{"roleId":"r","name":"n","permissions":[],"x":' + b"9" * 5000 + b"}"
    response = await api.post("/roles", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "invalid-body")


async def test_ten_thousand_element_arrays_are_400(api: httpx.AsyncClient) -> None:
    """Past ``IDSTORE_RBAC_MAX_LIST`` (1,000) a list is 400 naming it; past
    ``IDSTORE_AUTHZ_MAX_BATCH`` (1,000) a batch is 400 with its location."""
    many = [f"p{i}" for i in range(10_000)]
    response = await api.post("/roles", json=dict(ROLE, permissions=many))
    assert_problem(response, 400, "invalid-request", "permissions has 10000 entries; at most 1000")
    assert (await api.get("/roles")).json()["items"] == []
    response = await api.post("/authz/check-batch", json={"checks": [CHECK] * 10_000})
    problem = assert_problem(
        response,
        400,
        "invalid-request",
        "body.checks: List should have at most 1000 items, not 10000",
    )
    assert problem["errors"] == [
        {
            "location": ["body", "checks"],
            "detail": "List should have at most 1000 items, not 10000",
            "type": "too_long",
        }
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "location"),
    [
        ("POST", "/roles", dict(ROLE, roleId="r" * 129), ["body", "roleId"]),
        ("POST", "/roles", dict(ROLE, name="n" * 256), ["body", "name"]),
        ("POST", "/roles", dict(ROLE, permissions=["p" * 256]), ["body", "permissions", 0]),
        ("GET", "/roles/" + "r" * 129, None, ["path", "roleId"]),
        ("GET", "/bindings/" + "b" * 129, None, ["path", "bindingId"]),
        ("POST", "/bindings", {"bindingId": "b" * 129}, ["body", "bindingId"]),
        (
            "POST",
            "/bindings",
            {"resource": {"resourceType": "t" * 129, "resourceId": "1"}},
            ["body", "resource", "resourceType"],
        ),
        (
            "POST",
            "/authz/check",
            dict(CHECK, resource={"type": "doc", "id": "i" * 256}),
            ["body", "resource", "id"],
        ),
        ("GET", "/authz/subjects?permission=" + "p" * 256, None, ["query", "permission"]),
        ("POST", "/rond/grant/bindings/resource/" + "t" * 129, {}, ["path", "resourceType"]),
    ],
    ids=[
        "roleId",
        "name",
        "permission",
        "roleId in path",
        "bindingId in path",
        "bindingId",
        "resourceType",
        "resource id",
        "permission query",
        "resourceType in path",
    ],
)
async def test_an_over_long_id_is_400_naming_its_location(
    api: httpx.AsyncClient, method: str, path: str, body: Any, location: list[Any]
) -> None:
    """Each id's limit (roleId and bindingId 128, permission 255, resourceType
    128, resourceId 255) is a 400 whose ``errors`` name the field."""
    problem = assert_problem(await api.request(method, path, json=body), 400, "invalid-request")
    assert location in [error["location"] for error in problem["errors"]], problem


async def test_a_request_failing_validation_lists_every_invalid_field(
    api: httpx.AsyncClient,
) -> None:
    """FastAPI's 422 is a 400 problem listing each field, never echoing the input."""
    response = await api.post("/roles", json={"name": "", "permissions": "x", "extra": "secret"})
    problem = assert_problem(response, 400, "invalid-request")
    assert {tuple(e["location"]): e["type"] for e in problem["errors"]} == {
        ("body", "roleId"): "missing",
        ("body", "name"): "string_too_short",
        ("body", "permissions"): "list_type",
        ("body", "extra"): "extra_forbidden",
    }
    assert "secret" not in response.text
    assert problem["detail"].startswith("body.")


STORE_ERRORS = [
    (NotFoundError("Role", "r"), 404, "not-found", None),
    (ConflictError("roleId", "taken"), 409, "conflict", None),
    (StateError("in use"), 409, "state-conflict", None),
    (ConcurrentUpdateError("busy"), 409, "concurrent-update", None),
    (ValidationError("unknown role id(s): x"), 400, "invalid-request", None),
    (ValueRefusedError("refused"), 400, "invalid-value", None),
    (InvalidCursorError("bad cursor"), 400, "invalid-cursor", None),
    (UnavailableError("database unavailable"), 503, "unavailable", {"Retry-After": "5"}),
]


@pytest.mark.parametrize(
    ("error", "status", "kind", "headers"),
    STORE_ERRORS,
    ids=[type(row[0]).__name__ for row in STORE_ERRORS],
)
def test_each_store_error_maps_to_its_problem(
    error: Exception, status: int, kind: str, headers: dict[str, str] | None
) -> None:
    """One row per store error: status, kind, the store's detail, extra headers."""
    assert describe_problem(error) == (status, kind, error.args[0], headers, None)


def _api_app(app: Starlette) -> FastAPI:
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/api/v1":
            assert isinstance(route.app, FastAPI)
            return route.app
    raise AssertionError("no /api/v1 mount")


async def test_an_unexpected_error_is_a_generic_500_with_the_traceback_logged(
    app: Starlette, api_tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A failure no one planned for: 500 ``internal`` with a generic detail,
    the traceback in the log and not in the body."""
    api_app = _api_app(app)

    async def explode() -> None:
        raise RuntimeError("secret internals")

    api_app.add_api_route("/explode-for-test", explode, methods=["GET"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver/api/v1",
    ) as client:
        with caplog.at_level(logging.ERROR, logger="idstore.errors"):
            response = await client.get("/explode-for-test")
    assert_problem(response, 500, "internal", "internal server error")
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if r.name == "idstore.errors"]
    assert logged
    assert logged[0].exc_info is not None
    assert "secret internals" in str(logged[0].exc_info[1])


def _assert_unavailable(response: httpx.Response) -> None:
    assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"].isdigit()


@pytest.mark.postgresql
async def test_a_server_whose_database_is_a_closed_port_answers_503() -> None:
    """The token look-up is the first to need the database: 503 on every
    operation, not 500 nor 401."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/idstore"
    application = create_app(Settings(DATABASE_URL=url))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/api/v1",
            headers={"Authorization": "Bearer idst_x_y"},
        ) as client,
    ):
        for method, path, body in OPERATIONS:
            _assert_unavailable(await client.request(method, path, **_body(body)))


async def _user_token(engine: AsyncEngine) -> str:
    """A token bound to a user (made in the database), for ``END_USER``."""
    async with create_session_factory(engine)() as session:
        user = User(
            user_name="end.user",
            user_name_normalized="end.user",
            lifecycle="ACTIVE",
            tags=[],
            status=[],
            providers=[],
        )
        session.add(user)
        await session.flush()
        _, secret = await tokens.create_token(session, "end-user", ["scim:read"], user_id=user.id)
        await session.commit()
    return secret


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_database_lost_after_start_is_503_on_every_operation(
    settings: Settings, engine: AsyncEngine, api_tokens: dict[str, str]
) -> None:
    """With the token verified (cached), every read and write meets the lost
    database itself: 503 with ``Retry-After`` each time (the end user's
    operations with a token bound to a user)."""
    own = {"Authorization": f"Bearer {await _user_token(engine)}"}
    server = make_url(settings.database_url)
    proxy = _Proxy(server.host or "127.0.0.1", server.port or 5432)
    port = await proxy.start()
    application = create_app(
        Settings(
            DATABASE_URL=server.set(port=port).render_as_string(hide_password=False),
            # Configured (never reached): the bulk jobs' refusal without
            # Auth0 would come before the database.
            auth0_base_url="http://127.0.0.1:9",
            auth0_client_id="unused",
            auth0_client_secret="unused",
            auth0_connection_id="con_unused0000000001",
        )
    )
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/api/v1",
            headers={"Authorization": f"Bearer {api_tokens['admin']}"},
        ) as client,
    ):
        assert (await client.get("/roles")).status_code == 200
        assert (await client.get("/userinfo", headers=own)).status_code == 200  # cached
        await proxy.cut()
        failed = []
        for method, path, body in OPERATIONS:
            headers = own if (method, path) in END_USER else None
            try:
                _assert_unavailable(
                    await client.request(method, path, **_body(body), headers=headers)
                )
            except Exception as exc:  # every operation is tried; the failures are listed
                failed.append(f"{method} {path}: {type(exc).__name__}: {str(exc)[:100]}")
        assert failed == [], "\n".join(failed)


async def test_the_description_is_openapi_3_1_and_complete(api: httpx.AsyncClient) -> None:
    """Served without a token at /api/v1/openapi.json: every operation is
    secured by the bearer scheme (the end user's by the ``userBearer`` one)
    and declares its problems as ``application/problem+json`` (no 422, which
    this API never answers)."""
    response = await api.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": "/api/v1"}]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            scheme = "userBearer" if (method.upper(), path) in END_USER else "bearer"
            assert operation["security"] == [{scheme: []}], where
            statuses = set(operation["responses"])
            assert {"400", "401", "403", "500", "503"} <= statuses, where
            assert "422" not in statuses, where
            for status, answer in operation["responses"].items():
                if status[0] in "45":
                    assert list(answer["content"]) == ["application/problem+json"], where
                    assert answer["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }
            if "requestBody" in operation:
                assert {"413", "415"} <= statuses, where


RBAC_TAGS = {"roles", "bindings", "role assignments", "Rönd"}
"""The operations that change roles and bindings, which make a revision."""


async def test_writes_document_the_revision_header(api: httpx.AsyncClient) -> None:
    """Every write of roles, bindings or role assignments declares
    ``RBAC-Revision`` in its success response."""
    spec = (await api.get("/openapi.json")).json()
    writes = 0
    for path, item in spec["paths"].items():
        rbac = path.startswith(("/roles", "/bindings", "/rond")) or path.endswith("/roles")
        for method, operation in item.items():
            if method == "get" or not rbac:
                continue
            if not RBAC_TAGS & set(operation["tags"]):
                continue
            writes += 1
            success = [s for s in operation["responses"] if s.startswith("2")]
            assert len(success) == 1, (method, path)
            assert "RBAC-Revision" in operation["responses"][success[0]]["headers"], (method, path)
    assert writes == 12


async def test_no_documentation_ui_is_served(api: httpx.AsyncClient) -> None:
    """No page that would load scripts from a CDN."""
    for path in ("/docs", "/redoc"):
        assert_problem(await api.get(path), 404, "no-such-endpoint")


async def test_scim_errors_keep_their_own_format(directory: Directory) -> None:
    """The mount changes nothing on SCIM: its errors stay RFC 7644 bodies."""
    response = await directory.scim.get(f"/Users/{UNKNOWN}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/scim+json")
    assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


async def test_an_unknown_field_with_a_huge_name_is_named_in_short(
    api: httpx.AsyncClient,
) -> None:
    """The location of an unknown field is cut to 64 characters, not echoed whole."""
    response = await api.post("/roles", json=dict(ROLE, **{"k" * 100_000: 1}))
    problem = assert_problem(response, 400, "invalid-request")
    assert problem["errors"] == [
        {
            "location": ["body", "k" * 64 + "…"],
            "detail": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]
    assert len(response.content) < 1000


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/roles", {"resourcetype": "doc"}),
        ("/bindings", {"resourcetype": "doc", "resourceId": "1"}),
        ("/authz/subjects", {"permission": "p", "resource_type": "doc"}),
    ],
)
async def test_an_unknown_query_parameter_is_refused_not_ignored(
    api: Any, path: str, query: dict[str, str]
) -> None:
    """A misspelt filter is a 400 naming it, never a wider answer than asked."""
    response = await api.get(path, params=query)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "urn:idstore:problem:invalid-request"
    assert problem["detail"].startswith("unknown query parameter(s): ")
    unknown = sorted(k for k in query if k not in ("resourceId", "permission"))
    assert problem["detail"] == "unknown query parameter(s): " + ", ".join(map(repr, unknown))
