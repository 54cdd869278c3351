"""User groups (SPEC §3 "UserGroupConfig", the configuration collection of
Mia-Platform's User Manager Service): each names a group of users, with a
label, whether its users get an account in the authentication service
(``authUserCreationDisabled``), and the JSON Schema (draft 2020-12) their
``customData`` must satisfy (``crudSchema``, checked by
:mod:`identity_store.user_group_schemas`).

Every change is one transaction with its audit row (``userGroup.create``,
``userGroup.replace``, ``userGroup.delete``). Rules:

- a group's name is 1-128 characters, no control character, no ``/``;
  its label at most 255 characters, no control character;
- a schema that is not one the store applies is refused, naming where
  (``crudSchema.properties.age.type: ...``);
- a replacement applies to users written from then on: users already
  stored are not checked again until their ``userGroup`` or ``customData``
  changes;
- turning ``authUserCreationDisabled`` off gives the group's live users
  without an account an ``auth0`` outbox row each, in the same transaction
  (one ``INSERT ... SELECT``), so that they get their accounts; turning it
  on removes no account (it stops creations only);
- a group that still has live users is not deleted (:class:`StateError`
  naming how many). Users deleted and not yet deprovisioned keep naming
  it; such a user cannot be restored once its group is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, user_group_schemas
from .actor import Actor
from .errors import ConflictError, NotFoundError, StateError, ValidationError
from .models import Lifecycle, OutboxStatus, User, UserGroupConfig, new_id, utcnow
from .rbac import check_text
from .store import Store

__all__ = [
    "LABEL_LENGTH",
    "NAME_LENGTH",
    "UserGroupInput",
    "UserGroupListing",
    "UserGroupRecord",
    "check_name",
    "create_user_group",
    "delete_user_group",
    "get_user_group",
    "list_user_groups",
    "replace_user_group",
]

NAME_LENGTH = 128
LABEL_LENGTH = 255
ACCOUNTS_ENABLED = "user group enabled account creation"
"""The ``cause`` in the payload of the outbox rows a group turning
``authUserCreationDisabled`` off writes."""

_CONFIGS = cast(Table, UserGroupConfig.__table__)
_USERS = cast(Table, User.__table__)


@dataclass(frozen=True, slots=True)
class UserGroupInput:
    """A group's whole configuration, as a create or a replacement gives it."""

    label: str | None
    auth_user_creation_disabled: bool
    crud_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserGroupRecord:
    user_group: str
    label: str | None
    auth_user_creation_disabled: bool
    crud_schema: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserGroupListing:
    """A page of groups by name; ``next_after`` continues it (``None``: done)."""

    items: list[UserGroupRecord]
    next_after: str | None


def check_name(user_group: str) -> str:
    """A group's name, or :class:`ValidationError`: 1-128 characters, no
    control character (a lone surrogate neither), no ``/`` (it is a path
    segment of the management API)."""
    check_text("userGroup", user_group, NAME_LENGTH)
    if "/" in user_group:
        raise ValidationError("userGroup holds a '/'", location=("userGroup",))
    return user_group


def _clean(data: UserGroupInput) -> UserGroupInput:
    if data.label is not None and data.label != "":
        check_text("label", data.label, LABEL_LENGTH)
    user_group_schemas.check_schema(data.crud_schema)
    return data


def _record(row: Any) -> UserGroupRecord:
    return UserGroupRecord(
        user_group=row.user_group,
        label=row.label,
        auth_user_creation_disabled=bool(row.auth_user_creation_disabled),
        crud_schema=row.json_schema,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_COLUMNS = (
    _CONFIGS.c.user_group,
    _CONFIGS.c.label,
    _CONFIGS.c.auth_user_creation_disabled,
    _CONFIGS.c.json_schema,
    _CONFIGS.c.created_at,
    _CONFIGS.c.updated_at,
)


async def list_user_groups(store: Store, *, after: str | None, limit: int) -> UserGroupListing:
    """Groups by name after ``after``, at most ``limit`` of them."""
    query = select(*_COLUMNS).order_by(_CONFIGS.c.user_group).limit(limit + 1)
    if after is not None:
        query = query.where(_CONFIGS.c.user_group > after)
    async with store.reading() as session:
        rows = (await session.execute(query)).all()
    items = [_record(r) for r in rows[:limit]]
    return UserGroupListing(items, items[-1].user_group if len(rows) > limit else None)


async def get_user_group(store: Store, user_group: str) -> UserGroupRecord:
    """:raises NotFoundError: No group has this name."""
    async with store.reading() as session:
        row = (
            await session.execute(select(*_COLUMNS).where(_CONFIGS.c.user_group == user_group))
        ).first()
    if row is None:
        raise NotFoundError("UserGroup", user_group)
    return _record(row)


def _details(data: UserGroupInput) -> dict[str, Any]:
    return {
        "label": data.label,
        "authUserCreationDisabled": data.auth_user_creation_disabled,
    }


async def create_user_group(
    store: Store, user_group: str, data: UserGroupInput, actor: Actor
) -> UserGroupRecord:
    """A new group.

    :raises ValidationError: The name, label or schema is not acceptable.
    :raises ConflictError: A group has this name.
    """
    check_name(user_group)
    data = _clean(data)

    async def work(session: AsyncSession) -> UserGroupRecord:
        taken = await session.scalar(
            select(_CONFIGS.c.id).where(_CONFIGS.c.user_group == user_group)
        )
        if taken is not None:
            raise ConflictError("userGroup", f"user group {user_group!r} already exists")
        now = utcnow()
        values = {
            "id": new_id(),
            "user_group": user_group,
            "label": data.label,
            "auth_user_creation_disabled": data.auth_user_creation_disabled,
            "json_schema": data.crud_schema,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await session.execute(insert(_CONFIGS).values(**values))
        except IntegrityError as exc:  # a concurrent create took the name
            raise ConflictError("userGroup", f"user group {user_group!r} already exists") from exc
        audit.record(session, actor, "userGroup.create", "UserGroup", user_group, _details(data))
        return _record(_Row(values))

    return await store.transaction(work)


class _Row:
    """Values as a row, for :func:`_record`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def replace_user_group(
    store: Store, user_group: str, data: UserGroupInput, actor: Actor
) -> UserGroupRecord:
    """Replace a group's label, ``authUserCreationDisabled`` and schema at
    once (never creates one). Turning ``authUserCreationDisabled`` off
    enqueues the accounts of its users that have none (module docstring).

    :raises NotFoundError: No group has this name.
    :raises ValidationError: The label or schema is not acceptable.
    """
    data = _clean(data)

    async def work(session: AsyncSession) -> UserGroupRecord:
        # FOR NO KEY UPDATE: user writes, which lock the row FOR KEY SHARE
        # while they validate against it, do not wait for a replacement.
        before = (
            await session.execute(
                select(*_COLUMNS)
                .where(_CONFIGS.c.user_group == user_group)
                .with_for_update(key_share=True)
            )
        ).first()
        if before is None:
            raise NotFoundError("UserGroup", user_group)
        # updated_at keys the cached validators of the schema: always later.
        now = max(utcnow(), before.updated_at + timedelta(microseconds=1))
        values = {
            "label": data.label,
            "auth_user_creation_disabled": data.auth_user_creation_disabled,
            "json_schema": data.crud_schema,
            "updated_at": now,
        }
        await session.execute(
            update(_CONFIGS).where(_CONFIGS.c.user_group == user_group).values(**values)
        )
        details = _details(data)
        if before.auth_user_creation_disabled and not data.auth_user_creation_disabled:
            details["accountsEnqueued"] = await _enqueue_accounts(session, user_group, actor)
        audit.record(session, actor, "userGroup.replace", "UserGroup", user_group, details)
        return _record(_Row({**before._mapping, **values}))

    return await store.transaction(work)


async def _enqueue_accounts(session: AsyncSession, user_group: str, actor: Actor) -> int:
    """One ``auth0`` ``upsert`` row per live user of the group (not
    ``INACTIVE``) without an account; how many."""
    now = utcnow()
    row = audit.outbox_row(
        "auth0", "upsert", "User", "", {"cause": ACCOUNTS_ENABLED}, now, actor.request_id
    )
    columns = [name for name in row if name != "aggregate_id"]
    users = select(
        *(literal(row[name], audit.OUTBOX.c[name].type).label(name) for name in columns),
        _USERS.c.id.label("aggregate_id"),
    ).where(
        _USERS.c.user_group == user_group,
        _USERS.c.deleted_at.is_(None),
        _USERS.c.lifecycle != Lifecycle.INACTIVE.value,
        _USERS.c.auth_user_id.is_(None),
    )
    result = await session.execute(
        insert(audit.OUTBOX).from_select([*columns, "aggregate_id"], users)
    )
    assert row["status"] == OutboxStatus.PENDING.value
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_user_group(store: Store, user_group: str, actor: Actor) -> None:
    """Delete a group no live user is in.

    :raises NotFoundError: No group has this name.
    :raises StateError: Live users are in it (the detail says how many).
    """

    async def work(session: AsyncSession) -> None:
        # FOR UPDATE: waits for user writes validating against the group
        # (FOR KEY SHARE), so that the count below sees their users.
        found = await session.scalar(
            select(_CONFIGS.c.id).where(_CONFIGS.c.user_group == user_group).with_for_update()
        )
        if found is None:
            raise NotFoundError("UserGroup", user_group)
        users = int(
            await session.scalar(
                select(func.count())
                .select_from(_USERS)
                .where(_USERS.c.user_group == user_group, _USERS.c.deleted_at.is_(None))
            )
            or 0
        )
        if users:
            raise StateError(
                f"user group {user_group!r} still has {users} user(s); move them to another "
                "group or delete them first"
            )
        await session.execute(delete(_CONFIGS).where(_CONFIGS.c.id == found))
        audit.record(session, actor, "userGroup.delete", "UserGroup", user_group, {})

    await store.transaction(work)
