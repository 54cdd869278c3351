"""The outbox as its dispatchers use it: claim one user's pending rows at a
time, record what delivering them did, retry, dead-letter, pace (SPEC §6
"Outbox", docs/auth0.md).

**Claiming** (:func:`claim`) is one short transaction, never held across a
call to the target:

1. the due rows of the target, oldest first, locked with ``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL (two dispatchers claiming at once take different
   rows instead of queueing), skipping users another worker holds;
2. a lease per user in ``outbox_leases`` (``INSERT ... ON CONFLICT DO UPDATE
   ... WHERE locked_until <= now``): the primary key makes it exclusive, so
   at most one delivery per user is in flight across all workers, even for
   rows committed after step 1 looked;
3. every pending row of the users leased (also those waiting for a retry):
   they are coalesced into one delivery, "bring the target to this user's
   current state", read from the store when sending.

The worker renews its leases while it delivers (:func:`renew`). A delivery
ends with :func:`complete` (the rows ``DONE`` with their outcome, the remote
id and synced fields kept in ``sync_states``, the Auth0 id written on the
user, the lease dropped, all in one transaction) or :func:`fail` (retry at a
time, or dead letter). A worker that dies leaves its leases to run out; its
rows are still ``PENDING`` and the next claim takes them: every effect is
idempotent, so delivering twice does no harm.

**Pacing** (:func:`reserve`, :func:`pause`): each target has one request
budget in ``rate_budgets``, shared by every worker: a generic cell rate
algorithm whose state is a single number, the theoretical arrival time of
the next request (epoch seconds). A reservation is one ``UPSERT ...
RETURNING`` that moves it on by ``1 / rate`` and says how long to wait; a 429
pushes it to the time the target named, so every worker waits.

Times are the caller's clock, as for :mod:`identity_store.job_runs`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit
from .actor import Actor
from .errors import NotFoundError, StateError
from .models import OutboxEntry, OutboxLease, OutboxStatus, RateBudget, SyncState, User
from .store import Store

__all__ = [
    "MAX_ERROR_LENGTH",
    "Claim",
    "Delivered",
    "Failed",
    "OutboxRow",
    "SyncRecord",
    "TargetStatus",
    "TargetSync",
    "aggregate_rows",
    "claim",
    "claim_users",
    "complete",
    "dead_letters",
    "fail",
    "pause",
    "peek",
    "release",
    "renew",
    "reserve",
    "retry",
    "retry_row",
    "status",
    "sync_records",
    "user_sync",
]

MAX_ERROR_LENGTH = 2000
"""Characters of an error kept on a row (the rest is cut)."""

_OUTBOX = cast(Table, OutboxEntry.__table__)
_LEASES = cast(Table, OutboxLease.__table__)
_BUDGETS = cast(Table, RateBudget.__table__)
_STATES = cast(Table, SyncState.__table__)
_USERS = cast(Table, User.__table__)
_PENDING = OutboxStatus.PENDING.value
_DONE = OutboxStatus.DONE.value
_DEAD = OutboxStatus.FAILED.value
_CANDIDATES_PER_CLAIM = 4
"""Due rows looked at per user wanted: a user often has several."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One user's pending rows of one target, leased to one worker: one delivery."""

    target: str
    aggregate_type: str
    aggregate_id: str
    row_ids: tuple[int, ...]
    operations: tuple[str, ...]
    request_ids: tuple[str, ...]
    """The distinct request ids of the rows, oldest first."""
    attempts: int
    """The most failed attempts of any of the rows."""
    oldest: datetime
    """When the oldest row was written."""

    @property
    def request_id(self) -> str | None:
        """The ids of the requests this delivery stands for, joined by commas."""
        return ",".join(self.request_ids) or None


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delivery that succeeded (or needed nothing)."""

    claim: Claim
    outcome: str
    remote_id: str | None = None
    """The target's id of the user, to keep (``None``: keep what is kept)."""
    synced: Mapping[str, Any] | None = None
    """The fields the target now holds (``None``: keep what is kept)."""
    forget_remote: bool = False
    """The account is gone (hard delete): clear the remote id everywhere."""
    set_auth_user_id: bool = False
    """Write ``remote_id`` as the user's ``auth_user_id``."""
    took_over: bool = False
    """The account was adopted: any other user that had it loses it."""
    last_login: datetime | None = None
    """When the user last logged in there, as the target's answer said
    (Auth0's ``last_login``): kept as the user's ``last_logged_in_at``."""


@dataclass(frozen=True, slots=True)
class Failed:
    """A delivery that did not succeed."""

    claim: Claim
    error: str
    retry_at: datetime | None
    """When to try again; ``None``: dead letter."""
    counts: bool = True
    """Whether it counts as a failed attempt (throttling does not)."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row, as the status and replay commands show it."""

    id: int
    target: str
    operation: str
    aggregate_type: str
    aggregate_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    processed_at: datetime | None
    last_error: str | None
    outcome: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The backlog of one target."""

    target: str
    pending: int = 0
    due: int = 0
    """Pending rows whose time has come."""
    oldest_due_at: datetime | None = None
    in_flight: int = 0
    """Users leased to a worker now."""
    dead: int = 0
    done: int = 0
    users_pending: int = 0
    """Distinct users with pending rows."""


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """What was last delivered of one user to one target."""

    remote_id: str | None
    synced: dict[str, Any] = field(default_factory=dict)
    outbox_id: int | None = None
    outcome: str | None = None
    synced_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TargetSync:
    """Where one user (or group) stands with one target."""

    target: str
    delivered: SyncRecord | None
    """What the last delivery brought the target to (``None``: never delivered)."""
    pending: int
    """Rows waiting to be delivered."""
    in_flight: bool
    """A worker holds the user's lease for the target now."""
    dead: int
    """Dead letters (deliveries that failed for good, kept with their error)."""
    waiting: list[OutboxRow]
    """The pending rows, newest first (at most the limit asked)."""
    dead_letters: list[OutboxRow]
    """The dead letters, newest first (at most the limit asked)."""


def _insert(session: AsyncSession, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def _row(row: Any) -> OutboxRow:
    return OutboxRow(
        id=row.id,
        target=row.target,
        operation=row.operation,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        processed_at=row.processed_at,
        last_error=row.last_error,
        outcome=row.outcome,
        request_id=row.request_id,
    )


# -- Claiming ------------------------------------------------------------------


def _held_by_other(target: str, now: datetime) -> Any:
    return exists().where(
        _LEASES.c.target == target,
        _LEASES.c.aggregate_id == _OUTBOX.c.aggregate_id,
        _LEASES.c.locked_until > now,
    )


async def claim(
    store: Store,
    target: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    aggregate_ids: Sequence[str] | None = None,
    with_account_only: bool = False,
) -> list[Claim]:
    """Lease up to ``limit`` users with due rows of ``target`` to ``worker``;
    their deliveries (module docstring), oldest due first. With
    ``aggregate_ids``, only among those users (an import job takes the
    users it puts in its file). With ``with_account_only``, only users that
    have an account there already (while import jobs create the others)."""

    async def work(session: AsyncSession) -> list[Claim]:
        due = (
            select(_OUTBOX.c.aggregate_id)
            .where(
                _OUTBOX.c.target == target,
                _OUTBOX.c.status == _PENDING,
                _OUTBOX.c.next_attempt_at <= now,
                ~_held_by_other(target, now),
            )
            .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
            .limit(limit * _CANDIDATES_PER_CLAIM)
        )
        if aggregate_ids is not None:
            due = due.where(_OUTBOX.c.aggregate_id.in_(list(aggregate_ids)))
        if with_account_only:
            due = due.where(
                exists().where(
                    _USERS.c.id == _OUTBOX.c.aggregate_id, _USERS.c.auth_user_id.is_not(None)
                )
            )
        if _is_postgresql(session):
            due = due.with_for_update(skip_locked=True, of=_OUTBOX)
        wanted = list(dict.fromkeys((await session.scalars(due)).all()))[:limit]
        won = await _lease(session, target, wanted, worker=worker, now=now, lease=lease)
        return await _claims_of(session, target, wanted, won, worker)

    return await store.transaction(work)


async def _lease(
    session: AsyncSession,
    target: str,
    wanted: Sequence[str],
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> set[str]:
    """Lease ``wanted`` to ``worker`` where no other worker holds them now;
    the ids leased."""
    if not wanted:
        return set()
    statement = _insert(session, _LEASES).values(
        [
            {
                "target": target,
                "aggregate_id": a,
                "locked_by": worker,
                "locked_until": now + lease,
            }
            for a in wanted
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=["target", "aggregate_id"],
        set_={
            "locked_by": statement.excluded.locked_by,
            "locked_until": statement.excluded.locked_until,
        },
        where=_LEASES.c.locked_until <= now,
    ).returning(_LEASES.c.aggregate_id)
    return set((await session.scalars(statement)).all())


async def _claims_of(
    session: AsyncSession, target: str, wanted: Sequence[str], won: set[str], worker: str
) -> list[Claim]:
    """The claims of the users ``won`` (every pending row of each), in the
    order of ``wanted``; the leases of those without a pending row dropped."""
    if not won:
        return []
    rows = (
        await session.execute(
            select(
                _OUTBOX.c.id,
                _OUTBOX.c.aggregate_type,
                _OUTBOX.c.aggregate_id,
                _OUTBOX.c.operation,
                _OUTBOX.c.request_id,
                _OUTBOX.c.attempts,
                _OUTBOX.c.created_at,
            )
            .where(
                _OUTBOX.c.target == target,
                _OUTBOX.c.status == _PENDING,
                _OUTBOX.c.aggregate_id.in_(sorted(won)),
            )
            .order_by(_OUTBOX.c.id)
        )
    ).all()
    by_aggregate: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_aggregate[row.aggregate_id].append(row)
    claims = []
    for aggregate_id in wanted:
        mine = by_aggregate.get(aggregate_id)
        if not mine or aggregate_id not in won:
            continue  # delivered by another worker between the two looks
        claims.append(
            Claim(
                target=target,
                aggregate_type=mine[0].aggregate_type,
                aggregate_id=aggregate_id,
                row_ids=tuple(r.id for r in mine),
                operations=tuple(r.operation for r in mine),
                request_ids=tuple(dict.fromkeys(r.request_id for r in mine if r.request_id)),
                attempts=max(r.attempts for r in mine),
                oldest=min(r.created_at for r in mine),
            )
        )
    empty = won - {c.aggregate_id for c in claims}
    if empty:
        await session.execute(_drop_leases(target, sorted(empty), worker))
    return claims


async def claim_users(
    store: Store,
    target: str,
    aggregate_ids: Sequence[str],
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    prepare: Callable[[AsyncSession, list[str]], Awaitable[None]],
) -> list[Claim]:
    """Lease ``aggregate_ids`` that no other worker holds, due rows or not,
    call ``prepare(session, leased)`` in the same transaction (it writes the
    rows the caller means to deliver) and return the claims of the users
    leased: a bulk job that must deliver these users itself, before any
    dispatcher sees its new rows (:func:`identity_store.accounts.claim_for_activation`)."""
    wanted = list(dict.fromkeys(aggregate_ids))

    async def work(session: AsyncSession) -> list[Claim]:
        won = await _lease(session, target, wanted, worker=worker, now=now, lease=lease)
        leased = [a for a in wanted if a in won]
        if leased:
            await prepare(session, leased)
        return await _claims_of(session, target, wanted, won, worker)

    return await store.transaction(work)


def _drop_leases(target: str, aggregate_ids: Sequence[str], worker: str) -> Any:
    return delete(_LEASES).where(
        _LEASES.c.target == target,
        _LEASES.c.aggregate_id.in_(aggregate_ids),
        _LEASES.c.locked_by == worker,
    )


async def renew(
    store: Store,
    target: str,
    aggregate_ids: Sequence[str],
    *,
    worker: str,
    until: datetime,
) -> set[str]:
    """Extend ``worker``'s leases on ``aggregate_ids`` to ``until``; the ids it
    still held (a lease that ran out and was taken is not renewed)."""
    if not aggregate_ids:
        return set()

    async def work(session: AsyncSession) -> set[str]:
        result = await session.scalars(
            update(_LEASES)
            .where(
                _LEASES.c.target == target,
                _LEASES.c.aggregate_id.in_(aggregate_ids),
                _LEASES.c.locked_by == worker,
            )
            .values(locked_until=until)
            .returning(_LEASES.c.aggregate_id)
        )
        return set(result.all())

    return await store.transaction(work)


async def release(store: Store, claims: Sequence[Claim], *, worker: str) -> None:
    """Give the users of ``claims`` back untouched (shutdown, a store error
    before delivering, an import that does not take them)."""
    by_target = _aggregates_by_target(claims)

    async def work(session: AsyncSession) -> None:
        for target, ids in by_target.items():
            await session.execute(_drop_leases(target, ids, worker))

    if by_target:
        await store.transaction(work)


# -- Outcomes ------------------------------------------------------------------


async def complete(
    store: Store, delivered: Sequence[Delivered], *, worker: str, now: datetime
) -> None:
    """Record successful deliveries, all in one transaction (module docstring).

    An earlier dead letter of the same user and target is settled too: this
    delivery brought the target to the user's current state, which the dead
    letter's change is part of."""
    if not delivered:
        return

    async def work(session: AsyncSession) -> None:
        by_outcome: dict[str, list[int]] = defaultdict(list)
        for d in delivered:
            by_outcome[d.outcome].extend(d.claim.row_ids)
        for outcome, ids in by_outcome.items():
            await session.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.status == _PENDING)
                .values(status=_DONE, processed_at=now, outcome=_cut(outcome), last_error=None)
            )
        for target, aggregates in _aggregates_by_target(d.claim for d in delivered).items():
            # A dead letter of a user delivered now is settled: the target
            # holds the user's current state, its change included.
            await session.execute(
                update(_OUTBOX)
                .where(
                    _OUTBOX.c.target == target,
                    _OUTBOX.c.aggregate_id.in_(aggregates),
                    _OUTBOX.c.status == _DEAD,
                )
                .values(status=_DONE, processed_at=now, outcome="settled by a later delivery")
            )
        await _keep_states(session, delivered, now)
        await _write_auth_user_ids(session, delivered, now)
        await _write_last_logins(session, delivered)
        for target, aggregates in _aggregates_by_target(d.claim for d in delivered).items():
            await session.execute(_drop_leases(target, aggregates, worker))

    await store.transaction(work)


def _aggregates_by_target(claims: Iterable[Claim]) -> dict[str, list[str]]:
    by_target: dict[str, list[str]] = defaultdict(list)
    for c in claims:
        by_target[c.target].append(c.aggregate_id)
    return by_target


async def _keep_states(
    session: AsyncSession, delivered: Sequence[Delivered], now: datetime
) -> None:
    rows = []
    for d in delivered:
        rows.append(
            {
                "target": d.claim.target,
                "aggregate_id": d.claim.aggregate_id,
                "remote_id": None if d.forget_remote else d.remote_id,
                "synced": {} if d.forget_remote else dict(d.synced or {}),
                "outbox_id": d.claim.row_ids[-1],
                "outcome": _cut(d.outcome),
                "synced_at": now,
            }
        )
    statement = _insert(session, _STATES).values(rows)
    excluded = statement.excluded
    keep_remote = [d for d in delivered if d.remote_id is None and not d.forget_remote]
    keep_synced = [d for d in delivered if d.synced is None and not d.forget_remote]
    # A delivery that names no remote id (or no synced fields) keeps the
    # stored one: decided per row by two id lists, as one statement.
    remote = case(
        (
            excluded.aggregate_id.in_([d.claim.aggregate_id for d in keep_remote]),
            _STATES.c.remote_id,
        ),
        else_=excluded.remote_id,
    )
    synced = case(
        (excluded.aggregate_id.in_([d.claim.aggregate_id for d in keep_synced]), _STATES.c.synced),
        else_=excluded.synced,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["target", "aggregate_id"],
            set_={
                "remote_id": remote,
                "synced": synced,
                "outbox_id": excluded.outbox_id,
                "outcome": excluded.outcome,
                "synced_at": excluded.synced_at,
            },
        )
    )
    # An account adopted by one user is no other user's any more.
    for d in delivered:
        if d.took_over and d.remote_id is not None:
            await session.execute(
                update(_STATES)
                .where(
                    _STATES.c.target == d.claim.target,
                    _STATES.c.remote_id == d.remote_id,
                    _STATES.c.aggregate_id != d.claim.aggregate_id,
                )
                .values(remote_id=None, synced={})
            )


async def _write_auth_user_ids(
    session: AsyncSession, delivered: Sequence[Delivered], now: datetime
) -> None:
    """``users.auth_user_id`` of the deliveries that set or forgot it, in one
    ``executemany``; a change of it is a change of the user (``version``
    moves, as the SCIM ``authUserId`` it is read as changed)."""
    values: list[dict[str, Any]] = []
    for d in delivered:
        if d.claim.aggregate_type != "User":
            continue
        if d.forget_remote:
            values.append({"uid": d.claim.aggregate_id, "rid": None})
        elif d.set_auth_user_id and d.remote_id is not None:
            values.append({"uid": d.claim.aggregate_id, "rid": d.remote_id})
            if d.took_over:
                await session.execute(
                    update(_USERS)
                    .where(
                        _USERS.c.auth_user_id == d.remote_id, _USERS.c.id != d.claim.aggregate_id
                    )
                    .values(auth_user_id=None, version=_USERS.c.version + 1, updated_at=now)
                )
    if not values:
        return
    await session.execute(
        update(_USERS)
        .where(
            _USERS.c.id == bindparam("uid", type_=_USERS.c.id.type),
            _USERS.c.auth_user_id.is_distinct_from(
                bindparam("rid", type_=_USERS.c.auth_user_id.type)
            ),
        )
        .values(
            auth_user_id=bindparam("rid", type_=_USERS.c.auth_user_id.type),
            version=_USERS.c.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        values,
    )


async def _write_last_logins(session: AsyncSession, delivered: Sequence[Delivered]) -> None:
    """``users.last_logged_in_at`` of the deliveries whose answer named a
    login, in one ``executemany``; never moved back (an answer older than
    what is kept changes nothing). Not a change of the user: its
    ``version`` and ``updated_at`` stay (the SCIM representation does not
    hold it, so an ETag must not move for a login)."""
    values = [
        {"uid": d.claim.aggregate_id, "at": d.last_login}
        for d in delivered
        if d.claim.aggregate_type == "User" and d.last_login is not None
    ]
    if not values:
        return
    at = bindparam("at", type_=_USERS.c.last_logged_in_at.type)
    await session.execute(
        update(_USERS)
        .where(
            _USERS.c.id == bindparam("uid", type_=_USERS.c.id.type),
            (_USERS.c.last_logged_in_at.is_(None)) | (_USERS.c.last_logged_in_at < at),
        )
        .values(last_logged_in_at=at)
        .execution_options(synchronize_session=False),
        values,
    )


async def fail(store: Store, failures: Sequence[Failed], *, worker: str, now: datetime) -> None:
    """Record failed deliveries: each row tried again at ``retry_at`` (one
    more attempt counted unless throttled), or dead-lettered; leases dropped."""
    if not failures:
        return

    async def work(session: AsyncSession) -> None:
        for f in failures:
            values: dict[str, Any] = {"last_error": _cut(f.error)}
            if f.counts:
                values["attempts"] = _OUTBOX.c.attempts + 1
            if f.retry_at is None:
                values.update(status=_DEAD, processed_at=now)
            else:
                values["next_attempt_at"] = f.retry_at
            await session.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_(f.claim.row_ids), _OUTBOX.c.status == _PENDING)
                .values(**values)
            )
        for target, ids in _aggregates_by_target(f.claim for f in failures).items():
            await session.execute(_drop_leases(target, ids, worker))

    await store.transaction(work)


# -- Pacing ----------------------------------------------------------------------


async def reserve(
    store: Store, target: str, *, rate: float, burst: int, now: float, cost: int = 1
) -> float:
    """Reserve ``cost`` consecutive request slots of ``target``'s shared
    budget (``1 / rate`` apart); the seconds to wait before the first (0
    when it may go now). ``now`` is epoch seconds. After a quiet spell up to
    ``burst`` slots lie in the past: they may go at once."""
    interval = 1 / rate
    floor = now - (burst - 1) * interval
    span = cost * interval

    # One atomic statement in autocommit: no BEGIN/COMMIT round trips.
    async with store.reading() as session:
        statement = _insert(session, _BUDGETS).values(target=target, tat=floor + span)
        statement = statement.on_conflict_do_update(
            index_elements=["target"],
            set_={"tat": case((_BUDGETS.c.tat > floor, _BUDGETS.c.tat), else_=floor) + span},
        ).returning(_BUDGETS.c.tat)
        tat = float((await session.execute(statement)).scalar_one())
    return max(0.0, tat - span - now)


async def pause(store: Store, target: str, *, until: float) -> None:
    """No request of ``target`` goes before ``until`` (epoch seconds), from any worker."""

    async with store.reading() as session:
        statement = _insert(session, _BUDGETS).values(target=target, tat=until)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["target"],
                set_={"tat": case((_BUDGETS.c.tat < until, until), else_=_BUDGETS.c.tat)},
            )
        )


# -- Reading and replaying ----------------------------------------------------


async def peek(
    store: Store, target: str, *, after_id: int, now: datetime, limit: int
) -> list[OutboxRow]:
    """Due pending rows of ``target`` after ``after_id``, in id order, without
    claiming them (what a dry run looks at)."""
    async with store.reading() as session:
        rows = await session.execute(
            select(_OUTBOX)
            .where(
                _OUTBOX.c.target == target,
                _OUTBOX.c.status == _PENDING,
                _OUTBOX.c.next_attempt_at <= now,
                _OUTBOX.c.id > after_id,
            )
            .order_by(_OUTBOX.c.id)
            .limit(limit)
        )
        return [_row(r) for r in rows]


async def status(store: Store, *, now: datetime) -> list[TargetStatus]:
    """The backlog of every target that has rows."""
    async with store.reading() as session:
        counts = (
            await session.execute(
                select(_OUTBOX.c.target, _OUTBOX.c.status, func.count())
                .group_by(_OUTBOX.c.target, _OUTBOX.c.status)
                .order_by(_OUTBOX.c.target)
            )
        ).all()
        pending = (
            await session.execute(
                select(
                    _OUTBOX.c.target,
                    func.count(),
                    func.min(_OUTBOX.c.next_attempt_at),
                    func.count(func.distinct(_OUTBOX.c.aggregate_id)),
                )
                .where(_OUTBOX.c.status == _PENDING, _OUTBOX.c.next_attempt_at <= now)
                .group_by(_OUTBOX.c.target)
            )
        ).all()
        users: dict[str, int] = dict(
            (
                await session.execute(
                    select(_OUTBOX.c.target, func.count(func.distinct(_OUTBOX.c.aggregate_id)))
                    .where(_OUTBOX.c.status == _PENDING)
                    .group_by(_OUTBOX.c.target)
                )
            ).all()
        )
        leases: dict[str, int] = dict(
            (
                await session.execute(
                    select(_LEASES.c.target, func.count())
                    .where(_LEASES.c.locked_until > now)
                    .group_by(_LEASES.c.target)
                )
            ).all()
        )
    by_target: dict[str, dict[str, Any]] = defaultdict(dict)
    for target, state, n in counts:
        key = {_PENDING: "pending", _DONE: "done", _DEAD: "dead"}.get(state)
        if key:
            by_target[target][key] = n
    for target, n, oldest, _ in pending:
        by_target[target].update(due=n, oldest_due_at=oldest)
    for target in by_target:
        by_target[target]["in_flight"] = leases.get(target, 0)
        by_target[target]["users_pending"] = users.get(target, 0)
    return [TargetStatus(target=t, **v) for t, v in sorted(by_target.items())]


async def dead_letters(
    store: Store, *, target: str | None = None, limit: int = 50
) -> list[OutboxRow]:
    """The dead letters, newest first."""
    query = select(_OUTBOX).where(_OUTBOX.c.status == _DEAD)
    if target is not None:
        query = query.where(_OUTBOX.c.target == target)
    async with store.reading() as session:
        rows = await session.execute(query.order_by(_OUTBOX.c.id.desc()).limit(limit))
        return [_row(r) for r in rows]


async def aggregate_rows(
    store: Store, aggregate_id: str, *, target: str | None = None, limit: int = 100
) -> list[OutboxRow]:
    """The rows of one user (or group), newest first."""
    query = select(_OUTBOX).where(_OUTBOX.c.aggregate_id == aggregate_id)
    if target is not None:
        query = query.where(_OUTBOX.c.target == target)
    async with store.reading() as session:
        rows = await session.execute(query.order_by(_OUTBOX.c.id.desc()).limit(limit))
        return [_row(r) for r in rows]


async def retry(
    store: Store,
    *,
    now: datetime,
    ids: Sequence[int] = (),
    all_dead: bool = False,
    target: str | None = None,
) -> list[int]:
    """Put dead letters (``ids``, or every one with ``all_dead``, of
    ``target`` if given) back to ``PENDING``, due now, attempts from zero;
    the ids put back. A row that is not a dead letter is left alone."""
    conditions = [_OUTBOX.c.status == _DEAD]
    if not all_dead:
        if not ids:
            return []
        conditions.append(_OUTBOX.c.id.in_(list(ids)))
    if target is not None:
        conditions.append(_OUTBOX.c.target == target)

    async def work(session: AsyncSession) -> list[int]:
        result = await session.scalars(
            update(_OUTBOX)
            .where(and_(*conditions))
            .values(
                status=_PENDING, attempts=0, next_attempt_at=now, processed_at=None, outcome=None
            )
            .returning(_OUTBOX.c.id)
        )
        return sorted(result.all())

    return await store.transaction(work)


async def retry_row(store: Store, row_id: int, actor: Actor, *, now: datetime) -> OutboxRow:
    """Put one dead letter back to ``PENDING``, due ``now``, attempts from
    zero (its error is kept until the next attempt), audited
    (``outbox.retry``); the row as it is then.

    :raises NotFoundError: No row has this id.
    :raises StateError: The row is not a dead letter (pending, or done);
        nothing is written.
    """

    async def work(session: AsyncSession) -> OutboxRow:
        query = select(_OUTBOX).where(_OUTBOX.c.id == row_id)
        if _is_postgresql(session):
            query = query.with_for_update()
        row = (await session.execute(query)).first()
        if row is None:
            raise NotFoundError("OutboxRow", str(row_id))
        if row.status != _DEAD:
            state = {_PENDING: "pending", _DONE: "done"}.get(row.status, row.status)
            raise StateError(f"outbox row {row_id} is {state}: only a dead letter can be retried")
        updated = (
            await session.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id == row_id, _OUTBOX.c.status == _DEAD)
                .values(
                    status=_PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    processed_at=None,
                    outcome=None,
                )
                .returning(*_OUTBOX.c)
            )
        ).one()
        audit.record(
            session,
            actor,
            "outbox.retry",
            row.aggregate_type,
            row.aggregate_id,
            {"outbox_id": row_id, "target": row.target, "last_error": row.last_error},
        )
        return _row(updated)

    return await store.transaction(work)


async def user_sync(
    store: Store, aggregate_id: str, *, now: datetime, limit: int = 20
) -> list[TargetSync]:
    """Where ``aggregate_id`` stands with every target that has a row or a
    record of it, by target: what was last delivered, its pending rows and
    dead letters (counts, and the ``limit`` newest of each), whether a
    worker holds it now. Four statements whatever the backlog.

    :raises NotFoundError: No user (live, deleted or removed) and no row
        or record has this id.
    """
    waiting_or_dead = [_PENDING, _DEAD]
    async with store.reading() as session:
        counts = (
            await session.execute(
                select(_OUTBOX.c.target, _OUTBOX.c.status, func.count())
                .where(
                    _OUTBOX.c.aggregate_id == aggregate_id, _OUTBOX.c.status.in_(waiting_or_dead)
                )
                .group_by(_OUTBOX.c.target, _OUTBOX.c.status)
            )
        ).all()
        ranked = (
            select(
                _OUTBOX,
                func.row_number()
                .over(
                    partition_by=(_OUTBOX.c.target, _OUTBOX.c.status),
                    order_by=_OUTBOX.c.id.desc(),
                )
                .label("rank"),
            )
            .where(_OUTBOX.c.aggregate_id == aggregate_id, _OUTBOX.c.status.in_(waiting_or_dead))
            .subquery()
        )
        rows = (
            await session.execute(
                select(ranked).where(ranked.c.rank <= limit).order_by(ranked.c.id.desc())
            )
        ).all()
        states = (
            await session.execute(select(_STATES).where(_STATES.c.aggregate_id == aggregate_id))
        ).all()
        held = set(
            (
                await session.scalars(
                    select(_LEASES.c.target).where(
                        _LEASES.c.aggregate_id == aggregate_id, _LEASES.c.locked_until > now
                    )
                )
            ).all()
        )
        known = await session.scalar(select(_USERS.c.id).where(_USERS.c.id == aggregate_id))
    if known is None and not counts and not states:
        raise NotFoundError("User", aggregate_id)
    targets = sorted({c[0] for c in counts} | {s.target for s in states} | held)
    number = {(t, st): n for t, st, n in counts}
    delivered = {
        s.target: SyncRecord(
            remote_id=s.remote_id,
            synced=dict(s.synced or {}),
            outbox_id=s.outbox_id,
            outcome=s.outcome,
            synced_at=s.synced_at,
        )
        for s in states
    }
    found = []
    for target in targets:
        mine = [_row(r) for r in rows if r.target == target]
        found.append(
            TargetSync(
                target=target,
                delivered=delivered.get(target),
                pending=number.get((target, _PENDING), 0),
                in_flight=target in held,
                dead=number.get((target, _DEAD), 0),
                waiting=[r for r in mine if r.status == _PENDING],
                dead_letters=[r for r in mine if r.status == _DEAD],
            )
        )
    return found


async def sync_records(
    store: Store, target: str, aggregate_ids: Sequence[str]
) -> dict[str, SyncRecord]:
    """What was last delivered to ``target`` of each of ``aggregate_ids`` (those with a record)."""
    if not aggregate_ids:
        return {}
    async with store.reading() as session:
        rows = await session.execute(
            select(_STATES).where(
                _STATES.c.target == target, _STATES.c.aggregate_id.in_(list(aggregate_ids))
            )
        )
        return {
            r.aggregate_id: SyncRecord(
                remote_id=r.remote_id,
                synced=dict(r.synced or {}),
                outbox_id=r.outbox_id,
                outcome=r.outcome,
                synced_at=r.synced_at,
            )
            for r in rows
        }
