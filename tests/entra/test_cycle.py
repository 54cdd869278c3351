"""A full Entra provisioning cycle, replayed in both modes, then the store's
final state checked exactly."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import Group, GroupMember, User

from .payloads import (
    ENTERPRISE,
    add_members,
    create_group,
    create_user,
    remove_members,
    replace_attributes,
    set_active,
    set_manager,
)

USERS = 50
GROUPS = 5


async def _lookup_or_create(
    entra: httpx.AsyncClient,
    endpoint: str,
    filter_: str,
    body: dict[str, Any],
    **params: str,
) -> str:
    """Entra's pattern: query by the matching attribute, create when absent."""
    found = await entra.get(endpoint, params={"filter": filter_, **params})
    assert found.status_code == 200, found.text
    if found.json()["totalResults"]:
        return str(found.json()["Resources"][0]["id"])
    created = await entra.post(endpoint, json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_full_provisioning_cycle(
    entra: httpx.AsyncClient, mode: str, session: AsyncSession
) -> None:
    """Test connection, initial cycle (50 users with managers, 5 groups of 10),
    incremental changes, disable, re-enable, delete: the store ends exactly as
    Entra's directory says."""
    probe = await entra.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
    assert probe.json()["totalResults"] == 0

    # Initial cycle: users, then managers, then groups and memberships.
    object_ids = [str(uuid.uuid4()) for _ in range(USERS)]
    upns = [f"user{i:02d}@contoso.com" for i in range(USERS)]
    ids: list[str] = []
    for i in range(USERS):
        body = create_user(
            upns[i],
            object_ids[i],
            f"Given{i}",
            f"Family{i}",
            employee=str(1000 + i),
            dept=f"Dept{i % 3}",
        )
        ids.append(await _lookup_or_create(entra, "/Users", f'userName eq "{upns[i]}"', body))
    managers = {i: ids[(i // 10) * 10] for i in range(USERS) if i % 10}
    for i, manager_id in managers.items():
        response = await entra.patch(f"/Users/{ids[i]}", json=set_manager(mode, manager_id))
        assert response.status_code == 200, response.text

    group_ids = []
    for g in range(GROUPS):
        gid = await _lookup_or_create(
            entra,
            "/Groups",
            f'displayName eq "Team {g}"',
            create_group(f"Team {g}", str(uuid.uuid4())),
            excludedAttributes="members",
        )
        group_ids.append(gid)
        response = await entra.patch(
            f"/Groups/{gid}", json=add_members(mode, ids[g * 10 : g * 10 + 10])
        )
        assert response.status_code == 204, response.text

    # A second initial cycle finds everything and creates nothing.
    for i in range(USERS):
        again = await _lookup_or_create(entra, "/Users", f'userName eq "{upns[i]}"', {})
        assert again == ids[i]

    # Incremental: renames, e-mail changes, manager changes, member removals.
    for i in range(0, 5):
        upns[i] = f"renamed{i:02d}@contoso.com"
        response = await entra.patch(
            f"/Users/{ids[i]}",
            json=replace_attributes(
                mode,
                {
                    "userName": upns[i],
                    "displayName": f"Renamed {i}",
                },
            ),
        )
        assert response.status_code == 200, response.text
    for i in range(5, 10):
        response = await entra.patch(
            f"/Users/{ids[i]}",
            json=replace_attributes(
                mode,
                {
                    'emails[type eq "work"].value': f"new{i}@contoso.com",
                },
            ),
        )
        assert response.status_code == 200, response.text
    for i in range(11, 16):
        managers[i] = ids[20]
        response = await entra.patch(f"/Users/{ids[i]}", json=set_manager(mode, ids[20]))
        assert response.status_code == 200, response.text
    removed = {g: ids[g * 10 + 8 : g * 10 + 10] for g in range(GROUPS)}
    for g, gid in enumerate(group_ids):
        response = await entra.patch(f"/Groups/{gid}", json=remove_members(mode, removed[g]))
        assert response.status_code == 204, response.text

    # Disable five, re-enable two of them, delete three others.
    disabled = [ids[i] for i in (30, 31, 32, 33, 34)]
    for uid in disabled:
        assert (await entra.patch(f"/Users/{uid}", json=set_active(mode, False))).status_code == 200
    reenabled = disabled[:2]
    for uid in reenabled:
        assert (await entra.patch(f"/Users/{uid}", json=set_active(mode, True))).status_code == 200
    deleted = [ids[i] for i in (45, 46, 47)]
    for uid in deleted:
        assert (await entra.delete(f"/Users/{uid}")).status_code == 204

    # The store, exactly.
    session.expire_all()
    rows = {u.id: u for u in (await session.scalars(select(User))).all()}
    assert set(rows) == set(ids)
    live = {uid for uid, u in rows.items() if u.deleted_at is None}
    assert live == set(ids) - set(deleted)
    for i, uid in enumerate(ids):
        user = rows[uid]
        expected_state = "SUSPENDED" if uid in set(disabled[2:]) | set(deleted) else "ACTIVE"
        assert user.lifecycle == expected_state, (i, user.lifecycle)
        assert user.active is (expected_state == "ACTIVE")
        assert user.user_name == upns[i]
        assert user.idp_source == "AAD"
        assert user.idp_reference_id == object_ids[i]
        assert user.idp_cloud_username == upns[i]
        assert user.manager_id == managers.get(i)
        assert user.employee_number == str(1000 + i)
    emails = {uid: (await entra.get(f"/Users/{uid}")).json()["emails"] for uid in ids[5:10]}
    for offset, uid in enumerate(ids[5:10]):
        assert emails[uid] == [
            {"value": f"new{offset + 5}@contoso.com", "type": "work", "primary": True}
        ]
    groups = {g.display_name: g.id for g in (await session.scalars(select(Group))).all()}
    assert groups == {f"Team {g}": group_ids[g] for g in range(GROUPS)}
    for g, gid in enumerate(group_ids):
        members = set(
            (
                await session.scalars(
                    select(GroupMember.member_id).where(GroupMember.group_id == gid)
                )
            ).all()
        )
        # A user deleted over SCIM leaves its groups at once (RFC 7644 §3.6).
        assert members == set(ids[g * 10 : g * 10 + 8]) - set(deleted), g
    # Memberships of suspended (disabled, not deleted) users are kept.
    assert ids[30] in set(
        (
            await session.scalars(
                select(GroupMember.member_id).where(GroupMember.group_id == group_ids[3])
            )
        ).all()
    )
    renamed = await entra.get(
        "/Users", params={"filter": 'userName sw "renamed"', "sortBy": "userName"}
    )
    assert [r["displayName"] for r in renamed.json()["Resources"]] == [
        f"Renamed {i}" for i in range(5)
    ]
    manager_view = (await entra.get(f"/Users/{ids[11]}")).json()[ENTERPRISE]["manager"]
    assert manager_view == {
        "value": ids[20],
        "$ref": f"http://testserver/scim/v2/Users/{ids[20]}",
        "displayName": "Given20 Family20",
    }
