"""``/api/v1/roles`` over HTTP: create, read, list by pages, replace, delete."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from .conftest import Directory, assert_problem

READER = {"roleId": "reader", "name": "Reader", "permissions": ["doc.read"]}


def revision_of(response: httpx.Response) -> int:
    """The ``RBAC-Revision`` a write answered with."""
    return int(response.headers["rbac-revision"])


async def test_a_role_is_created_read_replaced_and_deleted(api: httpx.AsyncClient) -> None:
    """201 with Location and the new revision; each later write adds one to it;
    after the delete the role is a 404 problem."""
    created = await api.post(
        "/roles", json={**READER, "description": "reads", "permissions": ["b", "a", "b"]}
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/roles/reader"
    body = created.json()
    assert {k: body[k] for k in ("roleId", "name", "description", "permissions")} == {
        "roleId": "reader",
        "name": "Reader",
        "description": "reads",
        "permissions": ["a", "b"],
    }
    assert set(body) == {
        "roleId",
        "name",
        "description",
        "permissions",
        "createdAt",
        "updatedAt",
    }
    first = revision_of(created)
    assert (await api.get("/roles/reader")).json() == body

    replaced = await api.put("/roles/reader", json={"name": "Readers", "permissions": ["c"]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["permissions"] == ["c"]
    assert replaced.json()["description"] is None
    assert revision_of(replaced) == first + 1

    deleted = await api.delete("/roles/reader")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert revision_of(deleted) == first + 2
    assert_problem(await api.get("/roles/reader"), 404, "not-found")


async def test_a_taken_role_id_is_409_and_the_first_role_stays(api: httpx.AsyncClient) -> None:
    """409 ``conflict``; the stored role is unchanged."""
    assert (await api.post("/roles", json=READER)).status_code == 201
    response = await api.post("/roles", json={**READER, "name": "Other"})
    assert_problem(response, 409, "conflict")
    assert (await api.get("/roles/reader")).json()["name"] == "Reader"


async def test_replacing_or_deleting_an_unknown_role_is_404(api: httpx.AsyncClient) -> None:
    """404 ``not-found`` for PUT and DELETE alike; nothing is created."""
    assert_problem(
        await api.put("/roles/ghost", json={"name": "G", "permissions": []}), 404, "not-found"
    )
    assert_problem(await api.delete("/roles/ghost"), 404, "not-found")
    assert (await api.get("/roles")).json()["items"] == []


async def test_a_role_in_use_cannot_be_deleted(
    api: httpx.AsyncClient, directory: Directory
) -> None:
    """409 ``state-conflict`` naming what uses it; the role stays."""
    alice = await directory.user("alice")
    await api.post("/roles", json=READER)
    binding = await api.post(
        "/bindings", json={"bindingId": "b1", "subjects": [alice], "roles": ["reader"]}
    )
    assert binding.status_code == 201, binding.text
    response = await api.delete("/roles/reader")
    assert_problem(response, 409, "state-conflict", "role 'reader' is still used by 1 binding")
    assert (await api.get("/roles/reader")).status_code == 200


async def test_roles_are_listed_by_id_a_page_at_a_time(api: httpx.AsyncClient) -> None:
    """``count`` per page, ``nextCursor`` to the next, ``null`` after the last."""
    for role_id in ("e", "c", "a", "d", "b"):
        await api.post("/roles", json={"roleId": role_id, "name": role_id, "permissions": []})
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"count": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/roles", params=params)).json()
        pages += 1
        seen += [role["roleId"] for role in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    assert pages == 3
    everything = (await api.get("/roles")).json()
    assert [r["roleId"] for r in everything["items"]] == seen
    assert everything["nextCursor"] is None


async def test_a_cursor_not_issued_for_the_roles_list_is_400(api: httpx.AsyncClient) -> None:
    """A bindings cursor, a made-up one, a non-base64 one: 400 ``invalid-cursor``
    (or ``invalid-request`` for characters no cursor has)."""
    await api.post("/roles", json=READER)
    await api.post("/roles", json={**READER, "roleId": "writer"})
    foreign = base64.urlsafe_b64encode(b"bindings:reader").rstrip(b"=").decode()
    for cursor in (foreign, "AAAA", "x", base64.urlsafe_b64encode(b"\xff\xfe").decode()[:3]):
        response = await api.get("/roles", params={"cursor": cursor})
        assert_problem(response, 400, "invalid-cursor")
    assert_problem(await api.get("/roles", params={"cursor": "a b"}), 400, "invalid-request")


async def test_a_page_size_outside_1_to_1000_is_400(api: httpx.AsyncClient) -> None:
    """``count`` 0, 1001 and -1 each name the parameter."""
    for count in (0, 1001, -1):
        problem = assert_problem(
            await api.get("/roles", params={"count": count}), 400, "invalid-request"
        )
        assert problem["errors"][0]["location"] == ["query", "count"]


async def test_an_id_outside_latin_1_is_percent_encoded_in_location(
    api: httpx.AsyncClient,
) -> None:
    """A role id such as ``rôle-𥉦`` is created, and its Location (a header,
    Latin-1 only) percent-encodes it; that URL reads the role back."""
    created = await api.post("/roles", json={**READER, "roleId": "rôle-\U00025266 x"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/roles/r%C3%B4le-%F0%A5%89%A6%20x"
    read = await api.get(created.headers["location"].removeprefix("/api/v1"))
    assert read.json()["roleId"] == "rôle-\U00025266 x"
