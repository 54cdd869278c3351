"""``/jobs``: the long-running jobs of every kind (CSV imports, bulk
activations, bulk password changes, Auth0 import jobs), with their status,
totals and failures, and an import's per-row report (``admin`` only).

The job document is the same for every kind: ``params`` (what it was asked
to do) and ``summary`` (where it stands) are the kind's own; each kind's
section of docs/management-api.md says what they hold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field
from starlette.responses import StreamingResponse

from identity_store import imports, jobs
from identity_store.errors import NotFoundError
from identity_store.jobs import JobKind, JobRecord, JobStatus

from . import cursors
from .models import NO_CONTROL_NOR_SLASH, Cursor, Wire
from .parameters import COMMON, CursorQuery
from .problems import ProblemError, problem_responses
from .routing import AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["jobs"])


class JobItem(Wire):
    """A job, as lists show it."""

    id: str = Field(description="The job's id (a ULID).")
    kind: JobKind
    status: JobStatus = Field(
        description="`QUEUED` (waiting for a worker), `RUNNING`, then `SUCCEEDED` (rows may "
        "still have failed: see `summary`), `FAILED` (the job itself could not go on: "
        "`summary.message` says why) or `CANCELLED`."
    )
    params: dict[str, Any] = Field(description="What the job was asked to do (per kind).")
    summary: dict[str, Any] = Field(
        description="Where it stands (per kind); `failures` counts every failure recorded, "
        "`message` says how it ended."
    )
    created_by: str | None = Field(description="Who started it (`token:<name>`, `cli:...`).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Job(JobItem):
    """A job with its failures."""

    failures: list[dict[str, Any]] = Field(
        description="The first 1,000 failures (rows, users) with their error; "
        "`summary.failures` counts them all."
    )


class JobPage(Wire):
    items: list[JobItem]
    next_cursor: Cursor | None


def job_item(record: JobRecord) -> JobItem:
    return JobItem(
        id=record.id,
        kind=JobKind(record.kind),
        status=JobStatus(record.status),
        params=record.params,
        summary=record.summary,
        created_by=record.created_by,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def job(record: JobRecord) -> Job:
    return Job(**job_item(record).model_dump(), failures=record.failures)


JobIdPath = Annotated[
    str,
    Path(
        alias="id",
        min_length=1,
        max_length=26,
        pattern=NO_CONTROL_NOR_SLASH,
        description="The job's id (a ULID).",
    ),
]


@router.get("/jobs", responses=problem_responses(*COMMON), summary="List jobs, newest first")
async def list_jobs(
    caller: Authorized,
    kind: Annotated[JobKind | None, Query(description="Jobs of this kind only.")] = None,
    status: Annotated[JobStatus | None, Query(description="Jobs in this state only.")] = None,
    count: Annotated[int, Query(ge=1, le=200, description="Page size (1-200).")] = 50,
    cursor: CursorQuery = None,
) -> JobPage:
    found = await jobs.page_jobs(
        caller.store,
        kinds=[kind.value] if kind is not None else [],
        status=status.value if status is not None else None,
        before=cursors.decode("jobs", cursor),
        limit=count + 1,
    )
    more = len(found) > count
    page = found[:count]
    return JobPage(
        items=[job_item(r) for r in page],
        next_cursor=cursors.encode("jobs", page[-1].id if more else None),
    )


async def _found(caller: Authorized, job_id: str) -> JobRecord:
    record = await jobs.get(caller.store, job_id)
    if record is None:
        raise NotFoundError("Job", job_id)
    return record


@router.get(
    "/jobs/{id:ulid}",
    responses=problem_responses(*COMMON, 404),
    summary="Read a job: its status, totals and failures",
)
async def read_job(job_id: JobIdPath, caller: Authorized) -> Job:
    return job(await _found(caller, job_id))


@router.get(
    "/jobs/{id:ulid}/report.csv",
    response_class=StreamingResponse,
    responses=problem_responses(*COMMON, 404)
    | {
        200: {
            "description": "One line per row of the file, in row order: "
            + ", ".join(f"`{c}`" for c in imports.REPORT_COLUMNS)
            + " (RFC 4180). `outcome` is `created`, `updated`, `unchanged` or `failed`; "
            "a cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, "
            "`@`, a tab or a carriage return) starts with `'`. While the job runs, the "
            "rows written so far.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
    summary="Download an import's per-row report",
)
async def read_report(job_id: JobIdPath, caller: Authorized) -> StreamingResponse:
    """404 `not-found` for a job that is not a CSV import (only those have one)."""
    record = await _found(caller, job_id)
    if record.kind != JobKind.IMPORT.value:
        raise ProblemError(
            404, "not-found", f"job {job_id} is a {record.kind} job: only imports have a report"
        )

    async def lines() -> AsyncIterator[bytes]:
        async for text in imports.report_lines(caller.store, job_id):
            yield text.encode()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-report.csv"'},
    )


__all__ = ["Job", "JobItem", "JobPage", "job", "job_item", "router"]
