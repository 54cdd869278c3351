"""The resolver (identity_store/resolver.py): one row per rule of who holds
what, on both databases, over one world of users, nested groups (with a
cycle), roles and bindings built through the store's own use cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import groups, rbac, resolver, users
from identity_store.actor import Actor
from identity_store.errors import NotFoundError
from identity_store.groups import GroupChanges
from identity_store.models import User
from identity_store.rbac import BindingInput, Resource, RoleInput
from identity_store.resolver import CheckRequest
from identity_store.store import Store
from identity_store.user_changes import UserInput
from tests.rbac_support import assert_grants_kept

ACTOR = Actor(name="test", request_id="req-rbac")
DOC42 = Resource("doc", "42")
DOC43 = Resource("doc", "43")


@dataclass
class World:
    store: Store
    ids: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


async def _user(store: Store, name: str) -> str:
    columns = {"idp_username": name, "idp_cloud_username": f"{name}@corp.example"}
    created = await users.create_user(store, UserInput(user_name=name, columns=columns), ACTOR)
    return created.user.id


@pytest.fixture
async def world(store: Store, engine: AsyncEngine) -> World:
    """alice ∈ G1 ∈ G2 ∈ G3 ∈ G1 (a cycle); bob, carol (SUSPENDED), dave
    (blocked), erin (CREATED), frank ∈ G3 only, gina (deleted over SCIM).
    Roles reader {doc.read},
    writer {doc.read, doc.write}, admin {admin.all}."""
    names = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
    ids = {n: await _user(store, n) for n in names}
    g1 = (await groups.create_group(store, "G1", ACTOR, member_ids=[ids["alice"]])).group.id
    g2 = (await groups.create_group(store, "G2", ACTOR, member_ids=[g1])).group.id
    g3 = (await groups.create_group(store, "G3", ACTOR, member_ids=[g2, ids["frank"]])).group.id
    await groups.change_group(store, g1, GroupChanges(add=[g3]), ACTOR)
    ids |= {"G1": g1, "G2": g2, "G3": g3}
    for role, permissions in (
        ("reader", ["doc.read"]),
        ("writer", ["doc.read", "doc.write"]),
        ("admin", ["admin.all"]),
    ):
        await rbac.create_role(store, role, RoleInput(role.title(), None, permissions), ACTOR)
    people = [ids[n] for n in ("alice", "carol", "dave", "erin", "gina")]
    bindings = {
        "b-direct": BindingInput(people, [], ["reader"], []),
        "b-perm": BindingInput([ids["bob"]], [], [], ["report.view"]),
        "b-group": BindingInput([], [g3], ["writer"], []),
        "b-res": BindingInput([ids["alice"]], [], [], ["doc.delete"], DOC42),
    }
    for binding_id, binding in bindings.items():
        await rbac.create_binding(store, binding, ACTOR, binding_id=binding_id)
    await rbac.replace_group_roles(store, g2, ["admin"], ACTOR)
    await rbac.replace_user_roles(store, ids["bob"], ["reader"], ACTOR)
    await users.delete_user(store, ids["gina"], ACTOR)
    async with engine.begin() as connection:
        for name, values in (
            ("carol", {"lifecycle": "SUSPENDED"}),
            ("dave", {"blocked": True}),
            ("erin", {"lifecycle": "CREATED"}),
        ):
            await connection.execute(update(User).where(User.id == ids[name]).values(**values))
    await assert_grants_kept(store)
    return World(store, ids)


Path = tuple[str, str | None, str | None, str | None, str | None]
"""(source, binding, role, group, via group)."""

CHECKS: list[tuple[str, str, Resource | None, bool, str, list[Path]]] = [
    # user, permission, resource, allowed, reason code, paths (granted / other-resource)
    (
        "alice",
        "doc.read",
        None,
        True,
        "granted",
        [
            ("binding", "b-direct", "reader", None, None),
            ("binding", "b-group", "writer", "G3", "G1"),
        ],
    ),
    ("alice", "doc.write", None, True, "granted", [("binding", "b-group", "writer", "G3", "G1")]),
    ("alice", "admin.all", None, True, "granted", [("group-role", None, "admin", "G2", "G1")]),
    ("frank", "doc.write", None, True, "granted", [("binding", "b-group", "writer", "G3", None)]),
    # The cycle: frank's G3 is a member of G1, so frank is in G2 too.
    ("frank", "admin.all", None, True, "granted", [("group-role", None, "admin", "G2", "G3")]),
    ("frank", "report.view", None, False, "no-grant", []),
    (
        "alice",
        "doc.delete",
        None,
        False,
        "other-resource",
        [("binding", "b-res", None, None, None)],
    ),
    ("alice", "doc.delete", DOC42, True, "granted", [("binding", "b-res", None, None, None)]),
    (
        "alice",
        "doc.delete",
        DOC43,
        False,
        "other-resource",
        [("binding", "b-res", None, None, None)],
    ),
    (
        "alice",
        "doc.read",
        DOC42,
        True,
        "granted",
        [
            ("binding", "b-direct", "reader", None, None),
            ("binding", "b-group", "writer", "G3", "G1"),
        ],
    ),
    ("bob", "report.view", None, True, "granted", [("binding", "b-perm", None, None, None)]),
    ("bob", "doc.read", None, True, "granted", [("user-role", None, "reader", None, None)]),
    ("bob", "doc.write", None, False, "no-grant", []),
    ("carol", "doc.read", None, False, "not-active", []),
    ("dave", "doc.read", None, False, "blocked", []),
    ("erin", "doc.read", None, False, "not-active", []),
    ("nobody", "doc.read", None, False, "user-not-found", []),
    ("gina", "doc.read", None, False, "user-not-found", []),
]


def _paths(world: World, paths: list[Path]) -> list[Path]:
    def named(value: str | None) -> str | None:
        return world.ids.get(value, value) if value else value

    return [(s, b, r, named(g), named(v)) for s, b, r, g, v in paths]


@pytest.mark.parametrize(
    ("user", "permission", "resource", "allowed", "code", "paths"),
    CHECKS,
    ids=[f"{c[0]} {c[1]} {c[2].id if c[2] else 'everywhere'}" for c in CHECKS],
)
async def test_a_check_answers_and_explains_each_rule(
    world: World,
    user: str,
    permission: str,
    resource: Resource | None,
    allowed: bool,
    code: str,
    paths: list[Path],
) -> None:
    """Each rule of the model decides the check, and the reasons name every path."""
    user_id = world.ids.get(user, "01NOSUCHUSER0000000000000")
    decision = await resolver.check(world.store, CheckRequest(user_id, permission, resource))
    assert decision.allowed is allowed
    assert {r.code for r in decision.reasons} == {code}
    found = [
        (r.source, r.binding_id, r.role_id, r.group_id, r.via_group_id) for r in decision.reasons
    ]
    if paths:
        assert found == _paths(world, paths)
    assert decision.revision == await rbac.revision(world.store)
    assert all(r.message for r in decision.reasons)


async def test_a_batch_answers_each_check_in_order_at_one_revision(world: World) -> None:
    """check_many gives the same decisions as one check each, in order."""
    requests = [
        CheckRequest(world.ids.get(u, "01NOSUCHUSER0000000000000"), p, r) for u, p, r, *_ in CHECKS
    ]
    batch = await resolver.check_many(world.store, requests)
    singles = [await resolver.check(world.store, r) for r in requests]
    assert [(d.allowed, d.reasons, d.revision) for d in batch] == [
        (d.allowed, d.reasons, d.revision) for d in singles
    ]
    assert [d.request for d in batch] == requests


PERMISSIONS: list[tuple[str, Resource | None, set[tuple[str, str | None]], set[str]]] = [
    (
        "alice",
        None,
        {
            ("admin.all", None),
            ("doc.read", None),
            ("doc.write", None),
            ("doc.delete", "42"),
        },
        {"reader", "writer", "admin"},
    ),
    (
        "alice",
        DOC42,
        {("admin.all", None), ("doc.read", None), ("doc.write", None), ("doc.delete", "42")},
        {"reader", "writer", "admin"},
    ),
    (
        "alice",
        DOC43,
        {("admin.all", None), ("doc.read", None), ("doc.write", None)},
        {"reader", "writer", "admin"},
    ),
    ("bob", None, {("report.view", None), ("doc.read", None)}, {"reader"}),
    (
        "frank",
        None,
        {("doc.read", None), ("doc.write", None), ("admin.all", None)},
        {"writer", "admin"},
    ),
    ("carol", None, set(), set()),
    ("dave", None, set(), set()),
]


@pytest.mark.parametrize(("user", "resource", "expected", "roles"), PERMISSIONS)
async def test_effective_permissions_follow_each_rule(
    world: World,
    user: str,
    resource: Resource | None,
    expected: set[tuple[str, str | None]],
    roles: set[str],
) -> None:
    """A user's permissions: everywhere, plus on the resource asked (all
    resources when none is asked); nothing for a user not ACTIVE or blocked."""
    held = await resolver.permissions(world.store, world[user], resource)
    assert {(p.permission, p.resource.id if p.resource else None) for p in held.permissions} == (
        expected
    )
    assert set(held.roles) == roles
    assert held.revision == await rbac.revision(world.store)


async def test_permissions_of_an_unknown_user_are_not_found(world: World) -> None:
    """An id naming no user is a NotFoundError, not an empty set."""
    with pytest.raises(NotFoundError):
        await resolver.permissions(world.store, "01NOSUCHUSER0000000000000")


HOLDERS: list[tuple[str, Resource | None, list[str]]] = [
    ("doc.read", None, ["alice", "bob", "frank"]),
    ("doc.write", None, ["alice", "frank"]),
    ("admin.all", None, ["alice", "frank"]),
    ("doc.delete", None, []),
    ("doc.delete", DOC42, ["alice"]),
    ("report.view", DOC42, ["bob"]),
    ("nothing", None, []),
]


@pytest.mark.parametrize(("permission", "resource", "expected"), HOLDERS)
async def test_holders_are_the_active_users_a_check_allows(
    world: World, permission: str, resource: Resource | None, expected: list[str]
) -> None:
    """Who holds P is exactly the set of active users a check allows."""
    page = await resolver.holders(world.store, permission, resource)
    assert page.user_ids == sorted(world[n] for n in expected)
    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        decision = await resolver.check(
            world.store, CheckRequest(world[name], permission, resource)
        )
        assert decision.allowed is (name in expected), name


async def test_holders_page_by_id(world: World) -> None:
    """Pages of one holder each walk the whole list once, in id order."""
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await resolver.holders(world.store, "doc.read", after=after, limit=1)
        seen.extend(page.user_ids)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(world[n] for n in ("alice", "bob", "frank"))


async def test_a_role_change_is_visible_to_the_next_check(world: World) -> None:
    """Replacing a role's permissions bumps the revision and the very next check sees it."""
    before = await resolver.check(world.store, CheckRequest(world["bob"], "doc.read"))
    changed = await rbac.replace_role(
        world.store, "reader", RoleInput("Reader", None, ["doc.list"]), ACTOR
    )
    after = await resolver.check(world.store, CheckRequest(world["bob"], "doc.read"))
    assert (before.allowed, after.allowed) == (True, False)
    assert after.revision == changed.revision == before.revision + 1
    await assert_grants_kept(world.store)
    listed = await resolver.check(world.store, CheckRequest(world["bob"], "doc.list"))
    assert (listed.allowed, listed.revision) == (True, changed.revision)


async def test_a_removed_membership_takes_the_groups_grants_away(world: World) -> None:
    """Leaving G1 cuts alice from G2 and G3 and what they grant."""
    await groups.change_group(
        world.store, world["G1"], GroupChanges(remove=[world["alice"]]), ACTOR
    )
    decision = await resolver.check(world.store, CheckRequest(world["alice"], "doc.write"))
    assert (decision.allowed, decision.reasons[0].code) == (False, "no-grant")


async def test_a_check_of_a_value_the_database_cannot_hold_is_refused(world: World) -> None:
    """A NUL in an id reaches the store as ValueRefusedError (a 400), not a crash."""
    from identity_store.errors import ValueRefusedError

    decisions = []
    try:
        decisions = await resolver.check_many(
            world.store,
            [CheckRequest("a\x00b", "doc.read"), CheckRequest(world["bob"], "doc.read")],
        )
    except ValueRefusedError:
        assert not world.store.settings.is_sqlite, "SQLite holds a NUL in a bound string"
        return
    assert world.store.settings.is_sqlite
    assert [d.allowed for d in decisions] == [False, True]


async def test_many_checks_of_one_user_answer_as_single_checks(world: World) -> None:
    """A batch of many permissions of one user (read by holder on
    PostgreSQL) answers exactly as one check each."""
    permissions = ["doc.read", "doc.write", "doc.delete", "admin.all", "report.view", "none"]
    requests = [
        CheckRequest(world[user], permission, resource)
        for user in ("alice", "frank")
        for permission in permissions
        for resource in (None, DOC42, DOC43)
    ] * 2
    assert len(requests) >= resolver.CHECKS_PER_USER_BY_HOLDER * 2
    batch = await resolver.check_many(world.store, requests)
    singles = [await resolver.check(world.store, r) for r in requests]
    assert [(d.allowed, d.reasons) for d in batch] == [(d.allowed, d.reasons) for d in singles]
    assert sum(d.allowed for d in batch) == 2 * (10 + 9)  # alice 10, frank 9 of 18 each


async def test_a_batch_split_in_parts_answers_as_single_checks(world: World) -> None:
    """A batch big enough to be split (PostgreSQL: its parts run at once on
    several connections) answers exactly as one check each, in order."""
    base = [
        CheckRequest(world.ids.get(u, "01NOSUCHUSER0000000000000"), p, r) for u, p, r, *_ in CHECKS
    ]
    requests = (base * (resolver.SPLIT_AT // len(base) + 1))[: resolver.SPLIT_AT + 7]
    assert world.store.settings.authz_batch_parallelism > 1
    assert len({r.user_id for r in requests}) > 1
    batch = await resolver.check_many(world.store, requests)
    singles = {r: await resolver.check(world.store, r) for r in base}
    assert [(d.request, d.allowed, d.reasons) for d in batch] == [
        (r, singles[r].allowed, singles[r].reasons) for r in requests
    ]
    assert len({d.revision for d in batch}) == 1


PARTS = [
    # (checks as user letters, parts) -> expected groups of positions
    ("aaaa", 2, [[0, 1, 2, 3]]),
    ("abab", 2, [[0, 2], [1, 3]]),
    ("aaab", 2, [[0, 1, 2], [3]]),
    ("abcabc", 1, [[0, 3, 1, 4, 2, 5]]),
    ("aabbc", 2, [[0, 1, 4], [2, 3]]),
    ("abcd", 3, [[0, 3], [1], [2]]),
    ("", 2, []),
]


@pytest.mark.parametrize(("users", "parts", "expected"), PARTS)
def test_a_batch_is_split_by_user_into_balanced_parts(
    users: str, parts: int, expected: list[list[int]]
) -> None:
    requests = [CheckRequest(user, "p") for user in users]
    assert resolver._parts(requests, parts) == expected
