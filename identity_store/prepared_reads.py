"""The hottest reads on PostgreSQL, straight through asyncpg.

``GET /Users/{id}``, Entra's ``userName eq`` / ``externalId eq`` look-ups and
pages of users by id are most of what a provisioning client and the apps
reading the store send. Through SQLAlchemy each costs about 1 ms of Python
per request (session, cache keys, parameter processing, result rows, three
statements); the database needs about 0.1 ms. Here each is **one** prepared
statement that returns a user with its entries, addresses, groups and
manager's name (``json_agg`` sub-selects), on a connection of an asyncpg pool
used only for these autocommit reads: about 0.13 ms of Python.

What it returns is exactly what the SQLAlchemy path returns
(:class:`UserRecord` of :class:`~identity_store.read_models.UserRow`); the tests
compare the two for the same users. Everything else (other filters, sorts,
writes, SQLite) stays on SQLAlchemy. The SQL is written for PostgreSQL only,
from the model's column names, never from request input: request values are
always bound parameters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy.engine import make_url

from . import row_inserts
from .database import LOOK_UP_ARRAYS
from .read_models import (
    ADDRESS_COLUMNS,
    USER_COLUMNS,
    VALUE_COLUMNS,
    Entry,
    GroupRef,
    UserRecord,
    UserRow,
)

LOOKUP_COLUMNS = frozenset({"id", "user_name_normalized", "external_id", "idp_reference_id"})
"""Columns a look-up may compare (each has an index)."""


def _object(alias: str, columns: Sequence[str]) -> str:
    pairs = ", ".join(f"'{c}', {alias}.{_quote(c)}" for c in columns)
    return f"json_build_object({pairs})"


def _quote(column: str) -> str:
    """Every column name quoted, so that none depends on a list of the words
    PostgreSQL reserves (``primary``, ``position``...); the names are the
    model's, all lower case."""
    return f'"{column}"'


def _select(users: str, *, groups: bool, ordered: bool = True) -> str:
    """The users of the sub-query ``users`` with everything a representation
    reads, one row each, in id order.

    The entries, groups and manager are read in the outer query, over the
    rows the sub-query chose: planned once for any parameters (generic
    plans, see :meth:`PreparedReads.open`), a single query would be free to
    build them for every user before applying ``LIMIT``."""
    columns = ", ".join(f"u.{_quote(c)}" for c in USER_COLUMNS)
    group_list = (
        "(SELECT json_agg(json_build_object('id', g.id, 'display_name', g.display_name)"
        " ORDER BY g.display_name_normalized)::text"
        " FROM group_members gm JOIN groups g ON g.id = gm.group_id"
        " WHERE gm.member_id = u.id)"
        if groups
        else "NULL"
    )
    # Built from the model's column names at import, never from input.
    return (
        f"SELECT {columns},"  # noqa: S608
        f" (SELECT json_agg({_object('v', VALUE_COLUMNS)} ORDER BY v.attribute, v.position)::text"
        "  FROM user_multi_values v WHERE v.user_id = u.id) AS _values,"
        f" (SELECT json_agg({_object('a', ADDRESS_COLUMNS)} ORDER BY a.position)::text"
        "  FROM user_addresses a WHERE a.user_id = u.id) AS _addresses,"
        f" {group_list} AS _groups,"
        " (SELECT m.display_name FROM users m"
        "  WHERE m.id = u.manager_id AND m.deleted_at IS NULL) AS _manager"
        f" FROM ({users}) u" + (" ORDER BY u.id" if ordered else "")
    )


def _statements(groups: bool) -> dict[str, str]:
    live = "SELECT * FROM users WHERE deleted_at IS NULL"
    pages = {
        "id": f"{live} AND id = $1",
        "ids": f"{live} AND id = ANY($1::varchar[])",
        "after": f"{live} AND id > $1 ORDER BY id LIMIT $2",
        # The offset is skipped in the index of live ids, not in the rows,
        # and the page's ids are looked up one by one: as ``IN (sub-query)``
        # the generic plan, expecting a tenth of the table, joined them to a
        # scan of every user (6.5 s at 1,000,000 users).
        "offset": (
            "SELECT * FROM users WHERE id = ANY(ARRAY(SELECT id FROM users"
            " WHERE deleted_at IS NULL ORDER BY id OFFSET $1 LIMIT $2))"
        ),
    }
    for column in LOOKUP_COLUMNS:
        pages[f"eq:{column}"] = f"{live} AND {column} = $1 ORDER BY id LIMIT $2"
    # One row at most by primary key: nothing to sort.
    return {
        name: _select(users, groups=groups, ordered=name != "id") for name, users in pages.items()
    }


_WITH_GROUPS = _statements(groups=True)
_WITHOUT_GROUPS = _statements(groups=False)
_TOTAL = "SELECT coalesce(sum(delta), 0) FROM resource_counts WHERE resource_type = $1"


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Connections of this pool only run autocommit SELECTs: nothing to reset
    on release (asyncpg's default reset is one more round trip per request)."""


async def _init(connection: asyncpg.Connection) -> None:
    """A new connection's codecs: JSON decoded as SQLAlchemy's dialect does,
    and the array types looked up at once (``= ANY($1::varchar[])`` and
    the resolver's arrays), as the write engine's connections do
    (``identity_store.database._look_up_array_codecs``), rather than by
    asyncpg's introspection on the first read that binds one (about 9 ms)."""
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    await connection.fetchrow(LOOK_UP_ARRAYS)


async def _end_transaction(connection: asyncpg.Connection) -> None:
    """Roll back the read-only transaction of :meth:`PreparedReads.rows_in_snapshot`
    before the connection goes back to the pool; one that cannot (lost, or
    interrupted mid-statement) is closed. asyncpg's pool would roll back a
    released connection's transaction too, but reports each one to the
    event loop's exception handler as an error."""
    if connection.is_closed():
        return
    try:
        await connection.execute("ROLLBACK")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        connection.terminate()


_AGGREGATES = len(USER_COLUMNS)
"""Where the aggregates start in a row of :func:`_select`: the user's
columns come first, in :data:`USER_COLUMNS` order."""


def _record(row: asyncpg.Record) -> UserRecord:
    # The user's columns in order (their JSON decoded by the codec), then the
    # aggregates as JSON text.
    view = UserRow(dict(zip(USER_COLUMNS, row, strict=False)))
    values, addresses, groups, manager = row[_AGGREGATES:]
    if values is not None:
        view.multi_values = [Entry(e) for e in orjson.loads(values)]
    if addresses is not None:
        view.addresses = [Entry(a) for a in orjson.loads(addresses)]
    refs = [GroupRef(g["id"], g["display_name"]) for g in orjson.loads(groups)] if groups else []
    return UserRecord(view, refs, manager)


def user_on_sql() -> str:
    """The statement of :func:`user_on`: the prepared read of one user by id."""
    return _WITH_GROUPS["id"]


async def user_on(connection: asyncpg.Connection, user_id: str) -> UserRecord | None:
    """The live user ``user_id`` with its groups, as :meth:`PreparedReads.users`
    reads it, but on ``connection``: a connection of the engine's pool that
    the write of an update then uses too (:func:`identity_store.users.update_user`),
    so that a read-then-write takes one connection from one pool instead of
    one from each. SQLAlchemy's asyncpg dialect decodes ``json``/``jsonb``
    with ``json.loads`` as this module's pool does (:func:`_init`), so the
    record is the same."""
    sql = user_on_sql()
    with row_inserts.as_sqlalchemy_errors(sql, (user_id,)):
        row = await connection.fetchrow(sql, user_id)
    return None if row is None else _record(row)


class PreparedReads:
    """A small asyncpg pool and the statements above."""

    def __init__(self, database_url: str, size: int) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._size = size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        # min_size 0: no connection at start-up, so that the server starts
        # (and /readyz reports) while the database is away, as the
        # SQLAlchemy pool does.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._size,
            init=_init,
            reset=_no_reset,
            max_inactive_connection_lifetime=300,
            # Planning these statements takes longer (about 0.9 ms) than
            # running them (0.2 ms); PostgreSQL keeps re-planning the
            # ``= ANY($1)`` one for each call unless told to plan once. A
            # generic plan does not know how small ``LIMIT $2`` is, and its
            # cost estimate would have JIT compile each page (35 ms): no JIT
            # for lookups of a few index rows.
            server_settings={"plan_cache_mode": "force_generic_plan", "jit": "off"},
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        assert self._pool is not None, "PreparedReads.open() was not awaited"
        with row_inserts.as_sqlalchemy_errors(sql, args):
            async with self._pool.acquire() as connection:
                return cast(list[asyncpg.Record], await connection.fetch(sql, *args))

    @staticmethod
    def _sql(name: str, groups: bool) -> str:
        return (_WITH_GROUPS if groups else _WITHOUT_GROUPS)[name]

    async def users(self, ids: Sequence[str], *, groups: bool = True) -> list[UserRecord]:
        """The live users among ``ids``, in the order of ``ids``."""
        if not ids:
            return []
        if len(ids) == 1:  # GET /Users/{id}: no array to build, bind nor unnest
            return [_record(r) for r in await self._fetch(self._sql("id", groups), ids[0])]
        found = {
            r.user.id: r
            for r in map(_record, await self._fetch(self._sql("ids", groups), list(ids)))
        }
        return [found[i] for i in ids if i in found]

    async def users_where(
        self, column: str, value: Any, *, limit: int, groups: bool = True
    ) -> list[UserRecord]:
        """Live users whose ``column`` equals ``value``, by id."""
        if column not in LOOKUP_COLUMNS:
            raise ValueError(f"no fast look-up on {column!r}")
        rows = await self._fetch(self._sql(f"eq:{column}", groups), value, limit)
        return [_record(r) for r in rows]

    async def users_after(
        self, after: str | None, *, offset: int, limit: int, groups: bool = True
    ) -> list[UserRecord]:
        """A page of live users by id: after the id ``after`` (a cursor), or
        from ``offset`` (an index page)."""
        if after is not None:
            rows = await self._fetch(self._sql("after", groups), after, limit)
        else:
            rows = await self._fetch(self._sql("offset", groups), offset, limit)
        return [_record(r) for r in rows]

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """The rows of a read another module of the store prepared (the
        resolver's check), on this pool's connections (statements are
        prepared once per connection and cached by asyncpg)."""
        return await self._fetch(sql, *args)

    async def rows_in_snapshot(
        self, sql: str, parts: Sequence[Sequence[Any]]
    ) -> list[asyncpg.Record]:
        """The rows of ``sql`` run once per argument tuple of ``parts``, on as
        many connections at once, all reading one snapshot: the first
        connection opens a ``REPEATABLE READ`` transaction and exports its
        snapshot (``pg_export_snapshot``), the others adopt it (``SET
        TRANSACTION SNAPSHOT``), as ``pg_dump --jobs`` does. So a batch split
        in parts uses several of the database's cores and still reads one
        state. A connection the pool cannot give at once is not waited for
        (two requests each holding one and waiting for another would
        deadlock): its part runs on the first connection, in the same
        snapshot, after the others."""
        assert self._pool is not None, "PreparedReads.open() was not awaited"
        if len(parts) == 1:
            return await self._fetch(sql, *parts[0])
        pool = self._pool
        with row_inserts.as_sqlalchemy_errors(sql, parts[0]):
            async with pool.acquire() as first:
                helpers: list[asyncpg.Connection] = []
                try:
                    await first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    snapshot = await first.fetchval("SELECT pg_export_snapshot()")
                    for _ in parts[1:]:
                        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
                            break
                        try:
                            helpers.append(await pool.acquire(timeout=0.01))
                        except TimeoutError:
                            break
                        await helpers[-1].execute(
                            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                            f"SET TRANSACTION SNAPSHOT '{snapshot}'"
                        )
                    spread = await asyncio.gather(
                        *(
                            connection.fetch(sql, *args)
                            for connection, args in zip([first, *helpers], parts, strict=False)
                        ),
                        return_exceptions=True,
                    )
                    found: list[asyncpg.Record] = []
                    for rows in spread:
                        if isinstance(rows, BaseException):
                            raise rows
                        found.extend(rows)
                    for args in parts[1 + len(helpers) :]:
                        found.extend(await first.fetch(sql, *args))
                    return found
                finally:
                    for connection in (first, *helpers):
                        await _end_transaction(connection)
                    for helper in helpers:
                        await pool.release(helper)

    async def total(self, resource_type: str) -> int:
        """The live total kept by :mod:`identity_store.counts`."""
        return int((await self._fetch(_TOTAL, resource_type))[0][0])
