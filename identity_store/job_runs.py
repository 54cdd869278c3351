"""Runs of the scheduled jobs: claimed once across workers, leased, recorded
(SPEC §6 "Scheduled jobs").

A worker that finds a tick due calls :func:`claim_tick`: it inserts the
tick's row with ``ON CONFLICT (job, scheduled_for) DO NOTHING`` (the same
statement on PostgreSQL and SQLite), so of any number of workers exactly one
gets the row back and runs the job. The owner renews its lease
(:func:`heartbeat`) while it works and closes the run with :func:`finish`;
on shutdown it hands the run back with :func:`release`. A run whose lease ran
out (its worker died) or that was released is taken over by the next
worker that claims the same tick, which continues it (the jobs are
resumable: they select what is still to do).

Times are the caller's clock (the worker's, which tests replace), so lease
expiry is decided by the workers' clocks: keep them in sync (NTP), as any
lease-based scheduler needs; a skew shorter than the lease is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .models import JobRun, RunStatus, RunTrigger
from .store import Store

__all__ = [
    "MAX_ERRORS",
    "Retry",
    "RunRecord",
    "RunStatus",
    "claim_tick",
    "finish",
    "get_run",
    "heartbeat",
    "history",
    "latest_runs",
    "latest_tick",
    "release",
    "start_manual",
    "take_over",
]

MAX_ERRORS = 100
"""Errors a run keeps (the first ones); ``counts["errors"]`` counts them all."""

_RUNS = cast(Table, JobRun.__table__)


@dataclass(frozen=True, slots=True)
class Retry:
    """When a ``FAILED`` run of a tick is tried again: ``after`` its failure,
    while it has had fewer than ``max_attempts`` attempts. A database outage
    or a directory that was down must not cost a nightly job its night."""

    after: timedelta
    max_attempts: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a job, as stored."""

    id: int
    job: str
    scheduled_for: datetime | None
    trigger: str
    as_of: datetime
    dry_run: bool
    status: str
    worker: str | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    errors: list[dict[str, Any]]
    message: str | None

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None


def _record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        job=row.job,
        scheduled_for=row.scheduled_for,
        trigger=row.trigger,
        as_of=row.as_of,
        dry_run=bool(row.dry_run),
        status=row.status,
        worker=row.worker,
        lease_until=row.lease_until,
        heartbeat_at=row.heartbeat_at,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=dict(row.counts or {}),
        errors=list(row.errors or []),
        message=row.message,
    )


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_RUNS)


async def _returned_run(store: Store, statement: Callable[[AsyncSession], Any]) -> RunRecord | None:
    """Run ``statement(session)`` (an INSERT or UPDATE ``RETURNING`` the run)
    in its own transaction; the run it returned, if any."""

    async def work(session: AsyncSession) -> RunRecord | None:
        row = (await session.execute(statement(session))).first()
        return _record(row) if row is not None else None

    return await store.transaction(work)


async def _insert_run(
    store: Store,
    job: str,
    scheduled_for: datetime | None,
    trigger: RunTrigger,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    as_of: datetime,
    dry_run: bool,
) -> RunRecord | None:
    def statement(session: AsyncSession) -> Any:
        return (
            _insert(session)
            .values(
                job=job,
                scheduled_for=scheduled_for,
                trigger=trigger.value,
                as_of=as_of,
                dry_run=dry_run,
                status=RunStatus.RUNNING.value,
                worker=worker,
                lease_until=now + lease,
                heartbeat_at=now,
                attempts=1,
                started_at=now,
                counts={},
                errors=[],
            )
            .on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
            .returning(*_RUNS.c)
        )

    return await _returned_run(store, statement)


async def claim_tick(
    store: Store,
    job: str,
    scheduled_for: datetime,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    retry: Retry | None = None,
) -> RunRecord | None:
    """Claim the tick ``scheduled_for`` of ``job`` for ``worker``: the new run,
    or the run taken over from a worker that died or let it go (or that
    failed, per ``retry``); ``None`` when another worker holds it or it is
    done."""
    claimed = await _insert_run(
        store,
        job,
        scheduled_for,
        RunTrigger.SCHEDULE,
        worker=worker,
        now=now,
        lease=lease,
        as_of=scheduled_for,
        dry_run=False,
    )
    if claimed is not None:
        return claimed
    return await take_over(
        store, job, scheduled_for, worker=worker, now=now, lease=lease, retry=retry
    )


async def take_over(
    store: Store,
    job: str,
    scheduled_for: datetime,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    retry: Retry | None = None,
) -> RunRecord | None:
    """Take the run of this tick over when its lease ran out, its worker
    released it, or (with ``retry``) it failed long enough ago and has
    attempts left; ``None`` when it is held or done. One conditional
    ``UPDATE``: of two workers trying at once, one matches the row."""
    conditions = [
        and_(_RUNS.c.status == RunStatus.RUNNING.value, _RUNS.c.lease_until < now),
        _RUNS.c.status == RunStatus.INTERRUPTED.value,
    ]
    if retry is not None:
        conditions.append(
            and_(
                _RUNS.c.status == RunStatus.FAILED.value,
                _RUNS.c.finished_at <= now - retry.after,
                _RUNS.c.attempts < retry.max_attempts,
            )
        )
    taken_over = or_(*conditions)

    def statement(session: AsyncSession) -> Any:
        return (
            update(_RUNS)
            .where(_RUNS.c.job == job, _RUNS.c.scheduled_for == scheduled_for, taken_over)
            .values(
                status=RunStatus.RUNNING.value,
                worker=worker,
                lease_until=now + lease,
                heartbeat_at=now,
                finished_at=None,
                attempts=_RUNS.c.attempts + 1,
            )
            .returning(*_RUNS.c)
        )

    return await _returned_run(store, statement)


async def start_manual(
    store: Store,
    job: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    as_of: datetime,
    dry_run: bool,
) -> RunRecord:
    """Record a run asked for by hand (``idstore jobs run``), starting now. It
    has no tick (``scheduled_for`` is ``NULL``), so it never takes the place
    of a scheduled run."""
    run = await _insert_run(
        store,
        job,
        None,
        RunTrigger.MANUAL,
        worker=worker,
        now=now,
        lease=lease,
        as_of=as_of,
        dry_run=dry_run,
    )
    assert run is not None, "a run without a tick conflicts with nothing"
    return run


def _owned(run_id: int, worker: str) -> Any:
    return and_(
        _RUNS.c.id == run_id,
        _RUNS.c.worker == worker,
        _RUNS.c.status == RunStatus.RUNNING.value,
    )


async def _update_owned(store: Store, run_id: int, worker: str, values: dict[str, Any]) -> bool:
    async def work(session: AsyncSession) -> bool:
        result = await session.execute(
            update(_RUNS).where(_owned(run_id, worker)).values(**values).returning(_RUNS.c.id)
        )
        return result.first() is not None

    return await store.transaction(work)


async def heartbeat(
    store: Store,
    run_id: int,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    counts: Mapping[str, int] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> bool:
    """Renew ``worker``'s lease on the run, recording its progress so far
    (``counts``, ``errors``: a worker killed later leaves them to whoever takes
    the run over); ``False`` when the run is no longer its own (taken over
    after the lease ran out): stop working on it."""
    values: dict[str, Any] = {"lease_until": now + lease, "heartbeat_at": now}
    if counts is not None:
        values["counts"] = dict(counts)
    if errors is not None:
        values["errors"] = _bounded(errors)
    return await _update_owned(store, run_id, worker, values)


def _bounded(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(error) for error in errors[:MAX_ERRORS]]


async def finish(
    store: Store,
    run_id: int,
    *,
    worker: str,
    status: RunStatus,
    now: datetime,
    counts: Mapping[str, int],
    errors: Sequence[Mapping[str, Any]],
    message: str | None = None,
) -> bool:
    """Close the run (``SUCCEEDED`` or ``FAILED``) with what it did;
    ``False`` when it was no longer ``worker``'s to close."""
    return await _update_owned(
        store,
        run_id,
        worker,
        {
            "status": status.value,
            "finished_at": now,
            "lease_until": None,
            "counts": dict(counts),
            "errors": _bounded(errors),
            "message": message,
        },
    )


async def release(
    store: Store,
    run_id: int,
    *,
    worker: str,
    now: datetime,
    counts: Mapping[str, int],
    errors: Sequence[Mapping[str, Any]],
    message: str,
) -> bool:
    """Hand the run back unfinished (``INTERRUPTED``, the worker is shutting
    down), with what it did so far: the next worker takes it over at once."""
    return await _update_owned(
        store,
        run_id,
        worker,
        {
            "status": RunStatus.INTERRUPTED.value,
            "lease_until": now,
            "counts": dict(counts),
            "errors": _bounded(errors),
            "message": message,
        },
    )


async def get_run(store: Store, run_id: int) -> RunRecord | None:
    async with store.reading() as session:
        row = (await session.execute(select(_RUNS).where(_RUNS.c.id == run_id))).first()
    return _record(row) if row is not None else None


async def history(store: Store, job: str, *, limit: int = 20) -> list[RunRecord]:
    """The latest runs of ``job``, newest first."""
    async with store.reading() as session:
        rows = await session.execute(
            select(_RUNS)
            .where(_RUNS.c.job == job)
            .order_by(_RUNS.c.started_at.desc(), _RUNS.c.id.desc())
            .limit(limit)
        )
        return [_record(row) for row in rows]


async def latest_runs(store: Store, jobs: Sequence[str]) -> dict[str, RunRecord]:
    """The newest run of each of ``jobs`` that has one."""
    if not jobs:
        return {}
    newest = (
        select(_RUNS.c.job, func.max(_RUNS.c.id).label("id"))
        .where(_RUNS.c.job.in_(list(jobs)))
        .group_by(_RUNS.c.job)
        .subquery()
    )
    async with store.reading() as session:
        rows = await session.execute(select(_RUNS).join(newest, newest.c.id == _RUNS.c.id))
        return {row.job: _record(row) for row in rows}


async def latest_tick(store: Store, job: str) -> datetime | None:
    """The newest tick of ``job``'s schedule that has a run (hand-runs aside)."""
    async with store.reading() as session:
        value = await session.scalar(
            select(func.max(_RUNS.c.scheduled_for)).where(
                _RUNS.c.job == job, _RUNS.c.trigger == RunTrigger.SCHEDULE.value
            )
        )
    return cast(datetime | None, value)
