"""INSERTs sent straight to asyncpg, inside the session's transaction.

A new user's row has some forty columns; through SQLAlchemy, processing
its parameters and result costs about 0.4 ms of Python per statement, three
times what asyncpg needs. On PostgreSQL :func:`insert_rows` builds the
statement once per table and set of columns, converts the values with the
very bind processors SQLAlchemy would use (JSON serialisation, UTC
timestamps, booleans), and runs it on the session's own connection, hence in
its transaction. Database errors come back as SQLAlchemy's
:class:`~sqlalchemy.exc.IntegrityError` / :class:`~sqlalchemy.exc.DBAPIError`
carrying asyncpg's exception, as they would through SQLAlchemy, so callers
and the retry of serialization failures see no difference. Elsewhere
(SQLite) the rows go through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import cache, lru_cache
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import JSON, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.util import greenlet_spawn

Processor = Callable[[Any], Any] | None


UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    # A pooled connection the server dropped mid-operation ("cannot
    # switch to state 12"): the connection is lost, not the query wrong.
    asyncpg.exceptions._base.InternalClientError,
    OSError,
    TimeoutError,
)
"""What asyncpg (or the socket under it) raises for a database it lost or
cannot reach: the connection, not the statement, failed."""


@contextmanager
def as_sqlalchemy_errors(sql: str, params: Any) -> Iterator[None]:
    """asyncpg's errors as SQLAlchemy would raise them, so that the HTTP layer
    answers the same for both paths: a constraint violation is an
    :class:`IntegrityError`, a lost or refused connection an
    :class:`OperationalError` (503 with ``Retry-After``), any other database
    error a :class:`DBAPIError` carrying its SQLSTATE. Like the engine's
    errors, they never show their parameters (``hide_parameters``)."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(sql, params, exc, hide_parameters=True) from exc
    except UNREACHABLE as exc:
        raise OperationalError(sql, params, exc, hide_parameters=True) from exc
    except asyncpg.PostgresError as exc:
        raise DBAPIError(sql, params, exc, hide_parameters=True) from exc


async def in_transaction(dbapi_connection: Any) -> asyncpg.Connection:
    """The asyncpg connection under SQLAlchemy's adapter of it, inside the
    session's transaction.

    SQLAlchemy's asyncpg adapter sends ``BEGIN`` only before the first
    statement it executes itself; a statement sent to asyncpg before that
    would run in autocommit, outside the transaction. So the transaction is
    started here the way the adapter starts it (under its execution lock),
    unless it already is. This reaches into the adapter
    (``_transaction``, ``_start_transaction``, ``_execute_mutex``):
    ``tests/test_row_inserts.py`` fails if a SQLAlchemy upgrade changes them.
    """
    async with dbapi_connection._execute_mutex:
        if dbapi_connection._transaction is None:
            await dbapi_connection._start_transaction()
    return dbapi_connection.driver_connection


@cache
def _processors(table: Table, columns: tuple[str, ...], dialect: Dialect) -> list[Processor]:
    return [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]


def bound(table: Table, row: dict[str, Any], dialect: Dialect) -> list[Any]:
    """The values of ``row`` (column → value) as SQLAlchemy would send them
    to asyncpg: through each column type's bind processor (JSON serialised,
    timestamps checked and put in UTC, ...)."""
    processors = _processors(table, tuple(row), dialect)
    return [
        value if p is None else p(value) for p, value in zip(processors, row.values(), strict=True)
    ]


def insert_sql(table: Table, columns: Sequence[str], first: int = 1) -> str:
    """``INSERT INTO table (columns) VALUES ($first, ...)``."""
    names = ", ".join(f'"{c}"' for c in columns)
    places = ", ".join(f"${n}" for n in range(first, first + len(columns)))
    return f'INSERT INTO "{table.name}" ({names}) VALUES ({places})'  # noqa: S608 - model names


@cache
def unnest_sql(table: Table, columns: tuple[str, ...], dialect: Dialect) -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest($1::type[], ...)``:
    any number of rows in one statement of one array parameter per column.

    Its text does not depend on the number of rows, so asyncpg prepares it
    once per connection; a multi-row ``VALUES`` list would be a statement of
    up to 32,767 parameters, over asyncpg's size of a cached statement,
    parsed and planned again on every execution."""
    names = ", ".join(f'"{c}"' for c in columns)
    arrays = ", ".join(
        f"${n}::{table.c[c].type.compile(dialect=dialect)}[]" for n, c in enumerate(columns, 1)
    )
    return f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays})'  # noqa: S608


async def insert_many(
    driver: asyncpg.Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[list[Any]],
    dialect: Dialect,
) -> None:
    """Insert ``rows`` (each the bound values of ``columns``, :func:`bound`)
    on ``driver`` (:func:`in_transaction`): one statement for one row, an
    ``unnest`` of arrays (:func:`unnest_sql`) for more, without the columns
    that are null in every row and have no server default (a user has
    some forty columns, most of them empty)."""
    if len(rows) == 1:
        sql = insert_sql(table, columns)
        with as_sqlalchemy_errors(sql, rows[0]):
            await driver.execute(sql, *rows[0])
        return
    arrays: list[list[Any]] = []
    kept: list[str] = []
    for column, values in zip(columns, zip(*rows, strict=True), strict=True):
        if table.c[column].server_default is None and all(v is None for v in values):
            continue
        kept.append(column)
        arrays.append(list(values))
    sql = unnest_sql(table, tuple(kept), dialect)
    with as_sqlalchemy_errors(sql, arrays):
        await driver.execute(sql, *arrays)


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) in the session's transaction
    (:func:`insert_many` on PostgreSQL)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        await session.execute(insert(table), list(rows))
        return
    columns = list(rows[0])
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = await in_transaction(raw.dbapi_connection)
    await insert_many(driver, table, columns, [bound(table, r, dialect) for r in rows], dialect)


@cache
def _cast(table: Table, column: str, dialect: Dialect) -> str:
    return str(table.c[column].type.compile(dialect=dialect))


@cache
def _server_defaulted(table: Table) -> frozenset[str]:
    """The columns of ``table`` that have a server default."""
    return frozenset(c.key for c in table.columns if c.server_default is not None)


STATEMENT_PARTS = 512
"""Parts of :class:`WithStatement` remembered (LRU), each its SQL text and
bind processors: one per table, set of columns, first parameter number and
guard seen. A create of an Entra user makes seven; the columns a request
leaves null make others, so the bound keeps hostile variety from growing it."""


@lru_cache(maxsize=STATEMENT_PARTS)
def _insert_part(
    table: Table,
    columns: tuple[str, ...],
    dialect: Dialect,
    first: int,
    computed: tuple[tuple[str, str], ...],
    source: str | None,
    returning: str | None,
) -> tuple[str, tuple[tuple[int, Callable[[Any], Any]], ...]]:
    """The SQL of a :meth:`WithStatement.insert` part whose parameters start
    at ``$first``, and the bind processors of its columns: built once, not
    per write (building it cost more than everything else a create does with
    its values), and the columns to convert (:func:`_converting`)."""
    places = [f"${n}::{_cast(table, c, dialect)}" for n, c in enumerate(columns, first)] + [
        sql for _, sql in computed
    ]
    names = ", ".join(f'"{c}"' for c in [*columns, *(name for name, _ in computed)])
    sql = f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(places)}'
    if source is not None:
        sql += f" FROM {source}"
    if returning is not None:
        sql += f" RETURNING {returning}"
    return sql, _converting(table, columns, dialect)


def _converting(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """``(position, processor)`` of the columns whose values SQLAlchemy converts
    before sending them (most strings go as they are)."""
    processors = _processors(table, columns, dialect)
    return tuple(
        (n, _empty_list_once(p) if _is_json(table, c, dialect) else p)
        for n, (c, p) in enumerate(zip(columns, processors, strict=True))
        if p is not None
    )


def _is_json(table: Table, column: str, dialect: Dialect) -> bool:
    return isinstance(table.c[column].type.dialect_impl(dialect), JSON)


def _empty_list_once(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``processor``, its value for an empty list computed once: a new user's
    ``tags``, ``status`` and ``providers`` are ``[]``, serialised by the
    JSON column's processor (the standard library's ``json.dumps``) on every
    write otherwise. Any other value goes through ``processor``."""
    empty = processor([])

    def convert(value: Any) -> Any:
        if value.__class__ is list and not value:
            return empty
        return processor(value)

    return convert


@lru_cache(maxsize=STATEMENT_PARTS)
def _rows_part(
    table: Table, columns: tuple[str, ...], dialect: Dialect, first: int, user_id_from: str
) -> tuple[str, tuple[Processor, ...]]:
    """The SQL of a :meth:`WithStatement.insert_rows` part whose parameters
    start at ``$first``, and the bind processors of its columns."""
    places = ", ".join(f"${n}::{_cast(table, c, dialect)}[]" for n, c in enumerate(columns, first))
    names = ", ".join(f'"{c}"' for c in ["user_id", *columns])
    sql = (
        f'INSERT INTO "{table.name}" ({names})'  # noqa: S608
        f" SELECT {user_id_from}.id, x.* FROM {user_id_from}, unnest({places}) AS x"
    )
    return sql, tuple(_processors(table, columns, dialect))


class WithStatement:
    """One PostgreSQL statement of data-modifying ``WITH`` queries, built
    part by part, its values bound as SQLAlchemy would bind them
    (:func:`bound`).

    Run in autocommit (:func:`autocommit`) it is a whole transaction in one
    round trip: every part or none is written, and a ``2xx`` after it means
    committed. A part may be guarded by another (``source``): its rows are
    written only for the rows the other returned (``FROM u``), so that an
    ``UPDATE ... WHERE version = $n`` that finds another version writes
    nothing at all. Table and column names are the models', never input.
    The text of an insert part is built once per shape (:func:`_insert_part`)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.parts: list[str] = []
        self.params: list[Any] = []

    def place(self, value: Any, cast: str | None = None) -> str:
        """A parameter for ``value`` (already bound), with a type cast."""
        self.params.append(value)
        return f"${len(self.params)}::{cast}" if cast else f"${len(self.params)}"

    def add(self, name: str, sql: str) -> None:
        self.parts.append(f"{name} AS ({sql})")

    def insert(
        self,
        name: str,
        table: Table,
        row: dict[str, Any],
        *,
        source: str | None = None,
        returning: str | None = None,
        computed: dict[str, str] | None = None,
    ) -> None:
        """``INSERT INTO table`` one row; with ``source``, once per row of
        that part (none when it returned none). ``computed``: columns whose
        value is the SQL expression given (built from the statement's own
        parts and parameters, never from input). Columns null in ``row``
        that have no server default are left out: the statement carries the
        row's values only (a new user has some forty columns, most empty)."""
        defaulted = _server_defaulted(table)
        row = {c: v for c, v in row.items() if v is not None or c in defaulted}
        sql, processors = _insert_part(
            table,
            tuple(row),
            self.dialect,
            len(self.params) + 1,
            tuple(computed.items()) if computed else (),
            source,
            returning,
        )
        values = list(row.values())
        for n, processor in processors:
            values[n] = processor(values[n])
        self.params += values
        self.add(name, sql)

    def insert_rows(
        self, name: str, table: Table, rows: Sequence[dict[str, Any]], *, user_id_from: str
    ) -> None:
        """``INSERT INTO table`` ``rows`` (same keys, without ``user_id``),
        each with the ``id`` of the row part ``user_id_from`` returned: one
        row as an :meth:`insert` of it (a value per column), more as an
        ``unnest`` of one array per column (:meth:`insert_unnest`). asyncpg
        encodes an array parameter for about ten times a scalar's CPU, and a
        user created or replaced holds one e-mail more often than not."""
        if len(rows) == 1:
            self.insert(
                name,
                table,
                rows[0],
                source=user_id_from,
                computed={"user_id": f"{user_id_from}.id"},
            )
            return
        self.insert_unnest(name, table, rows, user_id_from=user_id_from)

    def insert_unnest(
        self, name: str, table: Table, rows: Sequence[dict[str, Any]], *, user_id_from: str
    ) -> None:
        """:meth:`insert_rows` as an ``unnest`` of one array per column,
        whatever the number of rows."""
        columns = tuple(rows[0])
        sql, processors = _rows_part(
            table, columns, self.dialect, len(self.params) + 1, user_id_from
        )
        for n, p in enumerate(processors):
            values = [row[columns[n]] for row in rows]
            self.params.append(values if p is None else [p(v) for v in values])
        self.add(name, sql)

    def sql(self, final: str) -> str:
        return f"WITH {', '.join(self.parts)} {final}"


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under one of ``engine``'s pooled connections,
    outside any transaction: each statement on it commits by itself (a
    :class:`WithStatement` is one). Back to the pool after, with nothing
    to roll back; discarded when the database dropped it.

    A connection the pool closes on its return (one of its overflow, or any
    of a pool that keeps none) is handed back in SQLAlchemy's greenlet
    (``greenlet_spawn``), as :class:`~sqlalchemy.ext.asyncio.AsyncConnection`
    does, since closing an asyncpg connection awaits: called bare, that
    close failed (``MissingGreenlet``, logged by the pool) and left the
    connection open until collected. One the pool keeps is handed back
    directly: a greenlet costs some 20 µs, a tenth of a write's checkout.

    A new connection the server drops while it is being set up (its
    codecs) fails as a lost connection (:func:`as_sqlalchemy_errors`),
    which the engine's own connections do not translate on this path."""
    with as_sqlalchemy_errors("connect", ()):
        raw = await engine.raw_connection()
    try:
        yield raw.dbapi_connection.driver_connection  # type: ignore[union-attr]
    except OperationalError:
        await greenlet_spawn(raw.invalidate)
        raise
    finally:
        if _kept_on_return(engine.pool):
            raw.close()
        else:
            await greenlet_spawn(raw.close)


def _kept_on_return(pool: Pool) -> bool:
    """Whether a connection handed back to ``pool`` now is kept for reuse,
    not closed: a :class:`QueuePool` with room in its queue. Nothing runs
    between this answer and the hand-back (no ``await``), so it holds."""
    return isinstance(pool, QueuePool) and pool.checkedin() < pool.size()
