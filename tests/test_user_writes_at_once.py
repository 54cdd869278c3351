"""The one-statement user writes of PostgreSQL (identity_store.user_changes:
``create_at_once``, ``replace_at_once``; identity_store.user_deletes): one
statement per write on the write pool, and nothing written at all when the
user is no longer at the version it was read at (an update) or its
``If-Match`` names (a delete)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select

from identity_store import counts, groups, prepared_reads, user_changes, users
from identity_store.actor import Actor
from identity_store.errors import NotFoundError, VersionMismatchError
from identity_store.models import AuditEntry, GroupMember, OutboxEntry, User
from identity_store.store import Store
from identity_store.users import UserInput, UserRecord
from tests.user_support import count_rows_before_a_fold, renamed, user_count_rows, user_input

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

ACTOR = Actor(name="test", request_id="req-1")


@asynccontextmanager
async def _statements(store: Store) -> AsyncIterator[list[str]]:
    """The statements the write pool's connections run meanwhile (asyncpg
    calls its query loggers soon after each statement, not during it)."""
    sent: list[str] = []

    def log(query: Any) -> None:
        sent.append(query.query)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.remove_query_logger(log)
        driver.add_query_logger(log)

    event.listen(store.engine.sync_engine, "checkout", checkout)
    try:
        yield sent
        await asyncio.sleep(0)
    finally:
        event.remove(store.engine.sync_engine, "checkout", checkout)


@asynccontextmanager
async def _checkouts(store: Store) -> AsyncIterator[list[Any]]:
    """The connections taken from the write pool meanwhile."""
    taken: list[Any] = []

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        taken.append(dbapi_connection)

    event.listen(store.engine.sync_engine, "checkout", checkout)
    try:
        yield taken
    finally:
        event.remove(store.engine.sync_engine, "checkout", checkout)


async def _rows(store: Store, model: Any, **where: Any) -> int:
    async with store.reading() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(await session.scalar(query) or 0)


async def test_a_create_an_update_and_a_delete_are_one_statement_each(store: Store) -> None:
    """No BEGIN, no COMMIT: each write is one statement that commits by
    itself. The update reads the user with the prepared read's statement on
    the connection it then writes with (one connection for both); the
    delete reads nothing before its statement."""
    warm = await users.create_user(store, user_input("warm@example.com"), ACTOR)
    await users.update_user(store, warm.user.id, renamed("Warm"), ACTOR)
    await users.delete_user(store, warm.user.id, ACTOR)  # asyncpg has read the types
    async with _statements(store) as sent:
        created = await users.create_user(store, user_input("one@example.com"), ACTOR)
    assert [q[:5] for q in sent] == ["WITH "], sent
    async with _statements(store) as sent, _checkouts(store) as taken:
        updated = await users.update_user(store, created.user.id, renamed("One"), ACTOR)
    assert sent[0] == prepared_reads.user_on_sql(), sent
    assert [q[:5] for q in sent] == ["SELEC", "WITH "], sent
    assert len(taken) == 1
    assert (updated.user.display_name, updated.user.version) == ("One", 2)
    async with _statements(store) as sent:
        await users.delete_user(store, created.user.id, ACTOR, expected_version=2)
    assert [q[:5] for q in sent] == ["WITH "], sent
    actions = await _rows(store, AuditEntry, resource_id=created.user.id)
    assert actions == 3
    assert await _rows(store, OutboxEntry, aggregate_id=created.user.id) == 3


async def test_an_update_of_a_version_no_longer_stored_writes_nothing(store: Store) -> None:
    created = await users.create_user(store, user_input("two@example.com"), ACTOR)
    assert store.prepared is not None
    stale = (await store.prepared.users([created.user.id]))[0]
    await users.update_user(store, created.user.id, renamed("Meanwhile"), ACTOR)
    audited = await _rows(store, AuditEntry, resource_id=created.user.id)
    data = users.current_input(stale.user)
    data.columns["display_name"] = "Late"
    data.multi_values = []  # the entries too would be replaced
    written = await user_changes.replace_at_once(
        store.engine,
        stale,
        data,
        ACTOR,
        required_attributes=store.settings.required_idp_attributes,
        max_values=store.settings.max_multi_values,
        action="user.patch",
    )
    assert written is None
    now = await users.get_user(store, created.user.id)
    assert (now.user.display_name, now.user.version) == ("Meanwhile", 2)
    assert [e.value for e in now.user.multi_values] == ["two@example.com"]
    assert await _rows(store, AuditEntry, resource_id=created.user.id) == audited


async def test_a_delete_of_a_version_no_longer_stored_writes_nothing(store: Store) -> None:
    created = await users.create_user(store, user_input("three@example.com"), ACTOR)
    group = await groups.create_group(store, "g3", ACTOR, member_ids=[created.user.id])
    await users.update_user(store, created.user.id, renamed("Meanwhile"), ACTOR)
    with pytest.raises(VersionMismatchError, match="at version 2, not 1"):
        await users.delete_user(store, created.user.id, ACTOR, expected_version=1)
    now = await users.get_user(store, created.user.id)  # still there, still a member
    assert [g.id for g in now.groups] == [group.group.id]
    assert await _rows(store, GroupMember, member_id=created.user.id) == 1
    assert await _rows(store, AuditEntry, action="user.delete") == 0
    await users.delete_user(store, created.user.id, ACTOR)  # any version: deleted
    assert await _rows(store, GroupMember, member_id=created.user.id) == 0


async def test_concurrent_deletes_of_one_groups_users_each_move_its_version_on(
    store: Store,
) -> None:
    """Users of one group deleted at once (Entra's deprovisioning; as many
    as the write pool holds): each delete writes its own audit and outbox
    rows, the group's version moves on once per member gone, and the group
    lists none of them."""
    members = [
        (await users.create_user(store, user_input(f"batch{i}@example.com"), ACTOR)).user.id
        for i in range(8)
    ]
    group = await groups.create_group(store, "deprovisioned", ACTOR, member_ids=members)
    before = group.group.version
    actors = [Actor(name="test", request_id=f"req-del-{i}") for i in range(8)]
    await asyncio.gather(
        *(users.delete_user(store, m, a) for m, a in zip(members, actors, strict=True))
    )
    for member in members:
        with pytest.raises(NotFoundError):
            await users.get_user(store, member)
        assert await _rows(store, AuditEntry, resource_id=member, action="user.delete") == 1
        assert await _rows(store, OutboxEntry, aggregate_id=member, operation="delete") == 1
    for actor in actors:
        assert await _rows(store, AuditEntry, request_id=actor.request_id) == 1
    after = await groups.get_group(store, group.group.id)
    assert after.members == []
    assert after.group.version == before + 8
    assert await _rows(store, GroupMember, group_id=group.group.id) == 0


async def test_a_user_deleted_twice_at_once_is_deleted_once(store: Store) -> None:
    created = await users.create_user(store, user_input("twice@example.com"), ACTOR)
    outcomes = await asyncio.gather(
        *(users.delete_user(store, created.user.id, ACTOR) for _ in range(2)),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "NotFoundError"]
    assert await _rows(store, AuditEntry, resource_id=created.user.id, action="user.delete") == 1


_CREATED: list[tuple[str, dict[str, Any]]] = [
    ("one e-mail", {"multi_values": [{"attribute": "emails", "value": "A@x.example"}]}),
    (
        "Entra's create",
        {
            "columns": {
                "external_id": "oid-1",
                "display_name": "G F",
                "given_name": "G",
                "family_name": "F",
                "idp_username": "g",
                "active": True,
                "department": "",
            },
            "multi_values": [
                {"attribute": "emails", "value": "G@x.example", "type": "work", "primary": True}
            ],
        },
    ),
    (
        "entries and addresses",
        {
            "columns": {"active": False, "tags": ["t"], "custom_data": {"k": [1, None]}},
            "multi_values": [
                {"attribute": "emails", "value": "a@x.example", "primary": True},
                {"attribute": "emails", "value": "b@x.example", "display": "B"},
                {"attribute": "phoneNumbers", "value": "+1", "verified": False},
            ],
            "addresses": [{"country": "DE", "primary": True}],
        },
    ),
    ("nothing else", {}),
    ("one address", {"addresses": [{"locality": "Köln"}]}),
]
_STORE_OWN = {"id", "user_id", "resource_id", "aggregate_id", "user_name", "user_name_normalized"}
_STORE_OWN |= {"created_at", "updated_at", "lifecycle_changed_at", "occurred_at"}
_STORE_OWN |= {"next_attempt_at", "idp_cloud_username", "details"}


async def _written(store: Store, user_id: str) -> dict[str, Any]:
    """Every row the writes of ``user_id`` left, in order, without ids, names
    and times; and (under ``"times"``) the set of times they hold."""
    from identity_store.models import LifecycleTransition, UserAddress, UserMultiValue

    rows: dict[str, Any] = {"times": set()}
    async with store.reading() as session:
        for model, column in (
            (User, "id"),
            (UserMultiValue, "user_id"),
            (UserAddress, "user_id"),
            (LifecycleTransition, "user_id"),
            (AuditEntry, "resource_id"),
            (OutboxEntry, "aggregate_id"),
        ):
            table = model.__table__
            query = select(table).where(table.c[column] == user_id).order_by(table.c.id)
            found = (await session.execute(query)).mappings().all()
            rows[table.name] = [{k: v for k, v in r.items() if k not in _STORE_OWN} for r in found]
            for r in found:
                rows["times"] |= {v for k, v in r.items() if k.endswith("_at") and v is not None}
    return rows


@pytest.mark.parametrize(("name", "given"), _CREATED, ids=[name for name, _ in _CREATED])
async def test_a_create_in_one_statement_writes_the_rows_of_a_create_in_a_session(
    store: Store, name: str, given: dict[str, Any]
) -> None:
    """The one-statement create (entries of one row as values, one time
    sent once for all its timestamps) writes the rows the session's create writes:
    the same users, entries, addresses, history, audit and outbox rows but
    for ids, names and times; and all its times are one."""
    from identity_store.models import new_id

    def data(user_name: str) -> UserInput:
        return UserInput(
            user_name=user_name,
            columns=dict(given.get("columns", {})),
            multi_values=[dict(e) for e in given.get("multi_values", [])],
            addresses=[dict(a) for a in given.get("addresses", [])],
        )

    async with _statements(store) as sent:
        at_once = await users.create_user(store, data(f"{name}@one.example"), ACTOR)
    (sql,) = [q for q in sent if q.startswith("WITH u AS (INSERT")]
    assert "TIMESTAMP WITH TIME ZONE" not in sql  # every time is $1::timestamptz
    assert ("unnest" in sql) is (len(given.get("multi_values", [])) > 1)
    in_session = await users.create_user(
        store, data(f"{name}@session.example"), ACTOR, user_id=new_id()
    )
    one = await _written(store, at_once.user.id)
    other = await _written(store, in_session.user.id)
    assert len(one.pop("times")) == 1
    assert other.pop("times")
    assert one == other
    assert one["users"]
    assert one["audit_log"]
    assert one["outbox"]


def _set(**columns: Any) -> Any:
    def change(data: UserInput) -> UserInput:
        data.columns.update(columns)
        return data

    return change


def _entries(*values: str) -> Any:
    def change(data: UserInput) -> UserInput:
        data.multi_values = [{"attribute": "emails", "value": v, "type": "work"} for v in values]
        return data

    return change


def _address(data: UserInput) -> UserInput:
    data.addresses = [{"country": "FR", "primary": True}]
    return data


_CHANGES = [
    ("rename", _set(display_name="Renamed", family_name="F2", department="D")),
    ("disable", _set(active=False)),
    ("expire", _set(expiration_date=datetime(2000, 1, 1, tzinfo=UTC))),
    ("one new e-mail", _entries("new@x.example")),
    ("two e-mails", _entries("a@x.example", "b@x.example")),
    ("no e-mail", _entries()),
    ("an address", _address),
]


@pytest.mark.parametrize(("name", "change"), _CHANGES, ids=[name for name, _ in _CHANGES])
async def test_an_update_in_one_statement_writes_the_rows_of_an_update_in_a_session(
    store: Store, name: str, change: Any
) -> None:
    """The one-statement update writes the rows the session's update writes
    (but for ids, names and times), and gives them all one new time, sent
    once."""
    created = []
    for n in range(2):
        data = user_input(f"{name}-{n}@example.com", idp_username="u")
        data.multi_values[0]["value"] = "same@example.com"
        created.append(await users.create_user(store, data, ACTOR))
    before = (await _written(store, created[0].user.id))["times"]

    def at_once(current: UserRecord) -> UserInput:
        return change(users.current_input(current.user))

    async with _statements(store) as sent:
        await users.update_user(store, created[0].user.id, at_once, ACTOR)
    (sql,) = [q for q in sent if q.startswith("WITH u AS (UPDATE")]
    assert "TIMESTAMP WITH TIME ZONE" not in sql  # every time is $1::timestamptz
    assert '"updated_at" = $1::timestamptz' in sql

    async def in_session(session: Any) -> None:
        user = await user_changes.load_user(session, created[1].user.id, for_update=True)
        await user_changes.write_replacement(
            session,
            user,
            change(user_changes.input_of(user)),
            ACTOR,
            required_attributes=store.settings.required_idp_attributes,
            max_values=store.settings.max_multi_values,
            action="user.patch",
        )

    await store.transaction(in_session)
    one = await _written(store, created[0].user.id)
    other = await _written(store, created[1].user.id)
    assert len(one.pop("times") - before) == 1
    other.pop("times")
    assert one == other
    assert len(one["audit_log"]) == 2


async def test_a_create_whose_count_row_reaches_a_fold_folds_the_counts(store: Store) -> None:
    """A one-statement create whose count row is a :data:`counts.COMPACT_EVERY`-th
    folds the user counts into one row (:data:`counts.FOLD_STATEMENT`), as a
    create in a session does, and the total still counts the live users."""
    for i in range(3):
        await users.create_user(store, user_input(f"f{i}@example.com"), ACTOR)

    await count_rows_before_a_fold(store, 1)
    async with _statements(store) as sent:
        await users.create_user(store, user_input("folded@example.com"), ACTOR)
    assert counts.FOLD_STATEMENT in sent
    rows, live = await user_count_rows(store)
    assert len(rows) == 1, rows
    assert sum(rows) == live == 4
