"""The open store: its settings, engine, sessions and prepared reads, and the
one way a use case runs its transaction.

Every use case of the store (:mod:`identity_store.users`,
:mod:`identity_store.groups`, ...) takes a :class:`Store` as its first
argument and owns its transaction through :meth:`Store.transaction`; no
caller (HTTP handler, CLI, job, sync worker) sees a session. Open one per
process with :meth:`Store.open` and close it with :meth:`Store.close`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from . import row_inserts
from .database import create_engine, create_reader_factory, create_session_factory
from .errors import ConcurrentUpdateError, StoreError, UnavailableError, ValueRefusedError
from .migrate import SchemaPosition, current_heads, schema_position, script_directory
from .prepared_reads import PreparedReads
from .settings import Settings

T = TypeVar("T")

ATTEMPTS = 3
"""How many times a use case runs when concurrent writers keep getting there first."""

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction may simply run again."""


DATA_ERRORS = frozenset({"22001", "22003", "22007", "22008", "22021", "22P02"})
"""PostgreSQL SQLSTATEs of class 22 (data exception) caused by a value
(22021: a NUL character, which PostgreSQL's text cannot hold)."""


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return str(code) if code else None


def database_error(exc: DBAPIError) -> StoreError | None:
    """The store error a database failure means for the caller: a value the
    database refused (:class:`ValueRefusedError`) or a database that cannot
    be reached (:class:`UnavailableError`); ``None`` for anything else."""
    if isinstance(exc, DBAPIError) and _sqlstate(exc) in DATA_ERRORS:
        return ValueRefusedError("a value is out of range for its attribute")
    if (
        isinstance(exc, OperationalError | InterfaceError)
        or exc.connection_invalidated
        # asyncpg's "cannot switch to state N" on a connection the server
        # dropped mid-operation, which SQLAlchemy raises as InternalError.
        or isinstance(getattr(exc.orig, "__cause__", None), row_inserts.UNREACHABLE)
    ):
        # InterfaceError: asyncpg's "connection is closed" on a connection
        # the server dropped (pg_terminate_backend, a restart).
        return UnavailableError("the store is temporarily unavailable; retry later")
    return None


@contextmanager
def database_errors() -> Iterator[None]:
    """Raise database failures as the store errors they mean (:func:`database_error`)."""
    try:
        yield
    except DBAPIError as exc:
        mapped = database_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
    except row_inserts.UNREACHABLE as exc:
        # A connection the driver could not even open (refused, unreachable
        # host, timeout) surfaces as the socket's error, not a DBAPI one; one
        # the server dropped while SQLAlchemy set it up (its codecs, before
        # any statement of ours) as asyncpg's own.
        raise UnavailableError("the store is temporarily unavailable; retry later") from exc


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in RETRYABLE_SQLSTATES
    return False


@dataclass(slots=True)
class MigrationState:
    """Where the database's migration history stands against the code's head."""

    reachable: bool
    current: str | None
    """The database's revision (its heads joined by commas on a branched
    history); ``None`` when it was never migrated or could not be reached."""
    head: str | None
    position: SchemaPosition | None = None
    """At, ahead of or behind the code's head; ``None`` when unreachable."""
    problem: str | None = None
    """The exception's class name when the database could not be reached."""

    @property
    def ready(self) -> bool:
        """The database answers and its history contains the code's head: at
        head, or ahead of it during a rolling upgrade (docs/operations.md)."""
        return self.reachable and self.position in (SchemaPosition.AT_HEAD, SchemaPosition.AHEAD)


@dataclass(slots=True)
class Store:
    """An open identity store."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    """Sessions of use cases that write (one transaction each)."""
    readers: async_sessionmaker[AsyncSession]
    """Sessions of reads (each statement in autocommit)."""
    prepared: PreparedReads | None
    """The hottest user reads as prepared asyncpg statements (PostgreSQL only)."""
    head: str | None
    """The migration the code expects (Alembic's head)."""
    scripts: ScriptDirectory
    """The migration scripts this code ships, to place the database's history."""

    @classmethod
    async def open(cls, settings: Settings) -> Store:
        """Engine and pools for ``settings``. Nothing connects yet, so a
        server starts (and reports not ready) while its database is away."""
        engine = create_engine(settings)
        scripts = script_directory()
        prepared = None
        if not settings.is_sqlite:
            prepared = PreparedReads(settings.database_url, settings.db_read_pool_size)
            await prepared.open()
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            readers=create_reader_factory(engine),
            prepared=prepared,
            head=scripts.get_current_head(),
            scripts=scripts,
        )

    async def close(self) -> None:
        if self.prepared is not None:
            await self.prepared.close()
        await self.engine.dispose()

    async def transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction and commit it: when this returns,
        the change and its side rows (audit, outbox, lifecycle) are committed.

        A concurrent writer that got there first (stale version,
        serialization failure, deadlock) makes the whole unit run again from
        a fresh read, up to :data:`ATTEMPTS` times, so that no update is lost;
        after that the caller gets :class:`ConcurrentUpdateError`.
        """
        for attempt in range(ATTEMPTS):
            try:
                with database_errors():
                    async with self.sessions() as session, session.begin():
                        if self.settings.is_sqlite:
                            # Take SQLite's write lock now, not at the first
                            # write: a unit that read first would otherwise
                            # read what a concurrent writer is replacing.
                            connection = await session.connection()
                            await connection.exec_driver_sql("BEGIN IMMEDIATE")
                        return await work(session)
            except (StaleDataError, DBAPIError) as exc:
                if _retryable(exc) and attempt < ATTEMPTS - 1:
                    continue
                if isinstance(exc, StaleDataError):
                    raise ConcurrentUpdateError(
                        "the resource was changed concurrently; retry the request"
                    ) from exc
                raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (no transaction, nothing to commit)."""
        with database_errors():
            async with self.readers() as session:
                yield session

    async def migration_state(self) -> MigrationState:
        """Whether the database answers and its history contains the code's head."""
        try:
            heads = await current_heads(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            return MigrationState(False, None, self.head, problem=type(exc).__name__)
        return MigrationState(
            True,
            ",".join(heads) or None,
            self.head,
            position=schema_position(self.scripts, heads),
        )
