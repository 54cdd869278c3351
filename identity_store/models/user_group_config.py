"""Per-user-group configuration (SPEC §3 "UserGroupConfig", Mia-Platform's
configuration collection)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, new_id, ulid_column_type, utcnow


class UserGroupConfig(Base):
    """The JSON schema that users of ``user_group`` must satisfy, and its options."""

    __tablename__ = "user_group_configs"

    id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True, default=new_id)
    user_group: Mapped[str] = mapped_column(String(128), unique=True)
    json_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """Mia's ``crudSchema``: JSON Schema of the user's ``custom_data``."""
    label: Mapped[str | None] = mapped_column(String(255))
    auth_user_creation_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    """When true, users of this group get no Auth0 account."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
