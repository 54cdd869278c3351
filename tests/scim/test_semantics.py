"""SCIM semantics (issue 10): booleans sent as false come back, a removed
``active`` is unassigned, and a deleted user leaves its groups at once."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.models import AuditEntry, OutboxEntry

from .helpers import create_group, create_user, patch_body, user_body


async def test_primary_false_comes_back_as_sent(scim: httpx.AsyncClient) -> None:
    """``primary: false`` is returned; a value sent without it has none."""
    emails = [
        {"value": "a@example.com", "type": "work", "primary": True},
        {"value": "b@example.com", "type": "home", "primary": False},
        {"value": "c@example.com", "type": "other"},
    ]
    addresses = [{"locality": "X", "primary": False}, {"locality": "Y"}]
    created = await create_user(scim, "prim", emails=emails, addresses=addresses)
    for body in (created, (await scim.get(f"/Users/{created['id']}")).json()):
        assert body["emails"] == emails
        assert body["addresses"] == addresses
    listed = (await scim.get("/Users", params={"filter": 'userName eq "prim"'})).json()
    assert listed["Resources"][0]["emails"] == emails
    patched = await scim.patch(
        f"/Users/{created['id']}",
        json=patch_body(
            {"op": "replace", "path": 'emails[type eq "work"].primary', "value": False}
        ),
    )
    assert patched.status_code == 200, patched.text
    assert [e.get("primary") for e in patched.json()["emails"]] == [False, False, None]


async def test_removing_active_unassigns_it(scim: httpx.AsyncClient) -> None:
    """PATCH ``remove`` of ``active`` leaves it unassigned (RFC 7644
    §3.5.2.2): absent from the user, which stays as active as before."""
    created = await create_user(scim, "act", active=True)
    url = f"/Users/{created['id']}"
    removed = await scim.patch(url, json=patch_body({"op": "remove", "path": "active"}))
    assert removed.status_code == 200, removed.text
    assert "active" not in removed.json()
    read = (await scim.get(url)).json()
    assert "active" not in read
    lifecycle = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
    assert read[lifecycle]["lifecycle"] == created[lifecycle]["lifecycle"]
    assert (await scim.get("/Users", params={"filter": "active eq true"})).json()[
        "totalResults"
    ] == 0
    deactivated = await scim.patch(
        url, json=patch_body({"op": "replace", "path": "active", "value": False})
    )
    assert deactivated.json()["active"] is False
    assert deactivated.json()[lifecycle]["lifecycle"] == "SUSPENDED"
    replaced = await scim.put(url, json=user_body("act"))
    assert "active" not in replaced.json()
    assert replaced.json()[lifecycle]["lifecycle"] != "SUSPENDED"


async def test_a_deleted_user_leaves_its_groups_at_once(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """After ``DELETE /Users/{id}`` no group lists the user among its
    ``members``, ``members.value eq`` finds no group, the groups' versions
    change, and the audit row names each group it left (no outbox row:
    nothing downstream keeps memberships)."""
    gone = await create_user(scim, "gone")
    stays = await create_user(scim, "stays")
    groups = [await create_group(scim, f"g{i}", [gone["id"], stays["id"]]) for i in range(2)]
    assert (await scim.delete(f"/Users/{gone['id']}")).status_code == 204
    for group in groups:
        read = (await scim.get(f"/Groups/{group['id']}")).json()
        assert [m["value"] for m in read["members"]] == [stays["id"]]
        assert read["meta"]["version"] != group["meta"]["version"]
    listed = (await scim.get("/Groups")).json()["Resources"]
    assert all(m["value"] != gone["id"] for g in listed for m in g.get("members", []))
    found = await scim.get("/Groups", params={"filter": f'members.value eq "{gone["id"]}"'})
    assert found.json()["totalResults"] == 0
    found = await scim.get("/Groups", params={"filter": f'members.value eq "{stays["id"]}"'})
    assert found.json()["totalResults"] == 2
    async with engine.connect() as connection:
        removed = (
            await connection.execute(
                select(OutboxEntry.aggregate_id, OutboxEntry.payload).where(
                    OutboxEntry.operation == "members_removed"
                )
            )
        ).all()
        audited: Any = await connection.scalar(
            select(AuditEntry.details).where(AuditEntry.action == "user.delete")
        )
    assert removed == [], "no downstream system keeps memberships: no outbox row"
    assert audited["groups"] == sorted(g["id"] for g in groups)
