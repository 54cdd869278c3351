"""``idstore jobs`` and ``idstore worker`` as real processes, and the worker
that ``idstore serve`` runs in its own process on the SQLite default."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from identity_store import job_runs
from identity_store.errors import StoreError
from identity_store.settings import Settings
from identity_store.store import Store

IDSTORE = [sys.executable, "-m", "idstore"]
JOBS = ["profile-sync", "deletion-sync", "expiry"]


def _run(args: list[str], url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IDSTORE, *args],
        env={**os.environ, "DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_jobs_run_list_and_history(settings: Settings, engine: Any) -> None:
    url = settings.database_url
    ran = _run(["jobs", "run", "expiry", "--as-of", "2027-01-01T00:00:00", "--json"], url)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert (run["job"], run["trigger"], run["status"]) == ("expiry", "manual", "SUCCEEDED")
    assert run["as_of"] == "2027-01-01T00:00:00+00:00"  # naive --as-of is UTC
    assert run["scheduled_for"] is None
    assert run["dry_run"] is False

    listed = _run(["jobs", "list", "--json"], url)
    assert listed.returncode == 0, listed.stderr
    rows = {row["job"]: row for row in json.loads(listed.stdout)}
    assert list(rows) == JOBS
    assert rows["expiry"]["schedule"] == "every 1m"
    assert rows["deletion-sync"]["schedule"] == "0 2 * * *"
    assert rows["deletion-sync"]["next_run"].endswith("T02:00:00+00:00")
    assert rows["expiry"]["last_run"]["id"] == run["id"]
    assert rows["profile-sync"]["last_run"] is None

    history = _run(["jobs", "history", "expiry", "--json"], url)
    assert [r["id"] for r in json.loads(history.stdout)] == [run["id"]]
    text = _run(["jobs", "history", "expiry"], url)
    assert f"#{run['id']}" in text.stdout
    assert "SUCCEEDED" in text.stdout

    dry = _run(["jobs", "run", "deletion-sync", "--dry-run", "--json"], url)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["jobs", "run", "no-such-job"], "unknown job 'no-such-job'"),
        (["jobs", "history", "no-such-job"], "unknown job 'no-such-job'"),
        (["jobs", "run", "expiry", "--as-of", "yesterday"], "not an ISO 8601 time: 'yesterday'"),
        (["worker", "--until-idle", "--job", "expiry,nope"], "unknown job ['nope']"),
    ],
)
def test_a_wrong_job_command_says_why_in_one_line(
    args: list[str], says: str, tmp_path: Path
) -> None:
    result = _run(args, f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_schedule_that_does_not_parse_stops_serve_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*IDSTORE, "serve"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "IDSTORE_JOB_DELETION_SYNC_SCHEDULE": "at 2 am",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("idstore: IDSTORE_JOB_DELETION_SYNC_SCHEDULE: 'at 2 am'")
    assert "Traceback" not in result.stderr


async def _latest_runs(url: str) -> dict[str, job_runs.RunRecord]:
    store = await Store.open(Settings(DATABASE_URL=url))
    try:
        return await job_runs.latest_runs(store, JOBS)
    except StoreError:  # the server has not migrated the database yet
        return {}
    finally:
        await store.close()


def test_serve_runs_the_worker_in_its_own_process_on_sqlite(tmp_path: Path) -> None:
    """``make run`` is the whole product: the server claims each job's latest
    tick at startup (one catch-up) and stops its runs cleanly on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PORT"] = "0"
    url = f"sqlite+aiosqlite:///{tmp_path / 'idstore.db'}"
    process = subprocess.Popen(
        [*IDSTORE, "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        latest: dict[str, job_runs.RunRecord] = {}
        while set(latest) != set(JOBS) or any(r.status == "RUNNING" for r in latest.values()):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            if time.monotonic() > deadline:
                pytest.fail(f"the in-process worker ran {sorted(latest)} in 60 s")
            time.sleep(0.2)
            latest = asyncio.run(_latest_runs(url))
        assert all(r.trigger == "schedule" for r in latest.values())
        assert {r.status for r in latest.values()} == {"SUCCEEDED"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    # uvicorn re-raises SIGTERM once it has shut down (exit status -15); the
    # worker's own last line says that it stopped rather than being cut off.
    assert re.search(r"worker \S+ stopped", stderr), stderr
    assert "Traceback" not in stderr
