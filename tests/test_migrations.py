"""Alembic migrations: up, down, up again, and no drift from the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from identity_store import migrate
from identity_store.database import create_engine
from identity_store.models import Base
from identity_store.settings import Settings


async def _tables(settings: Settings) -> set[str]:
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


async def _drift(settings: Settings) -> list[Any]:
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_leaves_the_full_schema(
    backend: str, fresh_database_url: Any
) -> None:
    """Migrating up, down to base and up again ends with every model's table and no drift."""
    settings = Settings(DATABASE_URL=await fresh_database_url(backend))
    await migrate.upgrade_async(settings)
    assert await _tables(settings) == set(Base.metadata.tables)

    config = migrate.alembic_config(settings.database_url)
    import asyncio

    await asyncio.to_thread(command.downgrade, config, "base")
    assert await _tables(settings) == set()

    await migrate.upgrade_async(settings)
    assert await _tables(settings) == set(Base.metadata.tables)
    assert await _drift(settings) == []


async def test_database_is_at_head_after_upgrade(backend: str, fresh_database_url: Any) -> None:
    """After ``upgrade`` the database reports the newest revision the scripts define."""
    settings = Settings(DATABASE_URL=await fresh_database_url(backend))
    engine = create_engine(settings, null_pool=True)
    try:
        assert await migrate.current_revision(engine) is None
        await migrate.upgrade_async(settings)
        assert await migrate.current_revision(engine) == migrate.head_revision(
            settings.database_url
        )
    finally:
        await engine.dispose()


def test_the_alembic_command_of_a_checkout_uses_the_shipped_scripts(repo_root: Path) -> None:
    """``alembic`` at the top of a source checkout (its ``alembic.ini``) sees the
    same head as ``idstore migrate``, which reads the scripts from the package."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "heads"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(migrate.head_revision("sqlite://")), "(head)"]
