"""Seeding the authorization benchmark's database (:mod:`bench.authz_data`)
with asyncpg ``COPY``, and keeping it between runs.

The database (``idstore_bench_authz`` unless told otherwise; its name must
start with ``idstore_bench``) is created and migrated by
:func:`bench.seed.fresh_database`, then filled: the secondary indexes of the
big tables dropped during the ``COPY`` and rebuilt after it, users and their
memberships generated in a child process one chunk ahead of the ``COPY``,
the foreign-key triggers off for the loading session
(``session_replication_role = replica``: the rows are consistent by
construction, and checking 3,000,000 memberships one by one would double the
time), then ``VACUUM (ANALYZE)``: this machine's PostgreSQL runs without
autovacuum, and a steady database would have been vacuumed and analyzed by
it (fresh statistics for the planner, the visibility map for index-only
scans).

The seeded database is kept: its comment (``COMMENT ON DATABASE``) records
the sizes, :data:`bench.authz_data.SEED_VERSION` and the migration head it
was seeded at, and the next run with the same three reuses it. The bench
changes nothing else for good (the role-change step puts the probe role
back), so only the RBAC revision and the tokens grow between runs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import make_url

from identity_store import counts, migrate, tokens
from identity_store.database import create_engine, create_session_factory
from identity_store.errors import ValidationError
from identity_store.settings import Settings

from .authz_data import (
    MEMBER_COLUMNS,
    SEED_VERSION,
    USER_COLUMNS,
    USER_ROLE_EVERY,
    AuthzData,
    Sizes,
    user_rows,
)
from .seed import _asyncpg_dsn, drop_secondary_indexes, fresh_database, rebuild_indexes

CHUNK = 50_000
BULK_TABLES = (
    "users", "group_members", "binding_subjects", "binding_groups", "binding_roles",
    "binding_permissions", "role_permissions", "user_roles", "group_role_mappings", "bindings",
)  # fmt: skip
GROUP_COLUMNS = (
    "id", "display_name", "display_name_normalized", "external_id", "created_at",
    "updated_at", "version",
)  # fmt: skip
GROUP_COLUMNS = (
    "id", "display_name", "display_name_normalized", "external_id", "created_at",
    "updated_at", "version",
)  # fmt: skip
Progress = Callable[[str], None]


def _stamp(sizes: Sizes) -> dict[str, Any]:
    return {
        "sizes": sizes.to_json(),
        "seed_version": SEED_VERSION,
        "migration_head": migrate.head_revision(),
    }


async def _cached_stamp(url: str) -> dict[str, Any] | None:
    """The stamp of the database at ``url``, if it exists and has one."""
    import asyncpg  # type: ignore[import-untyped]

    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"))
    try:
        comment = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
    finally:
        await conn.close()
    if not comment:
        return None
    try:
        found = json.loads(comment)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _small_rows(data: AuthzData, now: datetime) -> dict[str, tuple[tuple[str, ...], list[Any]]]:
    """Every table but users and their memberships: (columns, rows)."""
    groups: list[Any] = []
    edges: list[Any] = []
    for k in range(data.sizes.groups):
        gid = data.group_id(k)
        name = f"authz-l{data.level(k)}-{k:05d}"
        groups.append((gid, name, name, f"ext-{gid}", now, now, 1))
        edges.extend((data.group_id(p), gid, "Group", now) for p in data.parents(k))
    roles: list[Any] = []
    role_perms: list[Any] = []
    for r in range(data.sizes.roles):
        rid = data.role_id(r)
        roles.append((rid, f"Role {r}", f"bench role {r}", now, now))
        role_perms.extend((rid, p) for p in data.role_permissions(r))
    bindings: list[Any] = []
    subjects: list[Any] = []
    bgroups: list[Any] = []
    broles: list[Any] = []
    bperms: list[Any] = []
    for spec in data.bindings():
        bid = data.binding_id(spec.index)
        rtype, resource_id = spec.resource if spec.resource is not None else (None, None)
        bindings.append((bid, rtype, resource_id, now, now))
        subjects.extend((bid, data.user_id(u)) for u in spec.subjects)
        bgroups.extend((bid, data.group_id(g)) for g in spec.groups)
        broles.extend((bid, data.role_id(r)) for r in spec.roles)
        bperms.extend((bid, p) for p in spec.permissions)
    mappings = [
        (data.group_id(k), data.role_id(r), now)
        for k in range(data.sizes.groups)
        for r in data.group_roles(k)
    ]
    user_roles = [
        (data.user_id(i), data.role_id(r))
        for i in range(0, data.sizes.users, USER_ROLE_EVERY)
        for r in data.user_roles(i)
    ]
    return {
        "groups": (GROUP_COLUMNS, groups),
        "group_members": (MEMBER_COLUMNS, edges),
        "roles": (("role_id", "name", "description", "created_at", "updated_at"), roles),
        "role_permissions": (("role_id", "permission"), role_perms),
        "bindings": (
            ("binding_id", "resource_type", "resource_id", "created_at", "updated_at"),
            bindings,
        ),
        "binding_subjects": (("binding_id", "user_id"), subjects),
        "binding_groups": (("binding_id", "group_id"), bgroups),
        "binding_roles": (("binding_id", "role_id"), broles),
        "binding_permissions": (("binding_id", "permission"), bperms),
        "group_role_mappings": (("group_id", "role_id", "created_at"), mappings),
        "user_roles": (("user_id", "role_id"), user_roles),
    }


async def _copy(url: str, data: AuthzData, progress: Progress) -> dict[str, float]:
    import asyncpg

    timings: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET session_replication_role = replica")
        indexes = await drop_secondary_indexes(conn, BULK_TABLES)

        t0 = time.perf_counter()
        counted: dict[str, int] = {}
        for table, (columns, rows) in _small_rows(data, datetime.now(UTC)).items():
            await conn.copy_records_to_table(table, records=rows, columns=columns)
            counted[table] = len(rows)
        timings["rbac_s"] = time.perf_counter() - t0
        progress(
            "  "
            + ", ".join(f"{t} {n:,}" for t, n in counted.items())
            + f" ({timings['rbac_s']:.1f} s)"
        )

        t0 = time.perf_counter()
        total = data.sizes.users
        chunks = [(s, min(total, s + CHUNK)) for s in range(0, total, CHUNK)]
        memberships = 0
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pending = loop.run_in_executor(pool, user_rows, data, *chunks[0])
            for k, (_, stop) in enumerate(chunks):
                users, members = await pending
                if k + 1 < len(chunks):
                    pending = loop.run_in_executor(pool, user_rows, data, *chunks[k + 1])
                await conn.copy_records_to_table("users", records=users, columns=USER_COLUMNS)
                await conn.copy_records_to_table(
                    "group_members", records=members, columns=MEMBER_COLUMNS
                )
                memberships += len(members)
                if stop == total or (k + 1) % 4 == 0:
                    progress(
                        f"  users {stop:,}/{total:,}, {memberships:,} memberships"
                        f" ({time.perf_counter() - t0:.1f} s)"
                    )
        timings["users_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        await rebuild_indexes(conn, indexes)
        timings["indexes_s"] = time.perf_counter() - t0
        progress(f"  {len(indexes)} indexes rebuilt ({timings['indexes_s']:.1f} s)")
        await conn.execute("SET session_replication_role = DEFAULT")
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
        progress(f"  VACUUM (ANALYZE) ({timings['vacuum_analyze_s']:.1f} s)")
    finally:
        await conn.close()
    return timings


async def _recount(url: str) -> None:
    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            await counts.recount(session)
            await session.commit()
    finally:
        await engine.dispose()


async def _set_stamp(url: str, stamp: dict[str, Any]) -> None:
    import asyncpg

    name = make_url(url).database or ""
    text = json.dumps(stamp, sort_keys=True).replace("'", "''")
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{text}'")
    finally:
        await conn.close()


async def prepare(
    server: str, name: str, sizes: Sizes, reseed: bool, progress: Progress = print
) -> tuple[str, dict[str, float] | None]:
    """The URL of a database seeded with ``sizes``: the kept one when its
    stamp matches (timings ``None``), else a fresh one (with its timings)."""
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    wanted = _stamp(sizes)
    if not reseed and await _cached_stamp(url) == wanted:
        progress(f"reusing {name}: seeded with the same sizes, seed version and migrations")
        return url, None
    t_all = time.perf_counter()
    progress(f"seeding {name}: {sizes.to_json()}")
    t0 = time.perf_counter()
    url = await fresh_database(server, name)
    timings = {"migrate_s": time.perf_counter() - t0}
    timings.update(await _copy(url, AuthzData(sizes), progress))
    await _recount(url)
    await _set_stamp(url, wanted)
    timings["total_s"] = time.perf_counter() - t_all
    return url, timings


async def issue_tokens(url: str) -> tuple[str, str, str]:
    """An ``authz:check`` token (``admin`` while that scope does not exist:
    the third value names the scope used) and an ``admin`` token."""
    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    try:
        async with create_session_factory(engine)() as session:
            try:
                _, checker = await tokens.create_token(
                    session, f"bench-authz-check-{stamp}", ["authz:check"]
                )
                scope = "authz:check"
            except ValidationError:
                _, checker = await tokens.create_token(
                    session, f"bench-authz-check-{stamp}", ["admin"]
                )
                scope = "admin"
            _, admin = await tokens.create_token(session, f"bench-authz-admin-{stamp}", ["admin"])
            await session.commit()
            return checker, admin, scope
    finally:
        await engine.dispose()
