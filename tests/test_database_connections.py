"""The write engine's PostgreSQL connections (identity_store.database): each
looks up its array codecs when it opens, so that no request pays asyncpg's
type introspection on its first array statement, and the pool hands out
the connection returned last."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from identity_store import row_inserts
from identity_store.database import create_engine
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


async def test_a_new_connection_has_its_array_codecs_before_its_first_statement(
    settings: Settings,
) -> None:
    engine = create_engine(settings)
    try:
        async with row_inserts.autocommit(engine) as connection:
            sent = await _sent_by_first_array_statement(connection)
    finally:
        await engine.dispose()
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
