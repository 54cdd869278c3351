"""The PostgreSQL fast reads (identity_store.prepared_reads) return exactly what
the SQLAlchemy path returns for the same users."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from identity_store import prepared_reads, read_models, row_inserts
from identity_store.prepared_reads import LOOKUP_COLUMNS, PreparedReads
from identity_store.read_models import UserRecord
from scim_server.mapping import user_document
from scim_server.state import AppState
from tests.scim.helpers import ENTERPRISE, PRODUCT, USER_SCHEMA, create_group, create_user

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

BASE = "http://testserver/scim/v2"


def _docs(records: list[UserRecord]) -> list[dict[str, Any]]:
    return [user_document(r, BASE) for r in records]


async def _rich_users(scim: httpx.AsyncClient) -> list[str]:
    manager = await create_user(scim, "boss@example.com", displayName="The Boss")
    former = await create_user(scim, "former@example.com", displayName="Former Boss")
    ids = [manager["id"]]
    for i in range(4):
        body = {
            "schemas": [USER_SCHEMA, ENTERPRISE, PRODUCT],
            "externalId": f"ext-{i}",
            "displayName": f"User Ünïcode {i}",
            "name": {"givenName": f"G{i}", "familyName": "F", "honorificPrefix": "Dr"},
            "emails": [
                {"value": f"u{i}@work.example.com", "type": "work", "primary": True},
                {"value": f"u{i}@home.example.com", "type": "home"},
            ],
            "phoneNumbers": [{"value": f"+1555000{i}", "type": "mobile"}],
            "addresses": [
                {"streetAddress": "1 Main St", "locality": "Town", "type": "work", "primary": True},
                {"country": "FR", "type": "home"},
            ],
            "roles": [{"value": "admin", "display": "Admin"}],
            "active": i != 2,
            ENTERPRISE: {
                "employeeNumber": str(100 + i),
                "department": "R&D",
                "manager": {"value": boss["id"], "$ref": f"{BASE}/Users/{boss['id']}"}
                if (boss := {0: manager, 1: former, 2: manager}.get(i))
                else None,
            },
            PRODUCT: {"tags": ["a", f"t{i}"], "customData": {"k": i, "nested": {"x": [1, "y"]}}},
        }
        body[ENTERPRISE] = {k: v for k, v in body[ENTERPRISE].items() if v is not None}
        response = await scim.post("/Users", json={"userName": f"User{i}@Example.com", **body})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    # Neither creation order nor id order is the order of ``groups``.
    await create_group(scim, "Mid", ids[1:2])
    await create_group(scim, "Zeta", ids[1:3])
    await create_group(scim, "alpha", ids[1:2])
    # A manager who was deleted has no displayName to show.
    assert (await scim.delete(f"/Users/{former['id']}")).status_code == 204
    gone = await create_user(scim, "gone@example.com", externalId="ext-gone")
    assert (await scim.delete(f"/Users/{gone['id']}")).status_code == 204
    return [*ids, gone["id"], "no-such-id"]


async def test_users_by_id_match_the_sqlalchemy_path(
    scim: httpx.AsyncClient, app: Starlette
) -> None:
    ids = await _rich_users(scim)
    state: AppState = app.state.idstore
    assert isinstance(state.store.prepared, PreparedReads)
    for groups in (True, False):
        fast = await state.store.prepared.users(ids, groups=groups)
        async with state.store.readers() as session:
            slow = await read_models.user_records(
                session, await read_models.user_rows(session, ids), groups=groups
            )
        assert len(fast) == len(ids) - 2  # the deleted and the unknown id are absent
        assert _docs(fast) == _docs(slow)
    # What a test could get wrong in both paths alike, checked once outright.
    first = _docs(await state.store.prepared.users([ids[1]]))[0]
    assert [g["display"] for g in first["groups"]] == ["alpha", "Mid", "Zeta"]
    assert first[ENTERPRISE]["manager"]["displayName"] == "The Boss"
    second = _docs(await state.store.prepared.users([ids[2]]))[0]
    assert "displayName" not in second[ENTERPRISE]["manager"]
    assert [e["value"] for e in first["emails"]] == ["u0@work.example.com", "u0@home.example.com"]
    assert first[PRODUCT]["customData"] == {"k": 0, "nested": {"x": [1, "y"]}}


_ENTRIES = ("multi_values", "addresses")


def _state(record: UserRecord) -> Any:
    """Everything a record holds, its entries' and addresses' values too."""
    user = record.user
    entries = [[vars(e) for e in rows] for rows in (user.multi_values, user.addresses)]
    columns = {k: (type(v), v) for k, v in vars(user).items() if k not in _ENTRIES}
    return columns, entries, record.groups, record.manager_display


async def test_a_user_read_on_a_write_connection_is_the_prepared_read(
    scim: httpx.AsyncClient, app: Starlette
) -> None:
    """``user_on`` (an update's read, on the engine's connection it writes
    with, whose codecs SQLAlchemy set) gives the very record the prepared
    reads' pool gives: same values, same types (JSON decoded)."""
    ids = await _rich_users(scim)
    state: AppState = app.state.idstore
    assert isinstance(state.store.prepared, PreparedReads)
    async with row_inserts.autocommit(state.store.engine) as connection:
        for user_id in ids:
            on = await prepared_reads.user_on(connection, user_id)
            fast = await state.store.prepared.users([user_id])
            assert [_state(r) for r in fast] == ([] if on is None else [_state(on)]), user_id
    assert on is None  # the last id is unknown
    first = await state.store.prepared.users([ids[1]])
    assert isinstance(first[0].user.custom_data, dict)


async def test_look_ups_and_pages_match_the_sqlalchemy_path(
    scim: httpx.AsyncClient, app: Starlette
) -> None:
    ids = await _rich_users(scim)
    state: AppState = app.state.idstore
    assert state.store.prepared is not None
    live = sorted(ids[:-2])
    async with state.store.readers() as session:
        slow_all = await read_models.user_records(
            session, await read_models.user_rows(session, live)
        )
    by_id = {r.user.id: r for r in slow_all}

    for column in sorted(LOOKUP_COLUMNS):
        for record in slow_all:
            value = getattr(record.user, column)
            if value is None:
                continue
            found = await state.store.prepared.users_where(column, value, limit=10)
            assert _docs(found) == _docs([by_id[record.user.id]]), column
    assert await state.store.prepared.users_where("external_id", "ext-gone", limit=10) == []
    with pytest.raises(ValueError, match="no fast look-up"):
        await state.store.prepared.users_where("display_name", "x", limit=1)

    walked: list[str] = []
    after: str | None = None
    while True:
        page = await state.store.prepared.users_after(after, offset=0, limit=2)
        walked += [r.user.id for r in page]
        if len(page) < 2:
            break
        after = page[-1].user.id
    assert walked == live
    offset_page = await state.store.prepared.users_after(None, offset=2, limit=2)
    assert _docs(offset_page) == _docs([by_id[i] for i in live[2:4]])
    assert await state.store.prepared.total("User") == len(live)


async def test_http_lists_take_the_fast_path_with_the_same_answers(
    scim: httpx.AsyncClient,
) -> None:
    """The fast list shapes (pages by id, one-column look-ups) answer like
    the general path does for an equivalent query it serves (sorted by id)."""
    await _rich_users(scim)
    for params in (
        {"count": 2},
        {"count": 2, "startIndex": 3},
        {"count": 10, "filter": 'userName eq "user1@example.COM"'},
        {"count": 10, "filter": 'externalId eq "ext-3"'},
        {"count": 10, "filter": 'externalId eq "EXT-3"'},
        {"count": 10, "cursor": "", "filter": 'userName eq "user1@example.COM"'},
        {"count": 2, "cursor": ""},
        {"count": 2, "excludedAttributes": "groups"},
        {"count": 2, "attributes": "userName,groups"},
    ):
        fast = (await scim.get("/Users", params=params)).json()
        general = (await scim.get("/Users", params={**params, "sortBy": "id"})).json()
        assert fast == general, params
    cursor_pages = []
    cursor = ""
    while cursor is not None:
        body = (await scim.get("/Users", params={"count": 2, "cursor": cursor})).json()
        cursor_pages += [r["id"] for r in body["Resources"]]
        assert body["totalResults"] == 5
        cursor = body.get("nextCursor")
    listed = (await scim.get("/Users", params={"count": 50, "sortBy": "id"})).json()
    assert cursor_pages == [r["id"] for r in listed["Resources"]]


async def test_the_fast_pool_plans_once_and_never_compiles(app: Starlette) -> None:
    """Its statements are planned once per connection (generic plans) and
    never JIT-compiled: a generic plan does not know how small ``LIMIT`` is,
    and PostgreSQL's cost estimate would otherwise JIT-compile each page
    (measured: 35 ms of a 53 ms page of 100 users)."""
    state: AppState = app.state.idstore
    assert state.store.prepared is not None
    pool = state.store.prepared._pool  # the settings of its connections
    assert pool is not None
    async with pool.acquire() as connection:
        assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert await connection.fetchval("SHOW jit") == "off"


async def test_an_unreachable_database_is_503_not_500(
    scim: httpx.AsyncClient, app: Starlette
) -> None:
    """The fast pool connects on first use (the server starts while the
    database is away), and a database it cannot reach answers like the
    SQLAlchemy path does: 503 with ``Retry-After``."""
    from sqlalchemy.exc import OperationalError

    away = PreparedReads("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", 1)
    await away.open()  # no connection yet: nothing to fail
    try:
        with pytest.raises(OperationalError):
            await away.users(["x"])
        user = await create_user(scim, "reachable@example.com")  # token now cached
        state: AppState = app.state.idstore
        working, state.store.prepared = state.store.prepared, away
        try:
            for path in (f"/Users/{user['id']}", '/Users?filter=userName eq "x@y.z"'):
                response = await scim.get(path)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                assert response.json()["status"] == "503"
        finally:
            state.store.prepared = working
        assert (await scim.get(f"/Users/{user['id']}")).status_code == 200
    finally:
        await away.close()
