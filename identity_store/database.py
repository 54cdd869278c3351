"""Engine and session factory for the configured database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from . import row_inserts
from .settings import Settings


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    """Per-connection SQLite settings: foreign keys on (off by default), WAL so
    readers do not block the writer, and a busy timeout instead of instant
    ``database is locked`` errors.

    SQLite's built-in ``lower()`` folds ASCII only; it is replaced by Python's
    ``str.lower`` so that case-insensitive SCIM comparisons (RFC 7643 §2.2)
    give the same answers as PostgreSQL's Unicode-aware ``lower()``. No index
    is built on ``lower()``, so the override cannot disagree with one.
    """
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


_ARRAY_TYPES = ("int4", "int8", "varchar", "text", "bool", "timestamptz", "json", "jsonb")
LOOK_UP_ARRAYS = "SELECT " + ", ".join(f"NULL::{kind}[]" for kind in _ARRAY_TYPES)
"""One statement whose columns are the array types the store's one-statement
writes bind (``unnest($1::int[], ...)``, :mod:`identity_store.row_inserts`)
and its prepared reads bind (``= ANY($1::varchar[])``,
:mod:`identity_store.prepared_reads`), run by each new connection of both
pools."""


def _look_up_array_codecs(dbapi_connection: Any, connection_record: Any) -> None:
    """Have a new PostgreSQL connection look up its array codecs at once.

    asyncpg has no built-in codec for arrays, not even ``int[]``: the first
    statement of a connection that binds or returns an array type it has
    not seen runs asyncpg's type introspection query, planned anew on each
    connection (about 9 ms here), and another for the next new type. The
    first delete batch on each of the pool's connections paid it in the
    middle of its requests (issue 15). One look-up of every such type when
    the connection opens pays it once, where the connection is made.

    Its failure (the server dropped the new connection) is raised as
    SQLAlchemy's errors (:func:`row_inserts.as_sqlalchemy_errors`): a lost
    connection an :class:`OperationalError`, which the request answers
    503; the pool closes the connection."""
    with row_inserts.as_sqlalchemy_errors(LOOK_UP_ARRAYS, ()):
        dbapi_connection.run_async(lambda connection: connection.fetchrow(LOOK_UP_ARRAYS))


def create_engine(settings: Settings, *, null_pool: bool = False) -> AsyncEngine:
    """The engine for ``settings.database_url``.

    ``null_pool`` opens a connection per use (migrations, one-shot CLI commands).
    Bound parameters (userNames, e-mail addresses) are never shown, neither
    in errors nor in the ``IDSTORE_DB_ECHO`` log: ``hide_parameters``.
    """
    kwargs: dict[str, Any] = {"echo": settings.db_echo, "hide_parameters": True}
    if null_pool:
        kwargs["poolclass"] = NullPool
    elif not settings.is_sqlite:
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # No pre-ping: it costs a round trip on every checkout. A connection
            # that died is discarded when its first use fails (that request
            # answers 503 with Retry-After); recycling bounds their age.
            pool_recycle=1800,
            # The connection returned last is taken first: under a load
            # lighter than the pool, the same few connections serve it, with
            # their statements prepared and planned, and the others idle.
            pool_use_lifo=True,
        )
    engine = create_async_engine(settings.database_url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    elif not null_pool:
        event.listen(engine.sync_engine, "connect", _look_up_array_codecs)
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def create_reader_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: each statement runs in autocommit,
    which spares the BEGIN and ROLLBACK round trips of a transaction that would
    change nothing. Each statement still sees one consistent snapshot."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )
