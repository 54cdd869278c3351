"""The group use cases of the store, called without HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, func, select

from identity_store import groups, users
from identity_store.actor import Actor
from identity_store.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
    VersionMismatchError,
)
from identity_store.groups import KEEP, GroupChanges
from identity_store.models import AuditEntry, GroupMember, OutboxEntry, User
from identity_store.paging import PageRequest
from identity_store.store import Store
from identity_store.users import UserInput

ACTOR = Actor(name="test")


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # one row per rule of GroupChanges
        ([("add", ["a", "b"])], (["a", "b"], [], None)),
        ([("remove", ["a"])], ([], ["a"], None)),
        ([("add", ["a"]), ("remove", ["a"])], ([], ["a"], None)),  # a later remove wins
        ([("remove", ["a"]), ("add", ["a"])], (["a"], [], None)),  # a later add wins
        ([("add", ["a"]), ("set", ["b"])], ([], [], ["b"])),  # a replace forgets both lists
        ([("set", ["b"]), ("add", ["c"])], ([], [], ["b", "c"])),  # add after set extends it
        ([("set", ["b", "c"]), ("remove", ["b"])], ([], [], ["c"])),  # remove after set
        ([("set", [])], ([], [], [])),  # remove all members
    ],
)
def test_group_changes_fold_operations_in_order(
    steps: list[tuple[str, list[str]]], expected: tuple[list[str], list[str], Any]
) -> None:
    """Operations of one request fold into what to add, remove or set, in their order."""
    changes = GroupChanges()
    for kind, ids in steps:
        {"add": changes.add_members, "remove": changes.remove_members, "set": changes.set_members}[
            kind
        ](ids)
    assert (changes.add, changes.remove, changes.replace_members) == expected
    assert (changes.display_name, changes.external_id) == (None, KEEP)


async def _user(store: Store, name: str) -> str:
    return (await users.create_user(store, UserInput(user_name=name), ACTOR)).user.id


async def _members(store: Store, group_id: str) -> list[str]:
    record = await groups.get_group(store, group_id)
    assert record.members is not None
    return sorted(m.id for m in record.members)


async def test_create_group_with_members_reads_them_back(store: Store) -> None:
    """Members are typed (User or Group) and displayed; the audit row names them
    and no outbox row is written (no downstream system keeps memberships)."""
    alice = await _user(store, "alice")
    inner = await groups.create_group(store, "Inner", ACTOR)
    outer = await groups.create_group(
        store, "Outer", ACTOR, external_id="ext-1", member_ids=[alice, inner.group.id]
    )
    assert outer.group.external_id == "ext-1"
    assert outer.members is not None
    assert sorted((m.type, m.display) for m in outer.members) == [
        ("Group", "Inner"),
        ("User", None),
    ]
    details, outbox = await _events(store, outer.group.id)
    assert sorted(details[0]["added"]) == sorted([alice, inner.group.id])
    assert outbox == []


async def test_a_taken_display_name_or_unknown_member_is_refused(store: Store) -> None:
    """displayName is unique case-insensitively; a member id naming nothing is
    a validation error and the group is not created."""
    await groups.create_group(store, "Admins", ACTOR)
    with pytest.raises(ConflictError):
        await groups.create_group(store, "ADMINS", ACTOR)
    with pytest.raises(ValidationError, match="no such member"):
        await groups.create_group(store, "Other", ACTOR, member_ids=["01NOSUCHMEMBER000000000000"])
    page = await groups.find_groups(store, PageRequest(), members=False)
    assert [r.group.display_name for r in page.rows] == ["Admins"]


async def test_change_group_adds_removes_and_renames(store: Store) -> None:
    """One change touches only the members it names, moves the version on,
    and reads members back only when asked."""
    ids = [await _user(store, f"u{i}") for i in range(3)]
    created = await groups.create_group(store, "Team", ACTOR, member_ids=ids[:2])
    changes = GroupChanges(display_name="Crew")
    changes.add_members([ids[2]])
    changes.remove_members([ids[0]])
    changed = await groups.change_group(store, created.group.id, changes, ACTOR, expected_version=1)
    assert (changed.group.display_name, changed.members) == ("Crew", None)
    assert changed.group.version > created.group.version
    assert (await groups.get_group(store, created.group.id)).group.version == changed.group.version
    assert await _members(store, created.group.id) == sorted(ids[1:])


async def test_change_and_delete_check_the_version(store: Store) -> None:
    """A change or a delete based on another version is refused and changes nothing."""
    created = await groups.create_group(store, "Versioned", ACTOR)
    with pytest.raises(VersionMismatchError):
        await groups.change_group(
            store, created.group.id, GroupChanges(display_name="X"), ACTOR, expected_version=5
        )
    with pytest.raises(VersionMismatchError):
        await groups.delete_group(store, created.group.id, ACTOR, expected_version=5)
    assert (await groups.get_group(store, created.group.id)).group.display_name == "Versioned"


async def test_concurrent_member_additions_to_one_group_all_land(store: Store) -> None:
    """Eight concurrent changes each adding one member: all eight are members,
    and each change got a version of its own."""
    ids = [await _user(store, f"c{i}") for i in range(8)]
    created = await groups.create_group(store, "Busy", ACTOR)

    async def add(member: str) -> int:
        changes = GroupChanges()
        changes.add_members([member])
        return (await groups.change_group(store, created.group.id, changes, ACTOR)).group.version

    versions = await asyncio.gather(*(add(i) for i in ids))
    assert sorted(versions) == list(range(2, 10))
    assert await _members(store, created.group.id) == sorted(ids)


async def test_delete_group_removes_its_memberships_everywhere(store: Store) -> None:
    """A deleted group is gone, with its own members and its place in parents."""
    member = await _user(store, "m")
    child = await groups.create_group(store, "Child", ACTOR, member_ids=[member])
    parent = await groups.create_group(store, "Parent", ACTOR, member_ids=[child.group.id])
    await groups.delete_group(store, child.group.id, ACTOR)
    with pytest.raises(NotFoundError):
        await groups.get_group(store, child.group.id)
    assert await _members(store, parent.group.id) == []
    async with store.reading() as session:
        left = await session.scalar(select(func.count()).select_from(GroupMember))
    assert left == 0


async def test_find_groups_pages_by_display_name_cursor(store: Store) -> None:
    """Cursor pages sorted by id visit every group once; members are read only
    when asked for."""
    for name in ("b", "a", "c"):
        await groups.create_group(store, name, ACTOR)
    first = await groups.find_groups(store, PageRequest(count=2, cursor=""), members=True)
    assert (first.total, len(first.rows)) == (3, 2)
    assert first.next_cursor
    assert all(r.members == [] for r in first.rows)
    rest = await groups.find_groups(
        store, PageRequest(count=2, cursor=first.next_cursor), members=False
    )
    assert (len(rest.rows), rest.next_cursor, rest.rows[0].members) == (1, None, None)
    names = {r.group.display_name for r in [*first.rows, *rest.rows]}
    assert names == {"a", "b", "c"}


async def _events(store: Store, group_id: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """The audit details and the outbox rows (operation, payload) of a group, oldest first."""
    async with store.reading() as session:
        details = (
            await session.scalars(
                select(AuditEntry.details)
                .where(AuditEntry.resource_id == group_id)
                .order_by(AuditEntry.id)
            )
        ).all()
        outbox = (
            await session.execute(
                select(OutboxEntry.operation, OutboxEntry.payload)
                .where(OutboxEntry.aggregate_id == group_id)
                .order_by(OutboxEntry.id)
            )
        ).all()
    return list(details), [tuple(row) for row in outbox]


async def test_events_name_only_members_really_added_or_removed(store: Store) -> None:
    """Re-adding a member or removing a non-member emits nothing for that id:
    the audit counts and ids name what happened, nothing more."""
    old, new, stranger = [await _user(store, name) for name in ("old", "new", "stranger")]
    created = await groups.create_group(store, "Truthful", ACTOR, member_ids=[old])
    changes = GroupChanges()
    changes.add_members([old, new])
    await groups.change_group(store, created.group.id, changes, ACTOR)
    changes = GroupChanges()
    changes.remove_members([stranger, old])
    await groups.change_group(store, created.group.id, changes, ACTOR)

    details, outbox = await _events(store, created.group.id)
    assert [(d.get("added"), d.get("removed")) for d in details[1:]] == [(1, 0), (0, 1)]
    assert [(d["addedIds"], d["removedIds"]) for d in details[1:]] == [([new], []), ([], [old])]
    assert outbox == []
    assert await _members(store, created.group.id) == [new]


async def test_replacing_members_emits_only_the_difference(store: Store) -> None:
    """A whole new member list (PUT) names only the members that came and went."""
    kept, gone, came = [await _user(store, name) for name in ("kept", "gone", "came")]
    created = await groups.create_group(store, "Replaced", ACTOR, member_ids=[kept, gone])
    changes = GroupChanges()
    changes.set_members([kept, came])
    await groups.change_group(store, created.group.id, changes, ACTOR)
    details, outbox = await _events(store, created.group.id)
    assert (details[-1]["added"], details[-1]["removed"]) == (1, 1)
    assert (details[-1]["addedIds"], details[-1]["removedIds"]) == ([came], [gone])
    assert outbox == []


async def test_a_change_that_changes_nothing_writes_nothing(store: Store) -> None:
    """Re-adding members, removing non-members, the same name or the same list:
    the version and lastModified stay, and no audit or outbox row is written."""
    member, stranger = await _user(store, "member"), await _user(store, "stranger")
    created = await groups.create_group(
        store, "Still", ACTOR, external_id="ext", member_ids=[member]
    )
    no_ops = [
        GroupChanges(display_name="Still", external_id="ext"),
        GroupChanges(add=[member]),
        GroupChanges(remove=[stranger]),
        GroupChanges(display_name="Still", replace_members=[member]),
    ]
    for changes in no_ops:
        changed = await groups.change_group(
            store, created.group.id, changes, ACTOR, expected_version=1
        )
        assert changed.group.version == 1
    stored = (await groups.get_group(store, created.group.id)).group
    assert (stored.version, stored.updated_at) == (1, created.group.updated_at)
    details, outbox = await _events(store, created.group.id)
    assert (len(details), len(outbox)) == (1, 0)


async def test_membership_changes_cost_the_same_whatever_the_group_size(store: Store) -> None:
    """Adding and removing members runs the same statements on a group of 3 as
    on one of 1,500, and none of them reads the group's member list."""
    async with store.sessions() as session, session.begin():
        rows = [
            User(user_name=f"m{i}", user_name_normalized=f"m{i}", lifecycle="ACTIVE")
            for i in range(1502)
        ]
        session.add_all(rows)
    ids = [row.id for row in rows]
    small = await groups.create_group(store, "Small", ACTOR, member_ids=ids[:3])
    big = await groups.create_group(store, "Big", ACTOR, member_ids=ids[:1500])

    async def run(group_id: str, newcomer: str) -> list[str]:
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        changes = GroupChanges()
        changes.add_members([newcomer])
        changes.remove_members([ids[0]])
        event.listen(store.engine.sync_engine, "before_cursor_execute", record)
        try:
            await groups.change_group(store, group_id, changes, ACTOR)
        finally:
            event.remove(store.engine.sync_engine, "before_cursor_execute", record)
        return statements

    on_small = await run(small.group.id, ids[1500])
    on_big = await run(big.group.id, ids[1501])
    assert on_small == on_big
    reads_members = [
        s for s in on_big if s.lstrip().upper().startswith("SELECT") and "group_members" in s
    ]
    assert reads_members == []
    assert len(await _members(store, big.group.id)) == 1500


BATCHES = [
    # (name, members at the start, batch: (add, remove) per change, outcome per
    #  change: version step from the start or "refused", members at the end)
    ("disjoint changes share statements", [0, 1], [([2], [0]), ([3], [1])], [1, 2], [2, 3]),
    (
        "a no-op keeps the version of its place",
        [0],
        [([1], []), ([0], [4]), ([2], [])],
        [1, 1, 2],
        [0, 1, 2],
    ),
    ("the same member added twice is added once", [], [([1], []), ([1], [])], [1, 1], [1]),
    ("add then remove of one member, in order", [], [([1], []), ([], [1])], [1, 2], []),
    ("remove then add of one member, in order", [1], [([], [1]), ([1], [])], [1, 2], [1]),
    (
        "an unknown member refuses that change only",
        [0],
        [([1], []), (["nobody"], [0]), ([2], [])],
        [1, "refused", 2],
        [0, 1, 2],
    ),
    (
        "the group itself refuses that change only",
        [],
        [(["self"], []), ([1], [])],
        ["refused", 1],
        [1],
    ),
    ("a nested group is a member", [], [(["inner"], []), ([1], ["inner"])], [1, 2], [1]),
]


@pytest.mark.parametrize(
    ("members", "batch", "outcomes", "final"),
    [row[1:] for row in BATCHES],
    ids=[row[0] for row in BATCHES],
)
async def test_a_batch_of_membership_changes_is_applied_in_order(
    store: Store,
    members: list[Any],
    batch: list[tuple[list[Any], list[Any]]],
    outcomes: list[Any],
    final: list[Any],
) -> None:
    """Changes of several requests applied in one transaction give each the
    outcome it has applied alone in their order: its version, its refusal,
    its own audit row with its actor; the members are those of that order."""
    from identity_store.group_changes import MemberChange, load_group, write_member_batch

    users = [await _user(store, f"b{i}") for i in range(5)]
    inner = (await groups.create_group(store, "Inner", ACTOR)).group.id
    start_members = [inner if m == "inner" else users[m] for m in members]
    created = await groups.create_group(store, "Batched", ACTOR, member_ids=start_members)
    gid = created.group.id

    def ids(items: list[Any]) -> list[str]:
        named = {"nobody": "01NOSUCHMEMBER000000000000", "self": gid, "inner": inner}
        return [named[i] if isinstance(i, str) else users[i] for i in items]

    actors = [Actor(name=f"a{k}", request_id=f"req-{k}") for k in range(len(batch))]
    changes = [
        MemberChange(ids(add), ids(remove), actor)
        for (add, remove), actor in zip(batch, actors, strict=True)
    ]

    async def work(session: Any) -> list[Any]:
        group = await load_group(session, gid)
        return await write_member_batch(session, group, changes)

    got = await store.transaction(work)
    assert [
        "refused" if isinstance(o, ValidationError) else o - created.group.version for o in got
    ] == outcomes
    assert await _members(store, gid) == sorted(ids(final))
    steps = max((o for o in outcomes if o != "refused"), default=0)
    assert (await groups.get_group(store, gid)).group.version == created.group.version + steps
    details, outbox = await _events(store, gid)
    assert len(details) == 1 + steps
    assert outbox == []
    changed, seen = [], 0
    for k, outcome in enumerate(outcomes):
        if outcome != "refused" and outcome > seen:
            changed.append(f"req-{k}")
            seen = outcome
    async with store.reading() as session:
        audited = (
            await session.execute(
                select(AuditEntry.request_id, AuditEntry.actor)
                .where(AuditEntry.resource_id == gid, AuditEntry.action == "group.patch")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert sorted(tuple(row) for row in audited) == [(r, f"a{r[4:]}") for r in changed]


AT_ONCE_LEAVES_TO_THE_TRANSACTION = {
    "the same member added twice is added once",  # a member named by two changes
    "add then remove of one member, in order",
    "remove then add of one member, in order",
    "an unknown member refuses that change only",  # refused by the transaction's path
    "a nested group is a member",  # "inner" added, then removed
}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("name", "members", "batch", "outcomes", "final"),
    BATCHES,
    ids=[row[0] for row in BATCHES],
)
async def test_a_batch_in_one_statement_gives_what_the_transaction_gives(
    store: Store,
    name: str,
    members: list[Any],
    batch: list[tuple[list[Any], list[Any]]],
    outcomes: list[Any],
    final: list[Any],
) -> None:
    """``write_member_batch_at_once`` (PostgreSQL, one statement) gives each
    change the outcome ``write_member_batch`` gives it, writes the same
    members and audit rows (details, actors, request ids, in queue order)
    and moves the version on as far; a batch it leaves to the transaction
    (a member named twice, an unknown member) it leaves untouched."""
    from identity_store.group_changes import (
        MemberChange,
        load_group,
        write_member_batch,
        write_member_batch_at_once,
    )

    users = [await _user(store, f"s{i}") for i in range(5)]
    inner = (await groups.create_group(store, "Inner1", ACTOR)).group.id
    start_members = [inner if m == "inner" else users[m] for m in members]
    twins = [
        (await groups.create_group(store, f"Twin{n}", ACTOR, member_ids=start_members)).group
        for n in range(2)
    ]

    def changes(gid: str) -> list[MemberChange]:
        named = {"nobody": "01NOSUCHMEMBER000000000000", "self": gid, "inner": inner}
        return [
            MemberChange(
                [named[i] if isinstance(i, str) else users[i] for i in add],
                [named[i] if isinstance(i, str) else users[i] for i in remove],
                Actor(name=f"a{k}", request_id=f"req-{k}", token_id=None),
            )
            for k, (add, remove) in enumerate(batch)
        ]

    async def work(session: Any) -> list[Any]:
        group = await load_group(session, twins[0].id)
        return await write_member_batch(session, group, changes(twins[0].id))

    expected = await store.transaction(work)
    at_once = await write_member_batch_at_once(store.engine, twins[1].id, changes(twins[1].id))

    async def audited(gid: str) -> list[tuple[Any, ...]]:
        async with store.reading() as session:
            rows = await session.execute(
                select(AuditEntry.details, AuditEntry.actor, AuditEntry.request_id)
                .where(AuditEntry.resource_id == gid, AuditEntry.action == "group.patch")
                .order_by(AuditEntry.id)
            )
            return [tuple(row) for row in rows]

    if name in AT_ONCE_LEAVES_TO_THE_TRANSACTION:
        assert at_once is None
        assert await _members(store, twins[1].id) == sorted(start_members)
        assert (await groups.get_group(store, twins[1].id)).group.version == twins[1].version
        assert await audited(twins[1].id) == []
        return
    assert at_once is not None
    group, got = at_once

    def steps(found: list[Any], start: int) -> list[Any]:
        return ["refused" if isinstance(o, ValidationError) else o - start for o in found]

    assert steps(got, twins[1].version) == steps(expected, twins[0].version) == outcomes
    assert [str(o) for o in got if isinstance(o, ValidationError)] == [
        str(o) for o in expected if isinstance(o, ValidationError)
    ]
    assert await _members(store, twins[1].id) == await _members(store, twins[0].id)
    stored = (await groups.get_group(store, twins[1].id)).group
    assert stored.version == group.version
    assert stored.version - twins[1].version == max(
        (o for o in outcomes if o != "refused"), default=0
    )
    mine = await audited(twins[1].id)
    assert [row[2] for row in mine] == sorted(row[2] for row in mine)  # in queue order
    assert mine == sorted(await audited(twins[0].id), key=lambda row: str(row[2]))
