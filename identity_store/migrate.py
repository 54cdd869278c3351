"""Running Alembic migrations from code (CLI, server start-up, tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from .settings import Settings


class MigrationsNotFoundError(RuntimeError):
    """``alembic.ini`` could not be found."""


def alembic_config(database_url: str) -> Config:
    """The project's Alembic configuration, pointed at ``database_url``.

    ``alembic.ini`` is looked for in the working directory, then beside the
    packages (a source checkout or an editable install).
    """
    candidates = [
        Path.cwd() / "alembic.ini",
        Path(__file__).resolve().parent.parent / "alembic.ini",
    ]
    for path in candidates:
        if path.is_file():
            config = Config(str(path))
            config.attributes["database_url"] = database_url
            return config
    raise MigrationsNotFoundError(
        "alembic.ini not found in the working directory or beside the packages"
    )


def head_revision(database_url: str) -> str | None:
    """The newest revision the migration scripts define."""
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the configured database to ``revision`` (blocking)."""
    command.upgrade(alembic_config(settings.database_url), revision)


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    """:func:`upgrade` from async code: Alembic's env runs its own event loop,
    so it runs in a worker thread."""
    await asyncio.to_thread(upgrade, settings, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
