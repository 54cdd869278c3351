"""Pending downstream effects (SPEC §3 "Outbox", §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK, JSONType, utcnow
from .enums import OutboxStatus


class OutboxEntry(Base):
    """One effect to deliver to a target (``auth0``, ``rbac``...), written in the
    same transaction as the change it reflects. Workers claim due rows with
    ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, one user at a time
    (:class:`OutboxLease`)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "target",
            "next_attempt_at",
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
        Index("ix_outbox_target_status", "target", "status"),
        Index("ix_outbox_aggregate_id", "aggregate_id", "target"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(32))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()
    request_id: Mapped[str | None] = mapped_column(String(128))
    """The request (``X-Request-Id``) or job run of the change: it travels into
    the log line of every downstream call that delivers it."""
    outcome: Mapped[str | None] = mapped_column(Text)
    """What delivering it did (``created``, ``updated``, ``unchanged``,
    ``blocked``, ``deleted``, ``skipped: ...``)."""


class OutboxLease(Base):
    """A worker's hold on one aggregate of one target: while it lasts, no
    other worker delivers that user's rows (one delivery in flight per user).
    Taken by an ``INSERT ... ON CONFLICT`` that wins only over an expired
    lease, renewed by the worker's heartbeat, deleted when the delivery ends."""

    __tablename__ = "outbox_leases"

    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    locked_by: Mapped[str] = mapped_column(String(255))
    locked_until: Mapped[datetime] = mapped_column()


class RateBudget(Base):
    """A target's request budget shared by every worker (generic cell rate
    algorithm): ``tat`` is the theoretical arrival time of the next request,
    in epoch seconds; a reservation moves it on by one interval, and a 429
    pushes it to the time the target names."""

    __tablename__ = "rate_budgets"

    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    tat: Mapped[float] = mapped_column(Float)


class SyncState(Base):
    """What was last delivered of one aggregate to one target: the remote id,
    the synced fields (so an update sends only what changed) and when."""

    __tablename__ = "sync_states"

    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    remote_id: Mapped[str | None] = mapped_column(String(255))
    synced: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    outbox_id: Mapped[int | None] = mapped_column(BigIntPK)
    """The last outbox row this delivery covered."""
    outcome: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
