"""API tokens (SPEC §3): only a hash of each secret is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, new_id, ulid_column_type, utcnow


class ApiToken(Base):
    """A bearer token. The secret is ``idst_<id>_<random>``; the id part finds
    the row, and the SHA-256 of the whole secret is compared in constant time.
    ``user_id`` binds the token to a user for SCIM ``/Me``; ``idp_source`` names
    the identity provider the token is issued to."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(ulid_column_type())
    idp_source: Mapped[str | None] = mapped_column(String(64))
    """The identity provider this token writes for (``AAD`` for Microsoft Entra
    ID): users it creates get this ``idp_source``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
