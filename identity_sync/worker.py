"""The worker: runs each scheduled job's ticks, once across any number of
workers (SPEC §6 "Scheduled jobs", docs/operations.md "Worker").

A worker looks at its schedules, claims the latest due tick of each job
(:func:`identity_store.job_runs.claim_tick`: one row per ``(job,
scheduled_for)``, so one worker wins), runs it while renewing its lease, and
records the outcome. Jobs run concurrently with each other, one run per job
at a time in a worker. A job works in batches (one transaction each) and
calls :meth:`RunContext.checkpoint` between them: when the worker is told
to stop (SIGTERM) or lost its lease, the run stops there, between two
committed batches, and is handed back (``INTERRUPTED``) for the next worker
to finish. A worker killed outright leaves its run ``RUNNING``; its lease
runs out and the next worker that claims the tick takes it over.

``idstore worker`` runs :meth:`Worker.run_forever`; on the embedded SQLite
default ``idstore serve`` runs the same loop in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from identity_store import job_runs
from identity_store.actor import Actor, job_actor
from identity_store.errors import StoreError
from identity_store.job_runs import RunRecord, RunStatus
from identity_store.settings import Settings
from identity_store.store import Store

from .clock import Clock, SystemClock
from .schedules import Schedule

log = logging.getLogger("idstore.worker")


class Interrupted(Exception):
    """Raised by :meth:`RunContext.checkpoint` when the run must stop between
    batches: the worker is shutting down, or another worker took the run
    over after this one's lease ran out."""


@dataclass(slots=True)
class RunContext:
    """What a job's run sees: the store, its clock and settings, where it
    stands, and where it records what it did."""

    store: Store
    settings: Settings
    run: RunRecord
    clock: Clock
    actor: Actor
    stopping: asyncio.Event
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    lease_lost: bool = False

    @property
    def as_of(self) -> datetime:
        """The job's "now": the tick's time, or the ``--as-of`` of a what-if run."""
        return self.run.as_of

    @property
    def dry_run(self) -> bool:
        """Report what would change; change nothing."""
        return self.run.dry_run

    def count(self, what: str, n: int = 1) -> None:
        if n:
            self.counts[what] += n

    def error(self, message: str, **about: Any) -> None:
        """Record one error of the run (the first :data:`job_runs.MAX_ERRORS` are kept)."""
        self.counts["errors"] += 1
        if len(self.errors) < job_runs.MAX_ERRORS:
            self.errors.append({"message": message, **about})

    def checkpoint(self) -> None:
        """Call between batches: raises :class:`Interrupted` when the run must stop."""
        if self.lease_lost:
            raise Interrupted("the run's lease was lost to another worker")
        if self.stopping.is_set():
            raise Interrupted("the worker is shutting down")


class Batch(Protocol):
    """What a store's batch operation reports: how many users it took, and
    the last one's id (where the next batch starts)."""

    @property
    def users(self) -> int: ...

    @property
    def last_id(self) -> str | None: ...


B = TypeVar("B", bound=Batch)


async def batches(ctx: RunContext, take: Callable[[str | None], Awaitable[B]]) -> AsyncIterator[B]:
    """``take(after)`` for batches of ``job_batch_size`` users in id order,
    each starting after the last one's last user, until one comes back short;
    with a checkpoint between batches (never inside one)."""
    after: str | None = None
    while True:
        batch = await take(after)
        yield batch
        if batch.users < ctx.settings.job_batch_size:
            return
        after = batch.last_id
        ctx.checkpoint()


class Job(Protocol):
    """A scheduled job: ``run`` does the work of one run, in batches, and
    returns a one-line message for the run's record (or ``None``)."""

    name: str
    summary: str

    async def run(self, ctx: RunContext) -> str | None: ...


class Loop(Protocol):
    """A loop the worker runs beside its scheduled jobs: an outbox
    dispatcher (:class:`identity_sync.dispatcher.Dispatcher`)."""

    @property
    def label(self) -> str: ...

    async def run_forever(self, stopping: asyncio.Event) -> None: ...

    async def drain(self, *, stopping: asyncio.Event | None = None) -> Any: ...

    async def close(self) -> None: ...


def worker_id() -> str:
    """``host:pid:random``: which process holds a run."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Runs ``jobs`` on their ``schedules`` against ``store``."""

    def __init__(
        self,
        store: Store,
        jobs: Mapping[str, Job],
        schedules: Mapping[str, Schedule],
        *,
        clock: Clock | None = None,
        name: str | None = None,
        loops: Sequence[Loop] = (),
    ) -> None:
        self.store = store
        self.loops = list(loops)
        self.settings = store.settings
        self.jobs = dict(jobs)
        self.schedules = dict(schedules)
        self.clock: Clock = clock or SystemClock()
        self.name = name or worker_id()
        self.lease = timedelta(seconds=self.settings.job_lease_seconds)
        self.retry = job_runs.Retry(
            after=timedelta(seconds=self.settings.job_retry_seconds),
            max_attempts=self.settings.job_max_attempts,
        )
        self.stopping = asyncio.Event()
        self._running: dict[str, asyncio.Task[RunRecord | None]] = {}

    # -- What runs when --------------------------------------------------

    def due_ticks(self, now: datetime) -> dict[str, datetime]:
        """The latest tick at or before ``now`` of every scheduled job."""
        ticks = {}
        for name in self.jobs:
            schedule = self.schedules.get(name)
            tick = schedule.previous(now) if schedule is not None else None
            if tick is not None:
                ticks[name] = tick
        return ticks

    def next_wake(self, now: datetime) -> datetime:
        """When to look again: the next tick of any job, or a poll interval
        from now (to notice a run to take over) if that comes first."""
        wake = now + timedelta(seconds=self.settings.worker_poll_seconds)
        for name in self.jobs:
            schedule = self.schedules.get(name)
            tick = schedule.next(now) if schedule is not None else None
            if tick is not None and tick < wake:
                wake = tick
        return wake

    # -- Running -----------------------------------------------------------

    async def claim_due(self) -> list[RunRecord]:
        """Claim (or take over) the latest due tick of every job not running
        in this worker already; the runs this worker got."""
        now = self.clock.now()
        claimed = []
        for name, tick in self.due_ticks(now).items():
            if name in self._running and not self._running[name].done():
                continue
            run = await job_runs.claim_tick(
                self.store,
                name,
                tick,
                worker=self.name,
                now=now,
                lease=self.lease,
                retry=self.retry,
            )
            if run is not None:
                claimed.append(run)
        return claimed

    async def run_due(self) -> list[RunRecord]:
        """Claim every due tick and run the runs this worker got, to the end
        (``idstore worker --until-idle``); their final records."""
        runs = await self.claim_due()
        finished = await asyncio.gather(*(self.execute(run) for run in runs))
        return [run for run in finished if run is not None]

    async def drain_loops(self) -> dict[str, Any]:
        """Let every loop deliver what is due, then return (``idstore worker
        --until-idle``); what each did, by its label."""
        done = await asyncio.gather(*(loop.drain(stopping=self.stopping) for loop in self.loops))
        return {loop.label: result for loop, result in zip(self.loops, done, strict=True)}

    async def close(self) -> None:
        """Release what the loops hold (their HTTP clients)."""
        for loop in self.loops:
            await loop.close()

    async def run_now(
        self, name: str, *, as_of: datetime | None = None, dry_run: bool = False
    ) -> RunRecord | None:
        """Run ``name`` once now, outside its schedule (``idstore jobs run``)."""
        if name not in self.jobs:
            raise KeyError(name)
        now = self.clock.now()
        run = await job_runs.start_manual(
            self.store,
            name,
            worker=self.name,
            now=now,
            lease=self.lease,
            as_of=as_of or now,
            dry_run=dry_run,
        )
        return await self.execute(run)

    async def execute(self, run: RunRecord) -> RunRecord | None:
        """Run the job of ``run`` (claimed by this worker) and record its
        outcome; its final record (``None`` when the database could not be
        reached to read it)."""
        job = self.jobs[run.job]
        ctx = RunContext(
            store=self.store,
            settings=self.settings,
            run=run,
            clock=self.clock,
            actor=job_actor(run.job, run.id),
            stopping=self.stopping,
            counts=Counter({k: int(v) for k, v in run.counts.items()}),
            errors=list(run.errors),
        )
        log.info("job %s: run %d started (attempt %d)", run.job, run.id, run.attempts)
        beating = asyncio.create_task(self._heartbeat(ctx))
        try:
            try:
                message = await job.run(ctx)
            finally:
                beating.cancel()  # the run's outcome is written by _close alone
        except Interrupted as exc:
            if not ctx.lease_lost:
                await self._close(ctx, None, str(exc))
            log.warning("job %s: run %d interrupted: %s", run.job, run.id, exc)
        except Exception as exc:
            log.exception("job %s: run %d failed", run.job, run.id)
            await self._close(ctx, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        else:
            await self._close(ctx, RunStatus.SUCCEEDED, message)
            log.info("job %s: run %d finished: %s", run.job, run.id, dict(ctx.counts))
        try:
            return await job_runs.get_run(self.store, run.id)
        except StoreError:
            return None

    async def _close(self, ctx: RunContext, status: RunStatus | None, message: str | None) -> None:
        """Finish the run (``status``) or release it (``None``); a database
        that is away leaves it ``RUNNING`` for its lease to run out."""
        try:
            if status is None:
                await job_runs.release(
                    self.store,
                    ctx.run.id,
                    worker=self.name,
                    now=self.clock.now(),
                    counts=ctx.counts,
                    errors=ctx.errors,
                    message=message or "interrupted",
                )
            else:
                await job_runs.finish(
                    self.store,
                    ctx.run.id,
                    worker=self.name,
                    status=status,
                    now=self.clock.now(),
                    counts=ctx.counts,
                    errors=ctx.errors,
                    message=message,
                )
        except StoreError as exc:
            log.error(
                "job %s: run %d: outcome not recorded: %s", ctx.run.job, ctx.run.id, exc.detail
            )

    async def _heartbeat(self, ctx: RunContext) -> None:
        """Renew the lease every third of it (real seconds; the times written
        are the worker's clock) until the run ends."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                kept = await job_runs.heartbeat(
                    self.store,
                    ctx.run.id,
                    worker=self.name,
                    now=self.clock.now(),
                    lease=self.lease,
                    counts=ctx.counts,
                    errors=ctx.errors,
                )
            except StoreError as exc:
                log.warning(
                    "job %s: run %d: heartbeat failed: %s", ctx.run.job, ctx.run.id, exc.detail
                )
                continue
            if not kept:
                ctx.lease_lost = True
                log.error("job %s: run %d: lease lost to another worker", ctx.run.job, ctx.run.id)
                return

    # -- The loop ----------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop and every run to stop at their next checkpoint."""
        self.stopping.set()

    def start_due(self) -> asyncio.Task[list[RunRecord]]:
        """Claim due ticks and start their runs in the background; the task
        returns the runs started (a job still running in this worker from an
        earlier tick is not started again: one run per job at a time)."""

        async def start() -> list[RunRecord]:
            runs = await self.claim_due()
            for run in runs:
                self._running[run.job] = asyncio.create_task(self.execute(run))
            return runs

        return asyncio.create_task(start())

    async def drain(self) -> None:
        """Wait for the runs in progress to end (finish, or stop at a checkpoint)."""
        running = [task for task in self._running.values() if not task.done()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def run_forever(self) -> None:
        """Claim and run due ticks until :meth:`stop`; then wait for the runs
        in progress to reach a checkpoint and hand themselves back."""
        log.info(
            "worker %s started: %s",
            self.name,
            ", ".join(f"{n} ({s.text})" for n, s in self.schedules.items() if n in self.jobs),
        )
        loops = [asyncio.create_task(loop.run_forever(self.stopping)) for loop in self.loops]
        failures = 0
        while not self.stopping.is_set():
            try:
                await self.start_due()
                failures = 0
            except StoreError as exc:
                failures += 1
                log.warning("cannot claim ticks: %s", exc.detail)
            now = self.clock.now()
            delay = (self.next_wake(now) - now).total_seconds()
            if failures:
                delay = min(delay, min(60.0, 2.0**failures))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=max(delay, 0.05))
        await self.drain()
        if loops:
            await asyncio.gather(*loops, return_exceptions=True)
        log.info("worker %s stopped", self.name)
