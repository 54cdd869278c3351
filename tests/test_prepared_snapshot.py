"""``PreparedReads.rows_in_snapshot`` (PostgreSQL): the parts of one read
run at once on several connections of the read pool, all in one exported
snapshot, and every connection goes back to the pool outside any
transaction, whether the read succeeded, failed, or found the pool busy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from identity_store.settings import Settings
from identity_store.store import Store

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

SNAPSHOT = "SELECT pg_backend_pid(), pg_current_snapshot()::text, $1::int AS part"


async def _open(settings: Settings, **changes: Any) -> Store:
    return await Store.open(settings.model_copy(update=changes))


@pytest.fixture
async def reads(settings: Settings, engine: Any) -> AsyncIterator[Store]:
    """A store with a read pool of 4; the test fails if asyncpg had to roll
    back a transaction left open on a released connection (it reports each
    to the loop's exception handler)."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))
    store = await _open(settings, db_read_pool_size=4)
    try:
        yield store
    finally:
        await store.close()
        loop.set_exception_handler(previous)
    assert reported == []


async def _every_connection_autocommit(store: Store) -> None:
    assert store.prepared is not None
    pool = store.prepared._pool
    assert pool is not None
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for connection in held:
            # The server's own transaction status, from its last ReadyForQuery.
            assert not connection.is_in_transaction()
    finally:
        for connection in held:
            await pool.release(connection)


async def test_parts_run_on_several_connections_in_one_snapshot(
    reads: Store, settings: Settings
) -> None:
    """While another connection keeps assigning transaction ids (each one
    moves the snapshot a new transaction would take), every part still
    reads the snapshot the first part exported."""
    assert reads.prepared is not None
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    writer = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    stop = asyncio.Event()

    async def assign_ids() -> int:
        assigned = 0
        while not stop.is_set():
            await writer.fetchval("SELECT txid_current()")
            assigned += 1
        return assigned

    # Three connections open and idle first: a part never waits for a
    # connection being opened (it would run on the first one instead).
    pool = reads.prepared._pool
    assert pool is not None
    opened = [await pool.acquire() for _ in range(3)]
    for connection in opened:
        await pool.release(connection)
    busy = asyncio.create_task(assign_ids())
    try:
        for _ in range(20):
            rows = await reads.prepared.rows_in_snapshot(SNAPSHOT, [(0,), (1,), (2,)])
            assert sorted(r["part"] for r in rows) == [0, 1, 2]
            assert len({r[0] for r in rows}) == 3, "each part on its own connection"
            assert len({r[1] for r in rows}) == 1, "every part reads the exported snapshot"
    finally:
        stop.set()
        assert await busy > 20
        await writer.close()
    await _every_connection_autocommit(reads)


async def test_a_busy_pool_runs_the_other_parts_on_the_first_connection(
    settings: Settings, engine: Any
) -> None:
    store = await _open(settings, db_read_pool_size=1)
    try:
        assert store.prepared is not None
        rows = await store.prepared.rows_in_snapshot(SNAPSHOT, [(0,), (1,)])
        assert sorted(r["part"] for r in rows) == [0, 1]
        assert len({r[0] for r in rows}) == 1
        assert len({r[1] for r in rows}) == 1
        await _every_connection_autocommit(store)
    finally:
        await store.close()


async def test_a_failing_part_raises_and_leaves_no_transaction_open(reads: Store) -> None:
    assert reads.prepared is not None
    with pytest.raises(DBAPIError):
        await reads.prepared.rows_in_snapshot("SELECT 1 / $1::int", [(1,), (0,)])
    await _every_connection_autocommit(reads)
    rows = await reads.prepared.rows_in_snapshot(SNAPSHOT, [(0,), (1,)])
    assert sorted(r["part"] for r in rows) == [0, 1]
