"""Roles and bindings in the model of Rönd (SPEC §3 "RBAC")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, ulid_column_type, utcnow


class Role(Base):
    """A named set of permissions."""

    __tablename__ = "roles"

    role_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    permissions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Binding(Base):
    """Grants ``roles`` and ``permissions`` to subjects (users) and groups,
    optionally scoped to one resource.

    Subjects and groups live in their own tables so that "bindings of this
    user" and "bindings of these groups" are indexed look-ups.
    """

    __tablename__ = "bindings"
    __table_args__ = (Index("ix_bindings_resource", "resource_type", "resource_id"),)

    binding_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    permissions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    resource_type: Mapped[str | None] = mapped_column(String(128))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BindingSubject(Base):
    """A user named in a binding's ``subjects``."""

    __tablename__ = "binding_subjects"
    __table_args__ = (Index("ix_binding_subjects_user_id", "user_id"),)

    binding_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("bindings.binding_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True)


class BindingGroup(Base):
    """A group named in a binding's ``groups``."""

    __tablename__ = "binding_groups"
    __table_args__ = (Index("ix_binding_groups_group_id", "group_id"),)

    binding_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("bindings.binding_id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True)


class GroupRoleMapping(Base):
    """Configurable mapping of an Entra group to roles: members of the group get
    the roles through a binding the resolver maintains (SPEC §3)."""

    __tablename__ = "group_role_mappings"

    group_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("roles.role_id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
