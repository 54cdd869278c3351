"""Groups and their membership (SPEC §3 "Group")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, new_id, ulid_column_type, utcnow
from .enums import MemberType


class Group(Base):
    """A group. ``display_name_normalized`` makes ``displayName`` unique in any
    letter case, enforced by the database.

    Members are not a relationship on purpose: a group may hold 100,000 of
    them, so they are only ever read or written through explicit queries on
    :class:`GroupMember`.
    """

    __tablename__ = "groups"
    __table_args__ = (
        Index("ix_groups_external_id", "external_id"),
        Index("ix_groups_created_at", "created_at"),
        Index("ix_groups_updated_at", "updated_at"),
    )

    id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True, default=new_id)
    display_name: Mapped[str] = mapped_column(String(255))
    display_name_normalized: Mapped[str] = mapped_column(String(255), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class GroupMember(Base):
    """One membership: ``member_id`` (a user or a group) belongs to ``group_id``.

    The primary key serves "members of a group" and uniqueness; the index on
    ``member_id`` serves "groups of a member" (the user's ``groups``
    attribute). ``member_id`` has no foreign key because it may name a row of
    either table.
    """

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_member_id", "member_id", "group_id"),)

    group_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True)
    member_type: Mapped[str] = mapped_column(String(8), default=MemberType.USER.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
