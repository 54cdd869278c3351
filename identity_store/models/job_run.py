"""Runs of the scheduled jobs (SPEC §6 "Scheduled jobs")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK, JSONType, utcnow
from .enums import RunStatus


class JobRun(Base):
    """One run of a scheduled job (``profile-sync``, ``deletion-sync``,
    ``expiry``): a tick of its schedule, or a run asked for by hand.

    The unique ``(job, scheduled_for)`` pair is the claim: every worker that
    sees a tick due inserts its row with ``ON CONFLICT DO NOTHING`` and only
    the one whose insert lands runs it. The owner renews ``lease_until``
    while it works (heartbeat); a run whose lease ran out (its worker was
    killed) or that its worker released on shutdown (``INTERRUPTED``) is
    taken over by the next worker that looks.
    """

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "scheduled_for", name="uq_job_runs_tick"),
        Index("ix_job_runs_job_started", "job", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    scheduled_for: Mapped[datetime | None] = mapped_column()
    """The tick this run is for; ``NULL`` for a run asked for by hand, which
    therefore never takes a tick's place (``NULL`` s are distinct in a
    unique constraint)."""
    trigger: Mapped[str] = mapped_column(String(16))
    """``schedule`` or ``manual``."""
    as_of: Mapped[datetime] = mapped_column()
    """The clock the job reads ("now" for its rules); not the wall clock for
    a what-if run (``idstore jobs run --as-of``)."""
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    worker: Mapped[str | None] = mapped_column(String(255))
    """The worker that holds (or last held) the run: ``host:pid:random``."""
    lease_until: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    """How many workers took the run (more than one after a take-over)."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """What the run did, by kind (``deprovisioned``, ``activated``...)."""
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    """The first errors met (``{user_id?, message}``), at most a hundred;
    ``counts["errors"]`` counts them all."""
    message: Mapped[str | None] = mapped_column(Text)
    """One line on the outcome ("not configured", the exception of a failed run)."""
