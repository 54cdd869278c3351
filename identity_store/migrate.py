"""Running Alembic migrations from code (CLI, server start-up, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import StrEnum

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from .database import create_engine
from .errors import DatabaseConnectionError
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


def _reason(exc: BaseException) -> str:
    """The first line of what the driver said, without its exception class."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip() or type(cause).__name__
    # asyncpg errors adapted by SQLAlchemy read "<class '...'>: message".
    if text.startswith("<class "):
        text = text.split(": ", 1)[-1]
    return text.splitlines()[0]


async def check_connection(settings: Settings) -> None:
    """Open one connection to the configured database and close it again.

    :raises DatabaseConnectionError: the database does not exist, its server
        does not answer, or it refuses the credentials.
    """
    url = make_url(settings.database_url)
    try:
        if settings.is_sqlite:
            # Through the standard library's sqlite3: aiosqlite, failing to
            # open a file, leaves its thread a callback for the closed event
            # loop, which prints a traceback at exit.
            sync_engine = sqlalchemy.create_engine(url.set(drivername="sqlite"), poolclass=NullPool)
            try:
                sync_engine.connect().close()
            finally:
                sync_engine.dispose()
        else:
            engine = create_engine(settings, null_pool=True)
            try:
                async with engine.connect():
                    pass
            finally:
                await engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        where = url.render_as_string(hide_password=True)
        raise DatabaseConnectionError(
            f"cannot connect to the database {where}: {_reason(exc)}"
        ) from exc


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the configured database to ``revision`` (blocking).

    It connects once first, so that a database it cannot reach raises
    :class:`DatabaseConnectionError` (one line) rather than failing deep
    inside Alembic; an error while migrating is raised as it is.
    """
    asyncio.run(check_connection(settings))
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
