"""Rows a change writes besides itself, written when its transaction commits.

Every write of the store also appends an audit row, usually an outbox row,
sometimes a lifecycle transition and a live-count delta (SPEC §3: in the
same transaction). Nothing in the request reads them back, so instead of one
statement each (about 0.3 ms of Python per statement through SQLAlchemy,
plus a round trip) they are kept on the session and written just before it
commits, from SQLAlchemy's ``before_commit`` event, so that no commit can
leave them out and a rollback drops them with the change:

- on PostgreSQL, one statement for all of them (``INSERT`` s as
  data-modifying ``WITH`` queries);
- on SQLite, which has no data-modifying ``WITH``, one ``INSERT`` per table;
- for a transaction that writes many users at once (a CSV import's batch:
  thousands of rows, past the 32,767 parameters of one PostgreSQL
  statement), one ``INSERT`` per table
  (:func:`identity_store.row_inserts.insert_many`).

A row a caller needs to react to (the id of a count delta, for folding) is
handed to the ``returning`` callback given with it, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from . import row_inserts

_KEY = "idstore.side_rows"

Returning = Callable[[Session, int], None]
"""Called with the session and the new row's id, before the commit."""


@dataclass(slots=True)
class _Row:
    table: Table
    values: dict[str, Any]
    returning: Returning | None


def add(
    session: AsyncSession | Session,
    table: Table,
    values: dict[str, Any],
    returning: Returning | None = None,
) -> None:
    """Write ``values`` into ``table`` when ``session`` commits."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_KEY, []).append(_Row(table, values, returning))


def pending(session: AsyncSession | Session) -> int:
    """How many rows wait for the commit (for tests)."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    return len(sync.info.get(_KEY, ()))


def write_pending(session: Session) -> None:
    """Write the rows waiting for the commit now (a caller about to read them)."""
    _write(session)


ONE_STATEMENT = 32
"""Rows up to which PostgreSQL gets them all in one statement (a single
write's few rows); more go table by table."""


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    rows: list[_Row] = session.info.pop(_KEY, [])
    if not rows:
        return
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql and len(rows) <= ONE_STATEMENT:
        ids = _write_postgresql(session, rows)
    else:
        ids = _write_by_table(session, rows, postgresql=postgresql)
    for row, row_id in zip(rows, ids, strict=True):
        if row.returning is not None and row_id is not None:
            row.returning(session, row_id)
    # Rows the callbacks added (a fold) are written now too.
    _write(session)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_KEY, None)


def _write_by_table(session: Session, rows: list[_Row], *, postgresql: bool) -> list[int | None]:
    """The rows that ask for their id one by one; the others in one
    multi-row ``INSERT`` per table and set of columns (in the order they
    were added, within a table)."""
    ids: list[int | None] = [None] * len(rows)
    groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    for n, row in enumerate(rows):
        if row.returning is not None:
            ids[n] = _write_one(session, row)
        else:
            groups.setdefault((row.table, tuple(row.values)), []).append(row.values)
    for (table, columns), values in groups.items():
        if postgresql:
            _insert_postgresql(session, table, list(columns), values)
        else:
            session.execute(insert(table), values)
    return ids


def _insert_postgresql(
    session: Session, table: Table, columns: list[str], rows: list[dict[str, Any]]
) -> None:
    dialect = session.get_bind().dialect
    connection = await_only(
        row_inserts.in_transaction(session.connection().connection.dbapi_connection)
    )
    args = [row_inserts.bound(table, r, dialect) for r in rows]
    await_only(row_inserts.insert_many(connection, table, columns, args, dialect))


def _write_one(session: Session, row: _Row) -> int | None:
    statement = insert(row.table)
    if row.returning is None:
        session.execute(statement, row.values)
        return None
    return cast(int, session.execute(statement.returning(row.table.c.id), row.values).scalar_one())


def _write_postgresql(session: Session, rows: list[_Row]) -> list[int | None]:
    """Every row in one statement; the ids of the rows that asked for theirs.

    Sent straight to asyncpg on the session's own connection (so inside its
    transaction): through SQLAlchemy the parameters of the statement cost
    more than the database takes to run it.
    """
    dialect = session.get_bind().dialect
    parts: list[str] = []
    params: list[Any] = []
    returned: list[int] = []
    for n, row in enumerate(rows):
        insert_sql = row_inserts.insert_sql(row.table, list(row.values), first=len(params) + 1)
        params += row_inserts.bound(row.table, row.values, dialect)
        returning = ""
        if row.returning is not None:
            returning = " RETURNING id"
            returned.append(n)
        parts.append(f"w{n} AS ({insert_sql}{returning})")
    if returned:
        final = " UNION ALL ".join(f"SELECT {n} AS n, id FROM w{n}" for n in returned)  # noqa: S608
    else:
        final = "SELECT NULL::int AS n, NULL::bigint AS id"
    sql = f"WITH {', '.join(parts)} {final}"
    connection = await_only(
        row_inserts.in_transaction(session.connection().connection.dbapi_connection)
    )
    with row_inserts.as_sqlalchemy_errors(sql, params):
        records = await_only(connection.fetch(sql, *params))
    found = {r["n"]: r["id"] for r in records if r["n"] is not None}
    return [found.get(n) for n in range(len(rows))]
