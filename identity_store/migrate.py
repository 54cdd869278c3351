"""Running Alembic migrations from code (CLI, server start-up, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import StrEnum

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from .settings import Settings

SCRIPT_LOCATION = "identity_store:migrations"
"""The migration scripts, as a package resource: found wherever the package
is installed (a wheel, an editable install, a source checkout), whatever the
working directory."""

FILE_TEMPLATE = "%(year)d_%(month).2d_%(day).2d_%(rev)s_%(slug)s"
"""Names of new revision files (date-prefixed), as in ``alembic.ini``."""


def alembic_config(database_url: str) -> Config:
    """The project's Alembic configuration, pointed at ``database_url``.

    It is built here rather than read from ``alembic.ini``, which exists only
    at the top of a source checkout for the ``alembic`` command; both name the
    same scripts.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser interpolates "%": double it to store the template as is.
    config.set_main_option("file_template", FILE_TEMPLATE.replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def script_directory() -> ScriptDirectory:
    """The migration scripts this code ships."""
    return ScriptDirectory.from_config(alembic_config(""))


def head_revision(database_url: str = "") -> str | None:
    """The newest revision the migration scripts define."""
    return script_directory().get_current_head()


class SchemaPosition(StrEnum):
    """Where a database's migration history stands against this code's head."""

    AT_HEAD = "at head"
    AHEAD = "ahead"
    """Migrated past our head: by a newer release during a rolling upgrade."""
    BEHIND = "behind"
    """Never migrated, or not yet to our head."""


def schema_position(scripts: ScriptDirectory, database_heads: Sequence[str]) -> SchemaPosition:
    """Whether the database's history contains this code's head.

    The history is walked down from each of the database's heads through our
    scripts. A revision our scripts do not know was written by a newer release
    (whose history holds ours: releases only add revisions), so the database
    is taken to be ahead; a database migrated by some other history entirely
    is not a case this decides.
    """
    heads = set(scripts.get_heads())
    if heads and heads <= set(database_heads):
        return SchemaPosition.AT_HEAD
    known = {script.revision: script for script in scripts.walk_revisions()}
    contained: set[str] = set()
    for database_head in database_heads:
        if database_head not in known:
            return SchemaPosition.AHEAD
        todo = [database_head]
        while todo:
            revision = todo.pop()
            if revision in contained:
                continue
            contained.add(revision)
            down = known[revision].down_revision
            todo.extend([down] if isinstance(down, str) else (down or ()))
    return SchemaPosition.AHEAD if heads and heads <= contained else SchemaPosition.BEHIND


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the configured database to ``revision`` (blocking)."""
    command.upgrade(alembic_config(settings.database_url), revision)


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    """:func:`upgrade` from async code: Alembic's env runs its own event loop,
    so it runs in a worker thread."""
    await asyncio.to_thread(upgrade, settings, revision)


async def current_heads(engine: AsyncEngine) -> tuple[str, ...]:
    """The revisions the database is at (several on branched histories; none
    when it was never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: tuple(MigrationContext.configure(sync).get_current_heads())
        )


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
