"""Benchmark of the lifecycle jobs (issue 11, docs/benchmarks.md "Lifecycle
jobs"): the deletion sync of many suspended users, and the CPU an idle
worker uses.

    .venv/bin/python -m bench.jobs                   # 100,000 users, 3 groups each
    .venv/bin/python -m bench.jobs --users 10000 --idle-seconds 10

1. **Seed.** The database (``idstore_bench_jobs_del`` unless ``--pg-url``
   says otherwise; its name must start with ``idstore_bench``) is dropped,
   recreated and migrated (``alembic upgrade head``); then asyncpg ``COPY``
   loads N users ``SUSPENDED`` since yesterday, each a member of three
   groups: one everyone is in, one of 50 departments and one of 200
   projects, and ``ANALYZE`` runs.
2. **Deletion sync.** ``idstore jobs run deletion-sync --json``, the real
   command in its own process: the elapsed time, the run's own duration, and
   users and rows per second. Then the database is checked: every user
   ``INACTIVE``, no membership left, one history row per user.
3. **Idle worker.** ``idstore worker`` is started on the same database and,
   once its first look at the schedules is done (no run ``RUNNING``), its
   CPU time (``utime + stime`` from ``/proc/<pid>/stat``) is read over
   ``--idle-seconds``.

Every process it starts is stopped in a ``finally`` block.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from identity_store import counts, migrate
from identity_store.database import create_engine, create_session_factory
from identity_store.models import new_id
from identity_store.settings import Settings

from .machine import git_state
from .procs import cpu_seconds
from .seed import _asyncpg_dsn, recreate_postgresql

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/idstore_bench_jobs_del"
IDSTORE = [sys.executable, "-m", "idstore"]
DEPARTMENTS = 50
PROJECTS = 200
CHUNK = 50_000

USER_COLUMNS = (
    "id", "user_name", "user_name_normalized", "idp_username", "idp_cloud_username",
    "idp_source", "user_type", "tags", "active", "lifecycle", "lifecycle_changed_at",
    "status", "providers", "created_at", "updated_at", "version",
    "profile_sync_attempts",
)  # fmt: skip
MEMBER_COLUMNS = ("group_id", "member_id", "member_type", "created_at")


def _groups() -> list[tuple[str, str]]:
    """``(id, displayName)``: everyone, the departments, the projects."""
    names = ["everyone"]
    names += [f"department-{d}" for d in range(DEPARTMENTS)]
    names += [f"project-{p}" for p in range(PROJECTS)]
    return [(new_id(), name) for name in names]


async def seed(url: str, users: int) -> dict[str, float]:
    """N users suspended yesterday, each in three groups (see the module docstring)."""
    import asyncpg  # type: ignore[import-untyped]

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    await recreate_postgresql(url)
    await migrate.upgrade_async(Settings(DATABASE_URL=url))
    timings["migrate_s"] = time.perf_counter() - t0

    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    groups = _groups()
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        t0 = time.perf_counter()
        await conn.execute("SET synchronous_commit = off")
        await conn.executemany(
            "INSERT INTO groups (id, display_name, display_name_normalized, created_at,"
            " updated_at, version) VALUES ($1, $2, $2, $3, $3, 1)",
            [(gid, name, now) for gid, name in groups],
        )
        for start in range(0, users, CHUNK):
            stop = min(users, start + CHUNK)
            rows, members = [], []
            for i in range(start, stop):
                uid = new_id()
                name = f"leaver{i}@bench.example.com"
                rows.append((
                    uid, name, name, f"leaver{i}", name, "AAD", "PERSON", "[]", False,
                    "SUSPENDED", yesterday, "[]", "[]", now, yesterday, 2, 0,
                ))  # fmt: skip
                for k in (0, 1 + i % DEPARTMENTS, 1 + DEPARTMENTS + i % PROJECTS):
                    members.append((groups[k][0], uid, "User", now))
            await conn.copy_records_to_table("users", records=rows, columns=USER_COLUMNS)
            await conn.copy_records_to_table(
                "group_members", records=members, columns=MEMBER_COLUMNS
            )
            print(f"  seeded {stop:,}/{users:,} users ({time.perf_counter() - t0:.1f} s)")
        timings["copy_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("ANALYZE")
        timings["analyze_s"] = time.perf_counter() - t0
    finally:
        await conn.close()

    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            await counts.recount(session)
            await session.commit()
    finally:
        await engine.dispose()
    return timings


async def check(url: str) -> dict[str, int]:
    """What the deletion sync left: states, memberships, history, outbox rows."""
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        found: dict[str, int] = {}
        for state, n in await conn.fetch("SELECT lifecycle, count(*) FROM users GROUP BY 1"):
            found[f"users_{state.lower()}"] = n
        for table in ("group_members", "lifecycle_history", "audit_log", "outbox"):
            found[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return found
    finally:
        await conn.close()


def _env(url: str, batch_size: int | None) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "IDSTORE_LOG_LEVEL": "WARNING"}
    if batch_size is not None:
        env["IDSTORE_JOB_BATCH_SIZE"] = str(batch_size)
    return env


def run_deletion_sync(url: str, batch_size: int | None) -> tuple[float, float, dict[str, Any]]:
    """``idstore jobs run deletion-sync --json``: the elapsed time, the CPU
    time of the process (user + system), and the run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(
        [*IDSTORE, "jobs", "run", "deletion-sync", "--json"],
        env=_env(url, batch_size),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"deletion sync failed:\n{result.stdout}\n{result.stderr}")
    run: dict[str, Any] = json.loads(result.stdout)
    return elapsed, cpu, run


async def _runs_in_progress(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM job_runs WHERE status = 'RUNNING'"))
    finally:
        await conn.close()


def idle_worker_cpu(url: str, seconds: float, log: Path) -> dict[str, float]:
    """CPU of an ``idstore worker`` process between ticks, as a share of one core."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*IDSTORE, "worker"],
            env={**_env(url, None), "IDSTORE_LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        # Its first look at the schedules claims the ticks due (today's
        # deletion sync finds nothing left to do); measure after that.
        while asyncio.run(_runs_in_progress(url)):
            if time.monotonic() > deadline:
                raise SystemExit("the worker's first runs did not end")
            time.sleep(0.1)
        time.sleep(1.0)
        startup = cpu_seconds([process.pid])
        t0 = time.perf_counter()
        time.sleep(seconds)
        used = cpu_seconds([process.pid]) - startup
        wall = time.perf_counter() - t0
        if process.poll() is not None:
            raise SystemExit(f"the worker died:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    return {
        "startup_cpu_s": startup,
        "idle_wall_s": wall,
        "idle_cpu_s": used,
        "idle_core_pct": 100.0 * used / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.jobs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--pg-url", default=DEFAULT_URL)
    parser.add_argument(
        "--batch-size", type=int, help="IDSTORE_JOB_BATCH_SIZE of the run (default: the setting's)"
    )
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--no-idle", action="store_true", help="skip the idle worker")
    args = parser.parse_args(argv)

    state = git_state()
    dirty = f" (changed since: {', '.join(state['changed'])})" if state["changed"] else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"commit {state['head']}{dirty}, {os.cpu_count()} CPUs, load average {load}")
    print(f"seeding {args.users:,} suspended users, 3 groups each, into {args.pg_url}")
    timings = asyncio.run(seed(args.pg_url, args.users))
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    before = asyncio.run(check(args.pg_url))

    elapsed, cpu, run = run_deletion_sync(args.pg_url, args.batch_size)
    after = asyncio.run(check(args.pg_url))
    duration = float(run["duration_seconds"] or 0.0)
    written = sum(after[t] - before[t] for t in ("lifecycle_history", "audit_log", "outbox"))
    changed = args.users + (before["group_members"] - after["group_members"]) + written
    print(f"deletion sync: {run['status']} {run['counts']}")
    print(
        f"  elapsed {elapsed:.1f} s (the command), run {duration:.1f} s (its record);"
        f" the command's CPU {cpu:.1f} s (the rest: the database and waiting on it)"
    )
    print(
        f"  {args.users / duration:,.0f} users/s; {changed:,} rows changed"
        f" ({changed / duration:,.0f} rows/s: users updated, memberships deleted,"
        " history/audit/outbox inserted)"
    )
    print(f"  after: {after}")
    ok = (
        run["status"] == "SUCCEEDED"
        and after.get("users_inactive") == args.users
        and after["group_members"] == 0
        and after["lifecycle_history"] == args.users
    )
    print(f"  check: {'every user INACTIVE, no membership left' if ok else 'FAILED'}")
    print(f"  target < 120 s: {'met' if duration < 120 else 'MISSED'}")
    print(f"  load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if not args.no_idle:
        log = Path(f"/tmp/bench-jobs-worker-{os.getpid()}.log")  # noqa: S108
        idle = idle_worker_cpu(args.pg_url, args.idle_seconds, log)
        print(
            f"idle worker: {idle['idle_cpu_s']:.3f} s CPU in {idle['idle_wall_s']:.1f} s"
            f" = {idle['idle_core_pct']:.2f}% of a core (target < 1%);"
            f" start-up {idle['startup_cpu_s']:.2f} s CPU"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
