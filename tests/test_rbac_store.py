"""The store's RBAC use cases (identity_store/rbac.py): validation, atomic
replacement with a revision, Rönd's grant and revoke, the deletion of users
and groups, the export, and the ``rond`` outbox rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from identity_store import groups, rbac, resolver, users
from identity_store.actor import Actor
from identity_store.errors import ConflictError, NotFoundError, StateError, ValidationError
from identity_store.models import AuditEntry, Binding, OutboxEntry, RbacGrant
from identity_store.rbac import BindingInput, Grant, Resource, Revoke, RoleInput
from identity_store.resolver import CheckRequest
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.user_changes import UserInput
from tests.rbac_support import assert_grants_kept

ACTOR = Actor(name="test", request_id="req-rbac")


async def _user(store: Store, name: str) -> str:
    columns = {"idp_username": name, "idp_cloud_username": f"{name}@corp.example"}
    created = await users.create_user(store, UserInput(user_name=name, columns=columns), ACTOR)
    return created.user.id


async def _count(store: Store, model: type) -> int:
    async with store.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
async def pushing(settings: Settings, store: Store) -> AsyncIterator[Store]:
    """The store of a deployment that pushes to Rönd."""
    opened = await Store.open(settings.model_copy(update={"rond_base_url": "http://127.0.0.1:9"}))
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_role_is_created_read_replaced_and_deleted(store: Store) -> None:
    """Each change returns the next revision; permissions come back sorted and unique."""
    start = await rbac.revision(store)
    created = await rbac.create_role(store, "r", RoleInput("R", "d", ["b", "a", "b"]), ACTOR)
    assert (created.value.permissions, created.revision) == (["a", "b"], start + 1)
    replaced = await rbac.replace_role(store, "r", RoleInput("R2", None, ["c"]), ACTOR)
    assert (replaced.value.name, replaced.value.permissions, replaced.revision) == (
        "R2",
        ["c"],
        start + 2,
    )
    assert (await rbac.get_role(store, "r")).permissions == ["c"]
    assert await rbac.delete_role(store, "r", ACTOR) == start + 3
    with pytest.raises(NotFoundError):
        await rbac.get_role(store, "r")
    async with store.reading() as session:
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["role.create", "role.replace", "role.delete"]


async def test_a_taken_role_id_is_a_conflict(store: Store) -> None:
    """Creating a role twice is a ConflictError on roleId; the first stays."""
    await rbac.create_role(store, "r", RoleInput("R", None, ["a"]), ACTOR)
    with pytest.raises(ConflictError) as raised:
        await rbac.create_role(store, "r", RoleInput("Other", None, []), ACTOR)
    assert raised.value.attribute == "roleId"
    assert (await rbac.get_role(store, "r")).name == "R"


BAD_ROLES = [
    ("", RoleInput("n", None, []), "roleId must be a non-empty string"),
    ("r" * 129, RoleInput("n", None, []), "roleId is 129 characters long; at most 128"),
    ("a\x00b", RoleInput("n", None, []), "roleId holds a control character or a lone surrogate"),
    ("a\ud800", RoleInput("n", None, []), "roleId holds a control character or a lone surrogate"),
    ("r", RoleInput("", None, []), "name must be a non-empty string"),
    ("r", RoleInput("n", "x\x00", []), "description holds a NUL or a lone surrogate"),
    ("r", RoleInput("n", "x" * 4097, []), "description is longer than 4096 characters"),
    (
        "r",
        RoleInput("n", None, ["p" * 256]),
        "an entry of permissions is 256 characters long; at most 255",
    ),
    (
        "r",
        RoleInput("n", None, [str(i) for i in range(10_000)]),
        "permissions has 10000 entries; at most 1000",
    ),
]


@pytest.mark.parametrize(("role_id", "role", "message"), BAD_ROLES)
async def test_a_bad_role_is_refused_with_its_reason(
    store: Store, role_id: str, role: RoleInput, message: str
) -> None:
    """Each limit of a role is a ValidationError naming it, and nothing is written."""
    with pytest.raises(ValidationError) as raised:
        await rbac.create_role(store, role_id, role, ACTOR)
    assert raised.value.detail == message
    assert (await rbac.list_roles(store)).items == []


async def test_unknown_ids_in_a_binding_are_named_and_nothing_is_written(store: Store) -> None:
    """Unknown roles, users and groups are listed in one error; no binding, no revision."""
    alice = await _user(store, "alice")
    await rbac.create_role(store, "known", RoleInput("K", None, ["p"]), ACTOR)
    before = await rbac.revision(store)
    binding = BindingInput(
        [alice, "01NOSUCHUSER0000000000000"], ["01NOGROUP"], ["known", "x", "y"], []
    )
    with pytest.raises(ValidationError) as raised:
        await rbac.create_binding(store, binding, ACTOR)
    assert raised.value.detail == (
        "unknown role id(s): x, y; unknown user id(s): 01NOSUCHUSER0000000000000; "
        "unknown group id(s): 01NOGROUP"
    )
    assert (await _count(store, Binding), await rbac.revision(store)) == (0, before)


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        (BindingInput([], [], ["r"], []), "a binding needs at least one subject or group"),
        (BindingInput(["u"], [], [], []), "a binding needs at least one role or permission"),
        (
            BindingInput(["u"], [], [], ["p"], Resource("", "1")),
            "resource type must be a non-empty string",
        ),
        (
            BindingInput(["u"], [], [], ["p"], Resource("t", "x" * 256)),
            "resource id is 256 characters long; at most 255",
        ),
        (
            BindingInput(["u"], [], [], ["p"], Resource("a/b", "1")),
            "resource type holds a '/', which Rönd's URL paths cannot carry",
        ),
    ],
)
async def test_a_binding_needs_someone_and_something(
    store: Store, binding: BindingInput, message: str
) -> None:
    """A binding that could grant nothing to no one is refused."""
    with pytest.raises(ValidationError) as raised:
        await rbac.create_binding(store, binding, ACTOR)
    assert raised.value.detail == message


async def test_a_role_in_use_cannot_be_deleted(store: Store) -> None:
    """Deleting a role still bound, mapped or assigned names each use."""
    alice = await _user(store, "alice")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    await rbac.create_binding(store, BindingInput([alice], [], ["r"], []), ACTOR)
    await rbac.replace_group_roles(store, group, ["r"], ACTOR)
    await rbac.replace_user_roles(store, alice, ["r"], ACTOR)
    with pytest.raises(StateError) as raised:
        await rbac.delete_role(store, "r", ACTOR)
    assert raised.value.detail == "role 'r' is still used by 1 binding, 1 group, 1 user"


async def test_replacing_a_binding_swaps_every_list_at_once(store: Store) -> None:
    """A replaced binding holds exactly the new lists and resource."""
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    created = await rbac.create_binding(store, BindingInput([alice], [], ["r"], ["q"]), ACTOR)
    binding_id = created.value.binding_id
    replaced = await rbac.replace_binding(
        store, binding_id, BindingInput([bob], [], [], ["s"], Resource("doc", "1")), ACTOR
    )
    stored = await rbac.get_binding(store, binding_id)
    assert stored == replaced.value
    assert (stored.subjects, stored.roles, stored.permissions, stored.resource) == (
        [bob],
        [],
        ["s"],
        Resource("doc", "1"),
    )
    await assert_grants_kept(store)
    assert replaced.revision == created.revision + 1


async def test_checks_during_role_replacements_never_see_an_empty_role(store: Store) -> None:
    """While a role's permissions are replaced again and again, every check
    finds the permission both old and new sets hold: no moment without it."""
    alice = await _user(store, "alice")
    await rbac.create_role(store, "r", RoleInput("R", None, ["keep", "a"]), ACTOR)
    await rbac.replace_user_roles(store, alice, ["r"], ACTOR)
    done = asyncio.Event()

    async def replace() -> None:
        for n in range(30):
            await rbac.replace_role(store, "r", RoleInput("R", None, ["keep", f"p{n}"]), ACTOR)
        done.set()

    async def check() -> list[bool]:
        answers = []
        while not done.is_set():
            decision = await resolver.check(store, CheckRequest(alice, "keep"))
            answers.append(decision.allowed)
            await asyncio.sleep(0)
        return answers

    _, answers = await asyncio.gather(replace(), check())
    assert answers
    assert all(answers)
    await assert_grants_kept(store)


async def test_user_and_group_roles_are_replaced_whole(store: Store) -> None:
    """The new list is the list; unknown roles are refused and change nothing."""
    alice = await _user(store, "alice")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    for role in ("a", "b", "c"):
        await rbac.create_role(store, role, RoleInput(role, None, [role]), ACTOR)
    await rbac.replace_user_roles(store, alice, ["a", "b"], ACTOR)
    await rbac.replace_user_roles(store, alice, ["c", "b"], ACTOR)
    assert await rbac.user_roles(store, alice) == ["b", "c"]
    await assert_grants_kept(store)
    await rbac.replace_group_roles(store, group, ["a"], ACTOR)
    with pytest.raises(ValidationError):
        await rbac.replace_group_roles(store, group, ["a", "zz"], ACTOR)
    assert await rbac.group_roles(store, group) == ["a"]
    with pytest.raises(NotFoundError):
        await rbac.user_roles(store, "01NOSUCHUSER0000000000000")
    with pytest.raises(NotFoundError):
        await rbac.replace_group_roles(store, "01NOSUCHGROUP000000000000", [], ACTOR)


async def test_grant_creates_a_binding_on_the_resource(store: Store) -> None:
    """Rönd's grant: a new binding, on the path's resource type and the body's id."""
    alice = await _user(store, "alice")
    granted = await rbac.grant(
        store, Grant([alice], [], [], ["p"], resource_type="doc", resource_id="7"), ACTOR
    )
    binding = await rbac.get_binding(store, granted.value)
    assert (binding.subjects, binding.permissions, binding.resource) == (
        [alice],
        ["p"],
        Resource("doc", "7"),
    )
    with pytest.raises(ValidationError) as raised:
        await rbac.grant(store, Grant([alice], [], [], ["p"], resource_type="doc"), ACTOR)
    assert raised.value.detail == "missing resource id"


REVOKES: list[tuple[str, Revoke, tuple[int, int], dict[str, tuple[list[str], list[str]]]]] = [
    # name, request (names resolved below), (deleted, modified),
    # what is left {binding: (subjects, groups)}
    (
        "a subject taken out of every binding naming it",
        Revoke(["alice"], [], []),
        (1, 3),
        {"both": (["bob"], []), "group": ([], ["G"]), "res": (["bob"], [])},
    ),
    (
        "a group taken out; its binding left with a subject stays",
        Revoke([], ["G"], []),
        (0, 1),
        {
            "alone": (["alice"], []),
            "both": (["alice", "bob"], []),
            "group": (["alice"], []),
            "res": (["alice", "bob"], []),
        },
    ),
    (
        "on one resource type and id only",
        Revoke(["alice"], [], ["1"], resource_type="doc"),
        (0, 1),
        {
            "alone": (["alice"], []),
            "both": (["alice", "bob"], []),
            "group": (["alice"], ["G"]),
            "res": (["bob"], []),
        },
    ),
    (
        "every binding on the resources when no subject or group is named",
        Revoke([], [], ["1", "2"], resource_type="doc"),
        (1, 0),
        {
            "alone": (["alice"], []),
            "both": (["alice", "bob"], []),
            "group": (["alice"], ["G"]),
        },
    ),
    (
        "another resource type matches nothing",
        Revoke(["alice"], [], ["1"], resource_type="folder"),
        (0, 0),
        {
            "alone": (["alice"], []),
            "both": (["alice", "bob"], []),
            "group": (["alice"], ["G"]),
            "res": (["alice", "bob"], []),
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "request_", "outcome", "left"), REVOKES, ids=[r[0] for r in REVOKES]
)
async def test_revoke_follows_ronds_rules(
    store: Store,
    name: str,
    request_: Revoke,
    outcome: tuple[int, int],
    left: dict[str, tuple[list[str], list[str]]],
) -> None:
    """Rönd's revoke, one rule per row: who is taken out of what, and which
    bindings are deleted (left with no subject and no group) or modified."""
    ids = {"alice": await _user(store, "alice"), "bob": await _user(store, "bob")}
    ids["G"] = (await groups.create_group(store, "G", ACTOR)).group.id
    setups = {
        "alone": BindingInput([ids["alice"]], [], [], ["p"]),
        "both": BindingInput([ids["alice"], ids["bob"]], [], [], ["p"]),
        "group": BindingInput([ids["alice"]], [ids["G"]], [], ["p"]),
        "res": BindingInput([ids["alice"], ids["bob"]], [], [], ["p"], Resource("doc", "1")),
    }
    for binding_id, binding in setups.items():
        await rbac.create_binding(store, binding, ACTOR, binding_id=binding_id)
    resolved = Revoke(
        [ids[s] for s in request_.subjects],
        [ids[g] for g in request_.groups],
        request_.resource_ids,
        request_.resource_type,
    )
    before = await rbac.revision(store)
    revoked = await rbac.revoke(store, resolved, ACTOR)
    assert (revoked.value.deleted_bindings, revoked.value.modified_bindings) == outcome
    assert revoked.revision == before + 1
    stored = {b.binding_id: (b.subjects, b.groups) for b in (await rbac.list_bindings(store)).items}
    assert stored == {
        b: (sorted(ids[s] for s in subjects), sorted(ids[g] for g in grps))
        for b, (subjects, grps) in left.items()
    }
    await assert_grants_kept(store)


async def test_revoke_with_nothing_to_match_is_refused(store: Store) -> None:
    """No subjects, no groups and no resource: Rönd's 400, here a ValidationError."""
    with pytest.raises(ValidationError) as raised:
        await rbac.revoke(store, Revoke([], [], ["1"]), ACTOR)
    assert raised.value.detail == "empty subjects and groups lists or resource ids"


async def test_a_deleted_group_leaves_every_binding(store: Store) -> None:
    """Deleting a group takes it out of its bindings; one left empty is deleted."""
    alice = await _user(store, "alice")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    await rbac.create_binding(store, BindingInput([], [group], [], ["p"]), ACTOR, binding_id="only")
    await rbac.create_binding(
        store, BindingInput([alice], [group], [], ["p"]), ACTOR, binding_id="shared"
    )
    before = await rbac.revision(store)
    await groups.delete_group(store, group, ACTOR)
    listed = (await rbac.list_bindings(store)).items
    assert [(b.binding_id, b.subjects, b.groups) for b in listed] == [("shared", [alice], [])]
    assert await rbac.revision(store) == before + 1
    await assert_grants_kept(store)


async def test_export_gives_ronds_documents(store: Store) -> None:
    """Roles and bindings in the shape of Rönd's collections."""
    alice = await _user(store, "alice")
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    await rbac.create_binding(
        store, BindingInput([alice], [], ["r"], [], Resource("doc", "1")), ACTOR, binding_id="b"
    )
    roles, bindings = await rbac.export(store)
    assert roles == [{"roleId": "r", "name": "R", "description": "", "permissions": ["p"]}]
    assert bindings == [
        {
            "bindingId": "b",
            "subjects": [alice],
            "groups": [],
            "roles": ["r"],
            "permissions": [],
            "resource": {"resourceType": "doc", "resourceId": "1"},
        }
    ]


async def _rond_rows(store: Store) -> list[tuple[str, str]]:
    async with store.reading() as session:
        rows = await session.execute(
            select(OutboxEntry.aggregate_type, OutboxEntry.aggregate_id)
            .where(OutboxEntry.target == "rond")
            .order_by(OutboxEntry.id)
        )
        return sorted((t, i) for t, i in rows)


async def test_rond_rows_are_written_only_when_a_deployment_is_configured(
    store: Store, pushing: Store
) -> None:
    """Without IDSTORE_ROND_BASE_URL no row; with it one per user and group touched."""
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    await rbac.create_binding(store, BindingInput([alice], [], ["r"], []), ACTOR, binding_id="b")
    assert await _rond_rows(store) == []
    await rbac.replace_binding(pushing, "b", BindingInput([bob], [group], ["r"], []), ACTOR)
    assert await _rond_rows(store) == sorted([("User", alice), ("User", bob), ("Group", group)])


async def test_a_role_change_pushes_every_holder(store: Store, pushing: Store) -> None:
    """A role's new permissions reach Rönd for each user and group holding it."""
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    await rbac.create_binding(store, BindingInput([alice], [group], ["r"], []), ACTOR)
    await rbac.replace_user_roles(store, bob, ["r"], ACTOR)
    await rbac.replace_role(pushing, "r", RoleInput("R", None, ["p", "q"]), ACTOR)
    await assert_grants_kept(store)
    assert await _rond_rows(store) == sorted([("User", alice), ("User", bob), ("Group", group)])


async def test_rond_state_expands_roles_per_subject_and_group(store: Store) -> None:
    """What Rönd should hold: one binding per binding naming the subject, and
    one for its own roles, role permissions expanded."""
    alice = await _user(store, "alice")
    group = (await groups.create_group(store, "G", ACTOR)).group.id
    await rbac.create_role(store, "r", RoleInput("R", None, ["p1", "p2"]), ACTOR)
    await rbac.create_binding(
        store, BindingInput([alice], [group], ["r"], ["own"], Resource("doc", "1")), ACTOR
    )
    await rbac.replace_user_roles(store, alice, ["r"], ACTOR)
    state = await rbac.rond_state(store, "User", alice)
    assert [(b.subjects, b.groups, b.roles, b.permissions, b.resource) for b in state] == [
        ([alice], [], ["r"], ["own", "p1", "p2"], Resource("doc", "1")),
        ([alice], [], ["r"], ["p1", "p2"], None),
    ]
    group_state = await rbac.rond_state(store, "Group", group)
    assert [(b.groups, b.permissions) for b in group_state] == [([group], ["own", "p1", "p2"])]
    assert await rbac.rond_state(store, "User", "01NOSUCHUSER0000000000000") == []


async def test_a_deleted_binding_grants_nothing_any_more(store: Store) -> None:
    """Deleting a binding takes its grants away at once."""
    alice = await _user(store, "alice")
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    created = await rbac.create_binding(store, BindingInput([alice], [], ["r"], ["q"]), ACTOR)
    assert (await resolver.check(store, CheckRequest(alice, "p"))).allowed
    await rbac.delete_binding(store, created.value.binding_id, ACTOR)
    assert not (await resolver.check(store, CheckRequest(alice, "q"))).allowed
    await assert_grants_kept(store)


async def test_a_forgotten_user_keeps_no_grant(store: Store) -> None:
    """What the deletion sync calls: the user leaves its bindings and roles,
    and no grant row of it is left."""
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    await rbac.create_role(store, "r", RoleInput("R", None, ["p"]), ACTOR)
    await rbac.create_binding(store, BindingInput([alice, bob], [], ["r"], []), ACTOR)
    await rbac.replace_user_roles(store, alice, ["r"], ACTOR)

    async def forget(session: Any) -> rbac.Forgotten:
        return await rbac.forget_users(session, [alice], ACTOR, push=False)

    forgotten = await store.transaction(forget)
    assert forgotten.roles_of == {alice: ["r"]}
    await assert_grants_kept(store)
    async with store.reading() as session:
        left = await session.scalar(
            select(func.count()).select_from(RbacGrant).where(RbacGrant.holder_id == alice)
        )
    assert left == 0
    assert (await resolver.check(store, CheckRequest(bob, "p"))).allowed
