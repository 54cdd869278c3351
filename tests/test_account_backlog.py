"""What identity_store/accounts.py gives the import, ticket and drift jobs,
on SQLite and PostgreSQL: the import backlog, the ids paged through, and
upserts enqueued for users without an account or to resync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from identity_store import accounts, outbox, users
from identity_store.actor import Actor
from identity_store.models import AuditEntry, OutboxEntry, SyncState, User
from identity_store.outbox import Delivered, Failed
from identity_store.store import Store
from identity_store.users import UserInput
from tests.sync.auth0_support import add_user_groups

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
ACTOR = Actor(name="cli:ops", request_id="cli-1")


async def _user(store: Store, name: str, **columns: Any) -> str:
    record = await users.create_user(
        store,
        UserInput(
            user_name=name,
            columns={"idp_username": name, "idp_cloud_username": name, **columns},
            multi_values=[{"attribute": "emails", "value": name, "primary": True}],
        ),
        ACTOR,
    )
    return record.user.id


async def _set(store: Store, user_id: str, **values: Any) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(update(User).where(User.id == user_id).values(**values))

    await store.transaction(work)


async def _pending(engine: AsyncEngine, user_id: str) -> list[Any]:
    async with engine.connect() as connection:
        return list(
            (
                await connection.execute(
                    select(OutboxEntry).where(
                        OutboxEntry.aggregate_id == user_id, OutboxEntry.status == "PENDING"
                    )
                )
            ).all()
        )


async def test_the_backlog_is_due_unheld_never_failed_users_without_an_account(
    store: Store,
) -> None:
    ids = [await _user(store, f"u{i}@example.com") for i in range(7)]
    plain, held, failed, linked, deleted, later, _ = ids
    await outbox.claim(
        store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1, aggregate_ids=[held]
    )
    [to_fail] = await outbox.claim(
        store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1, aggregate_ids=[failed]
    )
    await outbox.fail(
        store, [Failed(to_fail, "boom", retry_at=NOW, counts=False)], worker="w", now=NOW
    )
    await _set(store, linked, auth_user_id="auth0|x")
    await users.delete_user(store, deleted, ACTOR)
    [to_delay] = await outbox.claim(
        store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1, aggregate_ids=[later]
    )
    await outbox.fail(
        store,
        [Failed(to_delay, "wait", retry_at=NOW + timedelta(hours=1), counts=False)],
        worker="w",
        now=NOW,
    )
    expected = [plain, ids[6]]
    assert (
        await accounts.backlog_without_account(store, "auth0", now=NOW, after=None, limit=10)
        == expected
    )
    assert await accounts.count_backlog(store, "auth0", now=NOW, limit=10) == 2
    assert await accounts.count_backlog(store, "auth0", now=NOW, limit=1) == 1  # capped
    assert (
        await accounts.backlog_without_account(store, "auth0", now=NOW, after=expected[0], limit=10)
        == expected[1:]
    )
    # Once its lease runs out, the held user is back in the backlog.
    assert held in await accounts.backlog_without_account(
        store, "auth0", now=NOW + LEASE, after=None, limit=10
    )


async def test_enqueue_without_account_writes_one_row_per_user_that_needs_one(
    store: Store, engine: AsyncEngine
) -> None:
    ids = [await _user(store, f"u{i}@example.com") for i in range(6)]
    waiting, done, linked, inactive, deleted, fresh = ids
    for user_id in (done, linked, inactive, fresh):
        [c] = await outbox.claim(
            store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1, aggregate_ids=[user_id]
        )
        await outbox.complete(store, [Delivered(c, "skipped")], worker="w", now=NOW)
    await _set(store, linked, auth_user_id="auth0|x")
    await _set(store, inactive, lifecycle="INACTIVE")
    await users.delete_user(store, deleted, ACTOR)

    written = await accounts.enqueue_without_account(store, "auth0", ACTOR, now=NOW, batch=1)
    assert written == 2  # done and fresh; waiting has a pending row already
    for user_id in (done, fresh):
        [row] = await _pending(engine, user_id)
        assert (row.operation, row.request_id, row.next_attempt_at) == ("upsert", "cli-1", NOW)
        assert row.payload == {"cause": "account missing"}
    assert len(await _pending(engine, waiting)) == 1
    for user_id in (linked, inactive):
        assert await _pending(engine, user_id) == []
    async with engine.connect() as connection:
        audits = (
            await connection.execute(select(AuditEntry).where(AuditEntry.action == "auth0.enqueue"))
        ).all()
    assert sorted(u for a in audits for u in a.details["users"]) == sorted([done, fresh])
    assert {a.actor for a in audits} == {"cli:ops"}
    # Run again: every one of them has a pending row now.
    assert await accounts.enqueue_without_account(store, "auth0", ACTOR, now=NOW) == 0


async def test_enqueue_resync_forgets_what_was_synced_and_keeps_the_account(
    store: Store, engine: AsyncEngine
) -> None:
    user_id = await _user(store, "ada@example.com")
    [c] = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1)
    synced = {"email": "ada@example.com", "blocked": False}
    await outbox.complete(
        store, [Delivered(c, "created", "auth0|ada", synced)], worker="w", now=NOW
    )
    assert (
        await accounts.enqueue_resync(
            store, "auth0", [user_id, user_id], ACTOR, now=NOW, reason="drift repair"
        )
        == 1
    )
    record = (await outbox.sync_records(store, "auth0", [user_id]))[user_id]
    assert (record.remote_id, record.synced) == ("auth0|ada", {})
    [row] = await _pending(engine, user_id)
    assert row.payload == {"cause": "drift repair"}
    assert await accounts.enqueue_resync(store, "auth0", [], ACTOR, now=NOW, reason="x") == 0


async def test_subject_ids_are_users_and_removed_users_with_an_account(store: Store) -> None:
    ids = sorted([await _user(store, f"u{i}@example.com") for i in range(3)])
    removed_with, removed_without = "00AAAAAAAAAAAAAAAAAAAAAAAA", "00BBBBBBBBBBBBBBBBBBBBBBBB"

    async def work(session: AsyncSession) -> None:
        session.add(SyncState(target="auth0", aggregate_id=removed_with, remote_id="auth0|r"))
        session.add(SyncState(target="auth0", aggregate_id=removed_without, remote_id=None))
        session.add(SyncState(target="rbac", aggregate_id="00CC", remote_id="x"))

    await store.transaction(work)
    everything = [removed_with, *ids]
    assert await accounts.subject_ids(store, "auth0", after=None, limit=10) == everything
    assert await accounts.subject_ids(store, "auth0", after=None, limit=2) == everything[:2]
    assert await accounts.subject_ids(store, "auth0", after=ids[0], limit=10) == ids[1:]


async def test_user_ids_are_live_users_of_a_group_or_among_ids(store: Store) -> None:
    await add_user_groups(store, "staff", "other")
    staff = [await _user(store, f"s{i}@example.com", user_group="staff") for i in range(3)]
    other = await _user(store, "o@example.com", user_group="other")
    await _set(store, staff[1], lifecycle="INACTIVE")
    await users.delete_user(store, staff[2], ACTOR)
    assert await accounts.user_ids(store, after=None, limit=10, user_group="staff") == [staff[0]]
    assert await accounts.user_ids(store, after=None, limit=10) == sorted([staff[0], other])
    assert await accounts.user_ids(store, after=None, limit=10, ids=[other, staff[1], "nope"]) == [
        other
    ]
