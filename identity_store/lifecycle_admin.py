"""A user's lifecycle for its operators (SPEC §4: "Every transition is
recorded (time, cause, actor) and visible"): where a user stands and how it
got there (:func:`user_lifecycle`, :func:`user_history`), and an admin's
reset of a user the profile sync gave up on (:func:`reset_user`).

The history has no foreign key to the user: it is read for users deleted
over SCIM (their row is kept) and for users the deletion sync removed for
good (``IDSTORE_HARD_DELETE``: only their history is left).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, lifecycle, side_rows, status_steps
from .actor import Actor
from .errors import NotFoundError, StateError
from .models import LifecycleTransition, StepStatus, User, utcnow
from .store import Store
from .versions import check_version

__all__ = [
    "RESET_MESSAGE",
    "Transition",
    "UserLifecycle",
    "reset_user",
    "user_history",
    "user_lifecycle",
]

RESET_MESSAGE = "reset by an administrator: the next profile sync looks the user up again"
"""The reset's history message and its ``PROFILE_SYNC`` step's."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of a user's ``lifecycle_history``."""

    occurred_at: datetime
    from_state: str | None
    """``None`` for the user's first state (its creation)."""
    to_state: str
    cause: str
    actor: str
    """The token's name, ``job:<name>`` for a scheduled job, ``system``."""
    message: str | None
    request_id: str | None
    job_run_id: int | None
    """The job run (``idstore jobs history``) that made it, if a job did."""


@dataclass(frozen=True, slots=True)
class UserLifecycle:
    """Where a user stands in its lifecycle, and how it got there.

    ``stored`` is ``False`` for a user the deletion sync removed for good:
    then only ``user_id`` and ``history`` are known."""

    user_id: str
    stored: bool
    user_name: str | None
    user_type: str | None
    lifecycle: str | None
    lifecycle_changed_at: datetime | None
    status: list[dict[str, Any]]
    """The synchronisation steps ``{name, status, message, updated_at}``."""
    profile_sync_attempts: int | None
    active: bool | None
    blocked: bool | None
    expiration_date: datetime | None
    deleted_at: datetime | None
    """Set when deleted over SCIM (the row is kept)."""
    version: int | None
    history: list[Transition]
    """Oldest first."""


_HISTORY = select(LifecycleTransition).order_by(
    LifecycleTransition.occurred_at, LifecycleTransition.id
)


async def _history(session: AsyncSession, user_id: str) -> list[Transition]:
    rows = await session.scalars(_HISTORY.where(LifecycleTransition.user_id == user_id))
    return [
        Transition(
            occurred_at=r.occurred_at,
            from_state=r.from_state,
            to_state=r.to_state,
            cause=r.cause,
            actor=r.actor,
            message=r.message,
            request_id=r.request_id,
            job_run_id=r.job_run_id,
        )
        for r in rows
    ]


def _view(user: User | None, user_id: str, history: list[Transition]) -> UserLifecycle:
    if user is None:
        return UserLifecycle(
            user_id=user_id,
            stored=False,
            user_name=None,
            user_type=None,
            lifecycle=None,
            lifecycle_changed_at=None,
            status=[],
            profile_sync_attempts=None,
            active=None,
            blocked=None,
            expiration_date=None,
            deleted_at=None,
            version=None,
            history=history,
        )
    return UserLifecycle(
        user_id=user.id,
        stored=True,
        user_name=user.user_name,
        user_type=user.user_type,
        lifecycle=user.lifecycle,
        lifecycle_changed_at=user.lifecycle_changed_at,
        status=[step for step in user.status or [] if isinstance(step, dict)],
        profile_sync_attempts=user.profile_sync_attempts,
        active=user.active,
        blocked=user.blocked,
        expiration_date=user.expiration_date,
        deleted_at=user.deleted_at,
        version=user.version,
        history=history,
    )


def _user(user_id: str, *, lock: bool = False) -> Select[User]:
    """Any user row by id, deleted over SCIM or not (with ``lock``: locked
    for the change on PostgreSQL; SQLite locks the database on write)."""
    query = select(User).where(User.id == user_id)
    return query.with_for_update() if lock else query


async def user_history(store: Store, user_id: str) -> list[Transition]:
    """Every lifecycle transition of the user, oldest first; ``[]`` for an id
    that never was a user's. Deleted users, removed ones too, keep theirs."""
    async with store.reading() as session:
        return await _history(session, user_id)


async def user_lifecycle(store: Store, user_id: str) -> UserLifecycle:
    """The user's state, synchronisation steps, lifecycle fields and history
    (``idstore user show``), whether it is live, deleted over SCIM, or
    removed by the deletion sync (then its history alone).

    :raises NotFoundError: No user ever had this id.
    """
    async with store.reading() as session:
        user = await session.scalar(_user(user_id))
        history = await _history(session, user_id)
    if user is None and not history:
        raise NotFoundError("User", user_id)
    return _view(user, user_id, history)


async def reset_user(
    store: Store, user_id: str, actor: Actor, *, expected_version: int | None = None
) -> UserLifecycle:
    """An admin's reset of a user in ``ERROR`` (SPEC §4 "ERROR | an admin fixes
    the attributes and resets | CREATED"): back to ``CREATED``, its profile
    sync attempts at 0 and its ``PROFILE_SYNC`` step ``PENDING``, so the next
    profile sync looks it up again. Recorded in the history (cause
    ``reset``) and the audit log (``user.reset``), with a new version and an
    outbox row, as any change of the user.

    :raises NotFoundError: No user has this id (removed users included).
    :raises StateError: The user is not in ``ERROR``; nothing is written.
    :raises VersionMismatchError: The user is not at ``expected_version``.
    """

    async def work(session: AsyncSession) -> UserLifecycle:
        user = await session.scalar(_user(user_id, lock=True))
        if user is None:
            raise NotFoundError("User", user_id)
        check_version(user.version, expected_version)
        before = user.lifecycle
        to = lifecycle.after_reset(user)
        if to.value == before:  # the rule moves a user in ERROR only
            deleted = " (deleted)" if user.deleted_at is not None else ""
            raise StateError(
                f"user {user_id} is {before}{deleted}, not ERROR: only a user in ERROR can be reset"
            )
        now = utcnow()
        user.profile_sync_attempts = 0
        user.status = status_steps.with_step(
            user.status,
            status_steps.step(status_steps.PROFILE_SYNC, StepStatus.PENDING, RESET_MESSAGE, now),
        )
        user.updated_at = now
        lifecycle.transition(session, user, to, "reset", actor, RESET_MESSAGE, now=now)
        await session.flush()  # the version moves on
        audit.record(
            session,
            actor,
            "user.reset",
            "User",
            user.id,
            {"version": user.version, "from": before, "to": to.value},
        )
        audit.enqueue(session, actor, "auth0", "upsert", "User", user.id, {"version": user.version})
        await session.run_sync(side_rows.write_pending)  # the history read back has the reset
        return _view(user, user.id, await _history(session, user.id))

    return await store.transaction(work)
