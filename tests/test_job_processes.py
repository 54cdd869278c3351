"""The deletion sync and the expiry job in real ``idstore`` processes: two
workers racing for one tick, a worker killed (SIGKILL) or stopped (SIGTERM)
in the middle of a run, and ``idstore jobs run --as-of`` from the command
line.

The processes run against the test's database; the test polls the database
(bounded by a deadline) to see them progress, never sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import groups, users
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.models import (
    AuditEntry,
    GroupMember,
    JobRun,
    LifecycleTransition,
    OutboxEntry,
    User,
)
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput
from identity_sync import registry
from identity_sync.clock import ManualClock

IDSTORE = [sys.executable, "-m", "idstore"]
ACTOR = Actor(name="test")
SCHEDULE = "0 0 1 1 *"
"""Deletion sync once a year: every process of a test sees the same tick."""
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
GROUPS = 3
DEADLINE_S = 60.0

on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"job_deletion_sync_schedule": SCHEDULE, **changes})


def _env(url: str, batch_size: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "IDSTORE_JOB_DELETION_SYNC_SCHEDULE": SCHEDULE,
        "IDSTORE_JOB_BATCH_SIZE": str(batch_size),
        "IDSTORE_LOG_LEVEL": "INFO",
    }


def _start(args: list[str], url: str, batch_size: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*IDSTORE, *args], env=_env(url, batch_size), stdout=out, stderr=subprocess.STDOUT
        )


async def _seed(store: Store, engine: AsyncEngine, n: int) -> list[str]:
    """``n`` users suspended long ago, each a member of :data:`GROUPS` groups."""
    ids = []
    for i in range(n):
        data = UserInput(
            user_name=f"leaver{i:05}@example.com",
            columns={"idp_username": f"leaver{i}", "active": False},
        )
        ids.append((await users.create_user(store, data, ACTOR)).user.id)
    for g in range(GROUPS):
        await groups.create_group(store, f"team-{g}", ACTOR, member_ids=ids)
    async with create_session_factory(engine)() as session:
        await session.execute(update(User).values(lifecycle_changed_at=LONG_AGO))
        await session.commit()
    return sorted(ids)


async def _scalar(engine: AsyncEngine, statement: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(statement)).scalar()


async def _inactive(engine: AsyncEngine) -> int:
    query = select(func.count()).select_from(User).where(User.lifecycle == "INACTIVE")
    return int(await _scalar(engine, query) or 0)


def _text(log: Path) -> str:
    return log.read_text()


async def _wait_for_progress(
    engine: AsyncEngine, process: subprocess.Popen[bytes], log: Path, at_least: int
) -> int:
    """Poll until ``at_least`` users are INACTIVE; the process must still run."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        done = await _inactive(engine)
        if done >= at_least:
            return done
        assert process.poll() is None, f"the process ended early:\n{_text(log)}"
        await asyncio.sleep(0.005)
    raise AssertionError(f"no progress within {DEADLINE_S} s:\n{_text(log)}")


async def _wait_for_other_sessions_to_end(engine: AsyncEngine) -> None:
    """A killed client's server process ends when it sees the closed socket;
    until then it may hold its batch's row locks."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'"
    )
    deadline = time.monotonic() + DEADLINE_S
    while await _scalar(engine, query):
        assert time.monotonic() < deadline, "a killed worker's session never ended"
        await asyncio.sleep(0.01)


async def _per_user(engine: AsyncEngine) -> dict[str, tuple[str, int, int, int, int]]:
    """Each user's state, memberships, deletion-sync history rows, Auth0
    events and the groups its deprovisioning audit rows say it left."""
    async with engine.connect() as connection:
        states = dict((await connection.execute(select(User.id, User.lifecycle))).all())
        members = Counter((await connection.execute(select(GroupMember.member_id))).scalars().all())
        history = Counter(
            (
                await connection.execute(
                    select(LifecycleTransition.user_id).where(
                        LifecycleTransition.cause == "deletion-sync"
                    )
                )
            )
            .scalars()
            .all()
        )
        events = (
            await connection.execute(
                select(OutboxEntry.target, OutboxEntry.aggregate_id, OutboxEntry.payload)
            )
        ).all()
        audited = (
            await connection.execute(
                select(AuditEntry.resource_id, AuditEntry.details).where(
                    AuditEntry.action == "user.deprovision"
                )
            )
        ).all()
    blocks: Counter[str] = Counter()
    for target, aggregate_id, payload in events:
        if payload.get("cause") == "deletion-sync" and target == "auth0":
            blocks[aggregate_id] += 1
    named: Counter[str] = Counter()
    for user_id, details in audited:
        named[user_id] += len(details["groups"])
    return {
        user: (state, members[user], history[user], blocks[user], named[user])
        for user, state in states.items()
    }


DONE = ("INACTIVE", 0, 1, 1, GROUPS)
UNTOUCHED = ("SUSPENDED", GROUPS, 0, 0, 0)


async def _assert_whole(engine: AsyncEngine) -> tuple[int, int]:
    """Every user is either wholly deprovisioned or wholly untouched; how many of each."""
    seen = Counter((await _per_user(engine)).values())
    assert set(seen) <= {DONE, UNTOUCHED}, f"half-applied users: {seen}"
    return seen[DONE], seen[UNTOUCHED]


async def _deletion_runs(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list(
            (
                await connection.execute(
                    select(JobRun).where(JobRun.job == "deletion-sync").order_by(JobRun.id)
                )
            ).all()
        )


@on_postgresql
async def test_two_workers_racing_for_one_tick_run_it_once(
    settings: Settings, engine: AsyncEngine, store: Store, tmp_path: Path
) -> None:
    """Two ``idstore worker --until-idle`` processes started together: one
    run row for the tick, every user deprovisioned exactly once."""
    n = 200
    await _seed(store, engine, n)
    logs = [tmp_path / f"worker-{k}.log" for k in range(2)]
    args = ["worker", "--until-idle", "--job", "deletion-sync"]
    processes = [_start(args, settings.database_url, 10, log) for log in logs]
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=DEADLINE_S) == 0, log.read_text()

    [run] = await _deletion_runs(engine)
    assert (run.status, run.attempts, run.trigger) == ("SUCCEEDED", 1, "schedule")
    assert run.counts["deprovisioned"] == n
    assert await _assert_whole(engine) == (n, 0)
    printed = [log.read_text().count(f"#{run.id} ") for log in logs]
    assert sorted(printed) == [0, 1], "one worker ran the tick, the other found it taken"


@on_postgresql
async def test_a_killed_worker_leaves_no_half_done_user_and_its_tick_is_taken_over(
    settings: Settings, engine: AsyncEngine, store: Store, tmp_path: Path
) -> None:
    """SIGKILL in the middle of the deletion sync (batches of two): every
    user is whole, the run stays RUNNING with its lease; once the lease has
    run out the next worker takes the tick over, finishes it, and a run after
    that changes nothing."""
    n = 600
    await _seed(store, engine, n)
    log = tmp_path / "worker.log"
    process = _start(
        ["worker", "--until-idle", "--job", "deletion-sync"], settings.database_url, 2, log
    )
    try:
        await _wait_for_progress(engine, process, log, at_least=20)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE_S)
    await _wait_for_other_sessions_to_end(engine)

    done, untouched = await _assert_whole(engine)
    assert done >= 20
    assert untouched > 0, "killed before the end"
    [run] = await _deletion_runs(engine)
    assert (run.status, run.attempts) == ("RUNNING", 1)
    assert run.lease_until is not None
    assert f":{process.pid}:" in run.worker

    taker = await Store.open(_settings(settings, job_batch_size=50))
    try:
        clock = ManualClock(run.lease_until + timedelta(seconds=1))
        worker = registry.build_worker(taker, clock, only=["deletion-sync"])
        [finished] = await worker.run_due()
        assert (finished.id, finished.attempts, finished.status) == (run.id, 2, "SUCCEEDED")
        assert finished.counts["deprovisioned"] == untouched
        assert await _assert_whole(engine) == (n, 0)

        before = await _per_user(engine)
        again = await worker.run_now("deletion-sync", as_of=finished.as_of)
        assert again is not None
        assert (again.status, again.counts) == ("SUCCEEDED", {})
        assert await _per_user(engine) == before
    finally:
        await taker.close()


@on_postgresql
async def test_a_worker_stopped_by_sigterm_hands_its_run_back_between_batches(
    settings: Settings, engine: AsyncEngine, store: Store, tmp_path: Path
) -> None:
    """SIGTERM to ``idstore worker``: it finishes the batch in hand, records
    the run INTERRUPTED with what it did, and exits 0; every user is whole,
    and the next worker takes the run over at once and finishes it."""
    n = 600
    await _seed(store, engine, n)
    log = tmp_path / "worker.log"
    process = _start(["worker", "--job", "deletion-sync"], settings.database_url, 2, log)
    try:
        await _wait_for_progress(engine, process, log, at_least=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=DEADLINE_S)

    done, untouched = await _assert_whole(engine)
    assert untouched > 0, "the run stopped before the end"
    [run] = await _deletion_runs(engine)
    assert (run.status, run.attempts, run.message) == (
        "INTERRUPTED",
        1,
        "the worker is shutting down",
    )
    assert run.counts["deprovisioned"] == done

    taker = await Store.open(_settings(settings, job_batch_size=50))
    try:
        worker = registry.build_worker(
            taker, ManualClock(datetime.now(UTC)), only=["deletion-sync"]
        )
        [finished] = await worker.run_due()
        assert (finished.id, finished.attempts, finished.status) == (run.id, 2, "SUCCEEDED")
        assert finished.counts["deprovisioned"] == n, "the counts carry over the take-over"
    finally:
        await taker.close()
    assert await _assert_whole(engine) == (n, 0)


# -- idstore jobs run --as-of, on a SQLite file --------------------------------


def _idstore(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IDSTORE, *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def _run_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_jobs_run_as_of_applies_the_rules_at_that_time(
    settings: Settings, engine: AsyncEngine, store: Store
) -> None:
    """``idstore jobs run expiry --as-of`` suspends the users whose date
    passed by then and no other; a dry run of the deletion sync a day later
    reports the suspended user and changes nothing; the real run makes it
    INACTIVE; the history lists both runs."""
    when = datetime(2030, 6, 15, 10, tzinfo=UTC)
    ids = {}
    for name, expiration in (
        ("expired", when - timedelta(hours=1)),
        ("later", when + timedelta(days=1)),
        ("never", None),
    ):
        data = UserInput(
            user_name=f"{name}@example.com",
            columns={"idp_username": name, "expiration_date": expiration},
        )
        ids[name] = (await users.create_user(store, data, ACTOR)).user.id

    async def states() -> dict[str, str]:
        found = {}
        for name, user_id in ids.items():
            found[name] = (await users.get_user(store, user_id)).user.lifecycle
        return found

    url = settings.database_url
    expiry = _run_json(
        _idstore(url, "jobs", "run", "expiry", "--as-of", "2030-06-15T10:00:00Z", "--json")
    )
    assert (expiry["status"], expiry["trigger"], expiry["counts"]) == (
        "SUCCEEDED",
        "manual",
        {"suspended": 1},
    )
    assert expiry["as_of"] == "2030-06-15T10:00:00+00:00"
    assert await states() == {"expired": "SUSPENDED", "later": "ACTIVE", "never": "ACTIVE"}

    same_day = _run_json(
        _idstore(url, "jobs", "run", "deletion-sync", "--as-of", "2030-06-15T23:00:00", "--json")
    )
    assert same_day["counts"] == {}, "suspended today: untouched until tomorrow"

    preview = _run_json(
        _idstore(
            url,
            "jobs",
            "run",
            "deletion-sync",
            "--dry-run",
            "--as-of",
            "2030-06-16T02:00:00+00:00",
            "--json",
        )
    )
    assert (preview["dry_run"], preview["counts"]) == (True, {"deprovisioned": 1})
    assert await states() == {"expired": "SUSPENDED", "later": "ACTIVE", "never": "ACTIVE"}

    real = _run_json(
        _idstore(
            url, "jobs", "run", "deletion-sync", "--as-of", "2030-06-16T02:00:00+00:00", "--json"
        )
    )
    assert real["counts"] == {"deprovisioned": 1}
    assert await states() == {"expired": "INACTIVE", "later": "ACTIVE", "never": "ACTIVE"}

    history = _idstore(url, "jobs", "history", "deletion-sync", "--json")
    assert history.returncode == 0, history.stderr
    assert [r["dry_run"] for r in json.loads(history.stdout)] == [False, True, False]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2030-13-01",
        "99999-01-01T00:00:00",
        "2030-06-15T10:00:00+99:00",
        "x" * 10_000,
        "2030-06-15T10:00:00.000000000000000000000000000000000000000000000000001",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00",
    ],
)
def test_jobs_run_refuses_an_as_of_that_is_not_a_time(settings: Settings, value: str) -> None:
    """A bad ``--as-of`` is a usage error (exit 2, one line naming the
    value's problem), and nothing runs."""
    result = _idstore(settings.database_url, "jobs", "run", "expiry", "--as-of", value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not an ISO 8601 time" in result.stderr
    assert "Traceback" not in result.stderr
