"""Bulk activation (identity_sync/bulk_activation.py) against the Auth0
emulator, on SQLite and PostgreSQL: the chosen users get accounts through
one import job whatever their group's ``authUserCreationDisabled``, with a
per-user outcome; Auth0 throttling and failing mid-job; an import failing
as a whole; a worker dying mid-job and the job resumed by another."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import accounts, jobs
from identity_store.accounts import Selection
from identity_store.actor import Actor
from identity_store.jobs import JobKind, JobRecord
from identity_store.models import AuditEntry, UserGroupConfig
from identity_store.store import Store
from identity_sync.bulk_activation import ActivationRun, child_tag
from identity_sync.clock import ManualClock
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import accounts_by_store_id, add_users, change_user, dispatcher
from tests.sync.conftest import NewClient, OpenStore

IMPORTS = "POST /api/v2/jobs/users-imports"
CREATES = "POST /api/v2/users"
ADMIN = Actor(name="token:admin", request_id="req-admin")
UNKNOWN = "01JZZZZZZZZZZZZZZZZZZZZZZZ"


def _instant(auth0: Auth0Emulator) -> None:
    auth0.job_pending_seconds = 0.0
    auth0.job_processing_seconds = 0.0


async def _partners(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            UserGroupConfig.__table__.insert().values(  # type: ignore[attr-defined]
                user_group="partners", json_schema={}, auth_user_creation_disabled=True
            )
        )


async def _submit(store: Store, clock: ManualClock, selection: Selection) -> JobRecord:
    return await jobs.submit(
        store,
        JobKind.BULK_ACTIVATION,
        ADMIN,
        now=clock.now(),
        params={"selection": selection.params()},
    )


async def _setting_up(
    store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock, new: NewClient
) -> dict[str, Any]:
    """Four partners (creation disabled; the fourth suspended) and one
    ordinary user whose account the dispatcher made."""
    await _partners(engine)
    partners = await add_users(store, 4, prefix="partner", user_group="partners")
    await change_user(store, partners[3], active=False)
    [ordinary] = await add_users(store, 1, prefix="staff")
    d = dispatcher(store, new(store, clock), clock, name="w0")
    await d.drain()
    await d.close()
    assert len(auth0.users) == 1  # the partners were skipped, as their group says
    return {"partners": partners, "ordinary": ordinary}


async def test_an_activation_creates_the_chosen_users_through_one_import_job(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """Partners whose group disables creation get their accounts, by one
    import job of the activation; the user with an account counts as
    ``already``; the suspended one and an unknown id are failures."""
    _instant(auth0)
    store = await auth0_store()
    made = await _setting_up(store, engine, auth0, clock, auth0_clients)
    partners, ordinary = made["partners"], made["ordinary"]
    chosen = [*partners, ordinary, UNKNOWN]
    job = await _submit(store, clock, Selection(user_ids=tuple(chosen)))
    run = ActivationRun(store, auth0_clients(store, clock), clock=clock, name="w1")
    ended = await run.run(job.id)

    assert ended.status == "SUCCEEDED", ended.summary
    assert ended.summary["total"] == 6
    assert (ended.summary["activated"], ended.summary["already"], ended.summary["failed"]) == (
        3,
        1,
        2,
    )
    assert ended.summary["message"] == "3 activated, 1 had an account, 2 failed"
    errors = {f["user_id"]: f["error"] for f in ended.failures}
    assert errors == {
        UNKNOWN: "no such live user",
        partners[3]: "not activated: suspended; no account to block",
    }
    # One import job, created by the activation; no account made one by one.
    assert len(auth0.seen(IMPORTS)) == 1
    assert len(auth0.seen(CREATES)) == 1  # the ordinary user's, before
    [child] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert child.created_by == child_tag(job.id)
    assert child.params["users"] == sorted(partners[:3])
    tenant = accounts_by_store_id(auth0)
    assert sorted(tenant) == sorted([*partners[:3], ordinary])
    found = await accounts.subjects(store, "auth0", partners)
    assert [found[p].auth_user_id for p in partners] == [f"auth0|{p}" for p in partners[:3]] + [
        None
    ]
    # The rows written for the activation are audited, naming the job.
    async with engine.connect() as connection:
        reasons = [
            row.details["reason"]
            for row in await connection.execute(
                select(AuditEntry).where(AuditEntry.action == "auth0.enqueue")
            )
        ]
    assert reasons == [f"bulk activation job {job.id}"]
    # A second activation of the same users finds them all done.
    again = await run.run((await _submit(store, clock, Selection(user_ids=tuple(partners[:3])))).id)
    assert (again.summary["activated"], again.summary["already"]) == (0, 3)
    assert len(auth0.seen(IMPORTS)) == 1


async def test_a_filter_chooses_by_group_and_lifecycle(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """``user_group`` and ``lifecycle`` together: the suspended partner and
    the user outside the group are not even looked at."""
    _instant(auth0)
    store = await auth0_store()
    made = await _setting_up(store, engine, auth0, clock, auth0_clients)
    job = await _submit(store, clock, Selection(user_group="partners", lifecycle="ACTIVE"))
    run = ActivationRun(store, auth0_clients(store, clock), clock=clock, name="w1")
    ended = await run.run(job.id)
    assert (ended.summary["total"], ended.summary["activated"], ended.summary["failed"]) == (
        3,
        3,
        0,
    )
    assert ended.failures == []
    assert sorted(accounts_by_store_id(auth0)) == sorted([*made["partners"][:3], made["ordinary"]])


async def test_throttling_and_errors_of_auth0_mid_job_are_waited_out(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """A 429 and a 503 on the import's start, then 503s while it is polled:
    the activation tries again and ends with every account made once."""
    _instant(auth0)
    store = await auth0_store()
    await _partners(engine)
    partners = await add_users(store, 5, prefix="partner", user_group="partners")
    reset = datetime.now(UTC).timestamp() + 1
    auth0.fail_next(1, 429, reset=reset, only=IMPORTS)
    auth0.fail_next(1, 503, only=IMPORTS)
    auth0.fail_next(2, 503, only="GET /api/v2/jobs/{id}")
    job = await _submit(store, clock, Selection(user_group="partners"))
    run = ActivationRun(store, auth0_clients(store, clock), clock=clock, name="w1")
    ended = await run.run(job.id)
    assert ended.status == "SUCCEEDED", ended.summary
    assert ended.summary["activated"] == 5
    assert ended.failures == []
    assert len(auth0.seen(IMPORTS)) == 3  # two refused, the third taken
    assert sorted(accounts_by_store_id(auth0)) == sorted(partners)
    # The two starts that did not happen are recorded as failed import jobs.
    children = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert sorted(c.status for c in children) == ["FAILED", "FAILED", "SUCCEEDED"]


async def test_an_import_that_fails_as_a_whole_fails_its_users(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    _instant(auth0)
    store = await auth0_store()
    await _partners(engine)
    partners = await add_users(store, 3, prefix="partner", user_group="partners")
    auth0.fail_next_job("Internal error processing the job")
    job = await _submit(store, clock, Selection(user_ids=tuple(partners)))
    ended = await ActivationRun(store, auth0_clients(store, clock), clock=clock).run(job.id)
    assert ended.status == "SUCCEEDED"
    assert (ended.summary["activated"], ended.summary["failed"]) == (0, 3)
    assert {f["user_id"] for f in ended.failures} == set(partners)
    assert all("the job failed: Internal error" in f["error"] for f in ended.failures)
    assert auth0.users == {}


async def test_a_job_auth0_refuses_to_import_fails(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """A 403 (a scope missing) on the import's start ends the job ``FAILED``
    with the reason; its users are failures."""
    _instant(auth0)
    store = await auth0_store()
    await _partners(engine)
    partners = await add_users(store, 2, prefix="partner", user_group="partners")
    auth0.fail_next(1, 403, only=IMPORTS)
    job = await _submit(store, clock, Selection(user_ids=tuple(partners)))
    ended = await ActivationRun(store, auth0_clients(store, clock), clock=clock).run(job.id)
    assert ended.status == "FAILED"
    assert ended.summary["message"].startswith("Auth0 refused to start an import job: ")
    assert ended.summary["failed"] == 2
    assert auth0.users == {}


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``idstore worker`` with its loops only (the dispatchers, the bulk jobs)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "idstore", "worker", "--job", "outbox"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_worker_that_dies_mid_job_leaves_it_to_the_next(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    auth0_clients: NewClient,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """A real ``idstore worker`` process starts the activation and is killed
    (SIGKILL) while Auth0 runs its import: nothing handed back. Once the
    leases ran out, a second worker resumes the activation, takes the import
    job over and finishes both: every account made once, by the one import."""
    auth0.job_pending_seconds = 3600.0
    auth0.job_processing_seconds = 0.0
    store = await auth0_store()
    await _partners(engine)
    partners = await add_users(store, 4, prefix="partner", user_group="partners")
    job = await _submit(store, ManualClock(datetime.now(UTC)), Selection(user_group="partners"))

    env = {
        **os.environ,
        "DATABASE_URL": store.settings.database_url,
        **auth0.settings_env(),
        "IDSTORE_AUTH0_IMPORT_POLL_SECONDS": "0.2",
        "IDSTORE_WORKER_POLL_SECONDS": "0.2",
    }
    doomed = _start_worker(env, tmp_path / "worker.log")
    try:
        child = None
        for _ in range(300):
            started = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
            if started and started[0].external_id is not None:
                child = started[0]
                break
            await asyncio.sleep(0.05)
        assert child is not None, (tmp_path / "worker.log").read_text()
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
    held = await jobs.get(store, job.id)
    assert held is not None
    assert held.status == "RUNNING"
    assert held.locked_by is not None
    assert held.locked_by.endswith(":bulk")

    clock = ManualClock(datetime.now(UTC))
    heir = ActivationRun(store, auth0_clients(store, clock), clock=clock, name="w2")
    with pytest.raises(LookupError):
        await heir.run(job.id)  # its lease still runs
    clock.advance(heir.lease.total_seconds() + 1)
    _instant(auth0)
    auth0.advance_jobs()
    ended = await heir.run(job.id)
    assert ended.status == "SUCCEEDED", ended.summary
    assert ended.summary["activated"] == 4
    assert len(auth0.seen(IMPORTS)) == 1
    assert sorted(accounts_by_store_id(auth0)) == sorted(partners)
    [done] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert (done.id, done.status, done.locked_by) == (child.id, "SUCCEEDED", None)


async def test_a_running_job_is_not_run_twice(
    auth0_store: OpenStore, clock: ManualClock, auth0_clients: NewClient
) -> None:
    """A job another worker holds is refused (LookupError), as is one of another kind."""
    store = await auth0_store()
    job = await _submit(store, clock, Selection(everyone=True))
    taken = await jobs.claim(store, job.id, worker="w0", now=clock.now(), lease=timedelta(hours=1))
    assert taken is not None
    run = ActivationRun(store, auth0_clients(store, clock), clock=clock, name="w1")
    for job_id in (job.id, UNKNOWN):
        try:
            await run.run(job_id)
        except LookupError:
            pass
        else:
            raise AssertionError("ran a job it should not")


async def test_accounts_an_earlier_import_made_are_adopted(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """Auth0 has the users' own accounts already (an import whose worker died
    before it recorded Auth0's answer): the new import refuses them as
    duplicates and the activation adopts them, as the dispatcher adopts
    after a 409; a duplicate that is someone else's account stays a failure."""
    _instant(auth0)
    store = await auth0_store()
    await _partners(engine)
    partners = await add_users(store, 3, prefix="partner", user_group="partners")
    for p in partners[:2]:
        auth0.add_user(
            f"{p.lower()}@old.example",
            user_id=f"auth0|{p}",
            app_metadata={"idstore_user_id": p},
        )
    auth0.add_user("partner2@example.com")  # a stranger's account with the third's e-mail
    job = await _submit(store, clock, Selection(user_ids=tuple(partners)))
    ended = await ActivationRun(store, auth0_clients(store, clock), clock=clock).run(job.id)
    assert (ended.summary["activated"], ended.summary["failed"]) == (2, 1), ended.failures
    [failure] = ended.failures
    assert failure["user_id"] == partners[2]
    assert failure["error"].startswith("Auth0 refused the import: ")
    found = await accounts.subjects(store, "auth0", partners)
    assert [found[p].auth_user_id for p in partners] == [f"auth0|{p}" for p in partners[:2]] + [
        None
    ]
