"""Bulk import jobs (identity_sync/auth0_import.py) against the Auth0
emulator, on SQLite and PostgreSQL: the threshold rule, a backlog imported
by jobs with the accounts written back, per-user errors kept and those users
delivered one by one, at most two jobs, a job failing as a whole, and a
worker dying mid-job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import accounts, jobs, outbox
from identity_store.jobs import JobKind
from identity_store.models import OutboxEntry
from identity_store.store import Store
from identity_sync import auth0_import
from identity_sync.auth0_import import ImportProgress, ImportRunner, wants_job
from identity_sync.clock import ManualClock
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import (
    accounts_by_store_id,
    add_users,
    change_user,
    dispatcher,
    no_duplicates,
)
from tests.sync.conftest import NewClient, OpenStore

IMPORTS = "POST /api/v2/jobs/users-imports"
CREATES = "POST /api/v2/users"


@pytest.mark.parametrize(
    ("backlog", "threshold", "running", "starts"),
    [
        (5000, 1000, 0, True),  # above the threshold, no job running
        (5000, 1000, 1, True),  # one job runs: a second may start
        (5000, 1000, 2, False),  # two run: Auth0 takes no third
        (5000, 1000, 3, False),
        (1000, 1000, 0, False),  # at the threshold is not above it
        (1001, 1000, 0, True),
        (0, 1000, 0, False),
        (5000, 0, 0, False),  # 0: never
        (1, 0, 0, False),
        (2, 1, 0, True),
    ],
)
def test_the_threshold_rule(backlog: int, threshold: int, running: int, starts: bool) -> None:
    """A job starts when the threshold is set, fewer than two run, and the
    backlog is above the threshold."""
    assert wants_job(backlog, threshold=threshold, running=running) is starts


def _instant(auth0: Auth0Emulator) -> None:
    auth0.job_pending_seconds = 0.0
    auth0.job_processing_seconds = 0.0


def _held(auth0: Auth0Emulator) -> None:
    """Jobs stay pending until the test lets them run (:func:`_release_jobs`)."""
    auth0.job_pending_seconds = 3600.0
    auth0.job_processing_seconds = 0.0


def _release_jobs(auth0: Auth0Emulator) -> None:
    _instant(auth0)
    auth0.advance_jobs()


async def _rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list(
            (
                await connection.execute(
                    select(OutboxEntry)
                    .where(OutboxEntry.target == "auth0")
                    .order_by(OutboxEntry.id)
                )
            ).all()
        )


async def _auth_user_ids(store: Store, ids: list[str]) -> dict[str, str | None]:
    found = await accounts.subjects(store, "auth0", ids)
    return {i: s.auth_user_id for i, s in found.items()}


async def test_a_backlog_is_imported_by_jobs_and_the_accounts_written_back(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=10)
    ids = await add_users(store, 25)
    seen: list[ImportProgress] = []
    runner = ImportRunner(
        store, auth0_clients(store, clock), clock=clock, name="w1:import", on_progress=seen.append
    )
    worker = dispatcher(store, auth0_clients(store, clock), clock, name="w1", companions=[runner])
    totals = await worker.drain()
    await worker.close()

    # Every user came in by one import job, none by a create.
    assert len(auth0.seen(IMPORTS)) == 1
    assert auth0.seen(CREATES) == []
    tenant = accounts_by_store_id(auth0)
    assert sorted(tenant) == sorted(ids)
    assert all(tenant[i]["user_id"] == f"auth0|{i}" for i in ids)
    assert tenant[ids[3]]["email"] == "user3@example.com"
    assert tenant[ids[3]]["given_name"] == "Given3"
    no_duplicates(auth0)
    # The account ids are written back, the rows done with the job named.
    assert await _auth_user_ids(store, ids) == {i: f"auth0|{i}" for i in ids}
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    rows = await _rows(engine)
    assert {(r.status, r.outcome) for r in rows} == {("DONE", f"imported (job {job.id})")}
    assert job.status == "SUCCEEDED"
    assert job.params["users"] == ids
    assert job.params["count"] == 25
    assert 0 < job.params["bytes"] < 500_000
    assert job.external_id in auth0.jobs
    assert job.summary["inserted"] == 25
    assert job.summary["imported"] == 25
    assert job.failures == []
    assert totals.delivered == 0
    assert runner.totals.imported == 25
    assert seen[0].state == "pending"
    assert seen[-1].finished
    assert seen[-1].inserted == 25
    # What was synced is known: a later change sends only what changed.
    record = (await outbox.sync_records(store, "auth0", [ids[0]]))[ids[0]]
    assert record.synced["email"] == "user0@example.com"


async def test_below_the_threshold_the_dispatcher_creates_one_by_one(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=10)
    ids = await add_users(store, 10)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    await worker.drain()
    await worker.close()
    assert auth0.seen(IMPORTS) == []
    assert len(auth0.seen(CREATES)) == 10
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)


async def test_refused_users_are_kept_in_the_job_and_delivered_one_by_one(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """A user whose e-mail has an account in Auth0 already (made there by
    hand, or kept blocked after a delete) is refused by the import and then
    adopted by the dispatcher: never a second account."""
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 12)
    existing = auth0.add_user("user4@example.com", blocked=True)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()

    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "SUCCEEDED"
    assert (job.summary["inserted"], job.summary["failed"]) == (11, 1)
    assert job.failures_total == 1
    [failure] = job.failures
    assert failure["user_id"] == ids[4]
    assert failure["email"] == "user4@example.com"
    assert failure["errors"][0].startswith("DUPLICATED_USER")
    # The dispatcher adopted the existing account (and unblocked it, as the store says).
    assert totals.outcomes == {"adopted": 1}
    assert (await _auth_user_ids(store, [ids[4]]))[ids[4]] == existing
    assert auth0.users[existing]["blocked"] is False
    assert auth0.users[existing]["app_metadata"]["idstore_user_id"] == ids[4]
    assert len(auth0.users) == 12
    no_duplicates(auth0)
    rows = {r.aggregate_id: r for r in await _rows(engine)}
    assert rows[ids[4]].status == "DONE"
    assert rows[ids[4]].outcome == "adopted"
    assert rows[ids[4]].attempts == 0  # the import's refusal did not count


async def test_at_most_two_jobs_run_across_workers(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _held(auth0)
    monkeypatch.setattr(auth0_import, "USERS_PER_CLAIM", 10)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 35)
    first = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    second = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w2:import")
    assert await first.tick() is True
    assert await second.tick() is False
    assert first.running == 2
    assert second.running == 0
    assert await jobs.count_running(store, JobKind.AUTH0_IMPORT) == 2
    assert len(auth0.jobs) == 2
    # 15 users left, above the threshold: once the jobs end, whichever worker
    # looks first starts the next; after it 5 are left, not above it.
    _release_jobs(auth0)
    _held(auth0)
    clock.advance(5)
    assert await first.tick() is True  # both completed, a third started
    assert len(auth0.jobs) == 3
    clock.advance(5)
    assert await second.tick() is False
    assert len(auth0.jobs) == 3
    assert await jobs.count_running(store, JobKind.AUTH0_IMPORT) == 1
    _release_jobs(auth0)
    clock.advance(5)
    assert await first.tick() is False
    assert await jobs.count_running(store, JobKind.AUTH0_IMPORT) == 0
    imported = await _auth_user_ids(store, ids)
    assert sum(1 for v in imported.values() if v) == 30
    for runner in (first, second):
        await runner.close()
        await runner.service.aclose()


async def test_a_job_failing_as_a_whole_gives_its_users_to_the_dispatcher(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    _instant(auth0)
    auth0.fail_next_job("Internal error processing the job")
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 8)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()

    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "FAILED"
    assert job.summary["message"] == "the job failed: Internal error processing the job"
    assert job.summary["given_back"] == 8
    # Delivered one by one afterwards; the failed users are not put in a second job.
    assert len(auth0.seen(IMPORTS)) == 1
    assert totals.outcomes == {"created": 8}
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)
    no_duplicates(auth0)
    assert {r.status for r in await _rows(engine)} == {"DONE"}


async def test_a_job_auth0_will_not_start_is_recorded_and_its_users_delivered(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _instant(auth0)
    auth0.fail_next(1, 403, only=IMPORTS)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 8)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "FAILED"
    assert job.summary["message"].startswith("Auth0 did not start the job: ")
    assert totals.outcomes == {"created": 8}
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)


async def test_a_status_that_cannot_be_read_for_now_is_polled_again(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 8)
    auth0.fail_next(2, 503, only="GET /api/v2/jobs/{id}")
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    await worker.drain()
    await worker.close()
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "SUCCEEDED"
    assert len(auth0.seen("GET /api/v2/jobs/{id}")) == 3
    assert auth0.seen(CREATES) == []
    assert await _auth_user_ids(store, ids) == {i: f"auth0|{i}" for i in ids}


async def test_users_that_need_no_new_account_are_not_imported(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=3)
    ids = await add_users(store, 6)
    suspended = await add_users(store, 2, prefix="away", active=False)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.params["users"] == ids
    assert totals.outcomes == {"skipped": 2}
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)
    assert await _auth_user_ids(store, suspended) == dict.fromkeys(suspended)


async def test_a_runner_killed_mid_job_leaves_no_duplicate(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    """The worker dies after Auth0 took the job: its leases run out, the
    dispatcher delivers the users one by one (create, 409, adopt the account
    the import made), and the job's row is finished by the next runner."""
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 9)
    doomed = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    assert await doomed.tick() is True
    del doomed  # killed: no close, no release
    _release_jobs(auth0)  # Auth0 runs the job all the same
    clock.advance(3600)  # well past both leases

    worker = dispatcher(store, auth0_clients(store, clock), clock, name="w2")
    totals = await worker.drain()
    assert totals.outcomes == {"adopted": 9}
    assert len(auth0.users) == 9
    no_duplicates(auth0)
    assert await _auth_user_ids(store, ids) == {i: f"auth0|{i}" for i in ids}

    # The next runner takes the job's row over and closes it: nothing left to it.
    heir = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w2:import")
    assert await heir.tick() is True  # taken over, polled next
    clock.advance(5)
    assert await heir.tick() is False
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "SUCCEEDED"
    assert (job.summary["inserted"], job.summary["imported"], job.summary["lost"]) == (9, 0, 9)
    await worker.close()


async def test_a_job_of_a_dead_worker_is_taken_over_and_finished(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    engine: AsyncEngine,
) -> None:
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 9)
    doomed = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    await doomed.tick()
    _release_jobs(auth0)
    clock.advance(3600)
    heir = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w2:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, name="w2", companions=[heir])
    totals = await worker.drain()
    await worker.close()
    assert totals.delivered == 0
    assert auth0.seen(CREATES) == []
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "SUCCEEDED"
    assert job.summary["imported"] == 9
    assert await _auth_user_ids(store, ids) == {i: f"auth0|{i}" for i in ids}
    assert {r.status for r in await _rows(engine)} == {"DONE"}
    # The first worker, back from a long pause, finds the job is not its own.
    assert await doomed.tick() is False
    assert doomed.running == 0
    await doomed.service.aclose()


async def test_closing_hands_the_job_back_at_once(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    await add_users(store, 9)
    first = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    await first.tick()
    await first.close()
    # The users are free at once, for whoever looks first.
    probe = await outbox.claim(
        store, "auth0", worker="probe", now=clock.now(), lease=timedelta(seconds=60), limit=50
    )
    assert len(probe) == 9
    await outbox.release(store, probe, worker="probe")
    second = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w2:import")
    assert await second.tick() is True  # no wait for a lease to run out
    assert second.running == 1
    assert len(auth0.jobs) == 1  # the same job, not a second one
    for runner in (first, second):
        await runner.service.aclose()


async def test_results_that_do_not_match_the_users_give_them_all_back(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=5)
    ids = await add_users(store, 7)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    await runner.tick()
    [auth0_job] = auth0.jobs.values()
    auth0_job.users.pop()  # Auth0 lost one user of the file
    _release_jobs(auth0)
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    clock.advance(5)
    totals = await worker.drain()
    await worker.close()
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "FAILED"
    assert "do not match the job's 7 users" in job.summary["message"]
    assert totals.outcomes == {"adopted": 6, "created": 1}
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)
    no_duplicates(auth0)


async def test_run_imports_the_whole_backlog_in_the_foreground(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``idstore auth0 import``: whatever the threshold (0 here), jobs of at
    most two at a time until the backlog is done."""
    _instant(auth0)
    monkeypatch.setattr(auth0_import, "USERS_PER_CLAIM", 4)
    store = await auth0_store(auth0_import_threshold=0)
    ids = await add_users(store, 11)
    existing = auth0.add_user("user7@example.com")
    seen: list[ImportProgress] = []
    runner = ImportRunner(
        store, auth0_clients(store, clock), clock=clock, name="cli", on_progress=seen.append
    )
    totals = await runner.run()
    await runner.service.aclose()
    assert (totals.started, totals.succeeded, totals.imported, totals.refused) == (3, 3, 10, 1)
    assert len({p.job_id for p in seen}) == 3
    assert await _auth_user_ids(store, ids) == {
        i: None if i == ids[7] else f"auth0|{i}" for i in ids
    }
    assert existing in auth0.users
    # The refused user waits for the dispatcher, due now, its error kept.
    [row] = await outbox.aggregate_rows(store, ids[7])
    assert row.status == "PENDING"
    assert row.last_error is not None
    assert "DUPLICATED_USER" in row.last_error


async def test_a_user_changed_during_the_import_gets_the_change_afterwards(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=3)
    ids = await add_users(store, 5)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    await runner.tick()
    await change_user(store, ids[0], given_name="Renamed")
    _release_jobs(auth0)
    clock.advance(5)
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()
    assert totals.outcomes == {"updated": 1}
    assert auth0.users[f"auth0|{ids[0]}"]["given_name"] == "Renamed"


async def test_no_job_lasts_forever(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    _held(auth0)
    store = await auth0_store(auth0_import_threshold=3)
    await add_users(store, 5)
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    await runner.tick()
    clock.advance((auth0_import.JOB_TIMEOUT + timedelta(seconds=1)).total_seconds())
    assert await runner.tick() is False
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "FAILED"
    assert job.summary["message"] == "Auth0 has not finished the job after 1:00:00"
    await runner.service.aclose()


async def test_a_job_status_auth0_answers_unreadably_gives_the_users_back(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    """Hostile input: a job read that is not JSON is no answer: the job is
    given up and its users delivered one by one (adopting what it made)."""
    _instant(auth0)
    store = await auth0_store(auth0_import_threshold=3)
    ids = await add_users(store, 5)
    auth0.answer_next(1, 200, b"<html>maintenance</html>", only="GET /api/v2/jobs/{id}")
    runner = ImportRunner(store, auth0_clients(store, clock), clock=clock, name="w1:import")
    worker = dispatcher(store, auth0_clients(store, clock), clock, companions=[runner])
    totals = await worker.drain()
    await worker.close()
    [job] = await jobs.list_jobs(store, kind=JobKind.AUTH0_IMPORT)
    assert job.status == "FAILED"
    assert job.summary["message"].startswith("Auth0 cannot tell how the job went: ")
    assert totals.outcomes == {"adopted": 5}
    assert sorted(accounts_by_store_id(auth0)) == sorted(ids)
    no_duplicates(auth0)
