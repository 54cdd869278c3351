"""User lifecycle rules (SPEC §4, after ODJ User Management).

Pure functions decide the state; :func:`transition` applies one and records
it in ``lifecycle_history``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from . import side_rows
from .actor import Actor
from .models import Lifecycle, LifecycleTransition, User, UserType, utcnow


def is_suspended(user: User) -> bool:
    """Whether something currently stops the user: SCIM ``active=false``,
    ``blocked``, an expiration date in the past, or a SCIM delete. An
    unassigned ``active`` (``None``) stops nothing: only ``false`` deactivates."""
    if user.active is False or user.blocked or user.deleted_at is not None:
        return True
    return user.expiration_date is not None and user.expiration_date <= utcnow()


def has_required_attributes(user: User, required: Iterable[str]) -> bool:
    return all(getattr(user, name, None) for name in required)


def target_state(user: User, required: Iterable[str]) -> Lifecycle:
    """The state the user should be in now, given its current state.

    ``ERROR`` stays ``ERROR`` until an admin resets it (unless the user is
    suspended meanwhile); ``INACTIVE`` stays ``INACTIVE`` while nothing
    reactivates the user.
    """
    current = Lifecycle(user.lifecycle) if user.lifecycle else None
    suspended = is_suspended(user)
    if user.user_type == UserType.SERVICE_ACCOUNT.value:
        if user.deleted_at is not None:
            return Lifecycle.INACTIVE
        return Lifecycle.SUSPENDED if suspended else Lifecycle.ACTIVE
    if suspended:
        if current is Lifecycle.INACTIVE:
            return Lifecycle.INACTIVE
        return Lifecycle.SUSPENDED
    if current is Lifecycle.ERROR:
        return Lifecycle.ERROR
    return Lifecycle.ACTIVE if has_required_attributes(user, required) else Lifecycle.CREATED


_TRANSITIONS = cast(Table, LifecycleTransition.__table__)


def transition(
    session: AsyncSession,
    user: User,
    to: Lifecycle,
    cause: str,
    actor: Actor,
    message: str | None = None,
) -> bool:
    """Move ``user`` to ``to`` and record it; nothing happens when it is there already."""
    if user.lifecycle == to.value:
        return False
    side_rows.add(
        session,
        _TRANSITIONS,
        {
            "user_id": user.id,
            "from_state": user.lifecycle or None,
            "to_state": to.value,
            "cause": cause,
            "actor": actor.name,
            "message": message,
            "occurred_at": utcnow(),
        },
    )
    user.lifecycle = to.value
    user.lifecycle_changed_at = utcnow()
    return True
