"""``/api/v1/user-groups`` over HTTP, on SQLite and PostgreSQL: the
configuration collection of the User Manager Service, its JSON Schemas
(draft 2020-12, the ``jsonschema`` library) and their limits, and what a
group's settings do to its users (schema checks, Auth0 accounts)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import user_group_schemas
from identity_store.database import create_session_factory
from identity_store.errors import ValidationError
from identity_store.models import AuditEntry, OutboxEntry
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.auth0 import Auth0Client
from identity_sync.clock import ManualClock
from identity_sync.dispatcher import Dispatcher
from tests.emulators.auth0 import Auth0Emulator

from .conftest import PRODUCT, USER, assert_problem

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["zip"],
        },
        "tier": {"enum": ["gold", "silver"]},
    },
    "additionalProperties": False,
}
PARTNERS = {"userGroup": "partners", "label": "Partners", "crudSchema": SCHEMA}


async def _group(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/user-groups", json={**PARTNERS, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _user(api: httpx.AsyncClient, email: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/users", json={"userGroup": "partners", "email": email, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_user_group_is_created_read_listed_replaced_and_deleted(
    api: httpx.AsyncClient,
) -> None:
    """201 with Location; the fields of the User Manager Service's
    configuration collection as sent; PUT replaces all of them; 204, then 404."""
    created = await api.post("/user-groups", json=PARTNERS)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/user-groups/partners"
    body = created.json()
    assert set(body) == {
        "userGroup",
        "label",
        "authUserCreationDisabled",
        "crudSchema",
        "createdAt",
        "updatedAt",
    }
    assert (body["userGroup"], body["label"], body["authUserCreationDisabled"]) == (
        "partners",
        "Partners",
        False,
    )
    assert body["crudSchema"] == SCHEMA
    assert (await api.get("/user-groups/partners")).json() == body
    assert (await api.get("/user-groups")).json() == {"items": [body], "nextCursor": None}

    replaced = await api.put(
        "/user-groups/partners",
        json={"authUserCreationDisabled": True, "crudSchema": {"type": "object"}},
    )
    assert replaced.status_code == 200, replaced.text
    again = replaced.json()
    assert (again["label"], again["authUserCreationDisabled"], again["crudSchema"]) == (
        None,
        True,
        {"type": "object"},
    )
    assert again["createdAt"] == body["createdAt"]
    assert again["updatedAt"] > body["updatedAt"]

    deleted = await api.delete("/user-groups/partners")
    assert deleted.status_code == 204
    assert_problem(await api.get("/user-groups/partners"), 404, "not-found")


async def test_user_group_writes_are_audited(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    """One audit row per change, naming the group and the token."""
    await _group(api)
    await api.put("/user-groups/partners", json={"crudSchema": {}})
    await api.delete("/user-groups/partners")
    async with create_session_factory(engine)() as session:
        rows = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.resource_type == "UserGroup")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [(r.action, r.resource_id, r.actor) for r in rows] == [
        ("userGroup.create", "partners", "token:api-admin"),
        ("userGroup.replace", "partners", "token:api-admin"),
        ("userGroup.delete", "partners", "token:api-admin"),
    ]


async def test_groups_are_listed_by_name_a_page_at_a_time(api: httpx.AsyncClient) -> None:
    for name in ("e", "c", "a", "d", "b"):
        await _group(api, userGroup=name)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"count": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/user-groups", params=params)).json()
        seen += [g["userGroup"] for g in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "d", "e"]


async def test_a_taken_name_is_409_and_unknown_names_are_404(api: httpx.AsyncClient) -> None:
    await _group(api)
    assert_problem(
        await api.post("/user-groups", json={**PARTNERS, "label": "Other"}),
        409,
        "conflict",
        "user group 'partners' already exists",
    )
    assert (await api.get("/user-groups/partners")).json()["label"] == "Partners"
    assert_problem(await api.put("/user-groups/ghost", json={"crudSchema": {}}), 404, "not-found")
    assert_problem(await api.delete("/user-groups/ghost"), 404, "not-found")


INVALID_SCHEMAS: list[tuple[Any, str, list[str | int]]] = [
    (
        {"type": "objec"},
        "crudSchema.type: 'objec' is not valid under any of the given schemas "
        "(not a valid JSON Schema, draft 2020-12)",
        ["body", "crudSchema", "type"],
    ),
    (
        {"properties": {"age": {"type": "integer", "minimum": "ten"}}},
        "crudSchema.properties.age.minimum: 'ten' is not of type 'number' "
        "(not a valid JSON Schema, draft 2020-12)",
        ["body", "crudSchema", "properties", "age", "minimum"],
    ),
    (
        {"properties": {"code": {"pattern": "(["}}},
        "crudSchema.properties.code.pattern: '([' is not a 'regex' "
        "(not a valid JSON Schema, draft 2020-12)",
        ["body", "crudSchema", "properties", "code", "pattern"],
    ),
    (
        {"required": ["a", "a"]},
        "crudSchema.required: ['a', 'a'] has non-unique elements "
        "(not a valid JSON Schema, draft 2020-12)",
        ["body", "crudSchema", "required"],
    ),
    (
        {"$schema": "http://json-schema.org/draft-07/schema#"},
        "crudSchema.$schema: only JSON Schema draft 2020-12 "
        "(https://json-schema.org/draft/2020-12/schema) is supported",
        ["body", "crudSchema", "$schema"],
    ),
    (
        {"properties": {"a": {"$ref": "#/$defs/missing"}}},
        "crudSchema.properties.a.$ref: '#/$defs/missing' does not resolve inside the schema; "
        "references outside it are not fetched",
        ["body", "crudSchema", "properties", "a", "$ref"],
    ),
]


async def test_an_invalid_schema_is_refused_with_the_library_message(
    api: httpx.AsyncClient,
) -> None:
    """400 naming where in the schema, with jsonschema's own message; nothing
    is stored, and a replacement is refused alike (one row per rule)."""
    await _group(api)
    for schema, detail, location in INVALID_SCHEMAS:
        created = await api.post(
            "/user-groups", json={**PARTNERS, "userGroup": "other", "crudSchema": schema}
        )
        assert created.status_code == 400, (schema, created.text)
        problem = assert_problem(created, 400, "invalid-request", detail)
        assert problem["errors"][0]["location"] == location
        replaced = await api.put("/user-groups/partners", json={"crudSchema": schema})
        assert_problem(replaced, 400, "invalid-request", detail)
    groups = (await api.get("/user-groups")).json()["items"]
    assert [(g["userGroup"], g["crudSchema"]) for g in groups] == [("partners", SCHEMA)]


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(levels - 1):
        node = {"items": node}
    return node


HOSTILE_GROUPS: list[tuple[str, Any, int, str, str | None]] = [
    (
        "schema nested past the free-form depth",
        {**PARTNERS, "crudSchema": _deep(33)},
        400,
        "invalid-request",
        "crudSchema nests deeper than 32 levels",
    ),
    (
        "schema past the free-form size",
        {**PARTNERS, "crudSchema": {"description": "x" * 70_000}},
        400,
        "invalid-request",
        "crudSchema is 70018 bytes as JSON; at most 65536 allowed",
    ),
    (
        "10,000 distinct objects where names go (uniqueItems checked in linear time)",
        {**PARTNERS, "crudSchema": {"required": [{"n": i} for i in range(10_000)]}},
        400,
        "invalid-request",
        None,
    ),
    ("a name with a slash", {**PARTNERS, "userGroup": "a/b"}, 400, "invalid-request", None),
    (
        "a name of 129 characters",
        {**PARTNERS, "userGroup": "g" * 129},
        400,
        "invalid-request",
        None,
    ),
    ("an empty name", {**PARTNERS, "userGroup": ""}, 400, "invalid-request", None),
    (
        "a control character in the label",
        {**PARTNERS, "label": "a\x07b"},
        400,
        "invalid-request",
        None,
    ),
    (
        "a schema that is not an object",
        {**PARTNERS, "crudSchema": [1]},
        400,
        "invalid-request",
        None,
    ),
    ("an unknown field", {**PARTNERS, "owner": "me"}, 400, "invalid-request", None),
]


async def test_hostile_groups_are_refused_and_nothing_is_stored(api: httpx.AsyncClient) -> None:
    """One request per limit, each refused whole."""
    for name, body, status, kind, detail in HOSTILE_GROUPS:
        response = await api.post("/user-groups", json=body)
        assert response.status_code == status, (name, response.text)
        assert_problem(response, status, kind, detail)
    assert (await api.get("/user-groups")).json()["items"] == []


HOSTILE_BODIES: list[tuple[str, bytes, int, str]] = [
    ("a NUL in the name", b'{"userGroup": "a\\u0000", "crudSchema": {}}', 400, "invalid-value"),
    ("a lone surrogate", b'{"userGroup": "a\\ud800", "crudSchema": {}}', 400, "invalid-body"),
    (
        "nesting past IDSTORE_MAX_JSON_DEPTH",
        b'{"userGroup": "g", "crudSchema": ' + b'{"a": ' * 70 + b"1" + b"}" * 71,
        400,
        "invalid-body",
    ),
    (
        "a 20-digit number",
        b'{"userGroup": "g", "crudSchema": {"maximum": 12345678901234567890}}',
        201,
        "",
    ),
    (
        "a body past IDSTORE_MAX_PAYLOAD_SIZE",
        b'{"userGroup": "g", "crudSchema": {"description": "' + b"x" * 1_100_000 + b'"}}',
        413,
        "too-large",
    ),
]


async def test_hostile_bodies_get_problems_never_a_500(api: httpx.AsyncClient) -> None:
    """The body limits of every endpoint apply; a 20-digit bound is a valid schema."""
    for name, raw, status, kind in HOSTILE_BODIES:
        response = await api.post(
            "/user-groups", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, (name, response.text)
        if status == 201:
            assert response.json()["crudSchema"] == {"maximum": 12345678901234567890}
        else:
            assert_problem(response, status, kind)


class _Counting(http.server.BaseHTTPRequestHandler):
    """Serves a schema and counts the requests (it must see none)."""

    requests: list[str] = []

    def do_GET(self) -> None:
        _Counting.requests.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("content-type", "application/schema+json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def schema_server() -> Iterator[str]:
    """A schema on loopback: ``http://127.0.0.1:<port>/``."""
    _Counting.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_remote_reference_is_refused_and_nothing_is_fetched(
    api: httpx.AsyncClient, schema_server: str
) -> None:
    """A ``$ref`` to an http(s) URL, directly or through a base ``$id``, is a
    400 when the schema is stored; the server it names sees no request."""
    async with httpx.AsyncClient() as direct:  # the server answers when asked
        assert (await direct.get(f"{schema_server}s.json")).json() == {"type": "string"}
    _Counting.requests.clear()
    for schema in (
        {"properties": {"zip": {"$ref": f"{schema_server}s.json"}}},
        {"$id": schema_server, "properties": {"zip": {"$ref": "s.json"}}},
        {"properties": {"zip": {"$dynamicRef": f"{schema_server}s.json#meta"}}},
    ):
        problem = assert_problem(
            await api.post("/user-groups", json={**PARTNERS, "crudSchema": schema}),
            400,
            "invalid-request",
        )
        assert "does not resolve inside the schema" in problem["detail"]
    assert _Counting.requests == []


def test_validation_never_fetches_a_reference_even_of_a_schema_stored_unchecked(
    schema_server: str,
) -> None:
    """The validators resolve through a registry without retrieval: a remote
    ``$ref`` (in a schema that escaped the check, as a row written by hand
    would) is a validation error, and no request leaves. jsonschema's own
    default registry would fetch it with ``urlopen``."""
    validator = user_group_schemas.compile_schema(
        {"properties": {"zip": {"$ref": f"{schema_server}s.json"}}}
    )
    with pytest.raises(ValidationError, match=r"cannot be validated: .* does not resolve"):
        user_group_schemas.check_custom_data(validator, {"zip": "12345"})
    assert _Counting.requests == []


async def test_references_inside_the_schema_and_to_the_meta_schema_resolve(
    api: httpx.AsyncClient,
) -> None:
    """``$defs`` (by pointer and by ``$anchor``), a base ``$id`` with a
    relative reference to a sub-schema's ``$id``, and the draft's own
    meta-schema: all stored, all applied."""
    schema = {
        "$id": "https://schemas.example.com/partner",
        "$defs": {
            "zip": {"$anchor": "zip", "type": "string", "pattern": "^[0-9]{5}$"},
            "city": {"$id": "city", "type": "string", "maxLength": 5},
        },
        "type": "object",
        "properties": {
            "zip": {"$ref": "#/$defs/zip"},
            "other": {"$ref": "#zip"},
            "city": {"$ref": "city"},
            "schema": {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        },
    }
    await _group(api, crudSchema=schema)
    for custom, path in (
        ({"zip": "1"}, "customData.zip"),
        ({"other": "x"}, "customData.other"),
        ({"city": "Londonderry"}, "customData.city"),
        ({"schema": {"type": "nope"}}, "customData.schema.type"),
    ):
        response = await api.post(
            "/users", json={"userGroup": "partners", "email": "a@example.com", "customData": custom}
        )
        problem = assert_problem(response, 400, "invalid-request")
        assert problem["detail"].startswith(f"{path}: "), problem
    await _user(api, "a@example.com", customData={"zip": "12345", "schema": {"type": "string"}})


async def test_a_group_with_users_is_not_deleted(api: httpx.AsyncClient) -> None:
    """409 naming how many live users are in it; deleted once they are gone
    (a deleted user waiting for the deletion sync does not count)."""
    await _group(api)
    first = await _user(api, "a@example.com")
    second = await _user(api, "b@example.com")
    assert_problem(
        await api.delete("/user-groups/partners"),
        409,
        "state-conflict",
        "user group 'partners' still has 2 user(s); move them to another group or delete "
        "them first",
    )
    await api.delete(f"/users/{first['id']}")
    await api.delete(f"/users/{second['id']}")
    assert (await api.delete("/user-groups/partners")).status_code == 204
    restored = await api.post(f"/users/{first['id']}/restore")
    assert_problem(
        restored,
        409,
        "state-conflict",
        f"user {first['id']} cannot be restored: its user group 'partners' was deleted meanwhile",
    )


async def test_a_replaced_schema_applies_to_the_next_writes(api: httpx.AsyncClient) -> None:
    """The validator compiled for the old schema is not used once the group
    is replaced; users stored before are not checked again until their
    ``customData`` or ``userGroup`` changes."""
    await _group(api)
    user = await _user(api, "a@example.com", customData={"tier": "gold"})
    tightened = {**SCHEMA, "required": ["address"]}
    assert (await api.put("/user-groups/partners", json={"crudSchema": tightened})).is_success
    assert_problem(
        await api.post("/users", json={"userGroup": "partners", "email": "b@example.com"}),
        400,
        "invalid-request",
        "customData: 'address' is a required property",
    )
    renamed = await api.patch(f"/users/{user['id']}", json={"givenName": "Ann"})
    assert renamed.status_code == 200, renamed.text
    assert_problem(
        await api.patch(f"/users/{user['id']}", json={"customData": {"tier": "silver"}}),
        400,
        "invalid-request",
        "customData: 'address' is a required property",
    )


async def test_scim_writes_obey_the_group_schema_too(api: httpx.AsyncClient, as_scope: Any) -> None:
    """``userGroup`` and ``customData`` set through SCIM's product extension
    are checked by the same store rule: a 400 with SCIM's ``invalidValue``."""
    await _group(api)
    scim = as_scope("scim:write", "/scim/v2")
    bad = {
        "schemas": [USER, PRODUCT],
        "userName": "scim@example.com",
        PRODUCT: {"userGroup": "partners", "customData": {"address": {"zip": "1"}}},
    }
    response = await scim.post("/Users", json=bad)
    assert response.status_code == 400, response.text
    assert response.json()["scimType"] == "invalidValue"
    assert response.json()["detail"] == "customData.address.zip: '1' does not match '^[0-9]{5}$'"
    unknown = {**bad, PRODUCT: {"userGroup": "nobody"}}
    response = await scim.post("/Users", json=unknown)
    assert response.status_code == 400
    assert response.json()["detail"] == "userGroup 'nobody' is not a configured user group"
    good = {**bad, PRODUCT: {"userGroup": "partners", "customData": {"address": {"zip": "75001"}}}}
    created = await scim.post("/Users", json=good)
    assert created.status_code == 201, created.text
    read = await api.get(f"/users/{created.json()['id']}")
    assert read.json()["customData"] == {"address": {"zip": "75001"}}


def _clock() -> ManualClock:
    return ManualClock(datetime.now(UTC) + timedelta(hours=1))


async def _deliver(store: Store, auth0: Auth0Emulator) -> None:
    clock = _clock()
    async with Auth0Client(store.settings, clock=clock) as client:
        dispatcher = Dispatcher(store, client, clock=clock, name="test")
        try:
            await dispatcher.drain()
        finally:
            await dispatcher.close()


async def test_the_account_setting_decides_auth0_accounts(
    api: httpx.AsyncClient, settings: Settings, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """Users of a group with ``authUserCreationDisabled`` get no Auth0
    account; turning it off enqueues one for each of them (in the same
    transaction), and the dispatcher creates them."""
    await _group(api, authUserCreationDisabled=True, crudSchema={})
    first = await _user(api, "a@example.com")
    second = await _user(api, "b@example.com")
    store = await Store.open(
        Settings(DATABASE_URL=settings.database_url, **auth0.settings_fields())
    )
    try:
        await _deliver(store, auth0)
        assert auth0.users == {}
        turned = await api.put(
            "/user-groups/partners", json={"authUserCreationDisabled": False, "crudSchema": {}}
        )
        assert turned.status_code == 200, turned.text
        async with create_session_factory(engine)() as session:
            rows = (
                await session.scalars(
                    select(OutboxEntry).where(
                        OutboxEntry.status == "PENDING", OutboxEntry.target == "auth0"
                    )
                )
            ).all()
        assert sorted(r.aggregate_id for r in rows) == sorted([first["id"], second["id"]])
        assert {r.payload["cause"] for r in rows} == {"user group enabled account creation"}
        assert {r.request_id for r in rows} == {turned.headers["x-request-id"]}
        await _deliver(store, auth0)
        emails = sorted(account["email"] for account in auth0.users.values())
        assert emails == ["a@example.com", "b@example.com"]
    finally:
        await store.close()
    read = await api.get(f"/users/{first['id']}")
    assert read.json()["authUserId"] == f"auth0|{first['id']}"


async def test_validators_are_compiled_once_per_schema_version(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Writes to a group reuse one compiled validator, keyed by the group's
    configuration id and ``updated_at``; a replacement makes a new key."""
    from identity_store.models import UserGroupConfig

    await _group(api)
    for email in ("a@example.com", "b@example.com"):
        await _user(api, email, customData={"tier": "gold"})
    async with create_session_factory(engine)() as session:
        config = (await session.scalars(select(UserGroupConfig))).one()
    key = (config.id, config.updated_at)
    first = user_group_schemas._CACHE[key]
    await _user(api, "c@example.com")
    assert user_group_schemas._CACHE[key] is first
    assert [k for k in user_group_schemas._CACHE if k[0] == config.id] == [key]
    await api.put("/user-groups/partners", json={"crudSchema": {"type": "object"}})
    await _user(api, "d@example.com", customData={"anything": 1})
    keys = [k for k in user_group_schemas._CACHE if k[0] == config.id]
    assert keys[0] == key
    assert len(keys) == 2
    assert keys[1][1] > key[1]
    assert user_group_schemas._CACHE[keys[1]] is not first
