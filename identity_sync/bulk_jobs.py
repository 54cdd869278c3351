"""The bulk jobs the management API asks for, run by the worker
(docs/management-api.md, "Bulk jobs and passwords"): ``BULK_ACTIVATION``
(:class:`~identity_sync.bulk_activation.ActivationRun`) and
``BULK_PASSWORD_CHANGE`` (:class:`~identity_sync.password_tickets.TicketRun`,
its tickets kept in the store until they expire:
:class:`~identity_sync.password_tickets.KeptTickets`).

The API only writes the job's row (``QUEUED``, :func:`identity_store.jobs.submit`).
:class:`BulkJobs` is a loop of the worker (beside the outbox dispatchers; in
``idstore serve`` on SQLite, inside the server): every
``auth0_import_poll_seconds`` it looks for jobs to run
(:func:`identity_store.jobs.takeable`: waiting, or running with their
worker's lease run out, that is, a worker that died) and runs up to
:data:`MAX_RUNNING` of them at once, each claimed with a lease the run
renews; of two workers looking at once, one claims a job. On shutdown the
runs are cancelled and hand their jobs back, for the next worker to resume.
Once every ten minutes it deletes the kept tickets that expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from identity_store import jobs, password_tickets
from identity_store.errors import StoreError
from identity_store.jobs import JobKind, JobRecord
from identity_store.store import Store

from .auth0 import Auth0Client
from .bulk_activation import ActivationRun
from .clock import Clock, SystemClock
from .password_tickets import JobLost, KeptTickets, TicketRun

__all__ = ["KINDS", "MAX_RUNNING", "BulkJobs", "BulkTotals"]

log = logging.getLogger("idstore.worker")

KINDS = (JobKind.BULK_ACTIVATION, JobKind.BULK_PASSWORD_CHANGE)
"""The kinds of job the loop runs."""

MAX_RUNNING = 2
"""Jobs one worker runs at once."""

PURGE_EVERY = timedelta(minutes=10)


@dataclass(slots=True)
class BulkTotals:
    """What a drain did: the jobs run, by their final status."""

    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0


class BulkJobs:
    """The worker's loop of bulk jobs (module docstring)."""

    label = "bulk-jobs"

    def __init__(
        self, store: Store, service: Auth0Client, *, clock: Clock | None = None, name: str
    ) -> None:
        self.store = store
        self.service = service
        self.clock: Clock = clock or SystemClock()
        self.name = f"{name}:bulk"
        self.poll = store.settings.auth0_import_poll_seconds
        self._running: dict[str, asyncio.Task[JobRecord | None]] = {}
        self._next_purge: datetime | None = None

    async def run_job(self, job_id: str) -> JobRecord | None:
        """Run (or resume) one job to its end; ``None`` when another worker
        has it, or it stopped (lost, or the store failed: its lease runs out
        and a worker resumes it)."""
        job = await jobs.get(self.store, job_id)
        if job is None:
            return None
        try:
            if job.kind == JobKind.BULK_PASSWORD_CHANGE.value:
                sink = KeptTickets(self.store, job_id, self.clock)
                return await TicketRun(
                    self.store, self.service, sink, clock=self.clock, name=self.name
                ).run(job_id)
            if job.kind == JobKind.BULK_ACTIVATION.value:
                return await ActivationRun(
                    self.store, self.service, clock=self.clock, name=self.name
                ).run(job_id)
        except LookupError:
            return None  # another worker was quicker
        except JobLost:
            log.warning("bulk job %s was taken over by another worker", job_id)
            return None
        except StoreError as exc:
            log.warning("bulk job %s stopped: %s", job_id, exc.detail)
            return None
        return None

    async def start_due(self) -> list[str]:
        """Start the jobs waiting (or left by a dead worker), up to
        :data:`MAX_RUNNING` at once; the ids started."""
        for job_id, task in list(self._running.items()):
            if task.done():
                del self._running[job_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("bulk job %s failed", job_id, exc_info=task.exception())
        room = MAX_RUNNING - len(self._running)
        if room <= 0:
            return []
        now = self.clock.now()
        started = []
        for job_id in await jobs.takeable(self.store, KINDS, now=now, limit=room + 5):
            if job_id in self._running or len(self._running) >= MAX_RUNNING:
                continue
            self._running[job_id] = asyncio.create_task(self.run_job(job_id))
            started.append(job_id)
        await self._purge(now)
        return started

    async def _purge(self, now: datetime) -> None:
        if self._next_purge is not None and now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY
        deleted = await password_tickets.purge_expired(self.store, now=now)
        if deleted:
            log.info("deleted %d expired password-change tickets", deleted)

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Run jobs until ``stopping``; then the runs hand their jobs back."""
        failures = 0
        while not stopping.is_set():
            delay = self.poll
            try:
                await self.start_due()
                failures = 0
            except StoreError as exc:
                failures += 1
                delay = min(60.0, 2.0**failures)
                log.warning("bulk jobs: cannot look for jobs: %s", exc.detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
        await self._stop_runs()

    async def settle(self) -> None:
        """Wait for the runs :meth:`start_due` started to end."""
        running = [task for task in self._running.values() if not task.done()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _stop_runs(self) -> None:
        for task in self._running.values():
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        self._running.clear()

    async def drain(self, *, stopping: asyncio.Event | None = None) -> BulkTotals:
        """Run every job there is to run, one after the other, until none is
        left (``idstore worker --until-idle``, tests)."""
        totals = BulkTotals()
        while stopping is None or not stopping.is_set():
            ids = await jobs.takeable(self.store, KINDS, now=self.clock.now(), limit=1)
            if not ids:
                break
            ended = await self.run_job(ids[0])
            if ended is None:
                totals.interrupted += 1
                if stopping is None:
                    break  # held by a live worker, or the store failed: not ours to wait for
            elif ended.status == "SUCCEEDED":
                totals.succeeded += 1
            else:
                totals.failed += 1
        await self._purge(self.clock.now())
        return totals

    async def close(self) -> None:
        await self._stop_runs()
        await self.service.aclose()
