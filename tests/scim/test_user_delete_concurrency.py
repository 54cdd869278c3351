"""Concurrent ``DELETE /Users/{id}`` over HTTP (issue 15: Microsoft Entra ID
deletes the users of one group 16 at a time): on PostgreSQL they are written
in batches (identity_store.user_deletes), each request answered with its own
outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import user_deletes
from identity_store.models import AuditEntry, GroupMember, OutboxEntry

from .helpers import create_group, create_user

CONCURRENT = 16


def _version(etag: str) -> int:
    return int(etag[3:-1])


async def _count(engine: AsyncEngine, model: Any, **where: Any) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(await connection.scalar(query) or 0)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch written in one statement."""
    sizes: list[int] = []
    original = user_deletes.delete_batch_at_once

    async def counted(engine: Any, batch: Any, **kw: Any) -> list[bool]:
        sizes.append(len(batch))
        return await original(engine, batch, **kw)

    monkeypatch.setattr(user_deletes, "delete_batch_at_once", counted)
    return sizes


async def test_sixteen_concurrent_deletes_of_one_groups_users(
    scim: httpx.AsyncClient, engine: AsyncEngine, backend: str, batches: list[int]
) -> None:
    """16 DELETEs at once of users of one group: all 204, the group's
    version moved on by 16, none of them listed, each its own audit and
    outbox row; on PostgreSQL some were written together."""
    leaving = [(await create_user(scim, f"d{i}"))["id"] for i in range(CONCURRENT)]
    staying = (await create_user(scim, "stays"))["id"]
    group = await create_group(scim, "Deprovisioned", [*leaving, staying])
    start = _version(group["meta"]["version"])

    responses = await asyncio.gather(*(scim.delete(f"/Users/{u}") for u in leaving))
    assert [r.status_code for r in responses] == [204] * CONCURRENT, [r.text for r in responses]
    read = (await scim.get(f"/Groups/{group['id']}")).json()
    assert _version(read["meta"]["version"]) == start + CONCURRENT
    assert [m["value"] for m in read["members"]] == [staying]
    assert await _count(engine, GroupMember, group_id=group["id"]) == 1
    for user in leaving:
        assert (await scim.get(f"/Users/{user}")).status_code == 404
        assert await _count(engine, AuditEntry, resource_id=user, action="user.delete") == 1
        assert await _count(engine, OutboxEntry, aggregate_id=user, operation="delete") == 1
    if backend == "postgresql":
        assert sum(batches) <= CONCURRENT
        assert max(batches, default=0) > 1, batches


async def test_concurrent_deletes_keep_their_own_answers(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Deletes at once of one group's users, among them one with another
    ``If-Match`` (412, the user stays) and one user deleted twice (one 204,
    one 404): each answers what it answers alone."""
    ids = [(await create_user(scim, f"k{i}"))["id"] for i in range(6)]
    group = await create_group(scim, "Mixed", ids)
    start = _version(group["meta"]["version"])
    requests = [
        scim.delete(f"/Users/{ids[0]}"),
        scim.delete(f"/Users/{ids[1]}", headers={"If-Match": 'W/"7"'}),
        scim.delete(f"/Users/{ids[2]}", headers={"If-Match": 'W/"1"'}),
        scim.delete(f"/Users/{ids[3]}"),
        scim.delete(f"/Users/{ids[3]}"),
        scim.delete(f"/Users/{ids[4]}"),
    ]
    responses = await asyncio.gather(*requests)
    statuses = [r.status_code for r in responses]
    assert statuses[:3] == [204, 412, 204], [r.text for r in responses]
    assert sorted(statuses[3:5]) == [204, 404]
    assert statuses[5] == 204
    read = (await scim.get(f"/Groups/{group['id']}")).json()
    assert sorted(m["value"] for m in read["members"]) == sorted([ids[1], ids[5]])
    assert _version(read["meta"]["version"]) == start + 4
    assert (await scim.get(f"/Users/{ids[1]}")).status_code == 200
    assert await _count(engine, AuditEntry, resource_id=ids[3], action="user.delete") == 1
