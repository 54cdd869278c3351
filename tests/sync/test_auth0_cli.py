"""``idstore auth0 import|password-change|jobs|drift`` as real processes
against the Auth0 emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from identity_store import jobs, outbox
from identity_store.jobs import JobKind
from identity_store.outbox import Delivered
from identity_store.store import Store
from identity_sync.clock import ManualClock
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import (
    accounts_by_store_id,
    add_user_groups,
    add_users,
    dispatcher,
    no_duplicates,
)
from tests.sync.conftest import NewClient, OpenStore

IDSTORE = [sys.executable, "-m", "idstore"]
FAST = {
    "IDSTORE_AUTH0_IMPORT_POLL_SECONDS": "0.05",
    "IDSTORE_AUTH0_REQUESTS_PER_SECOND": "1000",
    "IDSTORE_AUTH0_BURST": "100",
    "IDSTORE_AUTH0_PASSWORD_TICKETS_PER_SECOND": "200",
    "IDSTORE_LOG_LEVEL": "warning",
}


def _run(
    args: list[str], store: Store, auth0: Auth0Emulator | None, **env: str
) -> subprocess.CompletedProcess[str]:
    tenant = auth0.settings_env() if auth0 is not None else {}
    return subprocess.run(
        [*IDSTORE, "auth0", *args],
        env={
            **os.environ,
            "DATABASE_URL": store.settings.database_url,
            **tenant,
            **FAST,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_import_pending_imports_the_backlog_and_prints_each_job(
    auth0_store: OpenStore, auth0: Auth0Emulator
) -> None:
    store = await auth0_store()
    ids = await add_users(store, 12)
    auth0.add_user("user5@example.com")
    result = _run(["import", "--json"], store, auth0)
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)
    assert (totals["enqueued"], totals["started"], totals["imported"], totals["refused"]) == (
        0,
        1,
        11,
        1,
    )
    [job_id] = totals["jobs"]
    assert f"job {job_id} (Auth0 job_" in result.stderr
    assert "completed, 12 users, 11 inserted, 0 updated, 1 refused" in result.stderr
    tenant = accounts_by_store_id(auth0)
    assert sorted(k for k in tenant if k) == sorted(i for i in ids if i != ids[5])
    no_duplicates(auth0)
    assert "Traceback" not in result.stderr

    text = _run(["import"], store, auth0)
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == (
        "0 jobs started (0 succeeded, 0 failed): 0 users imported, 0 refused and "
        "0 given back to the dispatcher"
    )


async def test_import_all_first_enqueues_the_users_without_an_account(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    store = await auth0_store()
    ids = await add_users(store, 4)
    # Their rows were settled long ago without an account (say the sync was off).
    claims = await outbox.claim(
        store, "auth0", worker="old", now=clock.now(), lease=timedelta(seconds=60), limit=10
    )
    await outbox.complete(
        store, [Delivered(c, "skipped: off") for c in claims], worker="old", now=clock.now()
    )
    pending = _run(["import", "--pending", "--json"], store, auth0)
    assert json.loads(pending.stdout)["started"] == 0
    result = _run(["import", "--all"], store, auth0)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "enqueued 4 users without an Auth0 account"
    assert lines[-1].startswith("1 jobs started (1 succeeded, 0 failed): 4 users imported")
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)
    for user_id in ids:
        [latest, *_] = await outbox.aggregate_rows(store, user_id)
        assert latest.request_id is not None
        assert latest.request_id.startswith("cli-")
        assert latest.status == "DONE"


async def test_a_job_failing_as_a_whole_exits_1(
    auth0_store: OpenStore, auth0: Auth0Emulator
) -> None:
    store = await auth0_store()
    await add_users(store, 3)
    auth0.fail_next_job("The connection is being migrated")
    result = _run(["import"], store, auth0)
    assert result.returncode == 1
    assert "failed, 3 users" in result.stdout
    assert "the job failed: The connection is being migrated" in result.stdout
    listed = _run(["jobs", "--json"], store, auth0)
    [job] = json.loads(listed.stdout)
    assert (job["kind"], job["status"]) == ("AUTH0_IMPORT", "FAILED")
    assert "users" not in job["params"]
    assert job["params"]["count"] == 3


async def _accounts_for(store: Store, clock: ManualClock, auth0_clients: NewClient) -> None:
    await dispatcher(store, auth0_clients(store, clock), clock).drain()


async def test_password_change_writes_the_tickets_to_a_private_csv_only(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    tmp_path: Path,
) -> None:
    store = await auth0_store()
    await add_user_groups(store, "staff", "other")
    staff = await add_users(store, 3, prefix="staff", user_group="staff")
    await add_users(store, 1, prefix="other", user_group="other")
    await _accounts_for(store, clock, auth0_clients)
    [late] = await add_users(store, 1, prefix="late", user_group="staff")
    out = tmp_path / "tickets.csv"
    result = _run(["password-change", "--user-group", "staff", "--out", str(out)], store, auth0)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["user_id", "email", "ticket_url"]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        (u, f"staff{i}@example.com") for i, u in enumerate(staff)
    ]
    urls = {t["ticket"] for t in auth0.tickets}
    assert {r[2] for r in rows[1:]} == urls
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": tickets for user group 'staff'")
    assert f"SUCCEEDED: 3 tickets, 1 users failed; tickets in {out} (mode 0600)" in result.stdout
    assert f"  {late}  late0@example.com  no Auth0 account (the store knows none)" in lines
    everything = result.stdout + result.stderr
    assert all(url not in everything for url in urls)

    job_id = lines[0].split()[1].rstrip(":")
    shown = _run(["jobs", job_id, "--json"], store, auth0)
    job = json.loads(shown.stdout)
    assert (job["kind"], job["status"], job["failuresTotal"]) == (
        "BULK_PASSWORD_CHANGE",
        "SUCCEEDED",
        1,
    )
    assert all(url not in shown.stdout for url in urls)
    text = _run(["jobs", job_id], store, auth0)
    assert "no Auth0 account (the store knows none)" in text.stdout

    again = _run(["password-change", "--resume", job_id, "--out", str(out)], store, auth0)
    assert again.returncode == 2
    assert f"job {job_id} is SUCCEEDED: nothing to resume" in again.stderr


async def test_a_resumed_job_appends_to_its_file(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    tmp_path: Path,
) -> None:
    store = await auth0_store()
    ids = await add_users(store, 3)
    await _accounts_for(store, clock, auth0_clients)
    queued = await jobs.create(
        store,
        JobKind.BULK_PASSWORD_CHANGE,
        now=clock.now(),
        params={"selection": {"users": ids[1:]}},
    )
    out = tmp_path / "tickets.csv"
    out.write_text("user_id,email,ticket_url\nX,x@example.com,https://earlier\n")
    out.chmod(0o600)
    result = _run(["password-change", "--resume", queued.id, "--out", str(out)], store, auth0)
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 4
    assert rows[1] == "X,x@example.com,https://earlier"
    assert [r.split(",")[0] for r in rows[2:]] == ids[1:]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["password-change", "--all"], "name --out FILE"),
        (["password-change", "--out", "{tmp}/t.csv"], "name the users"),
        (["password-change", "--all", "--user-group", "g", "--out", "{tmp}/t.csv"], "name the"),
        (["password-change", "--resume", "X1", "--all", "--out", "{tmp}/t.csv"], "--resume takes"),
        (["password-change", "--all", "--out", "{tmp}/exists.csv"], "exists.csv exists"),
        (["password-change", "--resume", "X1", "--out", "{tmp}/open.csv"], "only its owner"),
        (["password-change", "--resume", "NOSUCHJOB", "--out", "{tmp}/t.csv"], "no job NOSUCHJOB"),
        (["jobs", "NOSUCHJOB"], "no job NOSUCHJOB"),
        (["jobs", "not/an/id"], "not a job id"),
        (["password-change", "--user", "bad id", "--out", "{tmp}/t.csv"], "not a user id"),
    ],
)
async def test_a_wrong_command_says_why_in_one_line(
    args: list[str], says: str, auth0_store: OpenStore, auth0: Auth0Emulator, tmp_path: Path
) -> None:
    store = await auth0_store()
    (tmp_path / "exists.csv").write_text("")
    (tmp_path / "open.csv").write_text("")
    (tmp_path / "open.csv").chmod(0o644)
    result = _run([a.replace("{tmp}", str(tmp_path)) for a in args], store, auth0)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


async def test_without_auth0_settings_a_command_says_so(auth0_store: OpenStore) -> None:
    store = await auth0_store()
    for args in (["import"], ["drift"], ["password-change", "--all", "--out", "/nonexistent/x"]):
        result = _run(args, store, None)
        assert result.returncode == 2, args
        assert result.stderr.startswith("idstore: Auth0 is not configured"), args
    listed = _run(["jobs"], store, None)
    assert (listed.returncode, listed.stdout) == (0, "no Auth0 jobs\n")


async def test_drift_reports_and_repairs(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    ids = await add_users(store, 3)
    await _accounts_for(store, clock, auth0_clients)
    auth0.users[f"auth0|{ids[0]}"]["family_name"] = "Edited"
    stranger = auth0.add_user("stranger@example.com")

    report = _run(["drift", "--json"], store, auth0)
    assert report.returncode == 1, report.stderr
    found = json.loads(report.stdout)
    assert [(f["kind"], f["userId"] or f["authUserId"]) for f in found["findings"]] == [
        ("differs", ids[0]),
        ("orphan", stranger),
    ]
    assert found["findings"][0]["fields"] == ["family_name"]
    assert found["enqueued"] is None

    repaired = _run(["drift", "--repair"], store, auth0)
    assert repaired.returncode == 1
    lines = repaired.stdout.splitlines()
    assert lines[0] == "checked 3 store ids against 4 accounts in Auth0"
    assert "differs: 1 synced fields differ" in lines
    assert f"  {ids[0]}  auth0|{ids[0]}  user0@example.com  family_name" in lines
    assert "orphan: 1 accounts no user of the store has (reported only)" in lines
    assert "enqueued an upsert for 1 users; the dispatcher brings Auth0 to the store's state" in (
        lines
    )
    assert lines[-1] == f"  {ids[0]}"
    await _accounts_for(store, clock, auth0_clients)
    assert auth0.users[f"auth0|{ids[0]}"]["family_name"] == "User"
    clean = _run(["drift"], store, auth0)
    assert "orphan: 1 accounts" in clean.stdout
    assert "differs" not in clean.stdout
