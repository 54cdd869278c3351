"""Concurrent deletes of users written together (identity_store.user_deletes,
issue 15): a batch in one statement writes what the same deletes write one
after the other (``delete_at_once``), each request keeps its own outcome,
the batch is bounded, and a failing batch falls back to one delete at a
time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from identity_store import groups, user_changes, user_deletes, users
from identity_store.actor import Actor
from identity_store.errors import NotFoundError
from identity_store.models import (
    AuditEntry,
    Group,
    GroupMember,
    LifecycleTransition,
    OutboxEntry,
    ResourceCount,
    User,
)
from identity_store.store import Store
from identity_store.users import UserInput

ACTOR = Actor(name="setup", request_id="req-setup")
WHEN = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def _input(user_name: str, **columns: Any) -> UserInput:
    return UserInput(
        user_name=user_name,
        columns=columns,
        multi_values=[{"attribute": "emails", "value": user_name, "type": "work"}],
    )


def _actor(k: int) -> Actor:
    """Each delete's own actor; some a token's, one a job run's."""
    if k == 2:
        return Actor(name="job:deletion", request_id="job-run-7", job_run_id=7)
    return Actor(name=f"a{k}", token_id=f"01TOKEN{k:019d}", request_id=f"req-{k}")


@dataclass(frozen=True)
class Case:
    """Users (their groups, by index), what happens to some before the
    batch is read or written, the batch (user indexes, in queue order), and
    whether each delete is written."""

    name: str
    groups_of: list[list[int]]
    batch: list[int]
    written: list[bool]
    stale: list[int] = field(default_factory=list)
    """Changed after they were read: the batch has an old version."""
    gone: list[int] = field(default_factory=list)
    """Deleted after they were read."""
    marked: list[int] = field(default_factory=list)
    """Marked deleted after they were read without a version move."""
    suspended: list[int] = field(default_factory=list)
    """Already ``SUSPENDED``: their delete moves no lifecycle (no history)."""
    service: list[int] = field(default_factory=list)
    """Service accounts: ``INACTIVE`` at once."""


CASES = [
    Case("users of one group", [[0], [0], [0]], [0, 1, 2], [True, True, True]),
    Case(
        "users of several groups, one in two",
        [[0, 1], [1], [2], [0], []],
        [0, 1, 2, 3, 4],
        [True] * 5,
    ),
    Case("users in no group", [[], []], [1, 0], [True, True]),
    Case("a user deleted twice in one batch", [[0], [0]], [0, 1, 0], [True, True, False]),
    Case("a stale version", [[0], [0], [0]], [0, 1, 2], [True, False, True], stale=[1]),
    Case("a user already deleted", [[0], [0], [0]], [0, 1, 2], [True, False, True], gone=[1]),
    Case(
        "a user marked deleted at the version read",
        [[0], [0]],
        [0, 1],
        [False, True],
        marked=[0],
    ),
    Case(
        "lifecycles: suspended already, service account",
        [[0], [0], [0]],
        [0, 1, 2],
        [True, True, True],
        suspended=[0],
        service=[1],
    ),
    Case("a batch of one", [[0]], [0], [True]),
]


async def _world(store: Store, prefix: str, case: Case) -> tuple[list[Any], list[str], list[str]]:
    """The case's users and groups, named ``prefix``: the batch's users as
    read (before what happens to them after), the user ids, the group ids."""
    n_groups = max((g for gs in case.groups_of for g in gs), default=-1) + 1
    ids = []
    for i in range(len(case.groups_of)):
        columns = {"user_type": "SERVICE_ACCOUNT"} if i in case.service else {}
        ids.append(
            (
                await users.create_user(store, _input(f"{prefix}{i}@example.com", **columns), ACTOR)
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
    assert store.prepared is not None
    read = {r.user.id: r.user for r in await store.prepared.users(ids, groups=False)}
    for i in case.stale:
        await users.update_user(store, ids[i], _renamed(f"{prefix} changed"), ACTOR)
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
    return [read[ids[i]] for i in case.batch], ids, group_ids


def _renamed(display_name: str) -> Any:
    def change(current: Any) -> UserInput:
        data = users.current_input(current.user)
        data.columns["display_name"] = display_name
        return data

    return change


async def _state(
    store: Store, prefix: str, ids: list[str], group_ids: list[str], counts_after: int
) -> dict[str, Any]:
    """What the deletes wrote, ids replaced by their index in the world; of
    a user they did not write (changed or deleted before), its version,
    deletion and lifecycle; of a group, its version and whether they
    stamped it."""
    name = {u: f"u{i}" for i, u in enumerate(ids)} | {g: f"g{i}" for i, g in enumerate(group_ids)}
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
                .where(ResourceCount.id > counts_after, ResourceCount.resource_type == "User")
                .order_by(ResourceCount.id)
            )
        ).all()

    def details(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "userName": d["userName"].removeprefix(prefix),
            "groups": [name[g] for g in d["groups"]],
        }

    return {
        "users": sorted(
            (name[r[0]], *r[1:5], r[5] == WHEN, r[6])
            if r[3] == WHEN
            else (name[r[0]], r[1] is None, r[4], r[6])
            for r in user_rows
        ),
        "groups": sorted((name[r[0]], r[1], r[2] == WHEN) for r in group_rows),
        "members": sorted((name[g], name[m]) for g, m in members),
        "history": [(name[r[0]], *r[1:]) for r in history],
        "audit": [(name[r[0]], *r[1:6], details(r[6])) for r in audited],
        "outbox": [(name[r[0]], *r[1:]) for r in outbox],
        "counts": list(deltas),
    }


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
    """``delete_batch_at_once`` gives each delete the outcome
    ``delete_at_once`` gives it one after the other in queue order, and
    writes the same users, memberships, history, audit (with the groups
    each left), outbox and count rows, in the same order; each group's
    version moves on by the number of its members deleted."""
    actors = [_actor(k) for k in range(len(case.batch))]
    read, ids, group_ids = await _world(store, "one-", case)
    start = await _state(store, "one-", ids, group_ids, 0)
    before = await _last_count(store)
    alone = [
        await user_changes.delete_at_once(store.engine, u, a, when=WHEN)
        for u, a in zip(read, actors, strict=True)
    ]
    expected = await _state(store, "one-", ids, group_ids, before)

    read, ids, group_ids = await _world(store, "all-", case)
    before = await _last_count(store)
    together = await user_deletes.delete_batch_at_once(
        store.engine, list(zip(read, actors, strict=True)), when=WHEN
    )
    got = await _state(store, "all-", ids, group_ids, before)

    assert alone == together == case.written
    assert got == expected
    deleted = {case.batch[k] for k, w in enumerate(case.written) if w}
    left = [sum(1 for i in deleted if g in case.groups_of[i]) for g in range(len(group_ids))]
    assert [v for _, v, _ in got["groups"]] == [
        v + n for (_, v, _), n in zip(start["groups"], left, strict=True)
    ]
    assert got["members"] == sorted(
        (f"g{g}", f"u{i}")
        for i, gs in enumerate(case.groups_of)
        for g in gs
        if i not in deleted and i not in case.gone
    )
    assert [r[0] for r in got["audit"]] == [
        f"u{case.batch[k]}" for k, w in enumerate(case.written) if w
    ]
    assert got["counts"] == [-1] * len(deleted)


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
        (await users.create_user(store, _input(f"r{i}@example.com"), ACTOR)).user.id
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
        (await users.create_user(store, _input(f"l{i}@example.com"), ACTOR)).user.id
        for i in range(n)
    ]
    group = (await groups.create_group(store, "Limit", ACTOR, member_ids=ids)).group
    assert store.prepared is not None
    read = {r.user.id: r.user for r in await store.prepared.users(ids, groups=False)}
    sizes: list[int] = []
    batch_at_once = user_deletes.delete_batch_at_once

    async def counted(engine: Any, batch: Any, **kw: Any) -> list[bool]:
        sizes.append(len(batch))
        return await batch_at_once(engine, batch, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", counted)
    written = await asyncio.gather(
        *(user_deletes.delete(store.engine, read[i], ACTOR) for i in ids)
    )
    assert written == [True] * n
    assert sizes == [user_deletes.BATCH_LIMIT, 6]
    after = await groups.get_group(store, group.id)
    assert after.members == []
    assert after.group.version == group.version + n


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_failing_batch_writes_each_delete_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the batch's statement fails, nothing of it is written and each
    delete is written again alone (``delete_at_once``), each with its own
    outcome: written, or its own error."""
    ids = [
        (await users.create_user(store, _input(f"f{i}@example.com"), ACTOR)).user.id
        for i in range(4)
    ]
    group = (await groups.create_group(store, "Failing", ACTOR, member_ids=ids)).group
    assert store.prepared is not None
    read = {r.user.id: r.user for r in await store.prepared.users(ids, groups=False)}

    async def failing(engine: Any, batch: Any, **kw: Any) -> list[bool]:
        raise OperationalError("WITH", (), Exception("connection lost"))

    alone = user_changes.delete_at_once
    singles: list[str] = []

    async def single(engine: Any, user: Any, actor: Actor, **kw: Any) -> bool:
        singles.append(user.id)
        if user.id == ids[3]:
            raise OperationalError("WITH", (), Exception("its own"))
        return await alone(engine, user, actor, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", failing)
    monkeypatch.setattr(user_changes, "delete_at_once", single)
    got = await asyncio.gather(
        *(user_deletes.delete(store.engine, read[i], ACTOR) for i in ids), return_exceptions=True
    )
    assert got[:3] == [True, True, True]
    assert isinstance(got[3], OperationalError)
    assert "its own" in str(got[3])
    assert sorted(singles) == sorted(ids)
    after = await groups.get_group(store, group.id)
    assert [m.id for m in after.members or []] == [ids[3]]
    assert after.group.version == group.version + 3


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_batch_whose_count_rows_reach_a_fold_folds_them(store: Store) -> None:
    """When one of a batch's count rows is a :data:`counts.COMPACT_EVERY`-th,
    the user counts are folded into one row, as after a delete alone, and
    the total still counts the live users."""
    from identity_store import counts

    ids = [
        (await users.create_user(store, _input(f"c{i}@example.com"), ACTOR)).user.id
        for i in range(3)
    ]
    assert store.prepared is not None
    read = await store.prepared.users(ids, groups=False)

    async def near_a_fold(session: Any) -> None:
        last = int(await session.scalar(select(func.max(ResourceCount.id))) or 0)
        fold_at = (last // counts.COMPACT_EVERY + 1) * counts.COMPACT_EVERY
        await session.execute(
            text("SELECT setval(pg_get_serial_sequence('resource_counts', 'id'), :n)"),
            {"n": fold_at - 2},
        )

    await store.transaction(near_a_fold)
    written = await user_deletes.delete_batch_at_once(store.engine, [(r.user, ACTOR) for r in read])
    assert written == [True] * 3
    async with store.reading() as session:
        rows = (
            await session.scalars(
                select(ResourceCount.delta).where(ResourceCount.resource_type == "User")
            )
        ).all()
        live = await session.scalar(
            select(func.count()).select_from(User).where(User.deleted_at.is_(None))
        )
    assert len(rows) == 1, rows
    assert sum(rows) == live


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_user_named_twice_is_written_for_the_first_whatever_the_plan(
    store: Store, settings: Any
) -> None:
    """Of two deletes of one user at one version in a batch, the first is
    written (its actor's rows), whichever way the database joins the batch
    to the users (here a hash join: nested loops off)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    ids = [
        (await users.create_user(store, _input(f"t{i}@example.com"), ACTOR)).user.id
        for i in range(2)
    ]
    assert store.prepared is not None
    read = {r.user.id: r.user for r in await store.prepared.users(ids, groups=False)}
    hashing = create_async_engine(
        settings.database_url,
        connect_args={"server_settings": {"enable_nestloop": "off", "enable_mergejoin": "off"}},
    )
    try:
        batch = [(read[ids[0]], _actor(0)), (read[ids[1]], _actor(1)), (read[ids[0]], _actor(3))]
        written = await user_deletes.delete_batch_at_once(hashing, batch)
    finally:
        await hashing.dispose()
    assert written == [True, True, False]
    async with store.reading() as session:
        audited = (
            await session.execute(
                select(AuditEntry.resource_id, AuditEntry.request_id).where(
                    AuditEntry.action == "user.delete"
                )
            )
        ).all()
    assert sorted(tuple(a) for a in audited) == sorted([(ids[0], "req-0"), (ids[1], "req-1")])
