"""Password-change tickets a bulk job made, kept until they expire."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK, ulid_column_type, utcnow


class PasswordTicket(Base):
    """One ticket URL of a ``BULK_PASSWORD_CHANGE`` job asked for through the
    management API: whoever has it sets the user's password, so it is kept
    only until Auth0 lets it expire (``expires_at``) and read only by
    ``admin`` tokens (docs/management-api.md, "Bulk jobs and passwords")."""

    __tablename__ = "password_tickets"
    __table_args__ = (
        Index("ix_password_tickets_job_id", "job_id", "id"),
        Index("ix_password_tickets_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ulid_column_type())
    user_id: Mapped[str] = mapped_column(ulid_column_type())
    email: Mapped[str | None] = mapped_column(String(320))
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
