"""Roles and bindings in the model of Rönd (SPEC §3 "RBAC").

Rönd keeps a role's permissions and a binding's roles, permissions,
subjects and groups as arrays in one document; here each list is a table of
its own, keyed for the resolver's joins (:mod:`identity_store.resolver`
computes effective permissions in one SQL statement on both databases, which
JSON arrays would make dialect-specific and unindexed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK, ulid_column_type, utcnow

ROLE_ID_LENGTH = 128
PERMISSION_LENGTH = 255
RESOURCE_TYPE_LENGTH = 128
RESOURCE_ID_LENGTH = 255


class Role(Base):
    """A named set of permissions (:class:`RolePermission`)."""

    __tablename__ = "roles"

    role_id: Mapped[str] = mapped_column(String(ROLE_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RolePermission(Base):
    """One permission of a role; the index serves "roles granting P"."""

    __tablename__ = "role_permissions"
    __table_args__ = (Index("ix_role_permissions_permission", "permission", "role_id"),)

    role_id: Mapped[str] = mapped_column(
        String(ROLE_ID_LENGTH), ForeignKey("roles.role_id", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(PERMISSION_LENGTH), primary_key=True)


class Binding(Base):
    """Grants roles (:class:`BindingRole`) and permissions
    (:class:`BindingPermission`) to subjects (users, :class:`BindingSubject`)
    and groups (:class:`BindingGroup`), everywhere or, with a resource, only
    on that resource."""

    __tablename__ = "bindings"
    __table_args__ = (Index("ix_bindings_resource", "resource_type", "resource_id"),)

    binding_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    resource_type: Mapped[str | None] = mapped_column(String(RESOURCE_TYPE_LENGTH))
    resource_id: Mapped[str | None] = mapped_column(String(RESOURCE_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BindingRole(Base):
    """A role a binding grants. A role in use cannot be deleted (``RESTRICT``)."""

    __tablename__ = "binding_roles"
    __table_args__ = (Index("ix_binding_roles_role_id", "role_id", "binding_id"),)

    binding_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("bindings.binding_id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        String(ROLE_ID_LENGTH), ForeignKey("roles.role_id", ondelete="RESTRICT"), primary_key=True
    )


class BindingPermission(Base):
    """A permission a binding grants directly."""

    __tablename__ = "binding_permissions"
    __table_args__ = (Index("ix_binding_permissions_permission", "permission", "binding_id"),)

    binding_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("bindings.binding_id", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(PERMISSION_LENGTH), primary_key=True)


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
    """Configurable mapping of an Entra group to roles: every member of the
    group (nested groups included) holds the roles everywhere (SPEC §3)."""

    __tablename__ = "group_role_mappings"
    __table_args__ = (Index("ix_group_role_mappings_role_id", "role_id", "group_id"),)

    group_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        String(ROLE_ID_LENGTH), ForeignKey("roles.role_id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserRole(Base):
    """A role assigned to a user directly (the User Manager Service's
    ``roles`` on the user record), held everywhere."""

    __tablename__ = "user_roles"
    __table_args__ = (Index("ix_user_roles_role_id", "role_id", "user_id"),)

    user_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(
        String(ROLE_ID_LENGTH), ForeignKey("roles.role_id", ondelete="RESTRICT"), primary_key=True
    )


class RbacRevision(Base):
    """The one row counting RBAC changes: every change of roles, bindings,
    group→role mappings or a user's roles adds one in its transaction, so
    changes are totally ordered and a check says which state answered it."""

    __tablename__ = "rbac_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class RbacGrant(Base):
    """One permission a user or group holds directly, and where from: the
    expansion of bindings (``binding``, with the role when it comes through
    one), group→role mappings (``group-role``) and user roles
    (``user-role``) into single (holder, permission) rows.

    The store keeps it in the transaction of every RBAC change
    (:mod:`identity_store.rbac`), so a check looks up a dozen index rows
    (the user and each of its groups, for one permission) instead of
    expanding every binding of every group through its roles."""

    __tablename__ = "rbac_grants"
    __table_args__ = (
        Index("ix_rbac_grants_holder", "holder_id", "permission"),
        Index("ix_rbac_grants_binding_id", "binding_id"),
        Index("ix_rbac_grants_role_id", "role_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    holder_id: Mapped[str] = mapped_column(String(128))
    """A user id (a binding's subject, a user role) or a group id."""
    permission: Mapped[str] = mapped_column(String(PERMISSION_LENGTH))
    source: Mapped[str] = mapped_column(String(16))
    binding_id: Mapped[str | None] = mapped_column(String(128))
    role_id: Mapped[str | None] = mapped_column(String(ROLE_ID_LENGTH))
    resource_type: Mapped[str | None] = mapped_column(String(RESOURCE_TYPE_LENGTH))
    resource_id: Mapped[str | None] = mapped_column(String(RESOURCE_ID_LENGTH))
