"""Concurrent membership PATCHes of one group over HTTP (issue 15): every
change applies, each gets its own version and audit row, ``If-Match`` holds
under the group's lock, and a group deleted meanwhile is never half-written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.models import AuditEntry, GroupMember, OutboxEntry

from .helpers import assert_error, create_group, create_user, patch_body

CONCURRENT = 16
NOBODY = "01NOSUCHMEMBER000000000000"


def _version(etag: str) -> int:
    assert etag.startswith('W/"'), etag
    assert etag.endswith('"'), etag
    return int(etag[3:-1])


def _add_remove(add: list[str], remove: list[str]) -> dict[str, Any]:
    operations = []
    if add:
        operations.append({"op": "add", "path": "members", "value": [{"value": i} for i in add]})
    if remove:
        operations.append(
            {"op": "remove", "path": "members", "value": [{"value": i} for i in remove]}
        )
    return patch_body(*operations)


async def _members(engine: AsyncEngine, group_id: str) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.scalars(
            select(GroupMember.member_id).where(GroupMember.group_id == group_id)
        )
        return set(rows.all())


async def _audits(engine: AsyncEngine, group_id: str) -> list[tuple[Any, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(AuditEntry.details, AuditEntry.request_id)
            .where(AuditEntry.resource_id == group_id, AuditEntry.action == "group.patch")
            .order_by(AuditEntry.id)
        )
        return [(row[0], row[1]) for row in rows.all()]


async def _outbox_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


async def test_sixteen_concurrent_patches_of_one_group_all_apply(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """16 PATCHes at once, each adding its own user and removing its own
    member: all 16 apply, each answers a distinct ETag, the version moves on
    exactly 16 times, and each writes one audit row naming what it did (with
    its own request id), and no outbox row."""
    users = [(await create_user(scim, f"u{i}"))["id"] for i in range(2 * CONCURRENT + 2)]
    newcomers, leavers, bystanders = (
        users[:CONCURRENT],
        users[CONCURRENT : 2 * CONCURRENT],
        users[2 * CONCURRENT :],
    )
    group = await create_group(scim, "Busy", leavers + bystanders)
    start = _version(group["meta"]["version"])
    outbox_before = await _outbox_rows(engine)

    responses = await asyncio.gather(
        *(
            scim.patch(f"/Groups/{group['id']}", json=_add_remove([add], [leave]))
            for add, leave in zip(newcomers, leavers, strict=True)
        )
    )
    assert [r.status_code for r in responses] == [204] * CONCURRENT, [r.text for r in responses]
    versions = sorted(_version(r.headers["etag"]) for r in responses)
    assert versions == list(range(start + 1, start + CONCURRENT + 1))
    read = (await scim.get(f"/Groups/{group['id']}")).json()
    assert _version(read["meta"]["version"]) == start + CONCURRENT
    assert {m["value"] for m in read["members"]} == set(newcomers + bystanders)
    assert await _members(engine, group["id"]) == set(newcomers + bystanders)

    audits = await _audits(engine, group["id"])
    assert sorted((d["addedIds"], d["removedIds"]) for d, _ in audits) == sorted(
        ([add], [leave]) for add, leave in zip(newcomers, leavers, strict=True)
    )
    assert all((d["added"], d["removed"], d["renamed"]) == (1, 1, False) for d, _ in audits)
    assert len({request_id for _, request_id in audits}) == CONCURRENT
    assert await _outbox_rows(engine) == outbox_before


@dataclass(frozen=True)
class Case:
    """Concurrent PATCHes of one group; ``requests``: per request, the
    indexes (into the case's users) to add and to remove, ``"nobody"`` for an
    id that names nothing, ``"self"`` for the group itself."""

    name: str
    members: list[int]
    requests: list[tuple[list[Any], list[Any]]]
    statuses: list[int]
    final: list[int]
    changes: int
    """How many requests changed something (audit rows; version steps)."""


CASES = [
    Case(
        "re-adding members and removing non-members change nothing",
        members=[0, 1],
        requests=[([0], []), ([1], [2]), ([], [3]), ([0, 1], [4])] * 4,
        statuses=[204] * 16,
        final=[0, 1],
        changes=0,
    ),
    Case(
        "the same member added by several requests is added once",
        members=[],
        requests=[([5], [])] * 8,
        statuses=[204] * 8,
        final=[5],
        changes=1,
    ),
    Case(
        "an unknown member refuses its own request only",
        members=[0],
        requests=[([1], []), (["nobody"], [0]), ([2], []), ([3, "nobody"], [])],
        statuses=[204, 400, 204, 400],
        final=[0, 1, 2],
        changes=2,
    ),
    Case(
        "the group itself as a member refuses its own request only",
        members=[],
        requests=[(["self"], []), ([1], []), ([2], [])],
        statuses=[400, 204, 204],
        final=[1, 2],
        changes=2,
    ),
    Case(
        "nested groups are members like users",
        members=["inner-a"],
        requests=[(["inner-b"], ["inner-a"]), ([1], []), ([2], [])],
        statuses=[204, 204, 204],
        final=["inner-b", 1, 2],
        changes=3,
    ),
    Case(
        "adds and removes of one member by different requests all apply in some order",
        members=[0],
        requests=[([], [0]), ([1], []), ([], [1]), ([2], [])],
        statuses=[204] * 4,
        final=[2],  # and user 1 or not, with 3 or 4 changes: see the test
        changes=-1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_concurrent_patches_follow_the_rules_of_one_patch(
    scim: httpx.AsyncClient, engine: AsyncEngine, case: Case
) -> None:
    """A table of concurrent PATCH mixes: each request's status is the one it
    gets alone, the member set is the one some order of them gives, and the
    version moves on once per request that changed something."""
    users = [(await create_user(scim, f"c{i}"))["id"] for i in range(6)]
    inner = {n: (await create_group(scim, n))["id"] for n in ("inner-a", "inner-b")}

    def ids(items: list[Any], group_id: str) -> list[str]:
        named = {"nobody": NOBODY, "self": group_id, **inner}
        return [named[i] if isinstance(i, str) else users[i] for i in items]

    group = await create_group(scim, "Mixed", ids(case.members, ""))
    gid = group["id"]
    start = _version(group["meta"]["version"])
    responses = await asyncio.gather(
        *(
            scim.patch(f"/Groups/{gid}", json=_add_remove(ids(add, gid), ids(remove, gid)))
            for add, remove in case.requests
        )
    )
    assert [r.status_code for r in responses] == case.statuses, [r.text for r in responses]
    for response in responses:
        if response.status_code == 400:
            assert_error(response, 400, "invalidValue")
    final = await _members(engine, gid)
    if case.name.startswith("adds and removes of one member"):
        # Whether user 1 stays depends on the order the two requests ran in:
        # removed before it was added (a no-op) or added, then removed.
        assert final - {users[1]} == set(ids(case.final, gid))
        changed = 3 if users[1] in final else 4
    else:
        assert final == set(ids(case.final, gid))
        changed = case.changes
    read = (await scim.get(f"/Groups/{gid}")).json()
    assert _version(read["meta"]["version"]) == start + changed
    assert len(await _audits(engine, gid)) == changed
    answered = [_version(r.headers["etag"]) for r in responses if r.status_code == 204]
    assert all(start <= v <= start + changed for v in answered)


async def test_if_match_is_checked_under_the_groups_lock(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """16 concurrent PATCHes that all name the current version in If-Match:
    exactly one applies, the others get 412 and change nothing."""
    users = [(await create_user(scim, f"m{i}"))["id"] for i in range(CONCURRENT)]
    group = await create_group(scim, "Guarded")
    etag = group["meta"]["version"]
    responses = await asyncio.gather(
        *(
            scim.patch(
                f"/Groups/{group['id']}", headers={"If-Match": etag}, json=_add_remove([u], [])
            )
            for u in users
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [204] + [412] * (CONCURRENT - 1), [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 204)
    assert _version(winner.headers["etag"]) == _version(etag) + 1
    assert len(await _members(engine, group["id"])) == 1
    assert len(await _audits(engine, group["id"])) == 1


async def test_if_match_mixed_with_unconditional_patches(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A stale If-Match among unconditional PATCHes gets 412 and changes
    nothing; the others apply; the final ETag is then honoured."""
    users = [(await create_user(scim, f"x{i}"))["id"] for i in range(9)]
    group = await create_group(scim, "Mixed guard")
    gid = group["id"]
    stale = 'W/"999"'
    requests = [scim.patch(f"/Groups/{gid}", json=_add_remove([u], [])) for u in users[:7]] + [
        scim.patch(f"/Groups/{gid}", headers={"If-Match": stale}, json=_add_remove([users[7]], []))
    ]
    responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [204] * 7 + [412]
    assert await _members(engine, gid) == set(users[:7])
    current = (await scim.get(f"/Groups/{gid}")).json()["meta"]["version"]
    assert _version(current) == _version(group["meta"]["version"]) + 7
    guarded = await scim.patch(
        f"/Groups/{gid}", headers={"If-Match": current}, json=_add_remove([users[8]], [])
    )
    assert guarded.status_code == 204
    assert _version(guarded.headers["etag"]) == _version(current) + 1
    again = await scim.patch(
        f"/Groups/{gid}", headers={"If-Match": current}, json=_add_remove([], [users[8]])
    )
    assert again.status_code == 412


@pytest.mark.parametrize("adds", [True, False], ids=["adding and removing", "removing only"])
async def test_a_group_deleted_while_patched_is_never_half_written(
    scim: httpx.AsyncClient, engine: AsyncEngine, adds: bool
) -> None:
    """PATCHes racing the group's DELETE each either applied before it (204)
    or find no group (404): afterwards no membership row of the group is
    left, and each PATCH that answered 204 wrote its audit row (each removes
    a member there was, so a 204 that did nothing would be a lie)."""
    users = [(await create_user(scim, f"d{i}"))["id"] for i in range(2 * CONCURRENT)]
    group = await create_group(scim, "Doomed", users[CONCURRENT:])
    gid = group["id"]
    patches = [
        scim.patch(
            f"/Groups/{gid}",
            json=_add_remove([users[i]] if adds else [], [users[CONCURRENT + i]]),
        )
        for i in range(CONCURRENT)
    ]
    halfway = CONCURRENT // 2
    responses = await asyncio.gather(
        *patches[:halfway], scim.delete(f"/Groups/{gid}"), *patches[halfway:]
    )
    deleted = responses[halfway]
    patched = responses[:halfway] + responses[halfway + 1 :]
    assert deleted.status_code == 204, deleted.text
    assert {r.status_code for r in patched} <= {204, 404}, [r.text for r in patched]
    for response in patched:
        if response.status_code == 404:
            assert_error(response, 404)
    assert await _members(engine, gid) == set()
    assert len(await _audits(engine, gid)) == sum(r.status_code == 204 for r in patched)
    assert (await scim.get(f"/Groups/{gid}")).status_code == 404
    late = await scim.patch(f"/Groups/{gid}", json=_add_remove([users[0]], []))
    assert_error(late, 404)
