"""Seeding the store in bulk: PostgreSQL through asyncpg ``COPY``, SQLite
through SQLAlchemy Core ``executemany``; never one HTTP call per row.

The schema comes from the project's own migrations (``alembic upgrade
head``), the rows from :class:`bench.dataset.Dataset`, streamed in chunks so
that a million users never sit in memory at once. The API token is issued by
``identity_store.tokens.create_token`` like ``idstore token create`` does.

On PostgreSQL the seeding also fills the database-backed ceiling's table
(:data:`bench.ceiling.DOCUMENTS_TABLE`, in a schema of its own): every seeded
user's document as the server renders it (the store's prepared read, then
``scim_server.mapping.user_document`` and orjson, as ``GET /Users/{id}``
does), so that the ceiling returns the same bytes the server would.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from identity_store import counts, migrate, tokens
from identity_store.database import create_engine, create_session_factory
from identity_store.settings import Settings

from .ceiling import DOCUMENTS_SCHEMA, DOCUMENTS_TABLE
from .dataset import NOMINAL_GROUP_SIZES, Dataset, GroupSpec, group_id

CHUNK = 50_000
BENCH_DB_PREFIX = "idstore_bench"

USER_COLUMNS = (
    "id", "user_name", "user_name_normalized", "external_id", "idp_reference_id",
    "idp_username", "idp_cloud_username", "idp_source", "display_name", "formatted_name",
    "given_name", "family_name", "employee_number", "department", "cost_center",
    "organization", "division", "user_type", "tags", "active", "lifecycle",
    "lifecycle_changed_at", "status", "providers", "created_at", "updated_at",
    "version",
)  # fmt: skip
EMAIL_COLUMNS = (
    "user_id", "attribute", "position", "value", "value_normalized", "type", "primary",
    "verified",
)  # fmt: skip
MEMBER_COLUMNS = ("group_id", "member_id", "member_type", "created_at")

Progress = Callable[[str], None]


@dataclass(slots=True)
class SeedResult:
    """The seeded data set, the token to use, and how long each step took."""

    dataset: Dataset
    token: str
    timings_s: dict[str, float]
    notes: list[str]


def plan(users: int, spares: int) -> tuple[Dataset, list[str]]:
    """The data set to seed: ``users`` users, the last ``spares`` of them in no
    group, and groups of 10, 1,000 and 100,000 members (smaller when there
    are not enough users, which ``notes`` says)."""
    base_ms = int(time.time() * 1000) - 86_400_000
    spares = max(2, min(spares, users // 2))
    regular = users - spares
    groups, notes = [], []
    for k, nominal in enumerate(NOMINAL_GROUP_SIZES):
        members = min(nominal, regular)
        if members < nominal:
            notes.append(
                f"the {nominal:,}-member group has {members:,} members "
                f"({users:,} users, {spares} of them spares kept out of every group)"
            )
        groups.append(
            GroupSpec(
                nominal=nominal,
                members=members,
                id=group_id(base_ms, k),
                display_name=f"bench-group-{nominal}",
            )
        )
    return Dataset(users=users, base_ms=base_ms, spares=spares, groups=tuple(groups)), notes


def _created(data: Dataset, i: int) -> datetime:
    return datetime.fromtimestamp((data.base_ms + i // 1000) / 1000, UTC) + timedelta(
        microseconds=i % 1000
    )


def user_rows(data: Dataset, start: int, stop: int) -> tuple[list[Any], list[Any]]:
    """Rows of ``users`` (:data:`USER_COLUMNS` order, JSON columns as text)
    and of ``user_multi_values`` (one primary work e-mail each) for users
    ``start .. stop-1``."""
    users: list[Any] = []
    emails: list[Any] = []
    for i in range(start, stop):
        uid = data.user_id(i)
        name = data.user_name(i)
        xid = data.external_id(i)
        given, family = f"Given{i}", f"Family{i % 9973}"
        created = _created(data, i)
        users.append((
            uid, name, name, xid, xid, name.split("@")[0], name, "AAD",
            f"{given} {family}", f"{given} {family}", given, family, f"E{i:07d}",
            f"Dept{i % 50}", f"CC{i % 20}", "Bench Org", f"Div{i % 5}", "PERSON", "[]", True,
            "ACTIVE", created, "[]", "[]", created, created, 1,
        ))  # fmt: skip
        emails.append((uid, "emails", 0, name, name, "work", True, None))
    return users, emails


def member_rows(
    data: Dataset, group: GroupSpec, start: int, stop: int
) -> Iterator[tuple[Any, ...]]:
    for i in range(start, min(stop, group.members)):
        yield (group.id, data.user_id(i), "User", _created(data, i))


def _chunks(total: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(total, start + size)


async def _finish(url: str) -> str:
    """Set the live counts the bulk load bypassed, and issue the API token."""
    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            await counts.recount(session)
            _, secret = await tokens.create_token(session, "bench", ["scim:write", "admin"])
            await session.commit()
            return secret
    finally:
        await engine.dispose()


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def recreate_postgresql(url: str) -> None:
    """Drop and create the bench database (only one named ``idstore_bench*``)."""
    import asyncpg  # type: ignore[import-untyped]

    name = make_url(url).database or ""
    if not name.startswith(BENCH_DB_PREFIX):
        raise SystemExit(
            f"refusing to drop database {name!r}: its name must start with {BENCH_DB_PREFIX!r}"
        )
    conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def settle_postgresql(url: str) -> None:
    """Put the freshly loaded database in the state a running one is in:
    ``VACUUM (ANALYZE)`` (this machine's PostgreSQL runs without autovacuum,
    which on a production server would have vacuumed the bulk load: hint
    bits set, visibility map filled, so that the first phases do not pay
    for it), then ``CHECKPOINT``, so that the load's dirty pages are not
    written by the checkpointer while a phase runs (bench.authz_seed does
    the same)."""
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def fresh_database(server: str, name: str) -> str:
    """Drop and create the bench database ``name`` on the server of
    ``server`` (a SQLAlchemy URL), migrated; its URL."""
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    await recreate_postgresql(url)
    await migrate.upgrade_async(Settings(DATABASE_URL=url))
    return url


BULK_TABLES = ("users", "user_multi_values", "group_members")


async def drop_secondary_indexes(conn: Any, tables: Sequence[str]) -> list[str]:
    """Drop the indexes of ``tables`` that back no constraint (before a bulk
    ``COPY``); their definitions, for :func:`rebuild_indexes`."""
    indexes = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i"
        " WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        list(tables),
    )
    for row in indexes:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    return [row["indexdef"] for row in indexes]


async def rebuild_indexes(conn: Any, definitions: Sequence[str]) -> None:
    """Create again the indexes :func:`drop_secondary_indexes` dropped, from
    their own definitions (``pg_indexes``), so the schema ends exactly as the
    migrations made it."""
    for definition in definitions:
        await conn.execute(definition)


async def _copy_postgresql(url: str, data: Dataset, progress: Progress) -> dict[str, float]:
    """COPY every row with the secondary indexes of the bulk tables dropped,
    then rebuild them. Rows are generated in a child process one chunk ahead
    of the COPY."""
    import asyncpg

    timings: dict[str, float] = {}
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    loop = asyncio.get_running_loop()
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        indexes = await drop_secondary_indexes(conn, BULK_TABLES)
        t0 = time.perf_counter()
        chunks = list(_chunks(data.users))
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pending = loop.run_in_executor(pool, user_rows, data, *chunks[0]) if chunks else None
            for k, (_, stop) in enumerate(chunks):
                assert pending is not None
                users, emails = await pending
                if k + 1 < len(chunks):
                    pending = loop.run_in_executor(pool, user_rows, data, *chunks[k + 1])
                await conn.copy_records_to_table("users", records=users, columns=USER_COLUMNS)
                await conn.copy_records_to_table(
                    "user_multi_values", records=emails, columns=EMAIL_COLUMNS
                )
                progress(f"  users {stop:,}/{data.users:,} ({time.perf_counter() - t0:.1f} s)")
        timings["users_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        now = datetime.now(UTC)
        await conn.executemany(
            "INSERT INTO groups (id, display_name, display_name_normalized, external_id,"
            " created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $5, 1)",
            [
                (g.id, g.display_name, g.display_name.lower(), f"ext-{g.id}", now)
                for g in data.groups
            ],
        )
        for group in data.groups:
            for start, stop in _chunks(group.members):
                await conn.copy_records_to_table(
                    "group_members",
                    records=list(member_rows(data, group, start, stop)),
                    columns=MEMBER_COLUMNS,
                )
        timings["groups_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        await rebuild_indexes(conn, indexes)
        timings["indexes_s"] = time.perf_counter() - t0
        progress(f"  {len(indexes)} indexes rebuilt ({timings['indexes_s']:.1f} s)")

        t0 = time.perf_counter()
        await conn.execute("ANALYZE")
        timings["analyze_s"] = time.perf_counter() - t0
    finally:
        await conn.close()
    return timings


DOCUMENTS_CHUNK = 5_000


async def fill_ceiling_documents(
    url: str, data: Dataset, base_url: str, progress: Progress
) -> float:
    """Create and fill the database-backed ceiling's table with every seeded
    user's document, rendered by the server's own code for ``base_url``
    (the server's SCIM base URL, so that ``meta.location`` is the same);
    the seconds it took."""
    import asyncpg
    import orjson

    from identity_store.prepared_reads import PreparedReads
    from scim_server.mapping import user_document

    t0 = time.perf_counter()
    reads = PreparedReads(url, 2)
    await reads.open()
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(
            f"CREATE SCHEMA {DOCUMENTS_SCHEMA};"
            f" CREATE TABLE {DOCUMENTS_TABLE} (id varchar(26) PRIMARY KEY, document text NOT NULL)"
        )
        table = DOCUMENTS_TABLE.partition(".")[2]
        for start, stop in _chunks(data.users, DOCUMENTS_CHUNK):
            records = await reads.users([data.user_id(i) for i in range(start, stop)])
            await conn.copy_records_to_table(
                table,
                schema_name=DOCUMENTS_SCHEMA,
                records=[
                    (r.user.id, orjson.dumps(user_document(r, base_url)).decode()) for r in records
                ],
                columns=("id", "document"),
            )
        await conn.execute(f"ANALYZE {DOCUMENTS_TABLE}")
    finally:
        await conn.close()
        await reads.close()
    elapsed = time.perf_counter() - t0
    progress(f"  ceiling documents {data.users:,} ({elapsed:.1f} s)")
    return elapsed


def _seed_sqlite(url: str, data: Dataset, progress: Progress) -> dict[str, float]:
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import insert, text

    from identity_store.models import Group, GroupMember, User, UserMultiValue

    timings: dict[str, float] = {}
    sync_url = make_url(url).set(drivername="sqlite")
    engine = create_sync_engine(sync_url)
    json_columns = {"tags", "status", "providers"}
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            t0 = time.perf_counter()
            for start, stop in _chunks(data.users):
                users, emails = user_rows(data, start, stop)
                conn.execute(
                    insert(User),
                    [
                        {
                            col: (json.loads(v) if col in json_columns else v)
                            for col, v in zip(USER_COLUMNS, row, strict=True)
                        }
                        for row in users
                    ],
                )
                conn.execute(
                    insert(UserMultiValue),
                    [dict(zip(EMAIL_COLUMNS, row, strict=True)) for row in emails],
                )
                progress(f"  users {stop:,}/{data.users:,} ({time.perf_counter() - t0:.1f} s)")
            timings["users_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            now = datetime.now(UTC)
            conn.execute(
                insert(Group),
                [
                    {
                        "id": g.id,
                        "display_name": g.display_name,
                        "display_name_normalized": g.display_name.lower(),
                        "external_id": f"ext-{g.id}",
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                    for g in data.groups
                ],
            )
            for group in data.groups:
                for start, stop in _chunks(group.members):
                    conn.execute(
                        insert(GroupMember),
                        [
                            dict(zip(MEMBER_COLUMNS, row, strict=True))
                            for row in member_rows(data, group, start, stop)
                        ],
                    )
            timings["groups_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        timings["analyze_s"] = time.perf_counter() - t0
    finally:
        engine.dispose()
    return timings


def seed(
    url: str,
    users: int,
    spares: int,
    progress: Progress = print,
    ceiling_base_url: str | None = None,
) -> SeedResult:
    """Recreate the database at ``url``, migrate it, fill it, issue a token;
    on PostgreSQL with ``ceiling_base_url``, also the database-backed
    ceiling's documents (rendered for that SCIM base URL)."""
    data, notes = plan(users, spares)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    if not is_sqlite:
        asyncio.run(recreate_postgresql(url))
    t0 = time.perf_counter()
    migrate.upgrade(Settings(DATABASE_URL=url))
    timings["migrate_s"] = time.perf_counter() - t0
    progress(f"seeding {users:,} users ({'SQLite' if is_sqlite else 'PostgreSQL COPY'})")
    if is_sqlite:
        timings.update(_seed_sqlite(url, data, progress))
    else:
        timings.update(asyncio.run(_copy_postgresql(url, data, progress)))
        if ceiling_base_url is not None:
            timings["ceiling_documents_s"] = asyncio.run(
                fill_ceiling_documents(url, data, ceiling_base_url, progress)
            )
    token = asyncio.run(_finish(url))
    if not is_sqlite:
        t0 = time.perf_counter()
        asyncio.run(settle_postgresql(url))
        timings["settle_s"] = time.perf_counter() - t0
        progress(f"  VACUUM (ANALYZE) and CHECKPOINT ({timings['settle_s']:.1f} s)")
    timings["total_s"] = time.perf_counter() - t_all
    return SeedResult(dataset=replace(data), token=token, timings_s=timings, notes=notes)
