"""Long-running jobs (SPEC §3 "Jobs"): Auth0 bulk import jobs, bulk
password-change tickets, with their parameters, progress, per-row failures
and outcome, kept after they finish.

A job is worked on by one worker at a time, which holds it with a lease
(``locked_by``, ``locked_until``) as the scheduled jobs' runs do
(:mod:`identity_store.job_runs`): :func:`create` can start it held,
:func:`claim` takes a job that is waiting, whose lease ran out (its worker
died) or, when asked, that failed (a resumed job); :func:`take_over_expired`
finds the running jobs of a kind whose worker died. Every write of the
owner (:func:`heartbeat`, :func:`record`, :func:`finish`, :func:`release`)
is conditional on still holding the job and says whether it did: a worker
whose lease ran out and was taken over stops.

Failures are kept up to :data:`MAX_FAILURES` (the first ones);
``summary["failures"]`` counts them all.

Times are the caller's clock, as for :mod:`identity_store.job_runs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit
from .actor import Actor
from .models import Job, JobKind, JobStatus
from .models.base import new_id
from .row_inserts import insert_rows
from .store import Store

__all__ = [
    "FAILURES_KEY",
    "MAX_FAILURES",
    "JobKind",
    "JobRecord",
    "JobStatus",
    "claim",
    "claim_next",
    "count_running",
    "create",
    "create_in",
    "finish",
    "finish_in",
    "get",
    "heartbeat",
    "list_jobs",
    "page_jobs",
    "record",
    "record_in",
    "release",
    "submit",
    "take_over_expired",
    "takeable",
]

MAX_FAILURES = 1000
"""Failures a job keeps (the first ones); ``summary["failures"]`` counts them all."""

FAILURES_KEY = "failures"
"""The key of ``summary`` that counts every failure recorded."""

_JOBS = cast(Table, Job.__table__)
_RUNNING = JobStatus.RUNNING.value


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job, as stored."""

    id: str
    kind: str
    status: str
    params: dict[str, Any]
    summary: dict[str, Any]
    failures: list[dict[str, Any]]
    external_id: str | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None

    @property
    def failures_total(self) -> int:
        """Every failure recorded, also those not kept."""
        return int(self.summary.get(FAILURES_KEY, len(self.failures)))

    @property
    def finished(self) -> bool:
        return self.status in (
            JobStatus.SUCCEEDED.value,
            JobStatus.FAILED.value,
            JobStatus.CANCELLED.value,
        )

    def held(self, now: datetime) -> bool:
        """Whether a worker holds it now (running, lease not run out)."""
        return self.status == _RUNNING and self.locked_until is not None and self.locked_until > now


def _record(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        status=row.status,
        params=dict(row.params or {}),
        summary=dict(row.summary or {}),
        failures=list(row.failures or []),
        external_id=row.external_id,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        locked_by=row.locked_by,
        locked_until=row.locked_until,
    )


def _kind(kind: JobKind | str) -> str:
    return kind.value if isinstance(kind, JobKind) else JobKind(kind).value


def _new_job(
    kind: JobKind | str,
    *,
    now: datetime,
    params: Mapping[str, Any] | None,
    summary: Mapping[str, Any] | None,
    created_by: str | None,
    external_id: str | None,
    worker: str | None,
    lease: timedelta | None,
) -> dict[str, Any]:
    held = worker is not None and lease is not None
    return {
        "id": new_id(),
        "kind": _kind(kind),
        "status": _RUNNING if held else JobStatus.QUEUED.value,
        "params": dict(params or {}),
        "summary": dict(summary or {}),
        "failures": [],
        "external_id": external_id,
        "created_by": created_by[:255] if created_by else None,
        "created_at": now,
        "started_at": now if held else None,
        "locked_by": worker if held else None,
        "locked_until": now + lease if held and lease is not None else None,
    }


async def create_in(
    session: AsyncSession,
    kind: JobKind | str,
    *,
    now: datetime,
    params: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    created_by: str | None = None,
    external_id: str | None = None,
    worker: str | None = None,
    lease: timedelta | None = None,
) -> JobRecord:
    """:func:`create` in the caller's transaction (a job whose input is
    written with it)."""
    values = _new_job(
        kind,
        now=now,
        params=params,
        summary=summary,
        created_by=created_by,
        external_id=external_id,
        worker=worker,
        lease=lease,
    )
    row = (await session.execute(_JOBS.insert().values(values).returning(*_JOBS.c))).one()
    return _record(row)


async def create(
    store: Store,
    kind: JobKind | str,
    *,
    now: datetime,
    params: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    created_by: str | None = None,
    external_id: str | None = None,
    worker: str | None = None,
    lease: timedelta | None = None,
) -> JobRecord:
    """A new job: ``QUEUED``, or with ``worker`` and ``lease`` ``RUNNING``
    and held by ``worker`` from ``now``."""

    async def work(session: AsyncSession) -> JobRecord:
        return await create_in(
            session,
            kind,
            now=now,
            params=params,
            summary=summary,
            created_by=created_by,
            external_id=external_id,
            worker=worker,
            lease=lease,
        )

    return await store.transaction(work)


async def submit(
    store: Store,
    kind: JobKind | str,
    actor: Actor,
    *,
    now: datetime,
    params: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
) -> JobRecord:
    """A job asked for by ``actor`` (the management API), ``QUEUED`` for a
    worker to run, with its audit row (``job.submit``), in one transaction."""
    values: dict[str, Any] = {
        "id": new_id(),
        "kind": _kind(kind),
        "status": JobStatus.QUEUED.value,
        "params": dict(params),
        "summary": dict(summary or {}),
        "failures": [],
        "external_id": None,
        "created_by": actor.name[:255],
        "created_at": now,
    }

    async def work(session: AsyncSession) -> JobRecord:
        row = (await session.execute(_JOBS.insert().values(values).returning(*_JOBS.c))).one()
        entry = audit.audit_row(actor, "job.submit", "Job", row.id, {"kind": row.kind}, now)
        await insert_rows(session, audit.AUDIT, [entry])
        return _record(row)

    return await store.transaction(work)


async def takeable(
    store: Store, kinds: Sequence[JobKind | str], *, now: datetime, limit: int = 10
) -> list[str]:
    """Ids of the jobs of ``kinds`` a worker may take now (``QUEUED``, or
    ``RUNNING`` with their worker's lease run out), oldest first: what a
    worker looks for, then :func:`claim` s (another may be quicker)."""
    wanted = [_kind(k) for k in kinds]
    query = (
        select(_JOBS.c.id)
        .where(
            _JOBS.c.kind.in_(wanted),
            or_(_JOBS.c.status == JobStatus.QUEUED.value, _free(now)),
        )
        .order_by(_JOBS.c.created_at, _JOBS.c.id)
        .limit(limit)
    )
    async with store.reading() as session:
        return list((await session.scalars(query)).all())


async def _returned(store: Store, statement: Any) -> JobRecord | None:
    async def work(session: AsyncSession) -> JobRecord | None:
        row = (await session.execute(statement)).first()
        return _record(row) if row is not None else None

    return await store.transaction(work)


def _free(now: datetime) -> Any:
    """A running job whose lease ran out (or that has none)."""
    return and_(
        _JOBS.c.status == _RUNNING,
        or_(_JOBS.c.locked_until.is_(None), _JOBS.c.locked_until <= now),
    )


def _take(worker: str, now: datetime, lease: timedelta) -> dict[str, Any]:
    return {
        "status": _RUNNING,
        "locked_by": worker,
        "locked_until": now + lease,
        "started_at": func.coalesce(_JOBS.c.started_at, now),
        "finished_at": None,
    }


async def claim(
    store: Store,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    resume_failed: bool = False,
) -> JobRecord | None:
    """Take the job for ``worker``: it is ``QUEUED``, or ``RUNNING`` with its
    lease run out, or (``resume_failed``) ``FAILED``; ``None`` when it is
    held by a live worker, finished otherwise, or does not exist. One
    conditional ``UPDATE``: of two workers trying at once, one gets it."""
    takeable = [_JOBS.c.status == JobStatus.QUEUED.value, _free(now)]
    if resume_failed:
        takeable.append(_JOBS.c.status == JobStatus.FAILED.value)
    statement = (
        update(_JOBS)
        .where(_JOBS.c.id == job_id, or_(*takeable))
        .values(**_take(worker, now, lease))
        .returning(*_JOBS.c)
    )
    return await _returned(store, statement)


async def take_over_expired(
    store: Store,
    kind: JobKind | str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int = 10,
) -> list[JobRecord]:
    """The running jobs of ``kind`` whose worker died (lease run out), taken
    over by ``worker``, oldest first."""
    async with store.reading() as session:
        ids = list(
            (
                await session.scalars(
                    select(_JOBS.c.id)
                    .where(_JOBS.c.kind == _kind(kind), _free(now))
                    .order_by(_JOBS.c.created_at, _JOBS.c.id)
                    .limit(limit)
                )
            ).all()
        )
    taken = []
    for job_id in ids:
        job = await claim(store, job_id, worker=worker, now=now, lease=lease)
        if job is not None:
            taken.append(job)
    return taken


async def claim_next(
    store: Store,
    kind: JobKind | str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> JobRecord | None:
    """The oldest job of ``kind`` that is waiting (``QUEUED``) or whose
    worker died (``RUNNING``, lease run out), taken by ``worker``; ``None``
    when there is none (or other workers took each one first)."""
    async with store.reading() as session:
        ids = list(
            (
                await session.scalars(
                    select(_JOBS.c.id)
                    .where(
                        _JOBS.c.kind == _kind(kind),
                        or_(_JOBS.c.status == JobStatus.QUEUED.value, _free(now)),
                    )
                    .order_by(_JOBS.c.created_at, _JOBS.c.id)
                    .limit(5)
                )
            ).all()
        )
    for job_id in ids:
        job = await claim(store, job_id, worker=worker, now=now, lease=lease)
        if job is not None:
            return job
    return None


def _owned(job_id: str, worker: str) -> Any:
    return and_(_JOBS.c.id == job_id, _JOBS.c.locked_by == worker, _JOBS.c.status == _RUNNING)


async def heartbeat(
    store: Store,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Renew ``worker``'s lease on the job; ``False`` when it is no longer
    its own (taken over after the lease ran out, or finished): stop."""
    statement = (
        update(_JOBS)
        .where(_owned(job_id, worker))
        .values(locked_until=now + lease)
        .returning(_JOBS.c.id)
    )

    async def work(session: AsyncSession) -> bool:
        return (await session.execute(statement)).first() is not None

    return await store.transaction(work)


def _merged(
    row: Any,
    summary: Mapping[str, Any] | None,
    failures: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The new ``summary`` and ``failures`` of ``row`` (the stored ones plus these)."""
    merged = dict(row.summary or {})
    if summary:
        merged.update(summary)
    kept = list(row.failures or [])
    counted = int(merged.get(FAILURES_KEY, len(kept)))
    room = max(0, MAX_FAILURES - len(kept))
    kept.extend(dict(f) for f in failures[:room])
    merged[FAILURES_KEY] = counted + len(failures)
    return {"summary": merged, "failures": kept}


async def _update_owned_in(
    session: AsyncSession,
    job_id: str,
    worker: str,
    values: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    failures: Sequence[Mapping[str, Any]],
) -> JobRecord | None:
    query = select(_JOBS.c.summary, _JOBS.c.failures).where(_owned(job_id, worker))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        return None
    changed = dict(values)
    if summary or failures:
        changed.update(_merged(row, summary, failures))
    result = await session.execute(
        update(_JOBS).where(_owned(job_id, worker)).values(**changed).returning(*_JOBS.c)
    )
    found = result.first()
    return _record(found) if found is not None else None


async def _update_owned(
    store: Store,
    job_id: str,
    worker: str,
    values: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    failures: Sequence[Mapping[str, Any]],
) -> JobRecord | None:
    async def work(session: AsyncSession) -> JobRecord | None:
        return await _update_owned_in(session, job_id, worker, values, summary, failures)

    return await store.transaction(work)


async def record_in(
    session: AsyncSession,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    summary: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
) -> JobRecord | None:
    """:func:`record` in the caller's transaction (a store use case that
    commits its progress with the work it did): the lease renewed, the job
    locked until the transaction ends (PostgreSQL), so that no other worker
    takes it over meanwhile; ``None`` when it is no longer ``worker``'s."""
    values = {"locked_until": now + lease}
    return await _update_owned_in(session, job_id, worker, values, summary, failures)


async def record(
    store: Store,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta | None = None,
    summary: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
    external_id: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> JobRecord | None:
    """Record progress of ``worker``'s job: ``summary`` merged into the
    stored one, ``failures`` added (up to :data:`MAX_FAILURES` kept, all
    counted), ``external_id`` and ``params`` set when given, the lease
    renewed with ``lease``. The job as it is now; ``None`` when it is no
    longer ``worker``'s."""
    values: dict[str, Any] = {}
    if lease is not None:
        values["locked_until"] = now + lease
    if external_id is not None:
        values["external_id"] = external_id
    if params is not None:
        values["params"] = dict(params)
    return await _update_owned(store, job_id, worker, values, summary, failures)


def _closing(
    now: datetime, status: JobStatus, summary: Mapping[str, Any] | None, message: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    if status is JobStatus.RUNNING or status is JobStatus.QUEUED:
        raise ValueError(f"a job finishes as SUCCEEDED, FAILED or CANCELLED, not {status}")
    final = dict(summary or {})
    if message is not None:
        final["message"] = message
    values = {
        "status": status.value,
        "finished_at": now,
        "locked_by": None,
        "locked_until": None,
    }
    return values, final


async def finish(
    store: Store,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    status: JobStatus,
    summary: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
    message: str | None = None,
) -> JobRecord | None:
    """Close ``worker``'s job (``SUCCEEDED``, ``FAILED`` or ``CANCELLED``)
    with its last ``summary`` and ``failures`` (added to those recorded) and,
    when given, ``message`` (kept as ``summary["message"]``); ``None`` when it
    was no longer ``worker``'s to close."""
    values, final = _closing(now, status, summary, message)
    return await _update_owned(store, job_id, worker, values, final, failures)


async def finish_in(
    session: AsyncSession,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    status: JobStatus,
    summary: Mapping[str, Any] | None = None,
    message: str | None = None,
) -> JobRecord | None:
    """:func:`finish` in the caller's transaction."""
    values, final = _closing(now, status, summary, message)
    return await _update_owned_in(session, job_id, worker, values, final, ())


async def release(
    store: Store,
    job_id: str,
    *,
    worker: str,
    now: datetime,
    summary: Mapping[str, Any] | None = None,
) -> JobRecord | None:
    """Hand ``worker``'s job back unfinished (the worker stops): still
    ``RUNNING``, its lease run out at ``now``, so the next worker takes it
    over at once (:func:`take_over_expired`, :func:`claim`)."""
    return await _update_owned(store, job_id, worker, {"locked_until": now}, summary, ())


async def get(store: Store, job_id: str) -> JobRecord | None:
    async with store.reading() as session:
        row = (await session.execute(select(_JOBS).where(_JOBS.c.id == job_id))).first()
    return _record(row) if row is not None else None


async def list_jobs(
    store: Store,
    *,
    kind: JobKind | str | None = None,
    kinds: Sequence[JobKind | str] = (),
    status: JobStatus | None = None,
    created_by: str | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    """Jobs, newest first (of ``kind`` or ``kinds``, in ``status``, created
    by ``created_by``, when given)."""
    query = select(_JOBS)
    if created_by is not None:
        query = query.where(_JOBS.c.created_by == created_by)
    wanted = [_kind(k) for k in ([kind] if kind is not None else []) + list(kinds)]
    if wanted:
        query = query.where(_JOBS.c.kind.in_(wanted))
    if status is not None:
        query = query.where(_JOBS.c.status == status.value)
    query = query.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(limit)
    async with store.reading() as session:
        return [_record(row) for row in await session.execute(query)]


async def page_jobs(
    store: Store,
    *,
    kinds: Sequence[JobKind | str] = (),
    status: JobStatus | str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    """Jobs newest first by id (ids are ULIDs: creation order), those of
    ``kinds`` and in ``status`` when given, after the job ``before`` (the
    last of the previous page)."""
    query = select(_JOBS)
    if kinds:
        query = query.where(_JOBS.c.kind.in_([_kind(k) for k in kinds]))
    if status is not None:
        query = query.where(_JOBS.c.status == JobStatus(status).value)
    if before is not None:
        query = query.where(_JOBS.c.id < before)
    query = query.order_by(_JOBS.c.id.desc()).limit(limit)
    async with store.reading() as session:
        return [_record(row) for row in await session.execute(query)]


async def count_running(store: Store, kind: JobKind | str) -> int:
    """Jobs of ``kind`` running now across all workers (also those whose
    worker died: the remote end still runs them until a worker takes them
    over and sees them finish)."""
    async with store.reading() as session:
        value = await session.scalar(
            select(func.count()).where(_JOBS.c.kind == _kind(kind), _JOBS.c.status == _RUNNING)
        )
    return int(value or 0)
