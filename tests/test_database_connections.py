"""The store's PostgreSQL connections (identity_store.database, and the
prepared reads' pool): each looks up its array codecs when it opens, so
that no request pays asyncpg's type introspection on its first array
statement (and a connection the server drops meanwhile fails as a lost
connection, 503, not a 500), and the write pool hands out the connection
returned last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from identity_store import database, row_inserts
from identity_store.database import create_engine
from identity_store.errors import UnavailableError
from identity_store.prepared_reads import PreparedReads
from identity_store.settings import Settings

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

INTROSPECTION = "typeinfo_tree"
"""A word of asyncpg's type introspection query (asyncpg/introspection.py)."""

ARRAYS = "SELECT $1::int[], $2::bigint[], $3::varchar[], $4::text[], $5::bool[], $6::timestamptz[]"
ARGS = ([1], [2**40], ["a"], ["b"], [True], [None])


async def _sent_by_first_array_statement(connection: asyncpg.Connection) -> list[str]:
    sent: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(query.query)

    connection.add_query_logger(log)
    await connection.fetchrow(ARRAYS, *ARGS)
    connection.remove_query_logger(log)
    return sent


@asynccontextmanager
async def _new_write_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    engine = create_engine(settings)
    try:
        async with row_inserts.autocommit(engine) as connection:
            yield connection
    finally:
        await engine.dispose()


@asynccontextmanager
async def _new_read_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    reads = PreparedReads(settings.database_url, 1)
    await reads.open()
    try:
        async with reads._pool.acquire() as connection:
            yield connection
    finally:
        await reads.close()


@pytest.mark.parametrize(
    "new_connection",
    [_new_write_connection, _new_read_connection],
    ids=["write engine", "prepared reads"],
)
async def test_a_new_connection_has_its_array_codecs_before_its_first_statement(
    settings: Settings, new_connection: Any
) -> None:
    async with new_connection(settings) as connection:
        sent = await _sent_by_first_array_statement(connection)
    assert sent == [ARRAYS]


async def test_without_the_look_up_asyncpg_introspects_on_the_first_array_statement(
    settings: Settings,
) -> None:
    """What the look-up spares: a plain asyncpg connection runs the
    introspection query before the same statement."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        sent = await _sent_by_first_array_statement(connection)
    finally:
        await connection.close()
    assert any(INTROSPECTION in query for query in sent), sent
    assert sent[-1] == ARRAYS


async def test_the_pool_hands_out_the_connection_returned_last(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        first, second = await engine.connect(), await engine.connect()
        pids = [await c.exec_driver_sql("SELECT pg_backend_pid()") for c in (first, second)]
        first_pid, second_pid = (r.scalar_one() for r in pids)
        await first.close()
        await second.close()  # returned last
        async with engine.connect() as again:
            pid = (await again.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    finally:
        await engine.dispose()
    assert first_pid != second_pid
    assert pid == second_pid


DROPPED = [
    # (name, the write path, whether the server drops the connection before
    # SQLAlchemy's own set-up of it or after it, before the look-up)
    ("autocommit, before SQLAlchemy's set-up", "autocommit", True),
    ("autocommit, before the look-up", "autocommit", False),
    ("session, before the look-up", "session", False),
]


async def _first_connection_fails(engine: Any, path: str) -> None:
    if path == "autocommit":
        async with row_inserts.autocommit(engine) as connection:
            await connection.fetchval("SELECT 1")
    else:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))


@pytest.mark.parametrize(("path", "first"), [c[1:] for c in DROPPED], ids=[c[0] for c in DROPPED])
async def test_a_new_connection_the_server_drops_is_a_lost_connection(
    settings: Settings, path: str, first: bool
) -> None:
    """The server drops a new connection while it is being set up (as
    ``pg_terminate_backend`` does in tests/scim/test_outages.py): the
    caller gets an :class:`OperationalError` (the HTTP layer's 503), not
    asyncpg's own error (a 500), the pool keeps nothing of it, and the
    next connection works."""
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    engine = create_engine(settings)
    dropped: list[int] = []

    async def drop(connection: asyncpg.Connection) -> None:
        other = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        pid = connection.get_server_pid()
        try:
            await other.execute("SELECT pg_terminate_backend($1)", pid)
            for _ in range(200):  # until the backend is gone, not only signalled
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                if not await other.fetchval(query, pid):
                    break
                await asyncio.sleep(0.01)
        finally:
            await other.close()
        await asyncio.sleep(0.05)  # and the client has read the server's goodbye
        dropped.append(pid)

    def drop_first(dbapi_connection: Any, record: Any) -> None:
        if not dropped:
            dbapi_connection.run_async(drop)

    if first:
        event.listen(engine.sync_engine, "connect", drop_first, insert=True)
    else:  # between SQLAlchemy's set-up and the look-up
        event.remove(engine.sync_engine, "connect", database._look_up_array_codecs)
        event.listen(engine.sync_engine, "connect", drop_first)
        event.listen(engine.sync_engine, "connect", database._look_up_array_codecs)
    try:
        with pytest.raises(OperationalError):
            await _first_connection_fails(engine, path)
        assert dropped
        assert engine.pool.checkedout() == 0
        async with row_inserts.autocommit(engine) as connection:
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()


async def test_the_store_answers_unavailable_when_its_first_connection_is_dropped(
    settings: Settings, store: Any
) -> None:
    """The server drops the store's new connection before SQLAlchemy's own
    set-up of it (its codecs): a transaction and a read answer the store's
    :class:`UnavailableError` (503), not asyncpg's error (a 500); then the
    store works."""
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    dropped: list[int] = []

    async def drop(connection: asyncpg.Connection) -> None:
        other = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        pid = connection.get_server_pid()
        try:
            await other.execute("SELECT pg_terminate_backend($1)", pid)
            for _ in range(200):
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                if not await other.fetchval(query, pid):
                    break
                await asyncio.sleep(0.01)
        finally:
            await other.close()
        await asyncio.sleep(0.05)
        dropped.append(pid)

    def drop_two(dbapi_connection: Any, record: Any) -> None:
        if len(dropped) < 2:
            dbapi_connection.run_async(drop)

    async def work(session: Any) -> int:
        return int((await session.execute(text("SELECT 1"))).scalar_one())

    event.listen(store.engine.sync_engine, "connect", drop_two, insert=True)
    with pytest.raises(UnavailableError):
        await store.transaction(work)
    with pytest.raises(UnavailableError):
        async with store.reading() as session:
            await session.execute(text("SELECT 1"))
    assert len(dropped) == 2
    assert await store.transaction(work) == 1
