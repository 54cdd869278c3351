"""Password-change tickets in bulk (identity_sync/password_tickets.py)
against the Auth0 emulator, on SQLite and PostgreSQL: the selection, the
pace, failures per user, resuming, and URLs kept out of the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from identity_store import jobs
from identity_store.jobs import JobKind
from identity_store.store import Store
from identity_sync import password_tickets
from identity_sync.clock import ManualClock
from identity_sync.password_tickets import (
    JobLost,
    Selection,
    TicketProgress,
    TicketRun,
    create_job,
)
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import add_user_groups, add_users, dispatcher
from tests.sync.conftest import NewClient, OpenStore

TICKETS = "POST /api/v2/tickets/password-change"


class Sink:
    """Tickets kept in memory; ``fail_after`` writes, the next one raises."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.rows: list[tuple[str, str | None, str]] = []
        self.flushes = 0
        self.fail_after = fail_after

    def write(self, user_id: str, email: str | None, url: str) -> None:
        if self.fail_after is not None and len(self.rows) >= self.fail_after:
            raise OSError("disk full")
        self.rows.append((user_id, email, url))

    def flush(self) -> None:
        self.flushes += 1


async def _with_accounts(
    store: Store, clock: ManualClock, auth0_clients: NewClient, ids: list[str]
) -> None:
    """Give ``ids`` (all the users with pending rows) their Auth0 accounts."""
    worker = dispatcher(store, auth0_clients(store, clock), clock)
    totals = await worker.drain()
    assert totals.delivered == len(ids)


async def _job(store: Store, clock: ManualClock, selection: Selection) -> str:
    return (await create_job(store, selection, now=clock.now(), created_by="test")).id


async def test_a_group_gets_its_tickets_and_users_without_account_are_failures(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=2.0)
    await add_user_groups(store, "staff", "other")
    staff = await add_users(store, 3, prefix="staff", user_group="staff")
    others = await add_users(store, 2, prefix="other", user_group="other")
    await _with_accounts(store, clock, auth0_clients, staff + others)
    [late] = await add_users(store, 1, prefix="late", user_group="staff")  # no account yet
    sink = Sink()
    seen: list[TicketProgress] = []
    run = TicketRun(
        store, auth0_clients(store, clock), sink, clock=clock, name="cli", on_progress=seen.append
    )
    job_id = await _job(store, clock, Selection(user_group="staff"))
    start = clock.now()
    job = await run.run(job_id)

    assert [(u, e) for u, e, _ in sink.rows] == [
        (staff[i], f"staff{i}@example.com") for i in range(3)
    ]
    issued = {t["user_id"]: t["ticket"] for t in auth0.tickets}
    assert issued == {f"auth0|{u}": url for u, _, url in sink.rows}
    assert job.status == "SUCCEEDED"
    assert job.kind == JobKind.BULK_PASSWORD_CHANGE.value
    assert job.summary["total"] == 4
    assert (job.summary["done"], job.summary["tickets"], job.summary["failed"]) == (4, 3, 1)
    assert job.summary["message"] == "3 tickets, 1 users failed"
    assert job.failures == [
        {
            "user_id": late,
            "email": "late0@example.com",
            "error": "no Auth0 account (the store knows none)",
        }
    ]
    assert job.params == {"selection": {"user_group": "staff"}}
    assert (job.locked_by, job.finished_at) == (None, clock.now())
    # Paced at 2 a second: three tickets take at least a second between them.
    assert clock.now() - start >= timedelta(seconds=1.0)
    assert seen[-1] == TicketProgress(job_id, 4, 4, 3, 1)
    # No URL in the database.
    stored = await jobs.get(store, job_id)
    assert stored is not None
    text = orjson.dumps([stored.params, stored.summary, stored.failures]).decode()
    assert "ticket=" not in text
    assert "/lo/reset" not in text
    assert all(url not in text for _, _, url in sink.rows)


async def test_users_named_and_every_user(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 4)
    await _with_accounts(store, clock, auth0_clients, ids)
    missing = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    sink = Sink()
    run = TicketRun(store, auth0_clients(store, clock), sink, clock=clock)
    job = await run.run(await _job(store, clock, Selection(user_ids=(ids[2], missing, ids[0]))))
    assert [u for u, _, _ in sink.rows] == [ids[0], ids[2]]
    assert job.failures == [{"user_id": missing, "email": None, "error": "no such live user"}]
    assert (job.summary["total"], job.summary["done"], job.summary["failed"]) == (3, 3, 1)
    everyone = Sink()
    run = TicketRun(store, auth0_clients(store, clock), everyone, clock=clock)
    job = await run.run(await _job(store, clock, Selection(everyone=True)))
    assert [u for u, _, _ in everyone.rows] == ids
    assert job.summary["tickets"] == 4


async def test_an_account_gone_from_auth0_and_a_refused_ticket_are_failures(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 3)
    await _with_accounts(store, clock, auth0_clients, ids)
    del auth0.users[f"auth0|{ids[0]}"]
    auth0.fail_next(1, 400, only=TICKETS, after=1)  # the second ticket asked for
    sink = Sink()
    run = TicketRun(store, auth0_clients(store, clock), sink, clock=clock)
    job = await run.run(await _job(store, clock, Selection(everyone=True)))
    assert [u for u, _, _ in sink.rows] == [ids[2]]
    errors = {f["user_id"]: f["error"] for f in job.failures}
    assert errors[ids[0]] == f"no Auth0 account (Auth0 answered 404 for auth0|{ids[0]})"
    assert errors[ids[1]] == (
        "Auth0 refused the request (400 invalid_body: Payload validation error: 'Injected.')"
    )
    assert job.status == "SUCCEEDED"


async def test_passing_failures_and_throttling_are_waited_through(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 2)
    await _with_accounts(store, clock, auth0_clients, ids)
    reset = clock.now().timestamp() + 30
    auth0.fail_next(2, 503, only=TICKETS)
    auth0.fail_next(1, 429, only=TICKETS, reset=reset)
    sink = Sink()
    run = TicketRun(store, auth0_clients(store, clock), sink, clock=clock)
    job = await run.run(await _job(store, clock, Selection(everyone=True)))
    assert [u for u, _, _ in sink.rows] == ids
    assert job.failures == []
    assert len(auth0.seen(TICKETS)) == 5
    assert clock.now().timestamp() >= reset


async def test_a_ticket_that_keeps_failing_is_given_up(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 2)
    await _with_accounts(store, clock, auth0_clients, ids)
    auth0.fail_next(password_tickets.MAX_ATTEMPTS, 503, only=TICKETS)
    sink = Sink()
    run = TicketRun(store, auth0_clients(store, clock), sink, clock=clock)
    job = await run.run(await _job(store, clock, Selection(everyone=True)))
    assert [u for u, _, _ in sink.rows] == [ids[1]]
    [failure] = job.failures
    assert failure["user_id"] == ids[0]
    assert failure["error"].startswith(f"gave up after {password_tickets.MAX_ATTEMPTS} attempts")


async def test_an_interrupted_job_resumes_after_the_users_done(
    auth0_store: OpenStore,
    auth0: Auth0Emulator,
    clock: ManualClock,
    auth0_clients: NewClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(password_tickets, "PAGE_SIZE", 4)
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 10)
    await _with_accounts(store, clock, auth0_clients, ids)
    job_id = await _job(store, clock, Selection(everyone=True))
    broken = Sink(fail_after=6)  # the output fails in the second page
    first = TicketRun(store, auth0_clients(store, clock), broken, clock=clock, name="cli-1")
    with pytest.raises(OSError, match="disk full"):
        await first.run(job_id)
    halfway = await jobs.get(store, job_id)
    assert halfway is not None
    assert halfway.status == "RUNNING"
    assert halfway.summary["after"] == ids[3]
    assert halfway.summary["done"] == 4
    assert not halfway.held(clock.now())  # handed back: resumable at once

    sink = Sink()
    second = TicketRun(store, auth0_clients(store, clock), sink, clock=clock, name="cli-2")
    job = await second.run(job_id)
    assert [u for u, _, _ in sink.rows] == ids[4:]
    assert (job.summary["done"], job.summary["tickets"], job.summary["failed"]) == (10, 10, 0)
    per_user: dict[str, int] = {}
    for t in auth0.tickets:
        per_user[t["user_id"]] = per_user.get(t["user_id"], 0) + 1
    # The first page was recorded: never asked again; of the second, the
    # users whose tickets were asked before the failure got a second one.
    assert all(per_user[f"auth0|{u}"] == 1 for u in ids[:4] + ids[7:])
    assert [per_user[f"auth0|{u}"] for u in ids[4:7]] == [2, 2, 2]

    with pytest.raises(LookupError, match="is SUCCEEDED: nothing to resume"):
        await second.run(job_id)


async def test_a_job_held_elsewhere_is_not_run_twice(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    job_id = await _job(store, clock, Selection(everyone=True))
    await jobs.claim(store, job_id, worker="other", now=clock.now(), lease=timedelta(minutes=5))
    run = TicketRun(store, auth0_clients(store, clock), Sink(), clock=clock)
    with pytest.raises(LookupError, match="is running in other"):
        await run.run(job_id)
    with pytest.raises(LookupError, match="no job 01NOSUCHJOB"):
        await run.run("01NOSUCHJOB")
    imports = await jobs.create(store, JobKind.AUTH0_IMPORT, now=clock.now())
    with pytest.raises(LookupError, match="not BULK_PASSWORD_CHANGE"):
        await run.run(imports.id)


class _StallingClock(ManualClock):
    """A clock whose first wait after ``stall`` is set lasts past any lease,
    during which another worker takes the job over."""

    def __init__(self, clock: ManualClock, store: Store) -> None:
        super().__init__(clock.now())
        self.store = store
        self.stall: str | None = None

    async def sleep(self, seconds: float) -> None:
        if self.stall is not None:
            job_id, self.stall = self.stall, None
            self.advance(3600)
            taken = await jobs.claim(
                self.store, job_id, worker="fast", now=self.now(), lease=timedelta(minutes=5)
            )
            assert taken is not None
        await super().sleep(seconds)


async def test_a_worker_that_lost_its_job_stops(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(auth0_password_tickets_per_second=50.0)
    ids = await add_users(store, 3)
    await _with_accounts(store, clock, auth0_clients, ids)
    job_id = await _job(store, clock, Selection(everyone=True))
    stalling = _StallingClock(clock, store)

    class Stalls(Sink):
        def write(self, user_id: str, email: str | None, url: str) -> None:
            super().write(user_id, email, url)
            stalling.stall = job_id  # the worker stalls before the next ticket

    run = TicketRun(store, auth0_clients(store, stalling), Stalls(), clock=stalling, name="slow")
    with pytest.raises(JobLost):
        await run.run(job_id)
    job = await jobs.get(store, job_id)
    assert job is not None
    assert job.locked_by == "fast"
    assert job.summary.get("done", 0) == 0  # the slow worker recorded nothing


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({}, "one of them"),
        ({"user_ids": ("a",), "everyone": True}, "one of them"),
        ({"user_group": "g", "everyone": True}, "one of them"),
        ({"user_ids": tuple(str(i) for i in range(10_001))}, "at most 10000 user ids"),
    ],
)
def test_a_selection_is_one_thing(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Selection(**kwargs)


def test_a_selection_round_trips_through_its_params() -> None:
    for selection in (
        Selection(user_ids=("b", "a", "b")),
        Selection(user_group="staff"),
        Selection(everyone=True),
    ):
        again = Selection.of(selection.params())
        assert again.params() == selection.params()
    assert Selection(user_ids=("b", "a", "b")).params() == {"users": ["a", "b"]}
