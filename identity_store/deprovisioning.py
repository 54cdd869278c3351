"""The batch writes of the expiry job and the deletion sync (SPEC §4): users
whose expiration date passed are suspended; users suspended before the start
of the day lose their groups, bindings and roles and go ``INACTIVE`` (or are
deleted, with ``IDSTORE_HARD_DELETE``).

Each call handles one batch of at most ``limit`` users, set-based, in one
transaction (:meth:`~identity_store.store.Store.transaction`): the users are
selected with the lifecycle rules' SQL twins
(:func:`~identity_store.lifecycle.expiry_due_clause`,
:func:`~identity_store.lifecycle.deletion_due_clause`) in id order and, on
PostgreSQL, locked with ``FOR UPDATE SKIP LOCKED`` (a user another writer
holds is left for the next batch or run; on SQLite the transaction's
``BEGIN IMMEDIATE`` already keeps every other writer out). Then a handful of
statements change every user of the batch at once, and their lifecycle
history, audit and outbox rows go in one multi-row ``INSERT`` per table. A
batch is whole or nothing: a crash or a kill between two batches leaves
every user either done or untouched, and a user done no longer matches the
rule, so running again continues where the last run stopped and a second
run changes nothing.

A dry run (``dry_run=True``) reads the same batch without locking it and
counts what the batch would change; it writes nothing. Since nothing it
reads changes, the caller pages on with ``after`` (the batch's
:attr:`BatchOutcome.last_id`).

Two clocks: the job's (``now``: the tick, or ``idstore jobs run --as-of``)
decides who is due and dates the transitions (``lifecycle_changed_at`` and
the history's ``occurred_at``, as :func:`~identity_store.lifecycle.transition`
does), so that a what-if run is consistent with itself: a user it suspends
"today" is not deprovisioned by a deletion sync of the same day. The wall
clock dates what happens in the database and downstream: ``updated_at``
(SCIM ``meta.lastModified``), the audit rows, and the outbox rows, which are
due at once whatever the job's clock says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Select, Table, delete, distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, counts, lifecycle, rbac, row_inserts
from .actor import Actor
from .lifecycle import deletion_cutoff
from .models import (
    Binding,
    BindingSubject,
    Group,
    GroupMember,
    Lifecycle,
    User,
    UserRole,
    utcnow,
)
from .store import Store

__all__ = [
    "DELETION_CAUSE",
    "EXPIRY_CAUSE",
    "BatchOutcome",
    "deletion_cutoff",
    "deprovision_batch",
    "expire_batch",
]

EXPIRY_CAUSE = "expired"
"""The cause the expiry job records in the lifecycle history."""
DELETION_CAUSE = "deletion-sync"
"""The cause the deletion sync records (history, ``members_removed`` events)."""

_USERS = cast(Table, User.__table__)
_GROUPS = cast(Table, Group.__table__)
_MEMBERS = cast(Table, GroupMember.__table__)
_BINDINGS = cast(Table, Binding.__table__)
_SUBJECTS = cast(Table, BindingSubject.__table__)
_USER_ROLES = cast(Table, UserRole.__table__)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch did (in a dry run: would do)."""

    users: int
    """Users the batch took. Fewer than its ``limit``: it was the last one."""
    last_id: str | None = None
    """The batch's highest user id: where the next page starts (``after``)."""
    memberships: int = 0
    """Group memberships removed."""
    groups: int = 0
    """Groups whose members changed (a group counts once per batch)."""
    bindings: int = 0
    """Bindings' subject entries removed."""
    roles: int = 0
    """Directly assigned role ids removed."""
    deleted: int = 0
    """User rows deleted (hard delete)."""


def _batch(
    columns: Sequence[Any],
    where: ColumnElement[bool],
    *,
    after: str | None,
    limit: int,
) -> Select[Any]:
    query = select(*columns).where(where)
    if after is not None:
        query = query.where(_USERS.c.id > after)
    return query.order_by(_USERS.c.id).limit(limit)


async def _take(session: AsyncSession, query: Select[Any], *, lock: bool) -> Sequence[Row[Any]]:
    """The batch's rows; with ``lock`` on PostgreSQL, locked and without the
    rows another transaction holds (``FOR UPDATE SKIP LOCKED``)."""
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=_USERS)
    rows: Sequence[Row[Any]] = (await session.execute(query)).all()
    return rows


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- Expiry ------------------------------------------------------------------

_EXPIRY_COLUMNS = (
    _USERS.c.id,
    _USERS.c.lifecycle,
    _USERS.c.expiration_date,
    _USERS.c.version,
)


async def expire_batch(
    store: Store,
    *,
    now: datetime,
    limit: int,
    actor: Actor,
    dry_run: bool = False,
    after: str | None = None,
) -> BatchOutcome:
    """Suspend up to ``limit`` users whose expiration date passed at ``now``
    (``CREATED``/``ACTIVE``/``ERROR``, not deleted; ids above ``after``).

    Each goes ``SUSPENDED`` (cause ``expired``) with a new version, a history
    row, an audit row (``user.expire``) and an ``auth0`` ``block`` outbox
    row. ``blocked`` is left as it is: a new expiration date reactivates the
    user (SPEC §4), which a set ``blocked`` would prevent; downstream the
    user is blocked by the outbox row.
    """
    query = _batch(_EXPIRY_COLUMNS, lifecycle.expiry_due_clause(now), after=after, limit=limit)
    if dry_run:
        async with store.reading() as session:
            rows = await _take(session, query, lock=False)
        return BatchOutcome(len(rows), rows[-1].id if rows else None)

    async def work(session: AsyncSession) -> BatchOutcome:
        rows = await _take(session, query, lock=True)
        if not rows:
            return BatchOutcome(0)
        ids = [row.id for row in rows]
        at = utcnow()
        await session.execute(
            update(_USERS)
            .where(_USERS.c.id.in_(ids))
            .values(
                lifecycle=Lifecycle.SUSPENDED.value,
                lifecycle_changed_at=now,
                version=_USERS.c.version + 1,
                updated_at=at,
            )
        )
        history, entries, events = [], [], []
        for row in rows:
            version = row.version + 1
            expiration = _iso(row.expiration_date)
            history.append(
                lifecycle.history_row(
                    row.id,
                    row.lifecycle,
                    Lifecycle.SUSPENDED,
                    EXPIRY_CAUSE,
                    actor,
                    now,
                    f"expiration date {expiration} passed",
                )
            )
            entries.append(
                audit.audit_row(
                    actor,
                    "user.expire",
                    "User",
                    row.id,
                    {"expirationDate": expiration, "version": version},
                    at,
                )
            )
            events.append(
                audit.outbox_row(
                    "auth0",
                    "block",
                    "User",
                    row.id,
                    {"version": version, "cause": EXPIRY_CAUSE},
                    at,
                    actor.request_id,
                )
            )
        await row_inserts.insert_rows(session, lifecycle.HISTORY, history)
        await row_inserts.insert_rows(session, audit.AUDIT, entries)
        await row_inserts.insert_rows(session, audit.OUTBOX, events)
        return BatchOutcome(len(rows), ids[-1])

    return await store.transaction(work)


# -- Deletion sync -------------------------------------------------------------

_DELETION_COLUMNS = (
    _USERS.c.id,
    _USERS.c.user_name,
    _USERS.c.lifecycle,
    _USERS.c.deleted_at,
    _USERS.c.version,
)


async def deprovision_batch(
    store: Store,
    *,
    cutoff: datetime,
    limit: int,
    actor: Actor,
    hard_delete: bool,
    now: datetime | None = None,
    dry_run: bool = False,
    after: str | None = None,
) -> BatchOutcome:
    """Deprovision up to ``limit`` users ``SUSPENDED`` since before ``cutoff``
    (:func:`deletion_cutoff`; ids above ``after``), SCIM-deleted ones included.

    Each user leaves every group (each group changed gets one new version
    and one ``rbac`` ``members_removed`` outbox row naming the batch's
    members it lost, ``cause: deletion-sync``), every binding that names it,
    and its directly assigned roles; gets an ``auth0`` outbox row (``delete``
    with ``hard_delete``, else ``block``), an audit row (``user.deprovision``,
    naming what it lost) and a history row; and goes ``INACTIVE`` (cause
    ``deletion-sync``) at ``now`` (the job's clock; default: the wall
    clock), or with ``hard_delete`` its row is deleted once its history and
    audit are written (the history has no foreign key and stays).
    """
    query = _batch(
        _DELETION_COLUMNS, lifecycle.deletion_due_clause(cutoff), after=after, limit=limit
    )
    if dry_run:
        return await _preview_deprovisioning(store, query)

    async def work(session: AsyncSession) -> BatchOutcome:
        rows = await _take(session, query, lock=True)
        if not rows:
            return BatchOutcome(0)
        push = bool(store.settings.rond_base_url)
        return await _deprovision(session, rows, actor, hard_delete, now, push)

    return await store.transaction(work)


async def _preview_deprovisioning(store: Store, query: Select[Any]) -> BatchOutcome:
    async with store.reading() as session:
        rows = await _take(session, query, lock=False)
        if not rows:
            return BatchOutcome(0)
        ids = [row.id for row in rows]
        memberships, groups = (
            await session.execute(
                select(func.count(), func.count(distinct(_MEMBERS.c.group_id))).where(
                    _MEMBERS.c.member_id.in_(ids)
                )
            )
        ).one()
        bindings = await session.scalar(
            select(func.count()).select_from(_SUBJECTS).where(_SUBJECTS.c.user_id.in_(ids))
        )
        roles = await session.scalar(
            select(func.count()).select_from(_USER_ROLES).where(_USER_ROLES.c.user_id.in_(ids))
        )
    return BatchOutcome(
        len(rows),
        ids[-1],
        memberships=int(memberships),
        groups=int(groups),
        bindings=int(bindings or 0),
        roles=int(roles or 0),
    )


async def _deprovision(
    session: AsyncSession,
    rows: Sequence[Row[Any]],
    actor: Actor,
    hard_delete: bool,
    now: datetime | None,
    push: bool,
) -> BatchOutcome:
    ids = [row.id for row in rows]
    at = utcnow()
    changed_at = now or at

    # Memberships first, then the groups' versions: the order of a group
    # PATCH (group_changes), so the two never wait for each other in a circle.
    left = await session.execute(
        delete(_MEMBERS)
        .where(_MEMBERS.c.member_id.in_(ids))
        .returning(_MEMBERS.c.group_id, _MEMBERS.c.member_id)
    )
    groups_of: dict[str, list[str]] = defaultdict(list)
    members_of: dict[str, list[str]] = defaultdict(list)
    memberships = 0
    for group_id, member_id in left:
        groups_of[member_id].append(group_id)
        members_of[group_id].append(member_id)
        memberships += 1
    if members_of:
        await session.execute(
            update(_GROUPS)
            .where(_GROUPS.c.id.in_(sorted(members_of)))
            .values(version=_GROUPS.c.version + 1, updated_at=at)
        )

    forgotten = await rbac.forget_users(session, ids, actor, push=push)
    bindings_of, roles_of = forgotten.bindings_of, forgotten.roles_of
    bindings = sum(len(names) for names in bindings_of.values())

    operation = "delete" if hard_delete else "block"
    history, entries, events = [], [], []
    for row in rows:
        version = row.version + 1
        history.append(
            lifecycle.history_row(
                row.id,
                row.lifecycle,
                Lifecycle.INACTIVE,
                DELETION_CAUSE,
                actor,
                changed_at,
                "deleted (hard delete)" if hard_delete else None,
            )
        )
        entries.append(
            audit.audit_row(
                actor,
                "user.deprovision",
                "User",
                row.id,
                {
                    "userName": row.user_name,
                    "groups": sorted(groups_of.get(row.id, ())),
                    "bindings": sorted(bindings_of.get(row.id, ())),
                    "roles": roles_of.get(row.id, []),
                    "hardDelete": hard_delete,
                },
                at,
            )
        )
        payload: dict[str, Any] = {"cause": DELETION_CAUSE}
        if not hard_delete:
            payload["version"] = version
        events.append(
            audit.outbox_row("auth0", operation, "User", row.id, payload, at, actor.request_id)
        )
    await row_inserts.insert_rows(session, lifecycle.HISTORY, history)
    await row_inserts.insert_rows(session, audit.AUDIT, entries)
    await row_inserts.insert_rows(session, audit.OUTBOX, events)

    deleted = 0
    if hard_delete:
        # Entries and addresses go with the row (ON DELETE CASCADE). A user
        # deleted over SCIM was uncounted then; the others are counted now.
        await session.execute(delete(_USERS).where(_USERS.c.id.in_(ids)))
        deleted = len(ids)
        counted = sum(1 for row in rows if row.deleted_at is None)
        if counted:
            counts.change(session, "User", -counted)
    else:
        await session.execute(
            update(_USERS)
            .where(_USERS.c.id.in_(ids))
            .values(
                lifecycle=Lifecycle.INACTIVE.value,
                lifecycle_changed_at=changed_at,
                version=_USERS.c.version + 1,
                updated_at=at,
            )
        )
    return BatchOutcome(
        len(rows),
        ids[-1],
        memberships=memberships,
        groups=len(members_of),
        bindings=bindings,
        roles=sum(len(names) for names in roles_of.values()),
        deleted=deleted,
    )
