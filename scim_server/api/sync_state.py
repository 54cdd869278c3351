"""A user's lifecycle history and sync state, and the replay of a failed
delivery (SPEC §4 "Every transition is recorded (time, cause, actor) and
visible in the API", §5 "lifecycle history; sync status and a way to replay
a failed sync"; ``admin`` only):

- ``GET /users/{id}/history``: every lifecycle transition of the user,
  oldest first, with its cause and actor
  (:func:`identity_store.lifecycle_admin.user_lifecycle`); also for a user
  deleted over SCIM or removed for good by the deletion sync (its history
  is kept);
- ``GET /users/{id}/sync``: per downstream target (``auth0``, ``rond``),
  what the last delivery brought it to, the rows still pending, the dead
  letters with their error, and whether a worker is delivering now
  (:func:`identity_store.outbox.user_sync`);
- ``POST /outbox/{id}/retry``: a dead letter back to pending, due now,
  its attempts from zero, audited (:func:`identity_store.outbox.retry_row`);
  404 for an unknown row, 409 ``state-conflict`` for a row that is not a
  dead letter (pending rows are retried anyway; a done row has nothing to
  replay). The CLI's ``idstore outbox retry`` does the same for many rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import Field

from identity_store import lifecycle_admin, outbox

from .models import Wire
from .parameters import COMMON, UserIdPath
from .problems import problem_responses
from .routing import AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["history and sync"])

ROWS_SHOWN = 20
"""Pending rows and dead letters listed per target (the newest); the counts are whole."""

OutboxRowId = Annotated[
    int,
    Path(alias="id", ge=1, le=2**63 - 1, description="The outbox row's id (`idstore outbox`)."),
]


class Transition(Wire):
    """One lifecycle transition."""

    occurred_at: datetime
    from_state: str | None = Field(description="`null` for the user's first state.")
    to_state: str
    cause: str = Field(
        description="`created`, `scim`, `profile-sync`, `expiry`, `deletion-sync`, `reset`…"
    )
    actor: str = Field(
        description="The token (`token:<name>`), `job:<name>` for a scheduled job, `system`."
    )
    message: str | None
    request_id: str | None
    job_run_id: int | None = Field(description="The job run that made it, if a job did.")


class UserHistory(Wire):
    user_id: str
    stored: bool = Field(
        description="`false`: the deletion sync removed the user for good; its history is kept."
    )
    lifecycle: str | None = Field(description="Where the user stands now (`null` when removed).")
    deleted: bool = Field(description="Deleted over SCIM (the row is kept).")
    items: list[Transition] = Field(description="Oldest first.")


class OutboxRow(Wire):
    """One downstream effect of a change."""

    id: int
    target: str
    operation: str
    aggregate_type: str
    aggregate_id: str
    status: Literal["PENDING", "DONE", "FAILED"] = Field(
        description="`FAILED`: a dead letter (`POST /outbox/{id}/retry` replays it)."
    )
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    processed_at: datetime | None
    last_error: str | None
    outcome: str | None
    request_id: str | None = Field(description="The request (or job run) of the change.")


class Delivery(Wire):
    """What the last delivery to a target brought it to."""

    outbox_id: int | None = Field(description="The last row it delivered.")
    outcome: str | None = Field(description="`created`, `updated: email`, `blocked: …`…")
    delivered_at: datetime | None
    remote_id: str | None = Field(description="The user's id there (Auth0's `user_id`).")
    synced: dict[str, Any] = Field(description="The fields the target holds, as delivered.")


class TargetSync(Wire):
    target: str
    last_delivered: Delivery | None = Field(description="`null`: never delivered.")
    pending: int = Field(description="Rows waiting.")
    in_flight: bool = Field(description="A worker is delivering the user now.")
    dead: int = Field(description="Dead letters.")
    pending_rows: list[OutboxRow] = Field(description=f"The {ROWS_SHOWN} newest pending rows.")
    dead_letters: list[OutboxRow] = Field(
        description=f"The {ROWS_SHOWN} newest dead letters, with their error."
    )


class UserSync(Wire):
    user_id: str
    targets: list[TargetSync] = Field(description="By target name.")


def outbox_row(row: outbox.OutboxRow) -> OutboxRow:
    return OutboxRow(
        id=row.id,
        target=row.target,
        operation=row.operation,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        processed_at=row.processed_at,
        last_error=row.last_error,
        outcome=row.outcome,
        request_id=row.request_id,
    )


def _target(found: outbox.TargetSync) -> TargetSync:
    last = found.delivered
    return TargetSync(
        target=found.target,
        last_delivered=None
        if last is None
        else Delivery(
            outbox_id=last.outbox_id,
            outcome=last.outcome,
            delivered_at=last.synced_at,
            remote_id=last.remote_id,
            synced=last.synced,
        ),
        pending=found.pending,
        in_flight=found.in_flight,
        dead=found.dead,
        pending_rows=[outbox_row(r) for r in found.waiting],
        dead_letters=[outbox_row(r) for r in found.dead_letters],
    )


@router.get(
    "/users/{id}/history",
    responses=problem_responses(*COMMON, 404),
    summary="A user's lifecycle transitions, with cause and actor",
)
async def read_history(user_id: UserIdPath, caller: Authorized) -> UserHistory:
    """Also for a user deleted over SCIM, or removed for good by the
    deletion sync (`stored` false). 404 for an id no user ever had."""
    found = await lifecycle_admin.user_lifecycle(caller.store, user_id)
    return UserHistory(
        user_id=found.user_id,
        stored=found.stored,
        lifecycle=found.lifecycle,
        deleted=found.deleted_at is not None,
        items=[
            Transition(
                occurred_at=t.occurred_at,
                from_state=t.from_state,
                to_state=t.to_state,
                cause=t.cause,
                actor=t.actor,
                message=t.message,
                request_id=t.request_id,
                job_run_id=t.job_run_id,
            )
            for t in found.history
        ],
    )


@router.get(
    "/users/{id}/sync",
    responses=problem_responses(*COMMON, 404),
    summary="A user's sync state, per downstream target",
)
async def read_sync(user_id: UserIdPath, caller: Authorized) -> UserSync:
    """Per target: the last delivery, the pending rows, the dead letters
    with their error. 404 for an id that is no user's and has no row."""
    found = await outbox.user_sync(caller.store, user_id, now=datetime.now(UTC), limit=ROWS_SHOWN)
    return UserSync(user_id=user_id, targets=[_target(t) for t in found])


@router.post(
    "/outbox/{id}/retry",
    responses=problem_responses(*COMMON, 404, 409),
    summary="Replay a dead letter",
)
async def retry_outbox_row(row_id: OutboxRowId, caller: Authorized) -> OutboxRow:
    """The row back to `PENDING`, due now, attempts from zero; the worker
    delivers it (bringing the target to the user's current state). 404 for
    an unknown row; 409 `state-conflict` when it is not a dead letter."""
    row = await outbox.retry_row(caller.store, row_id, caller.actor, now=datetime.now(UTC))
    return outbox_row(row)
