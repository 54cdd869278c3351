"""The worker core on both databases: a tick is claimed once however many
workers look, a dead worker's run is taken over after its lease, a stopping
worker hands its run back between batches, missed ticks make one catch-up,
and every run is recorded with its counts, errors and outcome.

The jobs here are test jobs (plug-ins of the worker, as the real jobs are);
the worker, the run records and the database are the product's own. Time is
a :class:`ManualClock`: nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from identity_store import job_runs
from identity_store.job_runs import RunStatus
from identity_store.store import Store
from identity_sync.clock import ManualClock
from identity_sync.schedules import parse
from identity_sync.worker import RunContext, Worker

START = datetime(2026, 12, 2, 10, 7, 30, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@dataclass
class Batches:
    """A job of ``batches`` batches, each counting one ``done``; ``during``
    runs after the batch of that number (to stop the worker, raise...)."""

    name: str = "batches"
    summary: str = "test job"
    batches: int = 3
    during: dict[int, Callable[[RunContext], None]] = field(default_factory=dict)
    seen: list[RunContext] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    """The batches this job object ran, in order."""
    gate: asyncio.Event | None = None
    """When set, each batch waits for it (a run that stays in progress)."""

    async def run(self, ctx: RunContext) -> str | None:
        self.seen.append(ctx)
        start = ctx.counts["done"]  # a run taken over continues where it stopped
        for batch in range(start, self.batches):
            ctx.checkpoint()
            if self.gate is not None:
                await self.gate.wait()
            ctx.count("done")
            self.ran.append(batch)
            if batch in self.during:
                self.during[batch](ctx)
        return f"{self.batches} batches"


@dataclass
class Failing:
    """A job whose every run fails."""

    name: str = "batches"
    summary: str = "test job that fails"
    runs: int = 0

    async def run(self, ctx: RunContext) -> str | None:
        self.runs += 1
        raise RuntimeError("database went away")


def _worker(
    store: Store, job: Batches | Failing, clock: ManualClock, schedule: str = "every 5m"
) -> Worker:
    return Worker(store, {job.name: job}, {job.name: parse(schedule)}, clock=clock)


async def test_a_tick_is_run_once_however_many_workers_claim_it(store: Store) -> None:
    job = Batches()
    clock = ManualClock(START)
    workers = [_worker(store, job, clock) for _ in range(5)]
    finished = await asyncio.gather(*(w.run_due() for w in workers))
    runs = [run for batch in finished for run in batch]
    assert len(runs) == 1
    assert len(job.seen) == 1
    (run,) = runs
    assert run.scheduled_for == datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    assert run.status == RunStatus.SUCCEEDED
    assert run.counts == {"done": 3}
    assert run.message == "3 batches"
    assert run.attempts == 1
    # Asking again for the same tick runs nothing, from any worker.
    assert await workers[0].run_due() == []
    assert len(job.seen) == 1


async def test_the_next_tick_runs_again_and_history_lists_runs_newest_first(store: Store) -> None:
    job = Batches()
    clock = ManualClock(START)
    worker = _worker(store, job, clock)
    await worker.run_due()
    clock.advance(5 * 60)
    (second,) = await worker.run_due()
    assert second.scheduled_for == datetime(2026, 12, 2, 10, 10, tzinfo=UTC)
    history = await job_runs.history(store, "batches")
    assert [r.scheduled_for for r in history] == [
        datetime(2026, 12, 2, 10, 10, tzinfo=UTC),
        datetime(2026, 12, 2, 10, 5, tzinfo=UTC),
    ]
    latest = await job_runs.latest_runs(store, ["batches", "other"])
    assert list(latest) == ["batches"]
    assert latest["batches"].id == second.id


async def test_a_worker_down_for_an_hour_runs_one_catch_up_not_twelve(store: Store) -> None:
    job = Batches()
    clock = ManualClock(START)
    worker = _worker(store, job, clock)
    await worker.run_due()
    clock.advance(3600)
    caught_up = await worker.run_due()
    assert [r.scheduled_for for r in caught_up] == [datetime(2026, 12, 2, 11, 5, tzinfo=UTC)]
    assert len(await job_runs.history(store, "batches")) == 2
    assert len(job.seen) == 2


async def test_a_run_is_taken_over_only_after_its_lease_ran_out(store: Store) -> None:
    """A worker that died mid-run (its run RUNNING, no heartbeat) is replaced
    once its lease is over, and the new worker continues its counts."""
    clock = ManualClock(START)
    tick = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    lease = timedelta(seconds=store.settings.job_lease_seconds)
    dead = await job_runs.claim_tick(
        store, "batches", tick, worker="dead:1:x", now=clock.now(), lease=lease
    )
    assert dead is not None
    job = Batches()
    worker = _worker(store, job, clock)

    clock.advance(lease.total_seconds() - 1)
    assert await worker.run_due() == []  # the lease still holds
    assert job.seen == []

    clock.advance(2)
    (run,) = await worker.run_due()
    assert run.id == dead.id
    assert run.attempts == 2
    assert run.worker == worker.name
    assert run.status == RunStatus.SUCCEEDED
    # The dead worker, were it to wake up, can neither renew nor close the run.
    assert not await job_runs.heartbeat(
        store, run.id, worker="dead:1:x", now=clock.now(), lease=lease
    )
    assert not await job_runs.finish(
        store,
        run.id,
        worker="dead:1:x",
        status=RunStatus.FAILED,
        now=clock.now(),
        counts={},
        errors=[],
    )
    assert (await job_runs.get_run(store, run.id)).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]


async def test_only_the_worker_holding_a_run_may_renew_or_close_it(store: Store) -> None:
    clock = ManualClock(START)
    tick = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    await job_runs.claim_tick(store, "batches", tick, worker="old", now=clock.now(), lease=LEASE)
    clock.advance(LEASE.total_seconds() + 1)
    taken = await job_runs.take_over(
        store, "batches", tick, worker="new", now=clock.now(), lease=LEASE
    )
    assert taken is not None
    assert taken.status == RunStatus.RUNNING
    assert not await job_runs.heartbeat(store, taken.id, worker="old", now=clock.now(), lease=LEASE)
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        assert not await job_runs.finish(
            store, taken.id, worker="old", status=status, now=clock.now(), counts={}, errors=[]
        )
    assert not await job_runs.release(
        store, taken.id, worker="old", now=clock.now(), counts={}, errors=[], message="x"
    )
    clock.advance(20)
    assert await job_runs.heartbeat(store, taken.id, worker="new", now=clock.now(), lease=LEASE)
    still = await job_runs.get_run(store, taken.id)
    assert still is not None
    assert (still.status, still.worker) == (RunStatus.RUNNING, "new")
    assert still.lease_until == clock.now() + LEASE


async def test_the_store_keeps_at_most_a_hundred_errors_of_a_run(store: Store) -> None:
    clock = ManualClock(START)
    tick = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    run = await job_runs.claim_tick(
        store, "batches", tick, worker="w", now=clock.now(), lease=LEASE
    )
    assert run is not None
    errors = [{"message": f"e{n}"} for n in range(150)]
    assert await job_runs.finish(
        store,
        run.id,
        worker="w",
        status=RunStatus.SUCCEEDED,
        now=clock.now(),
        counts={"errors": 150},
        errors=errors,
    )
    stored = await job_runs.get_run(store, run.id)
    assert stored is not None
    assert stored.errors == errors[: job_runs.MAX_ERRORS]


async def test_a_job_still_running_in_a_worker_is_not_started_again_at_its_next_tick(
    store: Store,
) -> None:
    """A run longer than the interval: the next tick waits for it (one run per
    job at a time), then the tick after runs normally."""
    clock = ManualClock(START)
    job = Batches(batches=1, gate=asyncio.Event())
    worker = _worker(store, job, clock)
    first = await worker.start_due()
    assert [r.scheduled_for for r in first] == [datetime(2026, 12, 2, 10, 5, tzinfo=UTC)]
    clock.advance(5 * 60)
    assert await worker.start_due() == []  # 10:10 is due, but 10:05 still runs here
    job.gate.set()  # type: ignore[union-attr]
    await worker.drain()
    clock.advance(5 * 60)
    later = await worker.start_due()
    assert [r.scheduled_for for r in later] == [datetime(2026, 12, 2, 10, 15, tzinfo=UTC)]
    await worker.drain()
    assert [r.status for r in await job_runs.history(store, "batches")] == [
        RunStatus.SUCCEEDED,
        RunStatus.SUCCEEDED,
    ]


async def test_two_workers_taking_over_the_same_run_get_it_once(store: Store) -> None:
    clock = ManualClock(START)
    tick = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    await job_runs.claim_tick(store, "batches", tick, worker="dead", now=clock.now(), lease=LEASE)
    clock.advance(3600 + 60)  # lease long gone; the 11:05 tick is the due one now
    taken = await asyncio.gather(
        *(
            job_runs.take_over(store, "batches", tick, worker=f"w{n}", now=clock.now(), lease=LEASE)
            for n in range(4)
        )
    )
    assert sum(run is not None for run in taken) == 1


async def test_a_stopping_worker_hands_its_run_back_between_batches(store: Store) -> None:
    """SIGTERM: the batch in progress finishes, the run is INTERRUPTED with
    what it did, and the next worker takes it over at once and finishes it."""
    clock = ManualClock(START)
    first = Batches(batches=4)
    stopping = _worker(store, first, clock)
    first.during = {1: lambda ctx: stopping.stop()}
    (interrupted,) = await stopping.run_due()
    assert interrupted.status == RunStatus.INTERRUPTED
    assert interrupted.counts == {"done": 2}
    assert interrupted.message == "the worker is shutting down"
    assert interrupted.finished_at is None

    second = Batches(batches=4)
    (finished,) = await _worker(store, second, clock).run_due()
    assert finished.id == interrupted.id
    assert finished.attempts == 2
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.counts == {"done": 4}
    assert first.ran == [0, 1]
    assert second.ran == [2, 3]  # it continued where the first worker stopped


async def test_a_job_that_raises_is_recorded_failed_with_its_error(store: Store) -> None:
    def boom(ctx: RunContext) -> None:
        ctx.error("user 01J could not be read", user_id="01J")
        raise RuntimeError("the directory answered nonsense")

    job = Batches(during={1: boom})
    (run,) = await _worker(store, job, ManualClock(START)).run_due()
    assert run.status == RunStatus.FAILED
    assert run.message == "RuntimeError: the directory answered nonsense"
    assert run.counts == {"done": 2, "errors": 1}
    assert run.errors == [{"message": "user 01J could not be read", "user_id": "01J"}]
    assert run.finished_at is not None
    # A failed tick is not run again at once: it is retried later (below).
    assert await _worker(store, Batches(), ManualClock(START)).run_due() == []


async def test_a_failed_tick_is_retried_after_a_while_until_its_attempts_run_out(
    store: Store,
) -> None:
    """A nightly job that met an outage runs again the same night, not the next."""
    clock = ManualClock(START)
    retry = store.settings.job_retry_seconds
    attempts = store.settings.job_max_attempts
    assert attempts == 3

    worker = _worker(store, Failing(), clock, schedule="0 2 * * *")
    (first,) = await worker.run_due()
    assert (first.status, first.attempts) == (RunStatus.FAILED, 1)

    clock.advance(retry - 1)
    assert await worker.run_due() == []
    clock.advance(1)
    (second,) = await worker.run_due()
    assert (second.id, second.status, second.attempts) == (first.id, RunStatus.FAILED, 2)

    clock.advance(retry)
    healed = Batches()
    (third,) = await _worker(store, healed, clock, schedule="0 2 * * *").run_due()
    assert (third.id, third.status, third.attempts) == (first.id, RunStatus.SUCCEEDED, 3)
    assert third.message == "3 batches"
    assert third.finished_at == clock.now()


async def test_a_tick_that_keeps_failing_stops_at_its_last_attempt(store: Store) -> None:
    clock = ManualClock(START)

    failing = Failing()
    worker = _worker(store, failing, clock, schedule="0 2 * * *")
    for _ in range(5):
        await worker.run_due()
        clock.advance(store.settings.job_retry_seconds)
    assert failing.runs == store.settings.job_max_attempts
    (run,) = await job_runs.history(store, "batches")
    assert (run.status, run.attempts) == (RunStatus.FAILED, store.settings.job_max_attempts)


async def test_a_heartbeat_records_the_run_s_progress(store: Store) -> None:
    """A worker killed after a heartbeat leaves what it did so far to the next."""
    clock = ManualClock(START)
    tick = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    run = await job_runs.claim_tick(
        store, "batches", tick, worker="w", now=clock.now(), lease=LEASE
    )
    assert run is not None
    assert await job_runs.heartbeat(
        store,
        run.id,
        worker="w",
        now=clock.now(),
        lease=LEASE,
        counts={"done": 7},
        errors=[{"message": "one"}],
    )
    clock.advance(LEASE.total_seconds() + 1)
    job = Batches(batches=9)
    (finished,) = await _worker(store, job, clock).run_due()
    assert job.ran == [7, 8]
    assert finished.counts == {"done": 9}
    assert finished.errors == [{"message": "one"}]


async def test_a_run_keeps_its_first_hundred_errors_and_counts_all(store: Store) -> None:
    def many(ctx: RunContext) -> None:
        for n in range(250):
            ctx.error(f"error {n}")

    (run,) = await _worker(store, Batches(during={0: many}), ManualClock(START)).run_due()
    assert run.counts["errors"] == 250
    assert len(run.errors) == job_runs.MAX_ERRORS
    assert run.errors[0] == {"message": "error 0"}


async def test_a_run_that_lost_its_lease_stops_and_leaves_the_run_to_its_new_owner(
    store: Store,
) -> None:
    clock = ManualClock(START)
    job = Batches()
    worker = _worker(store, job, clock)

    def lose_lease(ctx: RunContext) -> None:
        ctx.lease_lost = True  # what the heartbeat sets when its renewal is refused

    job.during = {0: lose_lease}
    (run,) = await worker.run_due()
    # Not released, not finished by the loser: still RUNNING for whoever owns it.
    assert run.status == RunStatus.RUNNING
    assert run.counts == {}


async def test_a_run_by_hand_carries_its_as_of_and_dry_run_and_takes_no_tick(
    store: Store,
) -> None:
    clock = ManualClock(datetime(2026, 12, 2, 10, 10, tzinfo=UTC))  # exactly on a tick
    job = Batches()
    worker = _worker(store, job, clock)
    as_of = datetime(2027, 1, 1, tzinfo=UTC)
    run = await worker.run_now("batches", as_of=as_of, dry_run=True)
    assert run is not None
    assert run.trigger == "manual"
    assert run.scheduled_for is None
    assert job.seen[0].as_of == as_of
    assert job.seen[0].dry_run is True
    # The tick of this very instant still runs, on schedule.
    (scheduled,) = await worker.run_due()
    assert scheduled.scheduled_for == clock.now()
    assert scheduled.as_of == clock.now()
    assert job.seen[1].dry_run is False
    with pytest.raises(KeyError):
        await worker.run_now("no-such-job")


async def test_a_disabled_schedule_never_ticks(store: Store) -> None:
    job = Batches()
    worker = _worker(store, job, ManualClock(START), schedule="off")
    assert await worker.run_due() == []
    assert worker.next_wake(START) == START + timedelta(seconds=store.settings.worker_poll_seconds)


async def test_the_worker_wakes_for_the_next_tick_or_to_poll(store: Store) -> None:
    """It sleeps until the earliest next tick, or a poll interval (to notice
    a run to take over), whichever comes first."""
    worker = Worker(
        store,
        jobs={"a": Batches(name="a"), "b": Batches(name="b")},
        schedules={"a": parse("every 1h"), "b": parse("every 1m")},
        clock=ManualClock(START),
    )
    assert worker.next_wake(START) == datetime(2026, 12, 2, 10, 7, 45, tzinfo=UTC)  # poll 15 s
    assert worker.next_wake(START + timedelta(seconds=20)) == datetime(
        2026, 12, 2, 10, 8, tzinfo=UTC
    )
