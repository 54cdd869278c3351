"""The profile sync's side of the store (SPEC §4 ``CREATED`` -> ``ACTIVE`` /
``ERROR``, §6 "Profile sync"): which users wait for their IdP attributes,
and what a batch of directory look-ups does to them.

:func:`created_users` pages through the live ``CREATED`` users by id (keyset)
with what the profile sync needs to look each one up: its key in the
directory (``idp_reference_id``, else ``externalId``: Entra's object id) and
which attributes are empty. :func:`apply_lookups` stores what a batch of
look-ups found, in one transaction and a handful of statements whatever the
batch's size:

- it locks the users and leaves out any that is no longer ``CREATED`` or
  was written since it was read (the look-up answered an older state; the
  next run sees the new one);
- it fills only attributes that are empty: a value a client wrote over SCIM
  is never replaced by the directory's;
- a value the store cannot hold (not a string, a NUL, longer than its
  column) is not stored and is reported;
- the lifecycle moves by :func:`identity_store.lifecycle.after_profile_sync`:
  ``ACTIVE`` once the required attributes are there, ``ERROR`` after
  ``max_attempts`` look-ups without them, ``CREATED`` before that (with
  ``profile_sync_attempts`` counting the look-ups that did not fill them);
- each user written gets its ``PROFILE_SYNC`` status step
  (``{name, status, message, updated_at}``; the message says which
  attributes are missing and why), a new ``version``, an audit row
  (``user.profile_sync``), its ``lifecycle_history`` row when the state
  changed, and an ``auth0 upsert`` outbox row when an attribute or the state
  changed.

One look-up counts one attempt per run: :func:`created_users` tells, for a
run taken over after its worker died, which users that run already counted
(their audit row of this run), so that the run does not count them again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, lifecycle, row_inserts, status_steps
from .actor import Actor
from .models import AuditEntry, Lifecycle, StepStatus, User
from .store import Store

__all__ = [
    "ACTION",
    "CAUSE",
    "STEP",
    "Applied",
    "Lookup",
    "PendingUser",
    "apply_lookups",
    "created_users",
]

STEP = status_steps.PROFILE_SYNC
"""The name of the profile sync's step in a user's ``status``."""

CAUSE = "profile-sync"
"""The cause of the lifecycle transitions it makes."""

ACTION = "user.profile_sync"
"""The action of its audit rows."""

_USERS = cast(Table, User.__table__)


@dataclass(frozen=True, slots=True)
class PendingUser:
    """A live ``CREATED`` user as the profile sync reads it."""

    id: str
    version: int
    lookup_key: str | None
    """Its key in the directory: ``idp_reference_id``, else ``externalId``."""
    missing: tuple[str, ...]
    """The required attributes (``required_idp_attributes``) it lacks."""
    empty: tuple[str, ...]
    """The attributes the profile sync may fill (the targets of
    ``graph_attribute_map``) that it lacks."""
    attempts: int
    """Look-ups so far that did not fill its required attributes."""
    counted: bool = False
    """This run counted a look-up of it already (before its worker died)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the directory said about one user."""

    user: PendingUser
    values: Mapping[str, str] = field(default_factory=dict)
    """Attribute -> the directory's value."""
    reasons: Mapping[str, str] = field(default_factory=dict)
    """Attribute -> why there is no value ("not found in the directory
    (404)", "employeeId empty in the directory"...). A user with nothing
    missing needs no look-up: its ``Lookup`` is empty, and it goes ``ACTIVE``."""


@dataclass(slots=True)
class Applied:
    """What :func:`apply_lookups` did (or, for a dry run, would do)."""

    counts: Counter[str] = field(default_factory=Counter)
    """``activated``, ``still_created``, ``errored`` (moved to ``ERROR``),
    ``filled`` (attributes), ``refused_values``, ``skipped`` (changed
    meanwhile)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """``{user_id, message}`` of each value refused and each user moved to ``ERROR``."""


def _present(value: Any) -> bool:
    return bool(value)


def _targets(store: Store) -> tuple[str, ...]:
    return tuple(dict.fromkeys(store.settings.graph_attribute_map.values()))


def _columns(store: Store) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*store.settings.required_idp_attributes, *_targets(store))))


async def created_users(
    store: Store,
    *,
    after_id: str | None,
    limit: int,
    counted_by: Actor | None = None,
) -> list[PendingUser]:
    """The next ``limit`` live ``CREATED`` users after ``after_id``, by id.

    ``counted_by``: the actor of a run taken over; the users it counted a
    look-up of already come back with :attr:`PendingUser.counted`."""
    required = store.settings.required_idp_attributes
    targets = _targets(store)
    columns = _columns(store)
    query = (
        select(
            _USERS.c.id,
            _USERS.c.version,
            _USERS.c.idp_reference_id,
            _USERS.c.external_id,
            _USERS.c.profile_sync_attempts,
            *(_USERS.c[name] for name in columns),
        )
        .where(_USERS.c.lifecycle == Lifecycle.CREATED.value, _USERS.c.deleted_at.is_(None))
        .order_by(_USERS.c.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(_USERS.c.id > after_id)
    async with store.reading() as session:
        rows = (await session.execute(query)).mappings().all()
        counted: set[str] = set()
        if counted_by is not None and rows:
            counted = {
                str(user_id)
                for user_id in (
                    await session.scalars(
                        select(AuditEntry.resource_id).where(
                            AuditEntry.resource_type == "User",
                            AuditEntry.resource_id.in_([row["id"] for row in rows]),
                            AuditEntry.action == ACTION,
                            AuditEntry.request_id == counted_by.request_id,
                        )
                    )
                ).all()
            }
    return [
        PendingUser(
            id=row["id"],
            version=row["version"],
            lookup_key=row["idp_reference_id"] or row["external_id"] or None,
            missing=tuple(name for name in required if not _present(row[name])),
            empty=tuple(name for name in targets if not _present(row[name])),
            attempts=row["profile_sync_attempts"] or 0,
            counted=row["id"] in counted,
        )
        for row in rows
    ]


def _value_problem(column: str, value: Any) -> str | None:
    """Why ``value`` cannot be stored in ``column``, or ``None``."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if "\x00" in value:
        return "contains a NUL character"
    column_type = _USERS.c[column].type
    length = column_type.length if isinstance(column_type, String) else None
    if length is not None and len(value) > length:
        return f"{len(value)} characters long; the column holds {length}"
    return None


def _missing_message(missing: Sequence[str], reasons: Mapping[str, str]) -> str:
    """``missing a, b: why; missing c: why``, attributes grouped by reason."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for name in missing:
        by_reason[reasons.get(name, "not filled")].append(name)
    return "; ".join(f"missing {', '.join(names)}: {why}" for why, names in by_reason.items())


@dataclass(slots=True)
class _Outcome:
    """One user's new state."""

    values: dict[str, Any]
    """The ``UPDATE``'s parameters."""
    history: dict[str, Any] | None
    audit: dict[str, Any]
    outbox: dict[str, Any] | None


def _decide(
    row: Mapping[str, Any],
    lookup: Lookup,
    applied: Applied,
    *,
    required: Sequence[str],
    targets: Sequence[str],
    actor: Actor,
    now: datetime,
    max_attempts: int,
) -> _Outcome:
    user_id = row["id"]
    reasons = dict(lookup.reasons)
    filled: dict[str, str] = {}
    for name, value in lookup.values.items():
        if name not in targets or _present(row[name]):
            continue  # never overwrite what is there (a client's value)
        problem = _value_problem(name, value)
        if problem is not None:
            reasons[name] = f"the directory's value refused: {problem}"
            applied.counts["refused_values"] += 1
            applied.errors.append({"user_id": user_id, "message": f"{name}: {reasons[name]}"})
            continue
        filled[name] = value
    state = {name: filled.get(name, row[name]) for name in (*required, *targets)}
    attempts = (row["profile_sync_attempts"] or 0) + 1  # counted only if still missing
    subject = User(id=user_id, lifecycle=row["lifecycle"], **state)
    to = lifecycle.after_profile_sync(subject, required, attempts, max_attempts)
    missing = [name for name in required if not _present(state[name])]
    if to is Lifecycle.ACTIVE:
        attempts = row["profile_sync_attempts"] or 0
        status, message = (
            StepStatus.OK,
            (
                f"filled {', '.join(filled)} from the directory"
                if filled
                else "required attributes present"
            ),
        )
        applied.counts["activated"] += 1
    elif to is Lifecycle.ERROR:
        status = StepStatus.ERROR
        message = f"{_missing_message(missing, reasons)} (after {attempts} attempts)"
        applied.counts["errored"] += 1
        applied.errors.append({"user_id": user_id, "message": message})
    else:
        status = StepStatus.PENDING
        message = f"{_missing_message(missing, reasons)} (attempt {attempts} of {max_attempts})"
        applied.counts["still_created"] += 1
    applied.counts["filled"] += len(filled)
    version = row["version"] + 1
    changed_state = to.value != row["lifecycle"]
    step = status_steps.step(STEP, status, message, now)
    values = {
        "b_id": user_id,
        "b_version": row["version"],
        **{f"b_{name}": filled.get(name, row[name]) for name in targets},
        "b_lifecycle": to.value,
        "b_lifecycle_changed_at": now if changed_state else row["lifecycle_changed_at"],
        "b_status": status_steps.with_step(row["status"], step),
        "b_profile_sync_attempts": attempts,
        "b_new_version": version,
        "b_updated_at": now,
    }
    history = None
    if changed_state:
        history = lifecycle.history_row(user_id, row["lifecycle"], to, CAUSE, actor, now, message)
    details = {
        "version": version,
        "lifecycle": to.value,
        "filled": sorted(filled),
        "missing": missing,
        "attempts": attempts,
    }
    outbox = None
    if filled or changed_state:
        outbox = audit.outbox_row(
            "auth0", "upsert", "User", user_id, {"version": version}, request_id=actor.request_id
        )
    return _Outcome(
        values, history, audit.audit_row(actor, ACTION, "User", user_id, details), outbox
    )


def _update_statement(targets: Sequence[str]) -> Any:
    return (
        update(_USERS)
        .where(_USERS.c.id == bindparam("b_id"), _USERS.c.version == bindparam("b_version"))
        .values(
            {
                **{name: bindparam(f"b_{name}") for name in targets},
                "lifecycle": bindparam("b_lifecycle"),
                "lifecycle_changed_at": bindparam("b_lifecycle_changed_at"),
                "status": bindparam("b_status"),
                "profile_sync_attempts": bindparam("b_profile_sync_attempts"),
                "version": bindparam("b_new_version"),
                "updated_at": bindparam("b_updated_at"),
            }
        )
    )


async def apply_lookups(
    store: Store,
    results: Sequence[Lookup],
    actor: Actor,
    now: datetime,
    max_attempts: int,
    dry_run: bool = False,
) -> Applied:
    """Store what a batch of look-ups found (see the module's docstring), in
    one transaction; with ``dry_run``, count what would change and write
    nothing."""
    required = store.settings.required_idp_attributes
    targets = _targets(store)
    columns = _columns(store)
    by_id = {lookup.user.id: lookup for lookup in results}
    query = (
        select(
            _USERS.c.id,
            _USERS.c.version,
            _USERS.c.lifecycle,
            _USERS.c.lifecycle_changed_at,
            _USERS.c.deleted_at,
            _USERS.c.status,
            _USERS.c.profile_sync_attempts,
            *(_USERS.c[name] for name in columns),
        )
        .where(_USERS.c.id.in_(sorted(by_id)))
        .order_by(_USERS.c.id)
    )

    def decide(rows: Sequence[Any]) -> tuple[Applied, list[_Outcome]]:
        applied = Applied()
        outcomes = []
        current = {row["id"]: row for row in rows}
        for user_id, lookup in by_id.items():
            row = current.get(user_id)
            if (
                row is None
                or row["deleted_at"] is not None
                or row["lifecycle"] != Lifecycle.CREATED.value
                or row["version"] != lookup.user.version
            ):
                applied.counts["skipped"] += 1
                continue
            outcomes.append(
                _decide(
                    row,
                    lookup,
                    applied,
                    required=required,
                    targets=targets,
                    actor=actor,
                    now=now,
                    max_attempts=max_attempts,
                )
            )
        return applied, outcomes

    if not by_id:
        return Applied()
    if dry_run:
        async with store.reading() as session:
            rows = (await session.execute(query)).mappings().all()
        return decide(rows)[0]

    async def work(session: AsyncSession) -> Applied:
        rows = (await session.execute(query.with_for_update())).mappings().all()
        applied, outcomes = decide(rows)
        if outcomes:
            await session.execute(_update_statement(targets), [o.values for o in outcomes])
            histories = [o.history for o in outcomes if o.history is not None]
            await row_inserts.insert_rows(session, lifecycle.HISTORY, histories)
            await row_inserts.insert_rows(session, audit.AUDIT, [o.audit for o in outcomes])
            outboxes = [o.outbox for o in outcomes if o.outbox is not None]
            await row_inserts.insert_rows(session, audit.OUTBOX, outboxes)
        return applied

    return await store.transaction(work)
