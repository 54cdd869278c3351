"""Side rows (audit, outbox, lifecycle, counts) are written when the
transaction commits, all of them, and dropped when it rolls back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from identity_store import audit, side_rows
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.models import AuditEntry, OutboxEntry, ResourceCount

ACTOR = Actor(name="token:test", token_id=None, request_id="req-1")


async def test_rows_wait_for_the_commit_and_keep_their_values(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    details = {"userName": "Zoë", "nested": {"list": [1, None, "x"]}}
    async with sessions() as session, session.begin():
        audit.record(session, ACTOR, "user.create", "User", "u1", details)
        audit.enqueue(session, ACTOR, "auth0", "upsert", "User", "u1", {"version": 1})
        assert side_rows.pending(session) == 2
        async with sessions() as other:  # nothing is written before the commit
            assert await other.scalar(select(func.count()).select_from(AuditEntry)) == 0
    async with sessions() as session:
        entry = (await session.scalars(select(AuditEntry))).one()
        assert (entry.action, entry.resource_id, entry.request_id) == ("user.create", "u1", "req-1")
        assert entry.details == details
        assert entry.occurred_at.tzinfo is not None
        assert abs((datetime.now(UTC) - entry.occurred_at).total_seconds()) < 60
        outbox = (await session.scalars(select(OutboxEntry))).one()
        assert (outbox.target, outbox.operation, outbox.payload, outbox.request_id) == (
            "auth0",
            "upsert",
            {"version": 1},
            "req-1",
        )
        assert side_rows.pending(session) == 0


async def test_a_rollback_drops_them(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions() as session:
        await session.begin()
        audit.record(session, ACTOR, "user.create", "User", "u1")
        await session.rollback()
        assert side_rows.pending(session) == 0
        # The next transaction of the same session starts clean.
        await session.begin()
        audit.record(session, ACTOR, "user.delete", "User", "u2")
        await session.commit()
    async with sessions() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
        assert actions == ["user.delete"]


async def test_a_row_can_ask_for_its_id(engine: AsyncEngine) -> None:
    """The ``returning`` callback gets the id of its own row, inside the
    transaction, whichever rows share the statement."""
    sessions = create_session_factory(engine)
    table = cast(Table, ResourceCount.__table__)
    seen: list[tuple[str, int]] = []

    def remember(label: str) -> Any:
        def callback(session: Session, row_id: int) -> None:
            assert session.in_transaction()
            seen.append((label, row_id))

        return callback

    async with sessions() as session, session.begin():
        audit.record(session, ACTOR, "x", "User", "u1")
        side_rows.add(session, table, {"resource_type": "User", "delta": 5}, remember("a"))
        side_rows.add(session, table, {"resource_type": "Group", "delta": 7}, remember("b"))
    async with sessions() as session:
        rows = {
            r.id: (r.resource_type, r.delta) for r in await session.scalars(select(ResourceCount))
        }
    assert sorted(label for label, _ in seen) == ["a", "b"]
    by_label = dict(seen)
    assert rows[by_label["a"]] == ("User", 5)
    assert rows[by_label["b"]] == ("Group", 7)


async def test_rows_written_at_commit_are_undone_when_the_commit_fails(
    engine: AsyncEngine,
) -> None:
    """The side rows are written inside the transaction, not beside it: a
    commit that fails after they were sent (here, another ``before_commit``
    hook raising) leaves none of them, even when nothing else ran in the
    transaction before them."""
    from sqlalchemy import event

    sessions = create_session_factory(engine)

    def boom(session: Session) -> None:
        raise RuntimeError("the commit fails")

    event.listen(Session, "before_commit", boom)
    try:
        async with sessions() as session:
            await session.begin()
            audit.record(session, ACTOR, "user.create", "User", "u1")
            try:
                await session.commit()
            except RuntimeError:
                await session.rollback()
            else:
                raise AssertionError("the commit should have failed")
    finally:
        event.remove(Session, "before_commit", boom)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 0
