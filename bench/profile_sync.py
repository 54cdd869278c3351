"""Profile Sync against a rate-limited Graph (issue 11): 10,000 ``CREATED``
users on PostgreSQL, the Graph emulator of the tests limited to ``--rate``
look-ups per second and the client configured to that rate; one run of the
job, timed, next to the time the limit allows (users / rate).

    .venv/bin/python -m bench.profile_sync [--users 10000] [--rate 200]

The database ``idstore_bench_jobs`` is dropped and created again on the
server of ``--server`` (default: local PostgreSQL), migrated with the
project's migrations, and seeded in bulk (users without ``idp_username``
and ``idp_cloud_username``). The emulator (tests/emulators/graph.py) serves
on 127.0.0.1 from a process of its own, as Graph is another machine's, or
with ``--emulator thread`` from this process's background thread, as in the
tests. The run is the job as ``idstore jobs run profile-sync`` runs it
(registry, worker, store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text

from identity_store.database import create_engine
from identity_store.models import LifecycleTransition, User, new_id
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.clock import SystemClock
from tests.emulators.graph import GraphEmulator

from .procs import free_port
from .seed import fresh_database

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE = "idstore_bench_jobs"
CHUNK = 2_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_sync", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="Graph's limit, requests/s")
    parser.add_argument("--concurrency", type=int, default=8, help="graph_concurrency")
    parser.add_argument("--batch", type=int, default=500, help="job_batch_size")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL")
    parser.add_argument(
        "--emulator",
        choices=("process", "thread"),
        default="process",
        help="serve the emulator from a process of its own (as Graph is), or a thread of this one",
    )
    return parser.parse_args(argv)


def directory_users(count: int) -> list[dict[str, str]]:
    """The directory: one Entra user per store user, with both attributes."""
    return [
        {
            "id": str(uuid.uuid4()),
            "onPremisesSamAccountName": f"user{n:06d}",
            "userPrincipalName": f"user{n:06d}@contoso.com",
        }
        for n in range(count)
    ]


async def seed(url: str, directory: list[dict[str, str]]) -> None:
    """The store's users, ``CREATED``, each knowing its object id only."""
    now = datetime.now(UTC)
    table = cast(Table, User.__table__)
    engine = create_engine(Settings(DATABASE_URL=url))
    try:
        for start in range(0, len(directory), CHUNK):
            rows: list[dict[str, Any]] = []
            for entry in directory[start : start + CHUNK]:
                name = entry["userPrincipalName"].replace("@contoso.com", "@example.com")
                rows.append(
                    {
                        "id": new_id(),
                        "user_name": name,
                        "user_name_normalized": name,
                        "external_id": entry["id"],
                        "idp_reference_id": entry["id"],
                        "idp_source": "AAD",
                        "user_type": "PERSON",
                        "tags": [],
                        "active": True,
                        "lifecycle": "CREATED",
                        "lifecycle_changed_at": now,
                        "status": [],
                        "providers": [],
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                )
            async with engine.begin() as connection:
                await connection.execute(insert(table), rows)
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE users"))
    finally:
        await engine.dispose()


class EmulatorProcess:
    """The same emulator, served by a process of its own (``--emulator process``)."""

    def __init__(self, directory: list[dict[str, str]], rate: float) -> None:
        self.port = free_port()
        self.users_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
        json.dump(directory, self.users_file)
        self.users_file.close()
        self.rate = rate
        self.process: subprocess.Popen[str] | None = None
        self.emulator = GraphEmulator()  # for its credentials and URLs
        self.emulator.port = self.port

    def __enter__(self) -> GraphEmulator:
        code = (
            "import json, sys, threading\n"
            "from tests.emulators.graph import GraphEmulator\n"
            "e = GraphEmulator()\n"
            f"e.start(port={self.port})\n"
            f"for u in json.load(open({self.users_file.name!r})): e.add_user(**u)\n"
            f"e.limit_rate({self.rate})\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
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
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)
        os.unlink(self.users_file.name)


async def run_job(settings: Settings) -> tuple[float, Any]:
    store = await Store.open(settings)
    try:
        worker = registry.build_worker(store, SystemClock(), only=["profile-sync"])
        started = time.perf_counter()
        run = await worker.run_now("profile-sync")
        elapsed = time.perf_counter() - started
        async with store.reading() as session:
            states = dict(
                (
                    await session.execute(
                        select(User.lifecycle, func.count()).group_by(User.lifecycle)
                    )
                ).all()
            )
            transitions = await session.scalar(
                select(func.count()).select_from(LifecycleTransition)
            )
    finally:
        await store.close()
    return elapsed, (run, states, transitions)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"database {DATABASE}: recreating, migrating, seeding {args.users:,} CREATED users")
    started = time.perf_counter()
    url = asyncio.run(fresh_database(args.server, DATABASE))
    directory = directory_users(args.users)
    asyncio.run(seed(url, directory))
    print(f"  seeded in {time.perf_counter() - started:.1f} s")

    if args.emulator == "process":
        serving: Any = EmulatorProcess(directory, args.rate)
    else:
        serving = GraphEmulator()
    with serving as emulator:
        if args.emulator == "thread":
            for entry in directory:
                emulator.add_user(**entry)
            emulator.limit_rate(args.rate)
        settings = Settings(
            DATABASE_URL=url,
            **emulator.settings_fields(),
            graph_requests_per_second=args.rate,
            graph_concurrency=args.concurrency,
            job_batch_size=args.batch,
        )
        print(
            f"Graph emulator ({args.emulator}) on {emulator.url}, limited to {args.rate:g} "
            f"requests/s; client at {args.rate:g}/s, {args.concurrency} in flight, "
            f"batches of {args.batch}"
        )
        elapsed, (run, states, transitions) = asyncio.run(run_job(settings))
        throttled = (
            sum(1 for seen in emulator.seen() if seen.status == 429)
            if args.emulator == "thread"
            else None
        )
    allowed = args.users / args.rate
    print(f"run #{run.id}: {run.status}; {run.message}")
    print(f"  counts: {json.dumps(run.counts, sort_keys=True)}")
    print(f"  users by state: {json.dumps(states, sort_keys=True)}; transitions: {transitions:,}")
    if throttled is not None:
        print(f"  answers 429 from the emulator: {throttled}")
    print(
        f"elapsed {elapsed:.2f} s; the limit allows {allowed:.2f} s "
        f"({args.users:,} / {args.rate:g}); ratio {elapsed / allowed:.3f} "
        f"(target <= 1.10)"
    )
    ok = run.status == "SUCCEEDED" and states.get("ACTIVE") == args.users
    return 0 if ok and elapsed / allowed <= 1.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
