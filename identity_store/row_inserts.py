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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

Processor = Callable[[Any], Any] | None


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
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        # A pooled connection the server dropped mid-operation ("cannot
        # switch to state 12"): the connection is lost, not the query wrong.
        asyncpg.exceptions._base.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
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
