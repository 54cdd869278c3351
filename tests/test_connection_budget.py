"""The connections one process opens to PostgreSQL under load stay within its
share of ``max_connections`` (docs/operations.md, "Connection budget")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from identity_store import migrate
from identity_store.database import create_engine
from identity_store.settings import Settings
from identity_store.store import Store

MAX_CONNECTIONS = 100
"""PostgreSQL's default ``max_connections``."""
RESERVED = 3
"""Its default ``superuser_reserved_connections``."""
OTHERS = 10
"""Kept for workers, ``idstore`` commands, migrations and a psql session."""
REPLICAS = 4
"""Server processes the defaults are sized for."""


@pytest.mark.postgresql
async def test_one_process_under_load_opens_at_most_its_share_of_connections(
    fresh_database_url: Any,
) -> None:
    """With the default pool sizes, 60 concurrent slow reads and 60 prepared
    reads open no more than (max_connections - reserved - others) / replicas
    backends, and every read completes (queued rather than refused)."""
    url = await fresh_database_url("postgresql")
    settings = Settings(DATABASE_URL=url)
    await migrate.upgrade_async(settings)
    share = (MAX_CONNECTIONS - RESERVED - OTHERS) // REPLICAS
    assert settings.db_pool_size + settings.db_max_overflow + settings.db_read_pool_size <= share

    monitor = create_engine(settings, null_pool=True)
    store = await Store.open(settings)
    assert store.prepared is not None
    prepared = store.prepared
    database = make_url(url).database
    observed: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with monitor.connect() as connection:
            # Autocommit: in a transaction pg_stat_activity is one cached snapshot.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            while not done.is_set():
                count = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                )
                observed.append(int(count or 0))
                await asyncio.sleep(0.02)

    async def slow_read() -> int:
        async with store.reading() as session:
            return int(await session.scalar(text("SELECT 1 FROM pg_sleep(0.2)")) or 0)

    async def prepared_read() -> int:
        return await prepared.total("User")

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.05)
        results = await asyncio.gather(
            *(slow_read() for _ in range(60)), *(prepared_read() for _ in range(60))
        )
    finally:
        done.set()
        await watcher
        await store.close()
        await monitor.dispose()
    assert results == [1] * 60 + [0] * 60
    assert max(observed) > 1
    assert max(observed) <= share, max(observed)
