"""Append-only audit log and outbox rows, written in the caller's transaction
(when it commits: :mod:`identity_store.side_rows`).

:func:`audit_row` and :func:`outbox_row` are the rows themselves, for the
batch jobs that write many of them in one statement
(:func:`identity_store.row_inserts.insert_rows` into :data:`AUDIT` and
:data:`OUTBOX`); :func:`record` and :func:`enqueue` add one row to the
change in progress.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from . import side_rows
from .actor import Actor
from .models import AuditEntry, OutboxEntry, OutboxStatus, utcnow

AUDIT = cast(Table, AuditEntry.__table__)
OUTBOX = cast(Table, OutboxEntry.__table__)


def audit_row(
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One ``audit_log`` row: who did what to which resource, when."""
    return {
        "occurred_at": at or utcnow(),
        "token_id": actor.token_id,
        "actor": actor.name,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "request_id": actor.request_id,
        "details": details or {},
    }


def outbox_row(
    target: str,
    operation: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """One pending ``outbox`` row, due at once; ``request_id`` is the
    request (or job run) of the change, for the downstream log lines."""
    now = at or utcnow()
    return {
        "target": target,
        "operation": operation,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "payload": payload or {},
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "request_id": request_id,
    }


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Insert an audit row; it commits or rolls back with the change it
    describes."""
    side_rows.add(session, AUDIT, audit_row(actor, action, resource_type, resource_id, details))


def enqueue(
    session: AsyncSession,
    actor: Actor,
    target: str,
    operation: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Insert an outbox row for a downstream effect of the change in progress
    (SPEC §3 "Outbox": written in the same transaction), carrying the
    actor's request id."""
    row = outbox_row(
        target, operation, aggregate_type, aggregate_id, payload, request_id=actor.request_id
    )
    side_rows.add(session, OUTBOX, row)
