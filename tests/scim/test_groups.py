"""``/Groups`` and membership (RFC 7644 §3.3-§3.6, RFC 7643 §4.2)."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import GroupMember

from .helpers import GROUP_SCHEMA, assert_error, create_group, create_user, patch_body


async def _members(session: AsyncSession, group_id: str) -> set[str]:
    rows = await session.scalars(
        select(GroupMember.member_id).where(GroupMember.group_id == group_id)
    )
    return set(rows.all())


async def test_create_with_members_fills_display_and_ref(scim: httpx.AsyncClient) -> None:
    alice = await create_user(scim, "alice", displayName="Alice")
    inner = await create_group(scim, "Inner")
    group = await create_group(scim, "Outer", [alice["id"], inner["id"]])
    members = sorted(group["members"], key=lambda m: m["type"])
    assert members[0] == {
        "value": inner["id"],
        "type": "Group",
        "display": "Inner",
        "$ref": f"http://testserver/scim/v2/Groups/{inner['id']}",
    }
    assert members[1] == {
        "value": alice["id"],
        "type": "User",
        "display": "Alice",
        "$ref": f"http://testserver/scim/v2/Users/{alice['id']}",
    }
    read = await scim.get(f"/Groups/{group['id']}")
    assert read.json() == group


async def test_display_name_is_unique(scim: httpx.AsyncClient) -> None:
    await create_group(scim, "Admins")
    response = await scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "ADMINS"})
    assert_error(response, 409, "uniqueness")


async def test_unknown_member_is_400_and_nothing_is_created(scim: httpx.AsyncClient) -> None:
    response = await scim.post(
        "/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": "nope"}]},
    )
    assert_error(response, 400, "invalidValue")
    assert (await scim.get("/Groups")).json()["totalResults"] == 0


async def test_patch_adds_and_removes_only_named_members(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """add, remove by filter, remove with a value list; others untouched; 204 no body."""
    users = [await create_user(scim, f"u{i}") for i in range(5)]
    ids = [u["id"] for u in users]
    group = await create_group(scim, "Team", ids[:3])
    gid = group["id"]
    response = await scim.patch(
        f"/Groups/{gid}",
        json=patch_body(
            {"op": "add", "path": "members", "value": [{"value": ids[3]}, {"value": ids[4]}]},
            {"op": "remove", "path": f'members[value eq "{ids[0]}"]'},
        ),
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    assert await _members(session, gid) == set(ids[1:])

    response = await scim.patch(
        f"/Groups/{gid}",
        json=patch_body(
            {"op": "remove", "path": "members", "value": [{"value": ids[1]}, {"value": ids[4]}]}
        ),
    )
    assert response.status_code == 204, response.text
    assert await _members(session, gid) == {ids[2], ids[3]}


async def test_patch_adding_an_existing_member_is_harmless(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A PATCH that changes nothing keeps the version: the same ETag comes
    back, and an If-Match of it still holds for the next write."""
    user = await create_user(scim, "vic")
    group = await create_group(scim, "G", [user["id"]])
    response = await scim.patch(
        f"/Groups/{group['id']}",
        headers={"If-Match": group["meta"]["version"]},
        json=patch_body({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    assert response.status_code == 204
    assert response.headers["etag"] == group["meta"]["version"] == 'W/"1"'
    assert await _members(session, group["id"]) == {user["id"]}
    read = (await scim.get(f"/Groups/{group['id']}")).json()
    assert read["meta"] == group["meta"]
    renamed = await scim.patch(
        f"/Groups/{group['id']}",
        headers={"If-Match": group["meta"]["version"]},
        json=patch_body({"op": "replace", "path": "displayName", "value": "H"}),
    )
    assert (renamed.status_code, renamed.headers["etag"]) == (204, 'W/"2"')


async def test_patch_replace_members_and_attributes(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    users = [await create_user(scim, f"r{i}") for i in range(3)]
    group = await create_group(scim, "Old", [users[0]["id"]])
    response = await scim.patch(
        f"/Groups/{group['id']}",
        json=patch_body(
            {
                "op": "replace",
                "path": "members",
                "value": [{"value": users[1]["id"]}, {"value": users[2]["id"]}],
            },
            {"op": "replace", "value": {"displayName": "New", "externalId": "ext-1"}},
        ),
    )
    assert response.status_code == 204, response.text
    body = (await scim.get(f"/Groups/{group['id']}")).json()
    assert body["displayName"] == "New"
    assert body["externalId"] == "ext-1"
    assert await _members(session, group["id"]) == {users[1]["id"], users[2]["id"]}
    cleared = await scim.patch(
        f"/Groups/{group['id']}", json=patch_body({"op": "remove", "path": "members"})
    )
    assert cleared.status_code == 204
    assert await _members(session, group["id"]) == set()


async def test_patch_errors_change_nothing(scim: httpx.AsyncClient, session: AsyncSession) -> None:
    user = await create_user(scim, "w")
    group = await create_group(scim, "G", [user["id"]])
    gid = group["id"]
    cases = [
        (
            patch_body({"op": "add", "path": "members", "value": [{"value": "missing"}]}),
            "invalidValue",
        ),
        (patch_body({"op": "replace", "path": "id", "value": "x"}), "mutability"),
        (patch_body({"op": "replace", "path": "bogus", "value": "x"}), "invalidPath"),
        (patch_body({"op": "remove", "path": "displayName"}), "mutability"),
    ]
    for payload, scim_type in cases:
        response = await scim.patch(f"/Groups/{gid}", json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert response.json().get("scimType") == scim_type, (payload, response.text)
    assert await _members(session, gid) == {user["id"]}
    assert (await scim.get(f"/Groups/{gid}")).json()["meta"]["version"] == 'W/"1"'


async def test_excluded_members_are_not_returned(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "x")
    group = await create_group(scim, "G", [user["id"]])
    read = await scim.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"})
    assert "members" not in read.json()
    assert read.json()["displayName"] == "G"
    listing = await scim.get(
        "/Groups", params={"filter": 'displayName eq "G"', "excludedAttributes": "members"}
    )
    assert listing.json()["totalResults"] == 1
    assert "members" not in listing.json()["Resources"][0]


async def test_user_groups_come_from_membership(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "y")
    a = await create_group(scim, "A", [user["id"]])
    b = await create_group(scim, "B", [user["id"]])
    body = (await scim.get(f"/Users/{user['id']}")).json()
    assert [(g["value"], g["display"], g["type"]) for g in body["groups"]] == [
        (a["id"], "A", "direct"),
        (b["id"], "B", "direct"),
    ]
    patch = patch_body({"op": "replace", "path": "groups", "value": []})
    assert_error(await scim.patch(f"/Users/{user['id']}", json=patch), 400, "mutability")


async def test_put_replaces_members(scim: httpx.AsyncClient, session: AsyncSession) -> None:
    u1 = await create_user(scim, "p1")
    u2 = await create_user(scim, "p2")
    group = await create_group(scim, "P", [u1["id"]])
    response = await scim.put(
        f"/Groups/{group['id']}",
        json={"schemas": [GROUP_SCHEMA], "displayName": "P2", "members": [{"value": u2["id"]}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["displayName"] == "P2"
    assert await _members(session, group["id"]) == {u2["id"]}


async def test_delete_group_removes_memberships(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(scim, "z")
    child = await create_group(scim, "Child", [user["id"]])
    parent = await create_group(scim, "Parent", [child["id"]])
    assert (await scim.delete(f"/Groups/{child['id']}")).status_code == 204
    assert_error(await scim.get(f"/Groups/{child['id']}"), 404)
    assert await _members(session, parent["id"]) == set()
    assert (await scim.get(f"/Users/{user['id']}")).json().get("groups") is None


async def test_membership_patch_of_a_large_group_touches_only_named_rows(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A group of 2,000 members: adding one and removing one leaves the others."""
    from identity_store.models import User

    rows = [
        User(user_name=f"bulk{i}", user_name_normalized=f"bulk{i}", lifecycle="ACTIVE")
        for i in range(2001)
    ]
    session.add_all(rows)
    await session.commit()
    ids = [r.id for r in rows]
    group = await create_group(scim, "Big", ids[:2000])
    response = await scim.patch(
        f"/Groups/{group['id']}",
        json=patch_body(
            {"op": "add", "path": "members", "value": [{"value": ids[2000]}]},
            {"op": "remove", "path": f'members[value eq "{ids[0]}"]'},
        ),
    )
    assert response.status_code == 204
    assert await _members(session, group["id"]) == set(ids[1:])
