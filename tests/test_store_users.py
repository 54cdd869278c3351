"""The user use cases of the store, called as the management API, jobs and
sync workers will call them: without HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from identity_store import users
from identity_store.actor import Actor
from identity_store.errors import (
    ConcurrentUpdateError,
    ConflictError,
    InvalidCursorError,
    NotFoundError,
    UnavailableError,
    VersionMismatchError,
)
from identity_store.models import AuditEntry, LifecycleTransition, OutboxEntry, User
from identity_store.paging import PageRequest
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput, UserRecord

ACTOR = Actor(name="test", request_id="req-1")


def _input(user_name: str, **columns: Any) -> UserInput:
    return UserInput(
        user_name=user_name,
        columns=columns,
        multi_values=[{"attribute": "emails", "value": user_name, "type": "work", "primary": True}],
    )


def _with(record: UserRecord, **columns: Any) -> UserInput:
    """The record's state with ``columns`` changed (what a PATCH computes)."""
    current = {c: getattr(record.user, c) for c in ("display_name", "tags", "title", "active")}
    return UserInput(user_name=record.user.user_name, columns={**current, **columns})


async def _count(store: Store, model: Any, **where: Any) -> int:
    async with store.reading() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(await session.scalar(query) or 0)


async def test_create_user_returns_the_stored_user_with_its_side_rows(store: Store) -> None:
    """A create derives the IdP identifiers, starts the lifecycle, and commits
    its audit, outbox and lifecycle rows with it."""
    record = await users.create_user(store, _input("ada@example.com", idp_username="ada"), ACTOR)
    assert record.user.idp_cloud_username == "ada@example.com"  # derived from userName
    assert record.user.lifecycle == "ACTIVE"
    assert record.user.idp_source == "SCIM"
    assert record.groups == []
    stored = await users.get_user(store, record.user.id)
    assert stored.user.version == 1
    assert [e.value for e in stored.user.multi_values] == ["ada@example.com"]
    assert await _count(store, AuditEntry, action="user.create", request_id="req-1") == 1
    assert await _count(store, OutboxEntry, aggregate_id=record.user.id, operation="upsert") == 1
    assert await _count(store, LifecycleTransition, user_id=record.user.id, to_state="ACTIVE") == 1


async def test_create_user_without_required_attributes_starts_created(store: Store) -> None:
    """Missing ``idp_username`` (required by default) leaves the user ``CREATED``
    (SPEC §4); the source given by the caller is kept."""
    record = await users.create_user(store, _input("bob@example.com"), ACTOR, idp_source="AAD")
    assert (record.user.lifecycle, record.user.idp_source) == ("CREATED", "AAD")


async def test_a_taken_user_name_is_a_conflict_and_writes_nothing(store: Store) -> None:
    """userName is unique case-insensitively; the refused create leaves no row."""
    await users.create_user(store, _input("Carol@Example.com"), ACTOR)
    with pytest.raises(ConflictError) as caught:
        await users.create_user(store, _input("carol@example.COM"), ACTOR)
    assert caught.value.attribute == "userName"
    assert await _count(store, User) == 1
    assert await _count(store, AuditEntry) == 1


async def test_update_user_stores_what_the_change_computes(store: Store) -> None:
    """The change sees the current record without groups; the result is stored,
    versioned, audited under the given action, and returned with groups."""
    created = await users.create_user(store, _input("dan@example.com", title="Dev"), ACTOR)
    seen: list[tuple[str | None, list[Any]]] = []

    def change(current: UserRecord) -> UserInput:
        seen.append((current.user.title, current.groups))
        return _with(current, title="Lead")

    updated = await users.update_user(
        store, created.user.id, change, ACTOR, expected_version=1, action="user.replace"
    )
    assert seen == [("Dev", [])]
    assert (updated.user.title, updated.user.version) == ("Lead", 2)
    assert (await users.get_user(store, created.user.id)).user.title == "Lead"
    assert await _count(store, AuditEntry, action="user.replace") == 1


async def test_a_change_of_nothing_writes_nothing(store: Store) -> None:
    """A change that returns ``None`` leaves version, audit and outbox as they were."""
    created = await users.create_user(store, _input("eve@example.com"), ACTOR)
    result = await users.update_user(store, created.user.id, lambda current: None, ACTOR)
    assert result.user.version == 1
    assert await _count(store, AuditEntry) == 1
    assert await _count(store, OutboxEntry) == 1


async def test_an_update_based_on_another_version_is_refused(store: Store) -> None:
    """``expected_version`` that is not the stored one: 412's error, and the
    change is never asked."""
    created = await users.create_user(store, _input("fay@example.com"), ACTOR)
    calls: list[UserRecord] = []
    with pytest.raises(VersionMismatchError):
        await users.update_user(
            store, created.user.id, lambda c: calls.append(c), ACTOR, expected_version=7
        )
    assert calls == []
    with pytest.raises(VersionMismatchError):
        await users.delete_user(store, created.user.id, ACTOR, expected_version=2)
    assert (await users.get_user(store, created.user.id)).user.version == 1


async def test_use_cases_on_an_unknown_user_raise_not_found(store: Store) -> None:
    """Read, update and delete of an id no live user has."""
    with pytest.raises(NotFoundError):
        await users.get_user(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(NotFoundError):
        await users.update_user(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", lambda c: None, ACTOR)
    with pytest.raises(NotFoundError):
        await users.delete_user(store, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", ACTOR)


async def test_concurrent_updates_of_one_user_lose_nothing(store: Store) -> None:
    """Eight concurrent changes, each adding a tag to what it read: every tag
    is there at the end, and the version counts every change."""
    created = await users.create_user(store, _input("gus@example.com"), ACTOR)

    async def add_tag(tag: str) -> None:
        def change(current: UserRecord) -> UserInput:
            return _with(current, tags=[*current.user.tags, tag])

        await users.update_user(store, created.user.id, change, ACTOR)

    await asyncio.gather(*(add_tag(f"t{i}") for i in range(8)))
    final = await users.get_user(store, created.user.id)
    assert sorted(final.user.tags) == [f"t{i}" for i in range(8)]
    assert final.user.version == 9


async def test_delete_user_suspends_a_person_and_ends_a_service_account(store: Store) -> None:
    """A deleted user answers not found; a person waits ``SUSPENDED`` for the
    deletion sync, a service account is ``INACTIVE`` at once (SPEC §4)."""
    person = await users.create_user(store, _input("hal@example.com"), ACTOR)
    robot = await users.create_user(
        store, _input("bot@example.com", user_type="SERVICE_ACCOUNT"), ACTOR
    )
    for record in (person, robot):
        await users.delete_user(store, record.user.id, ACTOR)
        with pytest.raises(NotFoundError):
            await users.get_user(store, record.user.id)
    assert await _count(store, LifecycleTransition, user_id=person.user.id, to_state="SUSPENDED")
    assert await _count(store, LifecycleTransition, user_id=robot.user.id, to_state="INACTIVE")


async def test_find_users_walks_every_user_once_by_cursor(store: Store) -> None:
    """Cursor pages of two visit each live user once, in id order, with the
    live total; a cursor that is not ours is refused."""
    ids = [
        (await users.create_user(store, _input(f"walk{i}@example.com"), ACTOR)).user.id
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = ""
    while cursor is not None:
        page = await users.find_users(store, PageRequest(count=2, cursor=cursor), groups=False)
        assert page.total == 5
        seen.extend(r.user.id for r in page.rows)
        cursor = page.next_cursor  # type: ignore[assignment]
    assert seen == sorted(ids)
    with pytest.raises(InvalidCursorError):
        await users.find_users(store, PageRequest(cursor="garbage!"), groups=False)


async def test_find_users_pages_by_index(store: Store) -> None:
    """Index pages skip ``start_index - 1`` users and report the total; a
    request for no rows reports the total alone."""
    ids = sorted(
        [
            (await users.create_user(store, _input(f"page{i}@example.com"), ACTOR)).user.id
            for i in range(4)
        ]
    )
    page = await users.find_users(store, PageRequest(start_index=2, count=2), groups=True)
    assert ([r.user.id for r in page.rows], page.total) == (ids[1:3], 4)
    empty = await users.find_users(store, PageRequest(count=0), groups=True)
    assert (empty.rows, empty.total) == ([], 4)


async def test_a_transaction_reruns_work_that_lost_a_race(store: Store) -> None:
    """A stale version or a serialization failure re-runs the whole unit; after
    three losses the caller gets ConcurrentUpdateError and nothing is kept."""
    attempts: list[int] = []

    async def loses_twice(session: AsyncSession) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise StaleDataError("someone else won")
        if len(attempts) == 2:
            raise DBAPIError("UPDATE", {}, _Orig("40001"))
        return "done"

    assert await store.transaction(loses_twice) == "done"
    assert len(attempts) == 3

    async def always_loses(session: AsyncSession) -> None:
        session.add(AuditEntry(actor="x", action="kept?", resource_type="User"))
        await session.flush()
        raise StaleDataError("someone else won")

    with pytest.raises(ConcurrentUpdateError):
        await store.transaction(always_loses)
    assert await _count(store, AuditEntry, action="kept?") == 0


class _Orig(Exception):
    """A driver exception carrying a SQLSTATE, as asyncpg's do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


async def test_an_unreachable_database_is_unavailable(settings: Settings) -> None:
    """Reads and writes against a database that refuses connections raise
    UnavailableError (503 for the server), not a driver error."""
    if settings.is_sqlite:
        url = "sqlite+aiosqlite:////nonexistent-dir/idstore.db"
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/idstore"
    away = await Store.open(Settings(DATABASE_URL=url))
    try:
        with pytest.raises(UnavailableError):
            await users.get_user(away, "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
        with pytest.raises(UnavailableError):
            await users.create_user(away, _input("ivy@example.com"), ACTOR)
        state = await away.migration_state()
        assert (state.reachable, state.ready) == (False, False)
    finally:
        await away.close()


@pytest.mark.parametrize("emails", [1, 10])
async def test_concurrent_entry_changes_neither_lose_nor_duplicate_entries(
    store: Store, emails: int
) -> None:
    """Concurrent updates that each append an e-mail to what they read, for a
    user loaded joined (few entries) and one loaded by a statement per table
    (10 e-mails by 10 addresses): every e-mail once, none lost."""
    data = _input("ent@example.com")
    data.multi_values = [
        {"attribute": "emails", "value": f"e{i}@example.com", "type": "work", "primary": i == 0}
        for i in range(emails)
    ]
    data.addresses = [{"type": "work", "locality": f"City {i}"} for i in range(10)]
    created = await users.create_user(store, data, ACTOR)

    async def add(tag: str) -> None:
        def change(current: UserRecord) -> UserInput:
            state = _with(current)
            state.multi_values = [
                {"attribute": e.attribute, "value": e.value, "type": e.type, "primary": e.primary}
                for e in current.user.multi_values
            ] + [{"attribute": "emails", "value": f"{tag}@example.com", "type": "home"}]
            state.addresses = [
                {"type": a.type, "locality": a.locality} for a in current.user.addresses
            ]
            return state

        await users.update_user(store, created.user.id, change, ACTOR)

    await asyncio.gather(*(add(f"new{i}") for i in range(4)))
    final = await users.get_user(store, created.user.id)
    values = sorted(e.value for e in final.user.multi_values)
    expected = sorted(
        [f"e{i}@example.com" for i in range(emails)] + [f"new{i}@example.com" for i in range(4)]
    )
    assert values == expected
    assert len(final.user.addresses) == 10
