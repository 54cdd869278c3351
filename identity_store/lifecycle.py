"""User lifecycle rules (SPEC §4, after ODJ User Management): every
transition of a user's ``lifecycle`` is decided here and recorded here.

- created with the required IdP attributes: ``ACTIVE``; without them:
  ``CREATED`` (:func:`target_state`);
- ``CREATED`` -> ``ACTIVE`` when the profile sync filled them, ``ERROR`` when
  it could not after N runs (:func:`after_profile_sync`);
- ``ERROR`` -> ``CREATED`` on an admin's reset (:func:`after_reset`);
- ``CREATED``/``ACTIVE``/``ERROR`` -> ``SUSPENDED`` on ``active=false``, a
  block or a passed expiration date (:func:`target_state`,
  :func:`expiry_due`); back to ``ACTIVE`` (or ``CREATED``) when reactivated
  before the deletion sync (:func:`target_state`);
- ``SUSPENDED`` -> ``INACTIVE`` at the deletion sync after the grace period
  (:func:`deletion_due`);
- SCIM ``DELETE``: ``SUSPENDED``, a service account ``INACTIVE``
  (:func:`after_delete`); a service account is created ``ACTIVE``.

The rules are pure functions of a user's row and the time (``now``: the
job's clock for a scheduled run, which ``idstore jobs run --as-of`` moves);
the batch jobs select their users with the SQL twins of the same rules
(:func:`expiry_due_clause`, :func:`deletion_due_clause`), and the batched
deletes move them with :func:`after_delete_clause`. :func:`transition`
applies one state to one user and :func:`history_row` is the record every
transition leaves in ``lifecycle_history`` (time, cause, actor, request id or
job run id).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Table, and_, case, text
from sqlalchemy.ext.asyncio import AsyncSession

from . import side_rows
from .actor import Actor
from .models import Lifecycle, LifecycleTransition, User, UserType, utcnow
from .read_models import UserRow

EXPIRABLE = (Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR)
"""States the expiry job moves to ``SUSPENDED`` once the expiration date passed."""


def expired(user: User | UserRow, now: datetime) -> bool:
    """Whether the user's expiration date has come (it is no longer valid at ``now``)."""
    return user.expiration_date is not None and user.expiration_date <= now


def is_suspended(user: User | UserRow, now: datetime | None = None) -> bool:
    """Whether something currently stops the user: SCIM ``active=false``,
    ``blocked``, an expiration date in the past, or a SCIM delete. An
    unassigned ``active`` (``None``) stops nothing: only ``false`` deactivates."""
    if user.active is False or user.blocked or user.deleted_at is not None:
        return True
    return expired(user, now or utcnow())


def has_required_attributes(user: User | UserRow, required: Iterable[str]) -> bool:
    return all(getattr(user, name, None) for name in required)


def target_state(
    user: User | UserRow, required: Iterable[str], now: datetime | None = None
) -> Lifecycle:
    """The state the user should be in after a write, given its current state.

    ``ERROR`` stays ``ERROR`` until an admin resets it (unless the user is
    suspended meanwhile); ``INACTIVE`` stays ``INACTIVE`` while nothing
    reactivates the user.
    """
    current = Lifecycle(user.lifecycle) if user.lifecycle else None
    suspended = is_suspended(user, now)
    if suspended and current is Lifecycle.INACTIVE:
        return Lifecycle.INACTIVE  # a person's or a service account's
    if user.user_type == UserType.SERVICE_ACCOUNT.value:
        if user.deleted_at is not None:
            return Lifecycle.INACTIVE
        return Lifecycle.SUSPENDED if suspended else Lifecycle.ACTIVE
    if suspended:
        return Lifecycle.SUSPENDED
    if current is Lifecycle.ERROR:
        return Lifecycle.ERROR
    return Lifecycle.ACTIVE if has_required_attributes(user, required) else Lifecycle.CREATED


def after_delete(user: User) -> Lifecycle:
    """A SCIM ``DELETE``: a person waits ``SUSPENDED`` for the deletion sync; a
    service account has nothing downstream to wind down and goes ``INACTIVE``."""
    if user.user_type == UserType.SERVICE_ACCOUNT.value:
        return Lifecycle.INACTIVE
    return Lifecycle.SUSPENDED


def after_delete_clause() -> ColumnElement[str]:
    """:func:`after_delete` in SQL: the state a live user's row goes to
    (the batched deletes of PostgreSQL decide it as they write)."""
    return case(
        (User.user_type == UserType.SERVICE_ACCOUNT.value, Lifecycle.INACTIVE.value),
        else_=Lifecycle.SUSPENDED.value,
    )


def after_profile_sync(
    user: User, required: Iterable[str], attempts: int, max_attempts: int
) -> Lifecycle:
    """A ``CREATED`` user after the profile sync looked it up (``attempts``
    look-ups so far, this one included): ``ACTIVE`` once the required
    attributes are there, ``ERROR`` after ``max_attempts`` without them,
    still ``CREATED`` before that. A user in any other state is not the
    profile sync's to move."""
    if user.lifecycle != Lifecycle.CREATED.value:
        return Lifecycle(user.lifecycle)
    if has_required_attributes(user, required):
        return Lifecycle.ACTIVE
    return Lifecycle.ERROR if attempts >= max_attempts else Lifecycle.CREATED


def after_reset(user: User) -> Lifecycle:
    """An admin's reset: an ``ERROR`` user goes back to ``CREATED`` for the
    profile sync to try again; any other state stays as it is."""
    if user.lifecycle == Lifecycle.ERROR.value:
        return Lifecycle.CREATED
    return Lifecycle(user.lifecycle)


EXPIRY_CANDIDATES = and_(
    User.expiration_date.is_not(None),
    User.deleted_at.is_(None),
    # Literal states, not bound parameters: the predicate of the partial
    # index ``ix_users_expiration_date`` is this very text, which is what
    # lets PostgreSQL's planner use it for a prepared statement too.
    text("users.lifecycle IN ('CREATED', 'ACTIVE', 'ERROR')"),
)
"""Users the expiry job may ever suspend: dated, live, not suspended yet
(:data:`EXPIRABLE`); ``ix_users_expiration_date`` holds exactly these."""


def expiry_due(user: User, now: datetime) -> bool:
    """Whether the expiry job suspends ``user`` at ``now``."""
    return (
        user.deleted_at is None
        and user.lifecycle in {state.value for state in EXPIRABLE}
        and expired(user, now)
    )


def expiry_due_clause(now: datetime) -> ColumnElement[bool]:
    """:func:`expiry_due` in SQL (served by ``ix_users_expiration_date``)."""
    return and_(EXPIRY_CANDIDATES, User.expiration_date <= now)


def deletion_cutoff(now: datetime, zone: str) -> datetime:
    """Start of ``now``'s day in ``zone``: the deletion sync takes the users
    suspended before it (a user suspended today has until tomorrow's run)."""
    local = now.astimezone(ZoneInfo(zone))
    midnight = datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)
    # A day whose midnight the clocks skip (America/Santiago in September)
    # starts after the gap: through UTC, 00:00 -04 becomes 01:00 -03, a time
    # that exists (and compares equal to its instant in other zones).
    return midnight.astimezone(UTC).astimezone(local.tzinfo)


def deletion_due(user: User, cutoff: datetime) -> bool:
    """Whether the deletion sync deprovisions ``user``: suspended before ``cutoff``."""
    return user.lifecycle == Lifecycle.SUSPENDED.value and user.lifecycle_changed_at < cutoff


def deletion_due_clause(cutoff: datetime) -> ColumnElement[bool]:
    """:func:`deletion_due` in SQL (served by ``ix_users_lifecycle_since``)."""
    return and_(
        User.lifecycle == Lifecycle.SUSPENDED.value,
        User.lifecycle_changed_at < cutoff,
    )


_TRANSITIONS = cast(Table, LifecycleTransition.__table__)
HISTORY = _TRANSITIONS
"""``lifecycle_history``, for the batch jobs that write many rows in one statement."""


def history_row(
    user_id: str,
    from_state: str | None,
    to: Lifecycle,
    cause: str,
    actor: Actor,
    occurred_at: datetime,
    message: str | None = None,
) -> dict[str, Any]:
    """The ``lifecycle_history`` row of one transition."""
    return {
        "user_id": user_id,
        "from_state": from_state or None,
        "to_state": to.value,
        "cause": cause,
        "actor": actor.name,
        "message": message,
        "occurred_at": occurred_at,
        "request_id": actor.request_id,
        "job_run_id": actor.job_run_id,
    }


def transition(
    session: AsyncSession,
    user: User | UserRow,
    to: Lifecycle,
    cause: str,
    actor: Actor,
    message: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Move ``user`` to ``to`` and record it; nothing happens when it is there already."""
    if user.lifecycle == to.value:
        return False
    at = now or utcnow()
    side_rows.add(
        session,
        _TRANSITIONS,
        history_row(user.id, user.lifecycle, to, cause, actor, at, message),
    )
    user.lifecycle = to.value
    user.lifecycle_changed_at = at
    return True
