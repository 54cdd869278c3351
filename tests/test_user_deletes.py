"""User deletes on PostgreSQL (identity_store.user_deletes, issue 15): one
statement per batch that reads as it writes; a batch writes what the same
deletes write one after the other in a session (``mark_deleted``, as on
SQLite), each request keeps its own outcome (done, 404, 412), the batch is
bounded, a failing batch falls back to one delete at a time, and a delete
waiting on a row another writer holds decides on the row that writer
committed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from identity_store import groups, user_changes, user_deletes, users
from identity_store.actor import Actor
from identity_store.errors import NotFoundError, VersionMismatchError
from identity_store.models import (
    AuditEntry,
    Group,
    GroupMember,
    LifecycleTransition,
    OutboxEntry,
    ResourceCount,
    User,
    new_id,
    utcnow,
)
from identity_store.store import Store
from identity_store.user_deletes import Deletion
from identity_store.versions import check_version
from tests.user_support import count_rows_before_a_fold, renamed, user_count_rows, user_input

ACTOR = Actor(name="setup", request_id="req-setup")
WHEN = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
NOBODY = -1
"""In a case's batch: an id no user has."""


def _actor(k: int) -> Actor:
    """Each delete's own actor; some a token's, one a job run's."""
    if k == 2:
        return Actor(name="job:deletion", request_id="job-run-7", job_run_id=7)
    return Actor(name=f"a{k}", token_id=f"01TOKEN{k:019d}", request_id=f"req-{k}")


@dataclass(frozen=True)
class Case:
    """Users (their groups, by index), what happens to some before the
    batch, the batch (user index and ``If-Match`` of each request, in queue
    order), and each request's outcome: ``done``, ``404`` or ``412``."""

    name: str
    groups_of: list[list[int]]
    batch: list[tuple[int, int | None]]
    outcomes: list[str]
    changed: list[int] = field(default_factory=list)
    """Updated before the batch: at version 2."""
    gone: list[int] = field(default_factory=list)
    """Deleted before the batch."""
    marked: list[int] = field(default_factory=list)
    """Marked deleted before the batch without a version move."""
    suspended: list[int] = field(default_factory=list)
    """Already ``SUSPENDED``: their delete moves no lifecycle (no history)."""
    service: list[int] = field(default_factory=list)
    """Service accounts: ``INACTIVE`` at once."""


CASES = [
    Case("users of one group", [[0], [0], [0]], [(0, None), (1, None), (2, None)], ["done"] * 3),
    Case(
        "users of several groups, one in two",
        [[0, 1], [1], [2], [0], []],
        [(i, None) for i in range(5)],
        ["done"] * 5,
    ),
    Case("users in no group", [[], []], [(1, None), (0, None)], ["done", "done"]),
    Case(
        "a user deleted twice in one batch",
        [[0], [0]],
        [(0, None), (1, None), (0, None)],
        ["done", "done", "404"],
    ),
    Case(
        "a user twice, the first refused by its If-Match",
        [[0], [0]],
        [(0, 7), (1, None), (0, 1)],
        ["412", "done", "done"],
    ),
    Case(
        "If-Match: the version stored, an older one, none on a changed user",
        [[0], [0], [0], [0]],
        [(0, 1), (1, 1), (2, None), (3, 2)],
        ["done", "412", "done", "done"],
        changed=[1, 2, 3],
    ),
    Case(
        "a user already deleted, an id no user has",
        [[0], [0], [0]],
        [(0, None), (1, None), (NOBODY, None), (2, 1)],
        ["done", "404", "404", "done"],
        gone=[1],
    ),
    Case(
        "a user marked deleted without a version move",
        [[0], [0]],
        [(0, 1), (1, None)],
        ["404", "done"],
        marked=[0],
    ),
    Case(
        "lifecycles: suspended already, service account",
        [[0], [0], [0]],
        [(0, None), (1, None), (2, None)],
        ["done"] * 3,
        suspended=[0],
        service=[1],
    ),
    Case("a batch of one", [[0]], [(0, None)], ["done"]),
]


async def _world(store: Store, prefix: str, case: Case) -> tuple[list[str], list[str]]:
    """The case's users and groups, named ``prefix``, and what happens to
    them before the batch: the user ids, the group ids."""
    n_groups = max((g for gs in case.groups_of for g in gs), default=-1) + 1
    ids = []
    for i in range(len(case.groups_of)):
        columns = {"user_type": "SERVICE_ACCOUNT"} if i in case.service else {}
        ids.append(
            (
                await users.create_user(
                    store, user_input(f"{prefix}{i}@example.com", **columns), ACTOR
                )
            ).user.id
        )
    group_ids = [
        (
            await groups.create_group(
                store,
                f"{prefix}G{g}",
                ACTOR,
                member_ids=[ids[i] for i, gs in enumerate(case.groups_of) if g in gs],
            )
        ).group.id
        for g in range(n_groups)
    ]
    if case.suspended:

        async def suspend(session: Any) -> None:
            await session.execute(
                update(User)
                .where(User.id.in_([ids[i] for i in case.suspended]))
                .values(lifecycle="SUSPENDED")
            )

        await store.transaction(suspend)
    for i in case.changed:
        await users.update_user(store, ids[i], renamed(f"{prefix} changed"), ACTOR)
    for i in case.gone:
        await users.delete_user(store, ids[i], ACTOR)
    if case.marked:

        async def mark(session: Any) -> None:
            await session.execute(
                update(User)
                .where(User.id.in_([ids[i] for i in case.marked]))
                .values(deleted_at=WHEN)
            )

        await store.transaction(mark)
    return ids, group_ids


def _deletions(case: Case, ids: list[str]) -> list[Deletion]:
    return [
        Deletion(new_id() if i == NOBODY else ids[i], _actor(k), if_match)
        for k, (i, if_match) in enumerate(case.batch)
    ]


async def _alone(store: Store, deletion: Deletion) -> Exception | None:
    """The delete in a session, as SQLite's (``users.delete_user`` without
    the prepared reads)."""

    async def work(session: Any) -> None:
        user = await user_changes.load_user(session, deletion.user_id, for_update=True)
        check_version(user.version, deletion.expected_version)
        await user_changes.mark_deleted(session, user, deletion.actor)

    try:
        await store.transaction(work)
    except (NotFoundError, VersionMismatchError) as exc:
        return exc
    return None


def _named(outcome: Exception | None) -> str:
    if outcome is None:
        return "done"
    if isinstance(outcome, NotFoundError):
        return "404"
    assert isinstance(outcome, VersionMismatchError), outcome
    return "412"


@dataclass
class State:
    """What the deletes wrote, ids replaced by their index in the world and
    each time by ``new`` (at or after the deletes began) or ``old``."""

    rows: dict[str, Any]
    times: set[datetime]
    """The new times, as written."""


@dataclass(frozen=True)
class Begin:
    """When the deletes began, and the last count row written before."""

    since: datetime
    counts_after: int


async def _begin(store: Store) -> Begin:
    return Begin(utcnow(), await _last_count(store))


async def _state(
    store: Store, prefix: str, ids: list[str], group_ids: list[str], begin: Begin
) -> State:
    name = {u: f"u{i}" for i, u in enumerate(ids)} | {g: f"g{i}" for i, g in enumerate(group_ids)}
    times: set[datetime] = set()

    def t(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        if moment >= begin.since:
            times.add(moment)
            return "new"
        return "old"

    async with store.reading() as session:
        user_rows = (
            await session.execute(
                select(
                    User.id,
                    User.deleted_at,
                    User.active,
                    User.updated_at,
                    User.lifecycle,
                    User.lifecycle_changed_at,
                    User.version,
                ).where(User.id.in_(ids))
            )
        ).all()
        group_rows = (
            await session.execute(
                select(Group.id, Group.version, Group.updated_at).where(Group.id.in_(group_ids))
            )
        ).all()
        members = (
            await session.execute(
                select(GroupMember.group_id, GroupMember.member_id).where(
                    GroupMember.group_id.in_(group_ids)
                )
            )
        ).all()
        history = (
            await session.execute(
                select(
                    LifecycleTransition.user_id,
                    LifecycleTransition.from_state,
                    LifecycleTransition.to_state,
                    LifecycleTransition.cause,
                    LifecycleTransition.actor,
                    LifecycleTransition.message,
                    LifecycleTransition.occurred_at,
                    LifecycleTransition.request_id,
                    LifecycleTransition.job_run_id,
                )
                .where(
                    LifecycleTransition.user_id.in_(ids),
                    LifecycleTransition.request_id != ACTOR.request_id,
                )
                .order_by(LifecycleTransition.id)
            )
        ).all()
        audited = (
            await session.execute(
                select(
                    AuditEntry.resource_id,
                    AuditEntry.occurred_at,
                    AuditEntry.token_id,
                    AuditEntry.actor,
                    AuditEntry.resource_type,
                    AuditEntry.request_id,
                    AuditEntry.details,
                )
                .where(
                    AuditEntry.resource_id.in_(ids),
                    AuditEntry.action == "user.delete",
                    AuditEntry.request_id != ACTOR.request_id,
                )
                .order_by(AuditEntry.id)
            )
        ).all()
        outbox = (
            await session.execute(
                select(
                    OutboxEntry.aggregate_id,
                    OutboxEntry.target,
                    OutboxEntry.aggregate_type,
                    OutboxEntry.payload,
                    OutboxEntry.status,
                    OutboxEntry.attempts,
                    OutboxEntry.next_attempt_at,
                    OutboxEntry.created_at,
                    OutboxEntry.request_id,
                    OutboxEntry.last_error,
                    OutboxEntry.processed_at,
                )
                .where(
                    OutboxEntry.aggregate_id.in_(ids),
                    OutboxEntry.operation == "delete",
                    OutboxEntry.request_id != ACTOR.request_id,
                )
                .order_by(OutboxEntry.id)
            )
        ).all()
        deltas = (
            await session.scalars(
                select(ResourceCount.delta)
                .where(
                    ResourceCount.resource_type == "User",
                    ResourceCount.id > begin.counts_after,
                )
                .order_by(ResourceCount.id)
            )
        ).all()

    def details(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "userName": d["userName"].removeprefix(prefix),
            "groups": [name[g] for g in d["groups"]],
        }

    rows = {
        "users": sorted(
            (name[r[0]], t(r[1]), r[2], t(r[3]), r[4], t(r[5]), r[6]) for r in user_rows
        ),
        "groups": sorted((name[r[0]], r[1], t(r[2])) for r in group_rows),
        "members": sorted((name[g], name[m]) for g, m in members),
        "history": [(name[r[0]], *r[1:6], t(r[6]), *r[7:]) for r in history],
        "audit": [(name[r[0]], t(r[1]), *r[2:6], details(r[6])) for r in audited],
        "outbox": [(name[r[0]], *r[1:6], t(r[6]), t(r[7]), *r[8:]) for r in outbox],
        "counts": list(deltas),
    }
    return State(rows, times)


async def _last_count(store: Store) -> int:
    async with store.reading() as session:
        return int(
            await session.scalar(
                select(ResourceCount.id).order_by(ResourceCount.id.desc()).limit(1)
            )
            or 0
        )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_a_batch_in_one_statement_writes_what_one_after_the_other_writes(
    store: Store, case: Case
) -> None:
    """``delete_batch_at_once`` gives each request the outcome it gets one
    after the other in a session (``mark_deleted``, SQLite's path) in
    queue order, and writes the same users, memberships, history, audit
    (with the groups each left), outbox and count rows, in the same order,
    all at one time; each group's version moves on by the number of its
    members deleted."""
    ids, group_ids = await _world(store, "one-", case)
    begin = await _begin(store)
    start = await _state(store, "one-", ids, group_ids, begin)
    alone = [await _alone(store, d) for d in _deletions(case, ids)]
    expected = await _state(store, "one-", ids, group_ids, begin)

    ids, group_ids = await _world(store, "all-", case)
    begin = await _begin(store)
    together = await user_deletes.delete_batch_at_once(store.engine, _deletions(case, ids))
    got = await _state(store, "all-", ids, group_ids, begin)

    assert [_named(o) for o in alone] == [_named(o) for o in together] == case.outcomes
    assert [str(o) for o in alone if isinstance(o, VersionMismatchError)] == [
        str(o) for o in together if isinstance(o, VersionMismatchError)
    ]
    assert got.rows == expected.rows
    assert len(got.times) == (1 if "done" in case.outcomes else 0), got.times
    deleted = {case.batch[k][0] for k, o in enumerate(case.outcomes) if o == "done"}
    left = [sum(1 for i in deleted if g in case.groups_of[i]) for g in range(len(group_ids))]
    assert [v for _, v, _ in got.rows["groups"]] == [
        v + n for (_, v, _), n in zip(start.rows["groups"], left, strict=True)
    ]
    assert got.rows["members"] == sorted(
        (f"g{g}", f"u{i}")
        for i, gs in enumerate(case.groups_of)
        for g in gs
        if i not in deleted and i not in case.gone
    )
    assert [r[0] for r in got.rows["audit"]] == [
        f"u{case.batch[k][0]}" for k, o in enumerate(case.outcomes) if o == "done"
    ]
    assert got.rows["counts"] == [-1] * len(deleted)


@dataclass(frozen=True)
class Request:
    user: int
    if_match: int | None = None
    """The ``If-Match`` version (a user is at version 1)."""


REQUEST_CASES = [
    # (name, groups of each user, concurrent deletes, outcome of each)
    ("users of one group", [[0]] * 4, [Request(i) for i in range(4)], [None] * 4),
    (
        "users of several groups and none",
        [[0, 1], [1], [], [0]],
        [Request(i) for i in range(4)],
        [None] * 4,
    ),
    ("a user deleted twice at once", [[0], [0]], [Request(0), Request(1), Request(0)], None),
    (
        "If-Match: the version read, and another",
        [[0], [0], [0]],
        [Request(0, 1), Request(1, 7), Request(2)],
        [None, "VersionMismatchError", None],
    ),
]


@pytest.mark.parametrize(
    ("groups_of", "requests", "outcomes"),
    [c[1:] for c in REQUEST_CASES],
    ids=[c[0] for c in REQUEST_CASES],
)
async def test_concurrent_deletes_each_get_their_own_outcome(
    store: Store, groups_of: list[list[int]], requests: list[Request], outcomes: list[Any] | None
) -> None:
    """Deletes asked for at once (batched on PostgreSQL) each answer what
    they answer alone: done, 412 on another ``If-Match``, 404 for the
    second of a user deleted twice; each deleted user is in no group, each
    group's version moved on by its members deleted, one audit row each."""
    ids = [
        (await users.create_user(store, user_input(f"r{i}@example.com"), ACTOR)).user.id
        for i in range(len(groups_of))
    ]
    n_groups = max((g for gs in groups_of for g in gs), default=-1) + 1
    created = [
        (
            await groups.create_group(
                store,
                f"R{g}",
                ACTOR,
                member_ids=[ids[i] for i, gs in enumerate(groups_of) if g in gs],
            )
        ).group
        for g in range(n_groups)
    ]
    got = await asyncio.gather(
        *(
            users.delete_user(
                store,
                ids[r.user],
                Actor(name="x", request_id=f"req-{k}"),
                expected_version=r.if_match,
            )
            for k, r in enumerate(requests)
        ),
        return_exceptions=True,
    )
    names = [None if o is None else type(o).__name__ for o in got]
    if outcomes is None:  # the same user twice: one is done, the other 404
        assert sorted(names, key=str) == sorted([None, None, "NotFoundError"], key=str)
    else:
        assert names == outcomes
    deleted = {r.user for r, o in zip(requests, names, strict=True) if o is None}
    for i, user_id in enumerate(ids):
        if i in deleted:
            with pytest.raises(NotFoundError):
                await users.get_user(store, user_id)
        else:
            assert (await users.get_user(store, user_id)).user.version == 1
    for g, group in enumerate(created):
        after = await groups.get_group(store, group.id)
        members = {m.id for m in after.members or []}
        assert members == {ids[i] for i, gs in enumerate(groups_of) if g in gs and i not in deleted}
        gone = sum(1 for i in deleted if g in groups_of[i])
        assert after.group.version == group.version + gone
    async with store.reading() as session:
        audited = (
            await session.scalars(
                select(AuditEntry.resource_id).where(AuditEntry.action == "user.delete")
            )
        ).all()
    assert sorted(audited) == sorted(ids[i] for i in deleted)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_batch_holds_at_most_batch_limit_deletes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More deletes queued at once than :data:`BATCH_LIMIT` are written in
    batches of at most that many, each delete once."""
    n = user_deletes.BATCH_LIMIT + 6
    ids = [
        (await users.create_user(store, user_input(f"l{i}@example.com"), ACTOR)).user.id
        for i in range(n)
    ]
    group = (await groups.create_group(store, "Limit", ACTOR, member_ids=ids)).group
    sizes: list[int] = []
    batch_at_once = user_deletes.delete_batch_at_once

    async def counted(engine: Any, batch: Any, **kw: Any) -> list[Exception | None]:
        sizes.append(len(batch))
        return await batch_at_once(engine, batch, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", counted)
    outcomes = await asyncio.gather(
        *(user_deletes.delete(store.engine, Deletion(i, ACTOR)) for i in ids)
    )
    assert outcomes == [None] * n
    assert sizes == [user_deletes.BATCH_LIMIT, 6]
    after = await groups.get_group(store, group.id)
    assert after.members == []
    assert after.group.version == group.version + n


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_failing_batch_writes_each_delete_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the batch's statement fails, nothing of it is written and each
    delete is written again alone (a batch of one), each with its own
    outcome: written, or its own error."""
    ids = [
        (await users.create_user(store, user_input(f"f{i}@example.com"), ACTOR)).user.id
        for i in range(4)
    ]
    group = (await groups.create_group(store, "Failing", ACTOR, member_ids=ids)).group
    batch_at_once = user_deletes.delete_batch_at_once
    singles: list[str] = []

    async def failing(engine: Any, batch: Any, **kw: Any) -> list[Exception | None]:
        if len(batch) > 1:
            raise OperationalError("WITH", (), Exception("connection lost"))
        singles.append(batch[0].user_id)
        if batch[0].user_id == ids[3]:
            raise OperationalError("WITH", (), Exception("its own"))
        return await batch_at_once(engine, batch, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", failing)
    got = await asyncio.gather(
        *(user_deletes.delete(store.engine, Deletion(i, ACTOR)) for i in ids),
        return_exceptions=True,
    )
    assert got[:3] == [None, None, None]
    assert isinstance(got[3], OperationalError)
    assert "its own" in str(got[3])
    assert sorted(singles) == sorted(ids)
    after = await groups.get_group(store, group.id)
    assert [m.id for m in after.members or []] == [ids[3]]
    assert after.group.version == group.version + 3


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_when_the_statement_of_a_repeated_id_fails_the_first_keeps_its_outcome(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch naming one id twice is two statements; when the second
    fails, the deletes of the first (committed) are answered as done and
    only the repeated one gets the error, rather than all of them being
    written again alone (which would answer 404 for deletes that were
    done)."""
    ids = [
        (await users.create_user(store, user_input(f"r{i}@example.com"), ACTOR)).user.id
        for i in range(2)
    ]
    batch_at_once = user_deletes.delete_batch_at_once

    async def second_fails(engine: Any, batch: Any, **kw: Any) -> list[Exception | None]:
        if len(batch) == 1 and batch[0].actor.request_id == "req-again":
            raise OperationalError("WITH", (), Exception("connection lost"))
        return await batch_at_once(engine, batch, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", second_fails)
    again = Actor(name="x", request_id="req-again")
    got = await batch_at_once(
        store.engine,
        [Deletion(ids[0], _actor(0)), Deletion(ids[1], _actor(1)), Deletion(ids[0], again)],
    )
    assert got[:2] == [None, None]
    assert isinstance(got[2], OperationalError)
    for user_id in ids:
        with pytest.raises(NotFoundError):
            await users.get_user(store, user_id)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_batch_whose_count_rows_reach_a_fold_folds_them(store: Store) -> None:
    """When one of a batch's count rows is a :data:`counts.COMPACT_EVERY`-th,
    the user counts are folded into one row, as after a delete alone, and
    the total still counts the live users."""
    ids = [
        (await users.create_user(store, user_input(f"c{i}@example.com"), ACTOR)).user.id
        for i in range(3)
    ]

    await count_rows_before_a_fold(store, 2)
    outcomes = await user_deletes.delete_batch_at_once(
        store.engine, [Deletion(i, ACTOR) for i in ids]
    )
    assert outcomes == [None] * 3
    rows, live = await user_count_rows(store)
    assert len(rows) == 1, rows
    assert sum(rows) == live


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_user_named_twice_is_written_for_the_first_whatever_the_plan(
    store: Store, settings: Any
) -> None:
    """Of two deletes of one user in a batch, the first is written (its
    actor's rows) and the second answers 404, whichever way the database
    joins the batch to the users (here a hash join: nested loops off)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    ids = [
        (await users.create_user(store, user_input(f"t{i}@example.com"), ACTOR)).user.id
        for i in range(2)
    ]
    hashing = create_async_engine(
        settings.database_url,
        connect_args={"server_settings": {"enable_nestloop": "off", "enable_mergejoin": "off"}},
    )
    try:
        batch = [
            Deletion(ids[0], _actor(0)),
            Deletion(ids[1], _actor(1)),
            Deletion(ids[0], _actor(3)),
        ]
        outcomes = await user_deletes.delete_batch_at_once(hashing, batch)
    finally:
        await hashing.dispose()
    assert [_named(o) for o in outcomes] == ["done", "done", "404"]
    async with store.reading() as session:
        audited = (
            await session.execute(
                select(AuditEntry.resource_id, AuditEntry.request_id).where(
                    AuditEntry.action == "user.delete"
                )
            )
        ).all()
    assert sorted(tuple(a) for a in audited) == sorted([(ids[0], "req-0"), (ids[1], "req-1")])


LOCKED_CASES = [
    # (name, If-Match of the delete, outcome, the deleted user's history rows)
    ("no If-Match: deleted as the other writer left it", None, "done", []),
    ("If-Match of the version before the other writer's", 1, "412", None),
    ("If-Match of the other writer's version", 2, "done", []),
]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("if_match", "outcome", "history"),
    [c[1:] for c in LOCKED_CASES],
    ids=[c[0] for c in LOCKED_CASES],
)
async def test_a_delete_waiting_on_another_writer_decides_on_the_row_it_committed(
    store: Store, if_match: int | None, outcome: str, history: list[Any] | None
) -> None:
    """A delete whose user another transaction holds (it suspends the user,
    version 2) waits for it, then decides on the row it committed: its
    version against ``If-Match``, its lifecycle for the transition (already
    ``SUSPENDED``: no history row of the delete)."""
    user_id = (await users.create_user(store, user_input("held@example.com"), ACTOR)).user.id
    async with store.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text("UPDATE users SET lifecycle = 'SUSPENDED', version = version + 1 WHERE id = :id"),
            {"id": user_id},
        )
        deleting = asyncio.create_task(
            user_deletes.delete_batch_at_once(
                store.engine, [Deletion(user_id, _actor(0), if_match)]
            )
        )
        for _ in range(100):  # until the delete waits on the holder's lock
            async with store.engine.connect() as probe:
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query LIKE 'WITH x AS%'"
                    )
                )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the delete never waited on the held row"
        assert not deleting.done()
        await transaction.commit()
    (got,) = await deleting
    assert _named(got) == outcome
    if outcome == "412":
        assert str(got) == "the resource is at version 2, not 1"
        assert (await users.get_user(store, user_id)).user.version == 2
        return
    with pytest.raises(NotFoundError):
        await users.get_user(store, user_id)
    async with store.reading() as session:
        row = (
            await session.execute(select(User.version, User.lifecycle).where(User.id == user_id))
        ).one()
        moves = (
            await session.execute(
                select(LifecycleTransition.from_state, LifecycleTransition.to_state).where(
                    LifecycleTransition.user_id == user_id,
                    LifecycleTransition.cause == "deleted",
                )
            )
        ).all()
    assert tuple(row) == (3, "SUSPENDED")
    assert [tuple(m) for m in moves] == history
