"""``/api/v1/bindings`` over HTTP: create, read, filter, page, replace, delete."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Directory, assert_problem
from .test_roles import revision_of


@pytest.fixture
async def people(api: httpx.AsyncClient, directory: Directory) -> dict[str, str]:
    """alice and bob, group G (alice), roles reader and writer."""
    alice = await directory.user("alice")
    bob = await directory.user("bob")
    group = await directory.group("G", [alice])
    for role_id in ("reader", "writer"):
        response = await api.post(
            "/roles", json={"roleId": role_id, "name": role_id, "permissions": [f"{role_id}.p"]}
        )
        assert response.status_code == 201, response.text
    return {"alice": alice, "bob": bob, "G": group}


async def test_a_binding_is_created_read_replaced_and_deleted(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """Lists come back sorted and without repeats; each write adds one to the revision."""
    body = {
        "subjects": [people["bob"], people["alice"], people["bob"]],
        "groups": [people["G"]],
        "roles": ["writer", "reader"],
        "permissions": ["z", "a"],
        "resource": {"resourceType": "doc", "resourceId": "42"},
    }
    created = await api.post("/bindings", json=body)
    assert created.status_code == 201, created.text
    binding = created.json()
    binding_id = binding["bindingId"]
    assert len(binding_id) == 26  # a ULID
    assert created.headers["location"] == f"/api/v1/bindings/{binding_id}"
    assert binding["subjects"] == sorted([people["alice"], people["bob"]])
    assert (binding["groups"], binding["roles"], binding["permissions"]) == (
        [people["G"]],
        ["reader", "writer"],
        ["a", "z"],
    )
    assert binding["resource"] == {"resourceType": "doc", "resourceId": "42"}
    assert (await api.get(f"/bindings/{binding_id}")).json() == binding

    replaced = await api.put(
        f"/bindings/{binding_id}", json={"subjects": [people["bob"]], "permissions": ["p"]}
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["subjects"], replaced.json()["roles"]) == ([people["bob"]], [])
    assert replaced.json()["resource"] is None
    assert revision_of(replaced) == revision_of(created) + 1

    deleted = await api.delete(f"/bindings/{binding_id}")
    assert deleted.status_code == 204
    assert revision_of(deleted) == revision_of(created) + 2
    assert_problem(await api.get(f"/bindings/{binding_id}"), 404, "not-found")
    assert_problem(await api.delete(f"/bindings/{binding_id}"), 404, "not-found")


async def test_a_given_binding_id_is_kept_and_a_taken_one_is_409(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """``bindingId`` in the body is the binding's id; the same again is a conflict."""
    body = {"bindingId": "ops-admins", "groups": [people["G"]], "roles": ["writer"]}
    created = await api.post("/bindings", json=body)
    assert created.json()["bindingId"] == "ops-admins"
    assert_problem(await api.post("/bindings", json=body), 409, "conflict")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"roles": ["reader"]}, "a binding needs at least one subject or group"),
        ({"subjects": ["{alice}"]}, "a binding needs at least one role or permission"),
        (
            {"subjects": ["{alice}", "01NOSUCHUSER0000000000000"], "roles": ["reader", "x"]},
            "unknown role id(s): x; unknown user id(s): 01NOSUCHUSER0000000000000",
        ),
        ({"groups": ["01NOGROUP"], "permissions": ["p"]}, "unknown group id(s): 01NOGROUP"),
    ],
    ids=["no one", "nothing", "unknown role and user", "unknown group"],
)
async def test_a_binding_the_store_refuses_is_400_and_nothing_is_written(
    api: httpx.AsyncClient, people: dict[str, str], body: dict[str, Any], detail: str
) -> None:
    """Each rule is a 400 with the store's reason; no binding, no new revision."""
    body = {
        key: [v.format(**people) for v in value] if isinstance(value, list) else value
        for key, value in body.items()
    }
    assert_problem(await api.post("/bindings", json=body), 400, "invalid-request", detail)
    assert (await api.get("/bindings")).json()["items"] == []


async def test_bindings_are_filtered_by_subject_group_role_and_resource(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """Each filter alone, and together; only bindings matching all of them."""
    doc = {"resourceType": "doc", "resourceId": "1"}
    rows = [
        ("b1", {"subjects": [people["alice"]], "roles": ["reader"]}),
        ("b2", {"subjects": [people["bob"]], "roles": ["writer"], "resource": doc}),
        ("b3", {"groups": [people["G"]], "roles": ["reader"], "resource": doc}),
    ]
    for binding_id, body in rows:
        response = await api.post("/bindings", json={"bindingId": binding_id, **body})
        assert response.status_code == 201, response.text

    async def ids(**params: str) -> list[str]:
        page = (await api.get("/bindings", params=params)).json()
        return [b["bindingId"] for b in page["items"]]

    assert await ids() == ["b1", "b2", "b3"]
    assert await ids(subject=people["alice"]) == ["b1"]
    assert await ids(group=people["G"]) == ["b3"]
    assert await ids(role="reader") == ["b1", "b3"]
    assert await ids(resourceType="doc", resourceId="1") == ["b2", "b3"]
    assert await ids(role="reader", resourceType="doc", resourceId="1") == ["b3"]
    assert await ids(resourceType="doc", resourceId="2") == []


async def test_a_resource_filter_needs_both_its_parameters(api: httpx.AsyncClient) -> None:
    """``resourceType`` without ``resourceId`` (or the reverse) is 400 naming the missing one."""
    problem = assert_problem(
        await api.get("/bindings", params={"resourceType": "doc"}), 400, "invalid-request"
    )
    assert problem["errors"][0]["location"] == ["query", "resourceId"]
    problem = assert_problem(
        await api.get("/bindings", params={"resourceId": "1"}), 400, "invalid-request"
    )
    assert problem["errors"][0]["location"] == ["query", "resourceType"]


async def test_bindings_are_listed_a_page_at_a_time(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """Pages of ``count`` by id; a roles cursor is refused here."""
    for i in range(5):
        await api.post(
            "/bindings",
            json={"bindingId": f"b{i}", "subjects": [people["alice"]], "permissions": ["p"]},
        )
    first = (await api.get("/bindings", params={"count": 3})).json()
    assert [b["bindingId"] for b in first["items"]] == ["b0", "b1", "b2"]
    second = (await api.get("/bindings", params={"cursor": first["nextCursor"]})).json()
    assert [b["bindingId"] for b in second["items"]] == ["b3", "b4"]
    assert second["nextCursor"] is None
    await api.post("/roles", json={"roleId": "zz", "name": "z", "permissions": []})
    roles_cursor = (await api.get("/roles", params={"count": 1})).json()["nextCursor"]
    response = await api.get("/bindings", params={"cursor": roles_cursor})
    assert_problem(response, 400, "invalid-cursor")


async def test_replacing_an_unknown_binding_is_404(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """PUT does not create."""
    response = await api.put(
        "/bindings/ghost", json={"subjects": [people["bob"]], "permissions": ["p"]}
    )
    assert_problem(response, 404, "not-found")
    assert (await api.get("/bindings")).json()["items"] == []
