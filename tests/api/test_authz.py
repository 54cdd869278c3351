"""The checks over HTTP (``authz:check`` token): one check with its reasons,
a batch, a user's effective permissions, who holds a permission. The rules
themselves are the resolver's (tests/test_resolver.py); these check that
each answer reaches the wire whole, in its shape, with its revision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import Directory, assert_problem
from .test_roles import revision_of

UNKNOWN = "01JZ0000000000000000000000"


@dataclass
class World:
    ids: dict[str, str]
    revision: int
    """The revision of the last change the fixture made."""

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


@pytest.fixture
async def world(api: httpx.AsyncClient, directory: Directory) -> World:
    """alice ∈ G1 ∈ G2; bob; carol (SUSPENDED). Roles reader {doc.read},
    writer {doc.read, doc.write}. Binding ``b-g2`` gives G2 reader
    everywhere; ``b-bob`` gives bob writer on doc 42; alice is assigned
    writer directly; G1 is mapped to reader."""
    ids = {name: await directory.user(name) for name in ("alice", "bob", "carol")}
    ids["G1"] = await directory.group("G1", [ids["alice"]])
    ids["G2"] = await directory.group("G2", [ids["G1"]])
    await directory.suspend(ids["carol"])
    for role_id, permissions in (("reader", ["doc.read"]), ("writer", ["doc.read", "doc.write"])):
        response = await api.post(
            "/roles", json={"roleId": role_id, "name": role_id, "permissions": permissions}
        )
        assert response.status_code == 201, response.text
    writes = [
        await api.post(
            "/bindings",
            json={"bindingId": "b-g2", "groups": [ids["G2"]], "roles": ["reader"]},
        ),
        await api.post(
            "/bindings",
            json={
                "bindingId": "b-bob",
                "subjects": [ids["bob"], ids["carol"]],
                "roles": ["writer"],
                "resource": {"resourceType": "doc", "resourceId": "42"},
            },
        ),
        await api.put(f"/users/{ids['alice']}/roles", json={"roles": ["writer"]}),
        await api.put(f"/groups/{ids['G1']}/roles", json={"roles": ["reader"]}),
    ]
    for response in writes:
        assert response.status_code in (200, 201), response.text
    return World(ids, revision_of(writes[-1]))


async def _check(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/authz/check", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


async def test_an_allowed_check_lists_every_granting_path(
    checker: httpx.AsyncClient, world: World
) -> None:
    """alice holds doc.read through the nested group's binding, the mapped
    group role and her own role; each path is a reason with its parts, and
    absent parts are left out."""
    decision = await _check(checker, userId=world["alice"], permission="doc.read")
    assert decision["allowed"] is True
    assert decision["revision"] == world.revision
    assert decision["reasons"] == [
        {
            "code": "granted",
            "message": f"binding b-g2 → role reader → permission doc.read, via group "
            f"{world['G2']} (the user is a member of it through group {world['G1']})",
            "source": "binding",
            "bindingId": "b-g2",
            "roleId": "reader",
            "groupId": world["G2"],
            "viaGroupId": world["G1"],
        },
        {
            "code": "granted",
            "message": f"role reader → permission doc.read, via group {world['G1']}",
            "source": "group-role",
            "roleId": "reader",
            "groupId": world["G1"],
        },
        {
            "code": "granted",
            "message": "role writer (assigned to the user) → permission doc.read",
            "source": "user-role",
            "roleId": "writer",
        },
    ]


@pytest.mark.parametrize(
    ("who", "permission", "resource", "allowed", "codes"),
    [
        ("bob", "doc.write", None, False, ["other-resource"]),
        ("bob", "doc.write", {"type": "doc", "id": "42"}, True, ["granted"]),
        ("bob", "doc.write", {"type": "doc", "id": "43"}, False, ["other-resource"]),
        ("bob", "admin.all", None, False, ["no-grant"]),
        ("carol", "doc.write", {"type": "doc", "id": "42"}, False, ["not-active"]),
        ("nobody", "doc.read", None, False, ["user-not-found"]),
    ],
    ids=["elsewhere", "on its resource", "another resource", "none", "suspended", "unknown"],
)
async def test_a_check_answers_each_case_with_its_reason_code(
    checker: httpx.AsyncClient,
    world: World,
    who: str,
    permission: str,
    resource: dict[str, str] | None,
    allowed: bool,
    codes: list[str],
) -> None:
    """One row per outcome: allowed or not, and the codes of the reasons."""
    body: dict[str, Any] = {
        "userId": world.ids.get(who, UNKNOWN),
        "permission": permission,
    } | ({"resource": resource} if resource else {})
    decision = await _check(checker, **body)
    assert (decision["allowed"], [r["code"] for r in decision["reasons"]]) == (allowed, codes)


async def test_a_denial_on_another_resource_names_that_resource(
    checker: httpx.AsyncClient, world: World
) -> None:
    """``other-resource`` carries the binding and its resource as ``{type, id}``."""
    decision = await _check(checker, userId=world["bob"], permission="doc.write")
    [reason] = decision["reasons"]
    assert reason["bindingId"] == "b-bob"
    assert reason["resource"] == {"type": "doc", "id": "42"}
    assert reason["message"].endswith(", but only on doc 42")


async def test_a_batch_answers_each_check_in_order_at_one_revision(
    checker: httpx.AsyncClient, world: World
) -> None:
    """``results`` in the order of ``checks``, each as the single check answers it."""
    checks = [
        {
            "userId": world["bob"],
            "permission": "doc.write",
            "resource": {"type": "doc", "id": "42"},
        },
        {"userId": world["carol"], "permission": "doc.read"},
        {"userId": world["alice"], "permission": "doc.write"},
        {"userId": UNKNOWN, "permission": "doc.read"},
    ]
    response = await checker.post("/authz/check-batch", json={"checks": checks})
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["revision"] == world.revision
    assert [r["allowed"] for r in batch["results"]] == [True, False, True, False]
    for check, result in zip(checks, batch["results"], strict=True):
        single = await _check(checker, **check)
        assert result == {"allowed": single["allowed"], "reasons": single["reasons"]}


async def test_an_empty_batch_answers_the_current_revision(
    checker: httpx.AsyncClient, world: World
) -> None:
    """No checks, no results; the revision is still the current one."""
    response = await checker.post("/authz/check-batch", json={"checks": []})
    assert response.json() == {"revision": world.revision, "results": []}


async def test_a_role_change_is_visible_to_the_very_next_check(
    api: httpx.AsyncClient, checker: httpx.AsyncClient, world: World
) -> None:
    """Replacing reader's permissions is seen by the next check, at the
    revision the write answered with."""
    before = await _check(checker, userId=world["alice"], permission="doc.comment")
    assert before["allowed"] is False
    response = await api.put(
        "/roles/reader", json={"name": "reader", "permissions": ["doc.read", "doc.comment"]}
    )
    after = await _check(checker, userId=world["alice"], permission="doc.comment")
    assert after["allowed"] is True
    assert after["revision"] == revision_of(response) == world.revision + 1


async def test_a_users_effective_permissions_are_listed(
    checker: httpx.AsyncClient, world: World
) -> None:
    """bob: writer's permissions on doc 42 only; alice: everywhere, with
    every role she holds; ``resource`` is absent for "everywhere"."""
    bob = (await checker.get(f"/users/{world['bob']}/permissions")).json()
    assert bob == {
        "userId": world["bob"],
        "lifecycle": "ACTIVE",
        "blocked": False,
        "revision": world.revision,
        "roles": ["writer"],
        "permissions": [
            {"permission": "doc.read", "resource": {"type": "doc", "id": "42"}},
            {"permission": "doc.write", "resource": {"type": "doc", "id": "42"}},
        ],
    }
    alice = (await checker.get(f"/users/{world['alice']}/permissions")).json()
    assert alice["roles"] == ["reader", "writer"]
    assert alice["permissions"] == [{"permission": "doc.read"}, {"permission": "doc.write"}]


async def test_permissions_on_one_resource_leave_the_others_out(
    checker: httpx.AsyncClient, world: World
) -> None:
    """With ``resourceType`` and ``resourceId``: everywhere plus that resource only."""
    params = {"resourceType": "doc", "resourceId": "43"}
    bob = (await checker.get(f"/users/{world['bob']}/permissions", params=params)).json()
    assert bob["permissions"] == []
    params["resourceId"] = "42"
    bob = (await checker.get(f"/users/{world['bob']}/permissions", params=params)).json()
    assert [p["permission"] for p in bob["permissions"]] == ["doc.read", "doc.write"]


async def test_a_suspended_user_holds_nothing_and_an_unknown_one_is_404(
    checker: httpx.AsyncClient, world: World
) -> None:
    """carol (SUSPENDED) is listed with no permissions; an unknown id is 404."""
    carol = (await checker.get(f"/users/{world['carol']}/permissions")).json()
    assert (carol["lifecycle"], carol["permissions"]) == ("SUSPENDED", [])
    assert_problem(await checker.get(f"/users/{UNKNOWN}/permissions"), 404, "not-found")


async def test_the_holders_of_a_permission_are_listed_by_pages(
    checker: httpx.AsyncClient, world: World
) -> None:
    """Everywhere: alice only; on doc 42: alice and bob (carol is suspended);
    paged by id with ``nextCursor``."""
    everywhere = (await checker.get("/authz/subjects", params={"permission": "doc.write"})).json()
    assert everywhere == {
        "permission": "doc.write",
        "resource": None,
        "revision": world.revision,
        "subjects": [world["alice"]],
        "nextCursor": None,
    }
    params = {"permission": "doc.write", "resourceType": "doc", "resourceId": "42", "count": "1"}
    seen: list[str] = []
    while True:
        page = (await checker.get("/authz/subjects", params=params)).json()
        assert page["resource"] == {"type": "doc", "id": "42"}
        seen += page["subjects"]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == sorted([world["alice"], world["bob"]])


async def test_the_holders_need_a_permission(checker: httpx.AsyncClient) -> None:
    """``permission`` is required: 400 naming it."""
    problem = assert_problem(await checker.get("/authz/subjects"), 400, "invalid-request")
    assert problem["errors"][0]["location"] == ["query", "permission"]
