"""What the sync needs to know of users to give them accounts in an
authentication service: one read of a batch of users, with their primary
e-mail, lifecycle, user group's ``authUserCreationDisabled`` and what was
last delivered (docs/auth0.md).

The dispatcher reads this when it sends, never from the outbox row's
payload: whatever number of changes are pending, the service is brought to
the user's current state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, and_, func, select

from .models import MultiValuedAttribute, OutboxEntry, OutboxStatus, User, UserGroupConfig
from .models import UserMultiValue as MultiValue
from .outbox import SyncRecord, sync_records
from .store import Store

__all__ = ["AccountSubject", "subjects", "users_without_account"]

_USERS = cast(Table, User.__table__)
_VALUES = cast(Table, MultiValue.__table__)
_GROUPS = cast(Table, UserGroupConfig.__table__)
_OUTBOX = cast(Table, OutboxEntry.__table__)


@dataclass(frozen=True, slots=True)
class AccountSubject:
    """One user as the sync sees it (``present`` false: no such row, a user
    removed for good)."""

    user_id: str
    present: bool
    user_name: str | None = None
    email: str | None = None
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    name: str | None = None
    lifecycle: str | None = None
    active: bool | None = None
    blocked: bool | None = None
    deleted: bool = False
    """SCIM-deleted (``deleted_at`` set), waiting for the deletion sync."""
    auth_user_id: str | None = None
    user_group: str | None = None
    creation_disabled: bool = False
    """Its user group has ``authUserCreationDisabled``."""
    sync: SyncRecord | None = None
    """What was last delivered to the target."""
    version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remote_id(self) -> str | None:
        """The account the user is known to have: ``auth_user_id``, or the
        one kept by the last delivery (a user removed for good keeps only that)."""
        if self.auth_user_id:
            return self.auth_user_id
        return self.sync.remote_id if self.sync is not None else None


def _email(user: Any, emails: list[Any]) -> tuple[str | None, bool]:
    """The primary e-mail (else the first one), with its ``verified``; else the
    ``userName`` when it is an address (Entra's is the UPN, usually the mail)."""
    for entry in sorted(emails, key=lambda e: (not e.primary, e.position)):
        if entry.value:
            return entry.value, bool(entry.verified)
    if user.user_name and "@" in user.user_name:
        return user.user_name, False
    return None, False


async def subjects(store: Store, target: str, user_ids: Sequence[str]) -> dict[str, AccountSubject]:
    """Every one of ``user_ids`` as the sync of ``target`` sees it now."""
    if not user_ids:
        return {}
    ids = list(dict.fromkeys(user_ids))
    records = await sync_records(store, target, ids)
    async with store.reading() as session:
        users = (
            await session.execute(
                select(
                    _USERS.c.id,
                    _USERS.c.user_name,
                    _USERS.c.given_name,
                    _USERS.c.family_name,
                    _USERS.c.display_name,
                    _USERS.c.formatted_name,
                    _USERS.c.lifecycle,
                    _USERS.c.active,
                    _USERS.c.blocked,
                    _USERS.c.deleted_at,
                    _USERS.c.auth_user_id,
                    _USERS.c.user_group,
                    _USERS.c.version,
                    func.coalesce(_GROUPS.c.auth_user_creation_disabled, False).label("disabled"),
                )
                .select_from(_USERS.outerjoin(_GROUPS, _GROUPS.c.user_group == _USERS.c.user_group))
                .where(_USERS.c.id.in_(ids))
            )
        ).all()
        emails = (
            await session.execute(
                select(
                    _VALUES.c.user_id,
                    _VALUES.c.value,
                    _VALUES.c.primary,
                    _VALUES.c.verified,
                    _VALUES.c.position,
                ).where(
                    _VALUES.c.user_id.in_(ids),
                    _VALUES.c.attribute == MultiValuedAttribute.EMAILS.value,
                )
            )
        ).all()
    by_user: dict[str, list[Any]] = {}
    for e in emails:
        by_user.setdefault(e.user_id, []).append(e)
    found = {}
    for u in users:
        email, verified = _email(u, by_user.get(u.id, []))
        found[u.id] = AccountSubject(
            user_id=u.id,
            present=True,
            user_name=u.user_name,
            email=email,
            email_verified=verified,
            given_name=u.given_name,
            family_name=u.family_name,
            name=u.formatted_name or u.display_name,
            lifecycle=u.lifecycle,
            active=u.active,
            blocked=u.blocked,
            deleted=u.deleted_at is not None,
            auth_user_id=u.auth_user_id,
            user_group=u.user_group,
            creation_disabled=bool(u.disabled),
            sync=records.get(u.id),
            version=u.version,
        )
    return {
        i: found.get(i) or AccountSubject(user_id=i, present=False, sync=records.get(i))
        for i in ids
    }


async def users_without_account(
    store: Store, target: str, *, pending_only: bool, after: str | None, limit: int
) -> list[str]:
    """Ids of live users with no ``auth_user_id``, in id order after
    ``after``: all of them, or (``pending_only``) those with pending rows of
    ``target`` (the backlog an import job takes over)."""
    query = select(_USERS.c.id).where(
        _USERS.c.auth_user_id.is_(None), _USERS.c.deleted_at.is_(None)
    )
    if pending_only:
        query = query.where(
            select(_OUTBOX.c.id)
            .where(
                and_(
                    _OUTBOX.c.aggregate_id == _USERS.c.id,
                    _OUTBOX.c.target == target,
                    _OUTBOX.c.status == OutboxStatus.PENDING.value,
                )
            )
            .exists()
        )
    if after is not None:
        query = query.where(_USERS.c.id > after)
    async with store.reading() as session:
        return list((await session.scalars(query.order_by(_USERS.c.id).limit(limit))).all())
