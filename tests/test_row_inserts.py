"""INSERTs straight to asyncpg (identity_store.row_inserts) write what SQLAlchemy
writes, inside the session's transaction, and fail as SQLAlchemy fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import row_inserts
from identity_store.database import create_session_factory
from identity_store.models import User, UserMultiValue

USERS = cast(Table, User.__table__)


def _row(user_id: str, name: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "user_name": name,
        "user_name_normalized": name.lower(),
        "tags": ["a", "ü"],
        "custom_data": {"n": 2**40, "nested": {"x": [None, True]}},
        "status": [],
        "providers": [],
        "active": False,
        "lifecycle": "ACTIVE",
        # Not UTC on the way in: stored and read back as the same instant.
        "lifecycle_changed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
        "version": 3,
    }


async def test_rows_read_back_like_sqlalchemy_wrote_them(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await row_inserts.insert_rows(session, USERS, [_row("u-driver", "Driver")])
        await session.execute(insert(USERS), _row("u-sqla", "Sqla"))
    async with sessions() as session:
        users = {u.id: u for u in await session.scalars(select(User))}
    written, reference = users["u-driver"], users["u-sqla"]
    for column in [c.key for c in USERS.columns]:
        if column in {"id", "user_name", "user_name_normalized"}:
            continue
        assert getattr(written, column) == getattr(reference, column), column
    assert written.lifecycle_changed_at == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)


async def test_many_rows_in_one_statement_read_back_like_sqlalchemy_wrote_them(
    engine: AsyncEngine,
) -> None:
    """The multi-row path (``unnest`` of arrays on PostgreSQL): JSON, times,
    booleans, a column set in one row only, columns null in every row."""
    sessions = create_session_factory(engine)
    rows = [{**_row(f"u-{n}", f"Many{n}"), "title": "Boss" if n == 1 else None} for n in range(3)]
    rows[2]["custom_data"] = None
    async with sessions() as session, session.begin():
        await row_inserts.insert_rows(session, USERS, rows)
        copies = [
            {**r, "id": f"s-{r['id']}", "user_name_normalized": f"s-{r['user_name_normalized']}"}
            for r in rows
        ]
        await session.execute(insert(USERS), copies)
    async with sessions() as session:
        users = {u.id: u for u in await session.scalars(select(User))}
    for row in rows:
        written, reference = users[row["id"]], users[f"s-{row['id']}"]
        for column in [c.key for c in USERS.columns if c.key not in ("id", "user_name_normalized")]:
            assert getattr(written, column) == getattr(reference, column), column
    assert [users[r["id"]].title for r in rows] == [None, "Boss", None]
    assert users["u-2"].custom_data is None


async def test_rows_roll_back_with_the_transaction(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions() as session:
        await session.begin()
        await row_inserts.insert_rows(session, USERS, [_row("u-1", "One"), _row("u-2", "Two")])
        await session.rollback()
    async with sessions() as session:
        assert list(await session.scalars(select(User.id))) == []


async def test_a_constraint_violation_is_sqlalchemy_integrity_error(engine: AsyncEngine) -> None:
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await row_inserts.insert_rows(session, USERS, [_row("u-1", "Same")])
    async with sessions() as session:
        await session.begin()
        with pytest.raises(IntegrityError):
            # Another live user with the same name: the partial unique index refuses it.
            await row_inserts.insert_rows(session, USERS, [_row("u-2", "SAME")])
        await session.rollback()


def test_statement_parts_are_remembered_within_their_bound() -> None:
    """The text of a ``WithStatement`` part is built once per shape, and at
    most ``STATEMENT_PARTS`` shapes are remembered: past the bound, a part
    is built again, the same as it was the first time."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]

    def built(row: dict[str, Any]) -> tuple[str, list[Any]]:
        statement = row_inserts.WithStatement(dialect)
        statement.place("x")
        statement.insert("u", USERS, row, returning="id")
        return statement.sql("SELECT 1"), statement.params

    first = built(_row("01HZZZZZZZZZZZZZZZZZZZZZZZ", "first"))
    assert first[0].startswith('WITH u AS (INSERT INTO "users" ("id", "user_name"')
    assert "$2::VARCHAR(26), $3::VARCHAR(255)" in first[0]
    assert first[1][1:3] == ["01HZZZZZZZZZZZZZZZZZZZZZZZ", "first"]
    assert first[1][4] == '["a", "\\u00fc"]'  # through the JSON column's processor
    row_inserts._insert_part.cache_clear()
    row = _row("01HZZZZZZZZZZZZZZZZZZZZZZZ", "other")
    for n in range(row_inserts.STATEMENT_PARTS + 50):  # as many shapes: subsets of columns
        shape = {c: v for i, (c, v) in enumerate(row.items()) if n >> i & 1}
        row_inserts.WithStatement(dialect).insert("u", USERS, shape)
    info = row_inserts._insert_part.cache_info()
    assert info.currsize == row_inserts.STATEMENT_PARTS == info.maxsize
    assert built(_row("01HZZZZZZZZZZZZZZZZZZZZZZZ", "first")) == first
    assert row_inserts._rows_part.cache_info().maxsize == row_inserts.STATEMENT_PARTS


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_an_overflow_connection_is_closed_when_handed_back(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``autocommit`` beyond the pool's size opens connections of its overflow;
    handed back, they are closed, for real (their backends gone), without
    the pool logging a failure."""
    import asyncio
    import logging

    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(settings.database_url, pool_size=1, max_overflow=2)
    held, all_taken = asyncio.Event(), asyncio.Event()
    pids: list[int] = []

    async def hold() -> None:
        async with row_inserts.autocommit(engine) as connection:
            pids.append(await connection.fetchval("SELECT pg_backend_pid()"))
            if len(pids) == 3:
                all_taken.set()
            await held.wait()

    try:
        with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
            tasks = [asyncio.create_task(hold()) for _ in range(3)]
            await asyncio.wait_for(all_taken.wait(), 30)
            held.set()
            await asyncio.gather(*tasks)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with row_inserts.autocommit(engine) as connection:
            alive = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
            )
        assert alive == 1  # the pooled one, in use again; the two of the overflow closed
    finally:
        await engine.dispose()


_ENTRIES = [
    {"attribute": "emails", "position": 0, "value": "a@example.com", "type": "work"},
    {
        "attribute": "emails",
        "position": 0,
        "value": "Ü@example.com",
        "value_normalized": "ü@example.com",
        "display": "Ü",
        "type": "home",
        "primary": True,
        "verified": False,
    },
    {"attribute": "phoneNumbers", "position": 3, "value": None, "primary": False},
    {"attribute": "roles", "position": 0, "value": "x" * 5000, "display": "", "verified": True},
]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("entry", _ENTRIES)
async def test_one_row_of_insert_rows_writes_what_the_unnest_writes(
    engine: AsyncEngine, entry: dict[str, Any]
) -> None:
    """A ``WithStatement``'s ``insert_rows`` of one row (a value per column)
    writes the row its ``unnest`` of arrays writes."""
    values = cast(Table, UserMultiValue.__table__)
    columns = ["attribute", "position", "value", "value_normalized", "display", "type"]
    columns += ["primary", "verified"]
    row = {c: entry.get(c) for c in columns}
    written = []
    for n, how in enumerate(("insert_rows", "insert_unnest")):
        user_id = f"01J{n}{'0' * 22}"
        statement = row_inserts.WithStatement(engine.dialect)
        statement.insert("u", USERS, _row(user_id, f"one-row-{n}"), returning="id")
        getattr(statement, how)("v", values, [row], user_id_from="u")
        assert ("unnest" in statement.sql("SELECT 1")) is (how == "insert_unnest")
        async with row_inserts.autocommit(engine) as connection:
            await connection.execute(statement.sql("SELECT 1"), *statement.params)
        async with create_session_factory(engine)() as session:
            stored = (
                (await session.execute(select(values).where(values.c.user_id == user_id)))
                .mappings()
                .all()
            )
            await session.execute(delete(values).where(values.c.user_id == user_id))
            await session.execute(delete(USERS).where(USERS.c.id == user_id))
            await session.commit()
        assert len(stored) == 1
        written.append({k: v for k, v in stored[0].items() if k not in ("id", "user_id")})
    assert written[0] == written[1] == row


@pytest.mark.parametrize(
    "value",
    [[], [1], ["a", "ü"], {}, {"version": 1}, (), None, "[]", 0, [[]], [None]],
    ids=repr,
)
def test_a_json_columns_processor_converts_as_sqlalchemys(value: Any) -> None:
    """The processors a ``WithStatement`` part converts values with are
    SQLAlchemy's; a JSON column's gives its empty list's text without
    serialising it again, the same text."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    columns = ("tags", "created_at", "version")
    converting = dict(row_inserts._converting(USERS, columns, dialect))
    sqlalchemys = row_inserts._processors(USERS, columns, dialect)
    tags, expected = converting[0], sqlalchemys[0]
    assert tags is not expected
    assert expected is not None
    assert tags(value) == expected(value)
    assert type(tags(value)) is type(expected(value))
    assert converting[1] is sqlalchemys[1]  # not a JSON column: SQLAlchemy's own
