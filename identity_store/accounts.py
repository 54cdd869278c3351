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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit
from .actor import Actor
from .models import (
    Lifecycle,
    MultiValuedAttribute,
    OutboxEntry,
    OutboxLease,
    OutboxStatus,
    SyncState,
    User,
    UserGroupConfig,
)
from .models import UserMultiValue as MultiValue
from .outbox import Claim, SyncRecord, claim_users, sync_records
from .row_inserts import insert_rows
from .store import Store

__all__ = [
    "MAX_USERS_LISTED",
    "AccountSubject",
    "Selection",
    "backlog_without_account",
    "claim_for_activation",
    "count_backlog",
    "enqueue_resync",
    "enqueue_without_account",
    "find_subject",
    "record_ticket",
    "subject_ids",
    "subjects",
    "user_ids",
]

_USERS = cast(Table, User.__table__)
_VALUES = cast(Table, MultiValue.__table__)
_GROUPS = cast(Table, UserGroupConfig.__table__)
_OUTBOX = cast(Table, OutboxEntry.__table__)
_LEASES = cast(Table, OutboxLease.__table__)
_STATES = cast(Table, SyncState.__table__)
_INACTIVE = Lifecycle.INACTIVE.value

MAX_USERS_LISTED = 10_000
"""User ids a :class:`Selection` may list (more: a user group, or every user)."""

SELECTABLE_LIFECYCLES = frozenset(v.value for v in Lifecycle if v is not Lifecycle.INACTIVE)
"""Lifecycles a :class:`Selection` may name: a selection holds live users only."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The users of a bulk job (password-change tickets, activation): the
    live ones among ``user_ids``, or every live user of ``user_group`` and/or
    ``lifecycle`` (neither: every live user, ``everyone``). How a job keeps
    it (``params["selection"]``): :meth:`params` and :meth:`of`."""

    user_ids: tuple[str, ...] | None = None
    user_group: str | None = None
    lifecycle: str | None = None
    everyone: bool = False

    def __post_init__(self) -> None:
        filtered = self.user_group is not None or self.lifecycle is not None
        chosen = [self.user_ids is not None, filtered, self.everyone]
        if sum(chosen) != 1:
            raise ValueError("a selection is user ids, a filter, or everyone: one of them")
        if self.user_ids is not None and len(self.user_ids) > MAX_USERS_LISTED:
            raise ValueError(f"at most {MAX_USERS_LISTED} user ids; name a user group instead")
        if self.lifecycle is not None and self.lifecycle not in SELECTABLE_LIFECYCLES:
            raise ValueError(
                f"lifecycle {self.lifecycle!r} is not one of {sorted(SELECTABLE_LIFECYCLES)}"
            )

    def params(self) -> dict[str, Any]:
        if self.user_ids is not None:
            return {"users": sorted(set(self.user_ids))}
        if self.user_group is not None or self.lifecycle is not None:
            found: dict[str, Any] = {}
            if self.user_group is not None:
                found["user_group"] = self.user_group
            if self.lifecycle is not None:
                found["lifecycle"] = self.lifecycle
            return found
        return {"all": True}

    @classmethod
    def of(cls, params: dict[str, Any]) -> Selection:
        if "users" in params:
            return cls(user_ids=tuple(str(u) for u in params["users"]))
        group, lifecycle = params.get("user_group"), params.get("lifecycle")
        if group is not None or lifecycle is not None:
            return cls(
                user_group=None if group is None else str(group),
                lifecycle=None if lifecycle is None else str(lifecycle),
            )
        return cls(everyone=True)

    def describe(self) -> str:
        if self.user_ids is not None:
            return f"{len(self.user_ids)} users named"
        parts = []
        if self.user_group is not None:
            parts.append(f"user group {self.user_group!r}")
        if self.lifecycle is not None:
            parts.append(f"lifecycle {self.lifecycle}")
        return ", ".join(parts) if parts else "every live user"

    async def page(self, store: Store, *, after: str | None, limit: int) -> list[str]:
        """The next ``limit`` live users of the selection after ``after``, in id order."""
        return await user_ids(
            store,
            after=after,
            limit=limit,
            user_group=self.user_group,
            lifecycle=self.lifecycle,
            ids=list(self.user_ids) if self.user_ids is not None else None,
        )


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


ENQUEUE_BATCH = 1000
"""Users one transaction of :func:`enqueue_without_account` writes rows for."""


def _backlog_query(target: str, now: datetime) -> Any:
    """Live users with no ``auth_user_id`` with a due pending row of
    ``target`` that no worker holds now, none of whose pending rows failed
    before (the users an import job may take: one that failed once, in a
    delivery or in an import job, is left to the dispatcher, one by one).

    The three conditions are uncorrelated ``IN`` subqueries over the pending
    rows (``ix_outbox_pending``) and the leases: each is read once, not once
    per user."""
    pending = and_(
        _OUTBOX.c.target == target,
        _OUTBOX.c.status == OutboxStatus.PENDING.value,
        _OUTBOX.c.aggregate_type == "User",
    )
    due = select(_OUTBOX.c.aggregate_id).where(pending, _OUTBOX.c.next_attempt_at <= now)
    failed = select(_OUTBOX.c.aggregate_id).where(pending, _OUTBOX.c.last_error.is_not(None))
    held = select(_LEASES.c.aggregate_id).where(
        _LEASES.c.target == target, _LEASES.c.locked_until > now
    )
    return select(_USERS.c.id).where(
        _USERS.c.auth_user_id.is_(None),
        _USERS.c.deleted_at.is_(None),
        _USERS.c.id.in_(due),
        _USERS.c.id.not_in(failed),
        _USERS.c.id.not_in(held),
    )


async def backlog_without_account(
    store: Store, target: str, *, now: datetime, after: str | None, limit: int
) -> list[str]:
    """Ids of the users :func:`count_backlog` counts, in id order after ``after``."""
    query = _backlog_query(target, now)
    if after is not None:
        query = query.where(_USERS.c.id > after)
    async with store.reading() as session:
        return list((await session.scalars(query.order_by(_USERS.c.id).limit(limit))).all())


async def count_backlog(store: Store, target: str, *, now: datetime, limit: int) -> int:
    """How many live users without an account have due pending rows of
    ``target`` that no worker holds and that never failed, counted up to
    ``limit`` (whether an import job is worth it: the count stops once it is
    known to be above the threshold)."""
    capped = _backlog_query(target, now).limit(limit).subquery()
    async with store.reading() as session:
        value = await session.scalar(select(func.count()).select_from(capped))
    return int(value or 0)


async def subject_ids(store: Store, target: str, *, after: str | None, limit: int) -> list[str]:
    """Every id the sync of ``target`` knows, in id order after ``after``:
    the users' (every row, deleted or not) and those of users removed for
    good that still have a remote id kept (what the drift check pages through)."""
    users = select(_USERS.c.id.label("id"))
    removed = select(_STATES.c.aggregate_id.label("id")).where(
        _STATES.c.target == target, _STATES.c.remote_id.is_not(None)
    )
    if after is not None:
        users = users.where(_USERS.c.id > after)
        removed = removed.where(_STATES.c.aggregate_id > after)
    both = union(users, removed).subquery()
    async with store.reading() as session:
        return list(
            (await session.scalars(select(both.c.id).order_by(both.c.id).limit(limit))).all()
        )


async def user_ids(
    store: Store,
    *,
    after: str | None,
    limit: int,
    user_group: str | None = None,
    lifecycle: str | None = None,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Ids of live users (not deleted, not ``INACTIVE``), in id order after
    ``after``: all of them, those of ``user_group`` and/or ``lifecycle``, or
    those among ``ids``."""
    query = select(_USERS.c.id).where(
        _USERS.c.deleted_at.is_(None), _USERS.c.lifecycle != _INACTIVE
    )
    if user_group is not None:
        query = query.where(_USERS.c.user_group == user_group)
    if lifecycle is not None:
        query = query.where(_USERS.c.lifecycle == lifecycle)
    if ids is not None:
        query = query.where(_USERS.c.id.in_(list(ids)))
    if after is not None:
        query = query.where(_USERS.c.id > after)
    async with store.reading() as session:
        return list((await session.scalars(query.order_by(_USERS.c.id).limit(limit))).all())


async def enqueue_without_account(
    store: Store, target: str, actor: Actor, *, now: datetime, batch: int = ENQUEUE_BATCH
) -> int:
    """Write a pending ``upsert`` row of ``target`` for every live user (not
    deleted, not ``INACTIVE``) with no ``auth_user_id`` and no pending row of
    ``target`` (``idstore auth0 import --all``), carrying ``actor``'s request
    id, one audit row per batch naming the users; how many were written.
    Batches of ``batch`` users, each its own transaction."""
    written = 0
    after: str | None = None
    while True:
        query = select(_USERS.c.id).where(
            _USERS.c.auth_user_id.is_(None),
            _USERS.c.deleted_at.is_(None),
            _USERS.c.lifecycle != _INACTIVE,
            _USERS.c.id.not_in(
                select(_OUTBOX.c.aggregate_id).where(
                    _OUTBOX.c.target == target,
                    _OUTBOX.c.status == OutboxStatus.PENDING.value,
                    _OUTBOX.c.aggregate_type == "User",
                )
            ),
        )
        if after is not None:
            query = query.where(_USERS.c.id > after)
        page_query = query.order_by(_USERS.c.id).limit(batch)

        async def work(session: AsyncSession, page_query: Any = page_query) -> list[str]:
            ids = list((await session.scalars(page_query)).all())
            await _enqueue(session, target, ids, actor, now, "account missing")
            return ids

        ids = await store.transaction(work)
        if not ids:
            return written
        written += len(ids)
        after = ids[-1]


async def _enqueue(
    session: AsyncSession,
    target: str,
    ids: Sequence[str],
    actor: Actor,
    now: datetime,
    reason: str,
) -> None:
    if not ids:
        return
    rows = [
        audit.outbox_row(target, "upsert", "User", i, {"cause": reason}, now, actor.request_id)
        for i in ids
    ]
    await insert_rows(session, audit.OUTBOX, rows)
    entry = audit.audit_row(
        actor, f"{target}.enqueue", "User", None, {"reason": reason, "users": list(ids)}, now
    )
    await insert_rows(session, audit.AUDIT, [entry])


async def enqueue_resync(
    store: Store,
    target: str,
    user_ids: Sequence[str],
    actor: Actor,
    *,
    now: datetime,
    reason: str,
) -> int:
    """Bring ``target`` to these users' current state whatever it holds now
    (``idstore auth0 drift --repair``): what was last delivered is forgotten
    (the remote id kept, the synced fields cleared, so the next delivery
    sends every field and blocks even what was recorded as blocked) and a
    pending ``upsert`` row written for each, in one transaction with one
    audit row. How many rows were written."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return 0

    async def work(session: AsyncSession) -> int:
        for start in range(0, len(ids), ENQUEUE_BATCH):
            chunk = ids[start : start + ENQUEUE_BATCH]
            await session.execute(
                update(_STATES)
                .where(_STATES.c.target == target, _STATES.c.aggregate_id.in_(chunk))
                .values(synced={})
            )
            await _enqueue(session, target, chunk, actor, now, reason)
        return len(ids)

    return await store.transaction(work)


async def claim_for_activation(
    store: Store,
    target: str,
    user_ids: Sequence[str],
    actor: Actor,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    reason: str,
) -> list[Claim]:
    """Take ``user_ids`` for an activation (a bulk job that gives them
    accounts in ``target``): in one transaction, lease every one of them no
    other worker holds (:func:`identity_store.outbox.claim_users`), write a
    pending ``upsert`` row of ``target`` for each user leased, with one audit
    row naming them and ``reason``; their claims (the new row and any other
    pending one). The lease comes first, so no dispatcher delivers the new
    rows before the caller does."""

    async def enqueue(session: AsyncSession, ids: list[str]) -> None:
        await _enqueue(session, target, ids, actor, now, reason)

    return await claim_users(
        store, target, user_ids, worker=worker, now=now, lease=lease, prepare=enqueue
    )


MAX_SAME_EMAIL = 10
"""Users :func:`find_subject` reads for one e-mail address (more are as ambiguous)."""


async def find_subject(
    store: Store, target: str, *, user_id: str | None = None, email: str | None = None
) -> list[AccountSubject]:
    """The live users (not deleted, not ``INACTIVE``) whose id is
    ``user_id``, or who have ``email`` among their e-mails (compared in lower
    case), as the sync of ``target`` sees them: none, one, or (an address
    several users share) up to :data:`MAX_SAME_EMAIL`."""
    query = select(_USERS.c.id).where(
        _USERS.c.deleted_at.is_(None), _USERS.c.lifecycle != _INACTIVE
    )
    if user_id is not None:
        query = query.where(_USERS.c.id == user_id)
    if email is not None:
        query = query.where(
            _USERS.c.id.in_(
                select(_VALUES.c.user_id).where(
                    _VALUES.c.attribute == MultiValuedAttribute.EMAILS.value,
                    func.lower(_VALUES.c.value) == email.lower(),
                )
            )
        )
    async with store.reading() as session:
        ids = list((await session.scalars(query.order_by(_USERS.c.id).limit(MAX_SAME_EMAIL))).all())
    found = await subjects(store, target, ids)
    return [found[i] for i in ids]


async def record_ticket(
    store: Store, target: str, user_id: str, actor: Actor, *, now: datetime
) -> None:
    """Audit that ``actor`` was given a password-change ticket of ``target``
    for the user (``{target}.ticket``); the ticket itself is never written."""

    async def work(session: AsyncSession) -> None:
        entry = audit.audit_row(actor, f"{target}.ticket", "User", user_id, {}, now)
        await insert_rows(session, audit.AUDIT, [entry])

    await store.transaction(work)
