"""The Auth0 sync against a rate-limited Auth0 (issue 12), on PostgreSQL.

    .venv/bin/python -m bench.auth0_sync drain [--users 10000] [--rate 50]
    .venv/bin/python -m bench.auth0_sync import [--users 100000]

``drain``: ``--users`` users, each with the ``auth0`` outbox row its creation
writes, delivered one by one (``POST /api/v2/users`` each) by the dispatcher
as ``idstore worker`` runs it, to the emulator of the tests limited to
``--rate`` requests per second (Auth0's 429 beyond it) and the dispatcher's
shared budget set to the same rate. Printed: the time next to what the limit
allows (users / rate), the 429s met, and the database time the dispatcher
spent per delivered change (every statement of its store, timed around the
driver's execute: an upper bound, the round trips included).

``import``: the same store with ``--users`` users and no account, created
through Auth0 bulk import jobs (files under 500 KB, at most two running)
by the dispatcher's import companion, until every user has its account;
the emulator takes :data:`JOB_SECONDS` per job.

The database ``idstore_bench_auth0`` is dropped, created, migrated and
seeded in bulk. The emulator (tests/emulators/auth0.py) serves from a
process of its own, as Auth0 is another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, event, func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from identity_store import audit
from identity_store.database import create_engine
from identity_store.models import OutboxEntry, User, UserMultiValue, new_id
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.clock import SystemClock
from identity_sync.dispatcher import Dispatcher, Totals
from tests.emulators.auth0 import Auth0Emulator

from .procs import free_port
from .seed import fresh_database

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE = "idstore_bench_auth0"
CHUNK = 5_000
JOB_SECONDS = 2.0
"""Seconds an import job of the emulator spends pending, then processing, each."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.auth0_sync", description=__doc__)
    parser.add_argument("mode", choices=("drain", "import"))
    parser.add_argument("--users", type=int)
    parser.add_argument("--rate", type=float, default=50.0, help="Auth0's limit, requests/s")
    parser.add_argument("--concurrency", type=int, default=8, help="outbox_concurrency")
    parser.add_argument("--batch", type=int, default=50, help="outbox_batch_size")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL")
    return parser.parse_args(argv)


async def seed(url: str, count: int) -> None:
    """``count`` ACTIVE users with a primary e-mail, each with the ``auth0``
    upsert row its creation writes."""
    now = datetime.now(UTC)
    users = cast(Table, User.__table__)
    values = cast(Table, UserMultiValue.__table__)
    rows_table = cast(Table, OutboxEntry.__table__)
    engine = create_engine(Settings(DATABASE_URL=url))
    try:
        for start in range(0, count, CHUNK):
            people, mails, events = [], [], []
            for n in range(start, min(start + CHUNK, count)):
                user_id = new_id()
                name = f"user{n:06d}@example.com"
                people.append(
                    {
                        "id": user_id,
                        "user_name": name,
                        "user_name_normalized": name,
                        "idp_username": f"user{n:06d}",
                        "idp_cloud_username": name,
                        "idp_source": "AAD",
                        "given_name": "Given",
                        "family_name": f"Family{n}",
                        "user_type": "PERSON",
                        "tags": [],
                        "active": True,
                        "lifecycle": "ACTIVE",
                        "lifecycle_changed_at": now,
                        "status": [],
                        "providers": [],
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                )
                mails.append(
                    {
                        "user_id": user_id,
                        "attribute": "emails",
                        "position": 0,
                        "value": name,
                        "value_normalized": name,
                        "primary": True,
                        "verified": True,
                    }
                )
                events.append(
                    audit.outbox_row("auth0", "upsert", "User", user_id, {"version": 1}, now)
                )
            async with engine.begin() as connection:
                await connection.execute(insert(users), people)
                await connection.execute(insert(values), mails)
                await connection.execute(insert(rows_table), events)
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


class EmulatorProcess:
    """The Auth0 emulator, served by a process of its own."""

    def __init__(self, rate: float | None, burst: float | None) -> None:
        self.port = free_port()
        self.rate = rate
        self.burst = burst
        self.process: subprocess.Popen[str] | None = None
        self.emulator = Auth0Emulator()  # its credentials and URLs
        self.emulator.port = self.port

    def __enter__(self) -> EmulatorProcess:
        code = (
            "import json, sys\n"
            "from tests.emulators.auth0 import Auth0Emulator\n"
            f"e = Auth0Emulator(job_pending_seconds={JOB_SECONDS}, "
            f"job_processing_seconds={JOB_SECONDS})\n"
            "e.record_requests = False\n"
            f"e.start(port={self.port})\n"
            f"e.limit_rate({self.rate!r}, {self.burst!r})\n"
            "print('ready', flush=True)\n"
            "for line in sys.stdin:\n"
            "    if line.strip() == 'stats':\n"
            "        print(json.dumps({'users': len(e.users), 'duplicates': e.duplicates(),"
            " 'throttled': e.statuses[429], 'jobs': len(e.jobs),"
            " 'violations': e.contract_violations[:5]}), flush=True)\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the emulator process did not start")
        return self

    def stats(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdin
        assert self.process.stdout
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return cast(dict[str, Any], json.loads(self.process.stdout.readline()))

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)


@contextmanager
def timed_statements(store: Store) -> Iterator[dict[str, float]]:
    """Sum the time of every statement the store's engine runs."""
    spent = {"seconds": 0.0, "statements": 0}
    sync_engine = store.engine.sync_engine

    def before(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
    ) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
        spent["seconds"] += time.perf_counter() - conn.info.pop("bench_started")
        spent["statements"] += 1

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    try:
        yield spent
    finally:
        event.remove(sync_engine, "before_cursor_execute", before)
        event.remove(sync_engine, "after_cursor_execute", after)


async def active_ms(url: str) -> float:
    """``pg_stat_database.active_time`` of the bench database: the time its
    backends spent executing statements (flushed when they end)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_stat_force_next_flush()"))
            value = await connection.scalar(
                text("SELECT active_time FROM pg_stat_database WHERE datname = current_database()")
            )
    finally:
        await engine.dispose()
    return float(value or 0.0)


ANALYZE_EVERY_S = 30.0
"""This machine's PostgreSQL runs with ``autovacuum = off``; a default server
analyzes a table that changed by a tenth within its naptime (60 s). The bench
does that itself meanwhile, so that plans see the load as it grows."""


async def analyze_meanwhile(url: str, stop: asyncio.Event) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=ANALYZE_EVERY_S)
            except TimeoutError:
                async with engine.connect() as connection:
                    await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def deliver(settings: Settings) -> tuple[float, Totals, dict[str, float], int]:
    stop = asyncio.Event()
    analyzing = asyncio.create_task(analyze_meanwhile(settings.database_url, stop))
    try:
        return await _deliver(settings)
    finally:
        stop.set()
        await analyzing


async def _deliver(settings: Settings) -> tuple[float, Totals, dict[str, float], int]:
    before = await active_ms(settings.database_url)
    store = await Store.open(settings)
    try:
        [dispatcher] = registry.build_dispatchers(store, SystemClock(), "bench")
        assert isinstance(dispatcher, Dispatcher)
        with timed_statements(store) as spent:
            started = time.perf_counter()
            totals = await dispatcher.drain()
            elapsed = time.perf_counter() - started
        await dispatcher.close()
        async with store.reading() as session:
            linked = int(
                await session.scalar(
                    select(func.count()).select_from(User).where(User.auth_user_id.is_not(None))
                )
                or 0
            )
    finally:
        await store.close()
    await asyncio.sleep(1.0)  # the closed backends report their times
    spent["server_ms"] = await active_ms(settings.database_url) - before
    return elapsed, totals, spent, linked


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    count = args.users or (10_000 if args.mode == "drain" else 100_000)
    print(f"database {DATABASE}: recreating, migrating, seeding {count:,} users with their rows")
    started = time.perf_counter()
    url = asyncio.run(fresh_database(args.server, DATABASE))
    asyncio.run(seed(url, count))
    print(f"  seeded in {time.perf_counter() - started:.1f} s")
    burst = max(1.0, args.rate / 10)
    rate = args.rate if args.mode == "drain" else None
    with EmulatorProcess(rate, burst if rate else None) as served:
        fields: dict[str, Any] = {
            "DATABASE_URL": url,
            **served.emulator.settings_fields(),
            "auth0_requests_per_second": args.rate,
            "auth0_burst": 1,
            "outbox_concurrency": args.concurrency,
            "outbox_batch_size": args.batch,
            "auth0_import_threshold": 0 if args.mode == "drain" else 1000,
            "auth0_import_poll_seconds": 1.0,
        }
        settings = Settings(**fields)
        print(
            f"Auth0 emulator (own process) on {served.emulator.url}"
            + (f", limited to {args.rate:g} requests/s (burst {burst:g})" if rate else "")
            + f"; dispatcher at {args.rate:g}/s, {args.concurrency} in flight, "
            f"claims of {args.batch}"
        )
        elapsed, totals, spent, linked = asyncio.run(deliver(settings))
        stats = served.stats()
    print(
        f"delivered: {json.dumps(totals.outcomes, sort_keys=True)}; rows {totals.rows:,}; "
        f"retries {totals.failed}, dead {totals.dead}"
    )
    print(
        f"users with an Auth0 id: {linked:,}; emulator accounts {stats['users']:,}; "
        f"duplicates {len(stats['duplicates'])}; 429s {stats['throttled']}; "
        f"import jobs {stats['jobs']}; contract violations {len(stats['violations'])}"
    )
    changes = totals.rows if args.mode == "drain" else linked  # imported: no row per user
    per_change = spent["server_ms"] / max(changes, 1)
    waited = spent["seconds"] * 1000 / max(changes, 1)
    print(
        f"database time of the dispatcher (PostgreSQL active_time): {spent['server_ms']:.0f} ms"
        f" = {per_change:.3f} ms per delivered change (target < 1 ms); "
        f"{int(spent['statements']):,} statements, {waited:.3f} ms per change as the client "
        f"waited for them (round trips and event-loop turns included)"
    )
    ok = linked == count and not stats["duplicates"] and not stats["violations"]
    if args.mode == "drain":
        allowed = count / args.rate
        ratio = elapsed / allowed
        print(
            f"elapsed {elapsed:.2f} s; the limit allows {allowed:.2f} s ({count:,} / "
            f"{args.rate:g}); ratio {ratio:.3f} (target <= 1.10)"
        )
        return 0 if ok and ratio <= 1.10 and per_change < 1.0 else 1
    print(f"elapsed {elapsed:.2f} s for {count:,} users by import jobs (target < 300 s)")
    return 0 if ok and elapsed < 300 else 1


if __name__ == "__main__":
    raise SystemExit(main())
