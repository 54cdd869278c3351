"""What an import job reads and what it reports, kept in the database so
that any worker, in any process, can run, resume or report on it (SPEC §3
"Jobs"; docs/management-api.md, "CSV import")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Integer, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, ulid_column_type


class JobInput(Base):
    """One piece of a job's input file, as it was uploaded: pieces
    ``0, 1, ...`` in order make the file. Deleted when the job ends."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class JobReport(Base):
    """The outcome of each row of one batch of a job, committed with the
    batch itself: the rows ``first_row..last_row`` of the file (data rows,
    counted from 1), so a job resumed after a crash reports each row once."""

    __tablename__ = "job_reports"

    job_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    first_row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_row: Mapped[int] = mapped_column(Integer)
    entries: Mapped[list[list[Any]]] = mapped_column(JSONType)
    """``[row, line, outcome, user id, key, message]`` for each row."""
