"""The CSV import in real ``idstore`` processes: ``idstore import`` killed
(SIGKILL) in the middle of a file and the job finished by a worker once
its lease ran out; ``idstore serve`` on SQLite running an import itself;
the command's exit status, report and one-line refusals.

The test polls the database (bounded by a deadline) to see a process
progress, never sleeps for a fixed time."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import imports, jobs
from identity_store.jobs import JobKind
from identity_store.models import AuditEntry, OutboxEntry, User
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.csv_import import ImportJobs

IDSTORE = [sys.executable, "-m", "idstore"]
DEADLINE_S = 60.0
ROWS = 1500
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")


def _write(path: Path, rows: int) -> Path:
    lines = ["userName,idpUsername,E-Mail"]
    lines += [f"k{i}@corp.example,k{i},k{i}@corp.example" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSTORE_")}
    return {**env, "DATABASE_URL": url, **settings}


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([*IDSTORE, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IDSTORE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def _scalar(engine: AsyncEngine, statement: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(statement)).scalar()


async def _job_progress(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        summaries = (await connection.execute(text("SELECT summary FROM jobs"))).scalars().all()
    for summary in summaries:
        found = json.loads(summary) if isinstance(summary, str) else summary
        return int(found.get("lastRow", 0))
    return 0


async def test_an_import_killed_mid_file_is_finished_by_a_worker_once_its_lease_ran_out(
    tmp_path: Path, store: Store, engine: AsyncEngine
) -> None:
    """SIGKILL leaves the job RUNNING with the rows of its committed batches;
    a worker takes it over when the lease has run out, goes on after the
    last committed row, and every row ends imported and reported once."""
    source = _write(tmp_path / "users.csv", ROWS)
    env = _env(
        store.settings.database_url,
        IDSTORE_IMPORT_BATCH_SIZE="50",
        IDSTORE_JOB_LEASE_SECONDS="2",
    )
    log = tmp_path / "import.log"
    process = _spawn(["import", str(source), "--map", "E-Mail=email"], env, log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while await _job_progress(engine) < 200:
            assert process.poll() is None, f"the import ended early:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    [job] = await jobs.list_jobs(store, kind=JobKind.IMPORT)
    assert job.status == "RUNNING"
    assert job.locked_by is not None
    assert job.locked_by.startswith("cli:")
    killed_at = int(job.summary["lastRow"])
    assert 200 <= killed_at < ROWS

    settings = store.settings.model_copy(
        update={"import_batch_size": 500, "job_lease_seconds": 2.0}
    )
    store.settings = settings
    worker = ImportJobs(store, name="successor", settings=settings)
    deadline = time.monotonic() + DEADLINE_S
    done = await worker.drain()
    while not done.jobs:  # the killed process's lease has not run out yet
        assert time.monotonic() < deadline, "the job was never taken over"
        await asyncio.sleep(0.05)
        done = await worker.drain()
    assert done.jobs == [job.id]
    finished = await jobs.get(store, job.id)
    assert finished is not None
    assert finished.status == "SUCCEEDED"
    assert finished.summary["created"] == ROWS
    assert finished.summary["done"] == ROWS
    entries = [e async for batch in imports.report_entries(store, job.id) for e in batch]
    assert [e[0] for e in entries] == list(range(1, ROWS + 1))
    assert Counter(e[2] for e in entries) == {"created": ROWS}
    assert await _scalar(engine, select(func.count()).select_from(User)) == ROWS
    creates = select(func.count()).where(AuditEntry.action == "user.create")
    assert await _scalar(engine, creates) == ROWS
    assert await _scalar(engine, select(func.count()).select_from(OutboxEntry)) == ROWS


def test_serve_on_sqlite_runs_an_import_queued_for_it(tmp_path: Path) -> None:
    """On the embedded default the server's own worker runs import jobs:
    ``idstore import --background`` queues one, ``serve`` finishes it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'idstore.db'}"
    env = _env(url, PORT="0", IDSTORE_IMPORT_POLL_SECONDS="0.2", IDSTORE_DEV_TOKEN="false")
    server = subprocess.Popen(
        [*IDSTORE, "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        source = _write(tmp_path / "users.csv", 20)
        deadline = time.monotonic() + DEADLINE_S
        while True:  # serve migrates the database at start
            queued = _run(["import", str(source), "--background", "--map", "E-Mail=email"], env)
            if queued.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.split()[1]
        status = ""
        while status != "SUCCEEDED":
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, f"the job is still {status}"
            time.sleep(0.2)
            status = asyncio.run(_status(url, job_id))
    finally:
        server.terminate()
        server.communicate(timeout=30)


async def _status(url: str, job_id: str) -> str:
    store = await Store.open(Settings(DATABASE_URL=url))
    try:
        job = await jobs.get(store, job_id)
        return job.status if job is not None else "missing"
    finally:
        await store.close()


@SQLITE_ONLY
async def test_the_command_reports_each_row_and_says_why_it_refuses_a_file(
    tmp_path: Path, store: Store
) -> None:
    source = tmp_path / "users.csv"
    source.write_text("userName,active\nok@corp.example,yes\nbad@corp.example,perhaps\n")
    report = tmp_path / "report.csv"
    env = _env(store.settings.database_url)
    run = _run(["import", str(source), "--report", str(report)], env)
    assert run.returncode == 1, run.stderr
    assert "1 created, 0 updated, 0 unchanged, 1 failed" in run.stdout
    assert (
        "row 2 (line 3): active must be true or false (or yes/no, 1/0), not 'perhaps'" in run.stdout
    )
    assert oct(report.stat().st_mode & 0o777) == "0o600"
    rows = list(csv.DictReader(report.read_text().splitlines()))
    assert [(r["row"], r["outcome"]) for r in rows] == [("1", "created"), ("2", "failed")]

    again = _run(["import", str(source), "--dry-run", "--json"], env)
    assert '"unchanged": 1' in again.stdout, again.stderr

    source.write_text("userName,userName\na,b\n")
    refused = _run(["import", str(source)], env)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "idstore: the header names 'userName' twice (columns 1 and 2)"
    )
