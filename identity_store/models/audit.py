"""Append-only audit log (SPEC §3) and lifecycle history (SPEC §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK, JSONType, ulid_column_type, utcnow


class AuditEntry(Base):
    """Who (token) did what to which resource, when, with the request id."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_resource", "resource_type", "resource_id"),
        Index("ix_audit_log_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[str | None] = mapped_column(ulid_column_type())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class LifecycleTransition(Base):
    """One lifecycle change of a user: from, to, cause, actor, time. Kept even
    when the user is hard-deleted, hence no foreign key."""

    __tablename__ = "lifecycle_history"
    __table_args__ = (Index("ix_lifecycle_history_user_id", "user_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ulid_column_type())
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(64))
    """The request that caused it (SCIM, management API)."""
    job_run_id: Mapped[int | None] = mapped_column(BigInteger)
    """The job run that caused it (``job_runs.id``)."""
