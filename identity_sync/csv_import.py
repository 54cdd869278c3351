"""Running CSV import jobs (docs/management-api.md, "CSV import"): the rows
of a file kept by :func:`identity_store.imports.start_import`, written in
batches by :func:`identity_store.imports.write_batch`.

:class:`ImportJobs` is a loop of the worker (``idstore worker``, and
``idstore serve`` on the embedded SQLite default): every
``import_poll_seconds`` while idle it claims the oldest job that waits
(``QUEUED``) or whose worker died (its lease ran out:
:func:`identity_store.jobs.claim_next`) and runs it to the end, one job at a
time. ``idstore import`` runs its own job in the foreground the same way
(:class:`ImportRun`).

Each batch renews the job's lease in its own transaction and records, with
its users and its report, the last row it wrote (``summary["lastRow"]``):

- told to stop (SIGTERM, Ctrl-C), a run stops between two batches and hands
  the job back (its lease run out at once): the next worker goes on;
- a worker killed outright leaves its lease to run out
  (``job_lease_seconds`` after its last batch); then the next worker that
  looks takes the job over and goes on after ``lastRow``;
- a worker that stalled past its lease and was taken over writes nothing
  more: its next batch finds the job no longer its own
  (:class:`~identity_store.imports.JobLostError`) and it stops.

The job ends ``SUCCEEDED`` however many rows failed (the report says which,
and why); ``FAILED`` only when the job itself could not go on (its file no
longer readable, an unexpected error): its file is kept, and
``idstore import --resume JOB_ID`` goes on from ``lastRow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from identity_store import imports, jobs
from identity_store.actor import Actor
from identity_store.errors import StoreError, UnavailableError
from identity_store.imports import ImportOptions, JobLostError, Totals
from identity_store.jobs import JobKind, JobRecord, JobStatus
from identity_store.settings import Settings
from identity_store.store import Store

from .clock import Clock, SystemClock
from .events import log_event

__all__ = ["ImportJobs", "ImportProgress", "ImportRun", "Interrupted", "RunTotals"]

log = logging.getLogger("idstore.import")


class Interrupted(Exception):
    """The run stopped between two batches (told to stop); the job was handed back."""


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """Where a job stands, after each batch."""

    job_id: str
    totals: Totals


def _message(totals: Totals) -> str:
    return (
        f"{totals.created} created, {totals.updated} updated, {totals.unchanged} unchanged, "
        f"{totals.failed} failed"
    )


class ImportRun:
    """Runs import jobs in the foreground (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        name: str,
        clock: Clock | None = None,
        settings: Settings | None = None,
        stopping: asyncio.Event | None = None,
        on_progress: Callable[[ImportProgress], None] | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.settings: Settings = settings or store.settings
        self.stopping = stopping or asyncio.Event()
        self.on_progress = on_progress
        self.lease = timedelta(seconds=self.settings.job_lease_seconds)

    async def resume(self, job_id: str) -> JobRecord | None:
        """Take ``job_id`` (waiting, its worker dead, or ``FAILED``) and run it.

        :raises LookupError: No such job, or not an import, or held by a
            live worker, or finished otherwise.
        """
        now = self.clock.now()
        job = await jobs.claim(
            self.store, job_id, worker=self.name, now=now, lease=self.lease, resume_failed=True
        )
        if job is None:
            found = await jobs.get(self.store, job_id)
            if found is None:
                raise LookupError(f"no job {job_id}")
            if found.held(now):
                raise LookupError(
                    f"job {job_id} is running in {found.locked_by} (lease until "
                    f"{found.locked_until.isoformat() if found.locked_until else '-'})"
                )
            raise LookupError(f"job {job_id} is {found.status}: nothing to resume")
        if job.kind != JobKind.IMPORT.value:
            await jobs.release(self.store, job.id, worker=self.name, now=now)
            raise LookupError(f"job {job_id} is a {job.kind} job, not an import")
        return await self.run_claimed(job)

    async def run_claimed(self, job: JobRecord) -> JobRecord | None:
        """Run ``job`` (held by this runner) to the end; the job as it ended,
        or ``None`` when another worker took it over meanwhile.

        :raises Interrupted: Told to stop; the job was handed back.
        :raises UnavailableError: The database went away; the job's lease
            runs out and the next worker goes on.
        """
        options = ImportOptions.of(job.params)
        totals = Totals.of(job.summary)
        actor = Actor(
            name=job.created_by or "import",
            token_id=job.params.get("tokenId"),
            request_id=f"job-{job.id}",
        )
        log_event(log, "import_started", job=job.id, rows=totals.rows, after=totals.last_row)
        try:
            rows = imports.read_rows(self.store, job, self.settings, after=totals.last_row)
            async with (
                contextlib.aclosing(rows),
                contextlib.aclosing(
                    imports.batches(rows, self.settings.import_batch_size)
                ) as batches,
            ):
                async for batch in batches:
                    if self.stopping.is_set():
                        raise Interrupted(f"job {job.id} handed back after row {totals.last_row}")
                    totals = await imports.write_batch(
                        self.store,
                        job.id,
                        batch,
                        options,
                        totals,
                        actor=actor,
                        worker=self.name,
                        now=self.clock.now(),
                        lease=self.lease,
                    )
                    if self.on_progress is not None:
                        self.on_progress(ImportProgress(job.id, totals))
        except JobLostError:
            log_event(log, "import_lost", job=job.id, after=totals.last_row)
            return None
        except (Interrupted, UnavailableError, asyncio.CancelledError, KeyboardInterrupt):
            await self._hand_back(job.id, totals)
            raise
        except StoreError as exc:
            return await self._close(job.id, totals, JobStatus.FAILED, exc.detail)
        except Exception as exc:
            log.exception("import: job %s failed", job.id)
            return await self._close(
                job.id, totals, JobStatus.FAILED, f"{type(exc).__name__}: {exc}"
            )
        return await self._close(job.id, totals, JobStatus.SUCCEEDED, _message(totals))

    async def _close(
        self, job_id: str, totals: Totals, status: JobStatus, message: str
    ) -> JobRecord | None:
        closed = await imports.finish_import(
            self.store,
            job_id,
            totals,
            worker=self.name,
            now=self.clock.now(),
            status=status,
            message=message,
        )
        log_event(log, "import_finished", job=job_id, status=status.value, message=message)
        return closed

    async def _hand_back(self, job_id: str, totals: Totals) -> None:
        try:
            await jobs.release(
                self.store,
                job_id,
                worker=self.name,
                now=self.clock.now(),
                summary=totals.summary(),
            )
            log_event(log, "import_handed_back", job=job_id, after=totals.last_row)
        except Exception:  # the store may be what failed: the lease runs out then
            log.warning("import: job %s could not be handed back; its lease will run out", job_id)


@dataclass(slots=True)
class RunTotals:
    """What a worker's import loop did (``idstore worker --until-idle``)."""

    jobs: list[str] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)
    """Job id -> how it ended."""

    def describe(self) -> str:
        if not self.jobs:
            return "no import job waited"
        return "; ".join(f"job {j}: {self.finished.get(j, 'taken over')}" for j in self.jobs)


class ImportJobs:
    """The worker's loop of import jobs (module docstring)."""

    label = "import"

    def __init__(
        self,
        store: Store,
        *,
        name: str,
        clock: Clock | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.settings: Settings = settings or store.settings
        self.poll = self.settings.import_poll_seconds

    async def run_next(self, stopping: asyncio.Event | None = None) -> JobRecord | None:
        """Claim the next job and run it; the job as it ended (``None``: none waited)."""
        run = ImportRun(
            self.store, name=self.name, clock=self.clock, settings=self.settings, stopping=stopping
        )
        job = await jobs.claim_next(
            self.store, JobKind.IMPORT, worker=self.name, now=self.clock.now(), lease=run.lease
        )
        if job is None:
            return None
        finished = await run.run_claimed(job)
        return finished or job

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Run jobs as they come until ``stopping``; a job in progress is
        handed back at its next batch."""
        failures = 0
        while not stopping.is_set():
            try:
                ran = await self.run_next(stopping)
                failures = 0
            except Interrupted:
                return
            except StoreError as exc:
                failures += 1
                log.warning("import: cannot run jobs now: %s", exc.detail)
                ran = None
            except Exception:  # a job's own failures end the job; this loop must go on
                failures += 1
                log.exception("import: the loop failed; it goes on")
                ran = None
            if ran is None:
                delay = self.poll if not failures else min(60.0, self.poll * 2.0**failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)

    async def drain(self, *, stopping: asyncio.Event | None = None) -> RunTotals:
        """Run every job that waits now, then return."""
        done = RunTotals()
        while stopping is None or not stopping.is_set():
            job = await self.run_next(stopping)
            if job is None:
                break
            done.jobs.append(job.id)
            if job.finished:
                done.finished[job.id] = f"{job.status} ({job.summary.get('message', '')})"
        return done

    async def close(self) -> None:
        """Nothing held between jobs."""
