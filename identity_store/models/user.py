"""A user identity (SPEC §3 "User"), with its multi-valued attributes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, BigIntPK, JSONType, new_id, ulid_column_type, utcnow
from .enums import Lifecycle

NAME = String(255)
LONG = String(1024)
EXPIRY_INDEX_WHERE = (
    "expiration_date IS NOT NULL AND deleted_at IS NULL "
    "AND lifecycle IN ('CREATED', 'ACTIVE', 'ERROR')"
)
"""Predicate of ``ix_users_expiration_date``: the users the expiry job may
still suspend (``identity_store.lifecycle.EXPIRY_CANDIDATES``)."""
MULTI_VALUE_FIELDS = ("value", "display", "type", "primary", "verified")
"""Columns of an entry of ``user_multi_values`` a client writes."""
ADDRESS_FIELDS = (
    "type",
    "primary",
    "formatted",
    "street_address",
    "locality",
    "region",
    "postal_code",
    "country",
)
"""Columns of ``user_addresses`` a client writes."""
NORMALIZED_VALUE_LENGTH = 512
"""How many characters ``user_multi_values.value_normalized`` keeps of a value's
comparison key: a longer value is compared through ``lower(value)``."""


class User(Base):
    """One identity, whatever pushed it: Entra over SCIM, an admin, an import.

    ``user_name_normalized`` holds ``userName`` in the form comparisons use
    (NFC, lower case), so the database itself enforces RFC 7643's
    case-insensitive uniqueness on both dialects. Users deleted over SCIM keep
    their row (``deleted_at`` set) for audit and the management API, and stop
    counting towards uniqueness (RFC 7644 §3.6).
    """

    __tablename__ = "users"
    __table_args__ = (
        Index(
            "uq_users_user_name_live",
            "user_name_normalized",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # Live users by id: pages (index and cursor) walk it without visiting
        # the rows they skip (an index-only scan on PostgreSQL).
        Index(
            "ix_users_live_id",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_users_external_id", "external_id"),
        Index("ix_users_idp_reference_id", "idp_reference_id"),
        Index("ix_users_manager_id", "manager_id"),
        # Users by state and since when: the deletion sync's "suspended before
        # today", the profile sync's "still CREATED".
        Index("ix_users_lifecycle_since", "lifecycle", "lifecycle_changed_at"),
        # The expiry job's one query: dates that passed, of users it may
        # still suspend (lifecycle.EXPIRY_CANDIDATES), so that users long
        # suspended or inactive with past dates are not scanned every minute.
        Index(
            "ix_users_expiration_date",
            "expiration_date",
            sqlite_where=text(EXPIRY_INDEX_WHERE),
            postgresql_where=text(EXPIRY_INDEX_WHERE),
        ),
        # Live users of a group, and in a state, by id: the management API's
        # pages (keyset on id) and counts, a group's deletion check, the
        # profile sync's pages of CREATED users; index-only on PostgreSQL,
        # which also reads the state from the group's (INCLUDE) for pages
        # of a group in a state.
        Index(
            "ix_users_user_group_id",
            "user_group",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
            postgresql_include=["lifecycle"],
        ),
        Index(
            "ix_users_lifecycle_id",
            "lifecycle",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_users_auth_user_id", "auth_user_id"),
        Index("ix_users_created_at", "created_at"),
        Index("ix_users_updated_at", "updated_at"),
    )

    id: Mapped[str] = mapped_column(ulid_column_type(), primary_key=True, default=new_id)

    # SCIM core identifiers (RFC 7643 §3.1, §4.1.1)
    user_name: Mapped[str] = mapped_column(NAME)
    user_name_normalized: Mapped[str] = mapped_column(NAME)
    external_id: Mapped[str | None] = mapped_column(NAME)

    # Identity-provider identifiers (SPEC §3)
    idp_reference_id: Mapped[str | None] = mapped_column(NAME)
    """The identity provider's object id (Entra: the user's object id)."""
    idp_username: Mapped[str | None] = mapped_column(NAME)
    """On-premises / LDAP account name."""
    idp_workforce_id: Mapped[str | None] = mapped_column(NAME)
    """Employee id in the workforce system."""
    idp_cloud_username: Mapped[str | None] = mapped_column(NAME)
    """Cloud sign-in name (Entra: the UPN)."""
    idp_source: Mapped[str | None] = mapped_column(String(64))
    """``AAD``, ``MANUAL``, ``IMPORT``, ``SCIM``... (open-ended)."""

    # Names and profile (RFC 7643 §4.1.1)
    display_name: Mapped[str | None] = mapped_column(NAME)
    formatted_name: Mapped[str | None] = mapped_column(LONG)
    given_name: Mapped[str | None] = mapped_column(NAME)
    family_name: Mapped[str | None] = mapped_column(NAME)
    middle_name: Mapped[str | None] = mapped_column(NAME)
    honorific_prefix: Mapped[str | None] = mapped_column(String(64))
    honorific_suffix: Mapped[str | None] = mapped_column(String(64))
    nick_name: Mapped[str | None] = mapped_column(NAME)
    profile_url: Mapped[str | None] = mapped_column(LONG)
    title: Mapped[str | None] = mapped_column(NAME)
    scim_user_type: Mapped[str | None] = mapped_column(String(64))
    """SCIM core ``userType`` (free text such as ``Employee``); not :attr:`user_type`."""
    preferred_language: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    """scrypt hash of a SCIM ``password`` (writeOnly; never returned)."""

    # Enterprise extension (RFC 7643 §4.3)
    employee_number: Mapped[str | None] = mapped_column(NAME)
    cost_center: Mapped[str | None] = mapped_column(NAME)
    organization: Mapped[str | None] = mapped_column(NAME)
    division: Mapped[str | None] = mapped_column(NAME)
    department: Mapped[str | None] = mapped_column(NAME)
    manager_id: Mapped[str | None] = mapped_column(NAME)
    """``manager.value``: the id of another user. No foreign key: Entra may name a
    manager before provisioning it."""

    # Product fields (SPEC §3)
    user_type: Mapped[str | None] = mapped_column(String(32))
    """``PERSON`` or ``SERVICE_ACCOUNT``; unset reads as ``PERSON``."""
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    active: Mapped[bool | None] = mapped_column(Boolean, default=True)
    """SCIM ``active``; ``None`` when a client unassigned it (PATCH ``remove``,
    a PUT without it), which the lifecycle reads as not deactivated."""
    lifecycle: Mapped[str] = mapped_column(String(16), default=Lifecycle.CREATED.value)
    lifecycle_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    """Steps ``{name, status, message, updated_at}`` such as ``AUTH0_SYNC``."""
    profile_sync_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Profile-sync runs that looked the user up and could not fill its
    required attributes; at ``profile_sync_max_attempts`` it goes ``ERROR``."""

    # Management fields (SPEC §3, after Mia-Platform's User Manager Service)
    user_group: Mapped[str | None] = mapped_column(String(128))
    custom_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    auth_user_id: Mapped[str | None] = mapped_column(NAME)
    """The user's id in Auth0."""
    blocked: Mapped[bool | None] = mapped_column(Boolean)
    """Unset (``NULL``) and ``false`` both mean not blocked."""
    expiration_date: Mapped[datetime | None] = mapped_column()

    # Profile (SPEC §3, cidaas-style)
    providers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    """Social identities ``{type, name, reference, username}``."""
    last_logged_in_at: Mapped[datetime | None] = mapped_column()

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column()
    """Set when deleted over SCIM: the id answers 404 from then on."""
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Incremented on every write; SCIM ``meta.version`` is ``W/"<version>"``."""

    multi_values: Mapped[list[UserMultiValue]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        order_by="(UserMultiValue.attribute, UserMultiValue.position)",
        lazy="raise",
        passive_deletes=True,
    )
    addresses: Mapped[list[UserAddress]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        order_by="UserAddress.position",
        lazy="raise",
        passive_deletes=True,
    )

    __mapper_args__ = {"version_id_col": version}


class UserMultiValue(Base):
    """One entry of a user's ``emails``, ``phoneNumbers``, ``ims``, ``photos``,
    ``entitlements``, ``roles`` or ``x509Certificates`` (RFC 7643 §2.4).

    One table for all of them keeps the filter translation uniform
    (``emails[type eq "work"].value`` is an ``EXISTS`` on this table).
    ``verified`` holds ``email_verified`` / ``phone_number_verified``.
    """

    __tablename__ = "user_multi_values"
    __table_args__ = (
        Index("ix_user_multi_values_user_id", "user_id", "attribute"),
        Index("ix_user_multi_values_lookup", "attribute", "value_normalized"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("users.id", ondelete="CASCADE")
    )
    attribute: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[str | None] = mapped_column(Text)
    value_normalized: Mapped[str | None] = mapped_column(String(NORMALIZED_VALUE_LENGTH))
    """``value`` as comparisons use it (NFC, lower case), truncated to
    :data:`NORMALIZED_VALUE_LENGTH` characters."""
    display: Mapped[str | None] = mapped_column(NAME)
    type: Mapped[str | None] = mapped_column(String(64))
    primary: Mapped[bool | None] = mapped_column(Boolean)
    """``None`` when the client did not send it; ``false`` when it did."""
    verified: Mapped[bool | None] = mapped_column(Boolean)

    user: Mapped[User] = relationship(back_populates="multi_values", lazy="raise")


class UserAddress(Base):
    """One of a user's ``addresses`` (RFC 7643 §4.1.2)."""

    __tablename__ = "user_addresses"
    __table_args__ = (Index("ix_user_addresses_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        ulid_column_type(), ForeignKey("users.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str | None] = mapped_column(String(64))
    primary: Mapped[bool | None] = mapped_column(Boolean)
    formatted: Mapped[str | None] = mapped_column(LONG)
    street_address: Mapped[str | None] = mapped_column(LONG)
    locality: Mapped[str | None] = mapped_column(NAME)
    region: Mapped[str | None] = mapped_column(NAME)
    postal_code: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="addresses", lazy="raise")
