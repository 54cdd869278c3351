"""Append-only audit log and outbox rows, written in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from .context import Actor
from .models import AuditEntry, OutboxEntry


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row; it commits or rolls back with the change it describes."""
    session.add(
        AuditEntry(
            token_id=actor.token_id,
            actor=actor.name,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            request_id=actor.request_id,
            details=details or {},
        )
    )


def enqueue(
    session: AsyncSession,
    target: str,
    operation: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Add an outbox row for a downstream effect of the change in progress
    (SPEC §3 "Outbox": written in the same transaction)."""
    session.add(
        OutboxEntry(
            target=target,
            operation=operation,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            payload=payload or {},
        )
    )
