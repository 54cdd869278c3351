"""Long-running jobs: imports, bulk activations, bulk password changes (SPEC §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, new_id, ulid_column_type, utcnow
from .enums import JobStatus


class Job(Base):
    """A job with its parameters, progress summary and the failures of each row,
    kept after completion."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "created_at"),)

    id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    """``{row, error, ...}`` for each row that failed."""
    external_id: Mapped[str | None] = mapped_column(String(255))
    """Id of the job at the remote end (an Auth0 import job), when there is one."""
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    locked_by: Mapped[str | None] = mapped_column(String(255))
    """The worker running it; another worker takes it over when ``locked_until`` passed."""
    locked_until: Mapped[datetime | None] = mapped_column()
