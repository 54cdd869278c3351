"""The push of roles and bindings to Rönd, against the Rönd emulator, on
SQLite and PostgreSQL: changes made through the store's use cases reach
Rönd as :func:`identity_store.rbac.rond_state` says (for every user and
group), delivering twice changes nothing, faults end in sync or in a dead
letter that keeps Rönd's error, a refusal by a gateway waits, ordering and
coalescing per subject, the shared rate, the dry run, deprovisioned users
and deleted groups, the request id; and the client's limits.

Times: the dispatcher's clock is a :class:`ManualClock` an hour after the
real time (rows written now are due at once); retries become due by moving
it (:func:`deliver_all`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import deprovisioning, groups, outbox, rbac, users
from identity_store.actor import Actor
from identity_store.models import OutboxEntry
from identity_store.outbox import Claim
from identity_store.rbac import BindingInput, Resource, RoleInput, RondBinding
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput
from identity_sync import registry
from identity_sync.auth_service import Permanent, Transient, current_request_id
from identity_sync.clock import ManualClock, SystemClock
from identity_sync.dispatcher import Totals
from identity_sync.rond import (
    MAX_BODY_BYTES,
    RondClient,
    RondDispatcher,
)
from tests.emulators.rond import BINDINGS_MAX_PAGE_SIZE, RondEmulator

ACTOR = Actor(name="test", request_id="req-rond")

Make = Callable[..., Awaitable[RondDispatcher]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC) + timedelta(hours=1))


@pytest.fixture
async def opened(
    settings: Settings, engine: AsyncEngine, rond: RondEmulator
) -> AsyncIterator[list[Store]]:
    """Stores opened by the test, closed after it."""
    stores: list[Store] = []
    yield stores
    for store in stores:
        await store.close()


async def _open(
    settings: Settings, rond: RondEmulator, opened: list[Store], **fields: Any
) -> Store:
    store = await Store.open(
        Settings(
            DATABASE_URL=settings.database_url,
            **rond.settings_fields(),
            **{
                "rond_requests_per_second": 1000.0,
                "outbox_batch_size": 5,
                "outbox_concurrency": 4,
                "outbox_backoff_seconds": 1.0,
                "outbox_max_attempts": 5,
                **fields,
            },
        )
    )
    opened.append(store)
    return store


@pytest.fixture
async def rstore(settings: Settings, rond: RondEmulator, opened: list[Store]) -> Store:
    """The store, with Rönd configured: its RBAC changes write ``rond`` rows."""
    return await _open(settings, rond, opened)


@pytest.fixture
async def make(
    settings: Settings, rond: RondEmulator, clock: ManualClock, opened: list[Store]
) -> AsyncIterator[Make]:
    """Builds Rönd dispatchers of this backend's database (each with a store
    of its own, as separate workers have), paced by the database budget."""
    made: list[RondDispatcher] = []

    async def make_(name: str = "w1", *, real_time: bool = False, **fields: Any) -> RondDispatcher:
        store = await _open(settings, rond, opened, **fields)
        at = SystemClock() if real_time else clock
        client = registry.build_rond_client(store, at)
        assert client is not None
        made.append(RondDispatcher(store, client, clock=at, name=name))
        return made[-1]

    yield make_
    for dispatcher in made:
        await dispatcher.close()


async def _due(store: Store) -> datetime | None:
    async with store.reading() as session:
        return await session.scalar(
            select(func.min(OutboxEntry.next_attempt_at)).where(
                OutboxEntry.status == "PENDING", OutboxEntry.target == "rond"
            )
        )


async def deliver_all(d: RondDispatcher, clock: ManualClock, *, deadline_s: float = 60.0) -> Totals:
    """Drain, and move the clock to the next retry, until no row is pending."""
    total = Totals()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done = await d.drain()
        total.add(done)
        due = await _due(d.store)
        if due is None:
            return total
        if due > clock.now():
            clock.set(due + timedelta(milliseconds=1))
        elif not done.rounds:
            await asyncio.sleep(0.01)  # held by another dispatcher
    raise AssertionError(f"rows still pending after {deadline_s} s")


async def _rows(store: Store) -> list[Any]:
    async with store.reading() as session:
        return list(
            (
                await session.execute(
                    select(OutboxEntry).where(OutboxEntry.target == "rond").order_by(OutboxEntry.id)
                )
            ).scalars()
        )


def _user(name: str) -> UserInput:
    return UserInput(
        user_name=name,
        columns={"idp_username": name.split("@")[0], "idp_cloud_username": name},
        multi_values=[{"attribute": "emails", "value": name, "primary": True}],
    )


async def _users(store: Store, *names: str) -> list[str]:
    return [(await users.create_user(store, _user(n), ACTOR)).user.id for n in names]


async def _role(store: Store, role_id: str, *permissions: str) -> None:
    await rbac.create_role(store, role_id, RoleInput(role_id, None, list(permissions)), ACTOR)


async def _bind(
    store: Store,
    *,
    subjects: Iterable[str] = (),
    groups_: Iterable[str] = (),
    roles: Iterable[str] = (),
    permissions: Iterable[str] = (),
    resource: Resource | None = None,
    actor: Actor = ACTOR,
) -> str:
    binding = BindingInput(list(subjects), list(groups_), list(roles), list(permissions), resource)
    return (await rbac.create_binding(store, binding, actor)).value.binding_id


def _comparable(b: RondBinding) -> tuple[Any, ...]:
    return (
        tuple(b.subjects),
        tuple(b.groups),
        tuple(b.roles),
        tuple(b.permissions),
        (b.resource.type, b.resource.id) if b.resource else None,
    )


async def assert_in_sync(
    store: Store, rond: RondEmulator, users_: Iterable[str] = (), groups_: Iterable[str] = ()
) -> None:
    """Rönd holds, for each user and group, exactly its bindings in the
    store's Rönd state (no more, no duplicate); no row is pending."""
    for kind, ids in (("User", users_), ("Group", groups_)):
        for aggregate_id in ids:
            wanted = sorted(
                _comparable(b) for b in await rbac.rond_state(store, kind, aggregate_id)
            )
            held = (
                rond.bindings_of(subject=aggregate_id)
                if kind == "User"
                else rond.bindings_of(group=aggregate_id)
            )
            assert held == wanted, f"{kind} {aggregate_id}"
    assert await _due(store) is None


async def _world(store: Store) -> tuple[list[str], str]:
    """Two users, a group of both, two roles; bindings with and without a
    resource, roles assigned to a user and mapped to the group."""
    u1, u2 = await _users(store, "ada@example.com", "bob@example.com")
    g1 = (await groups.create_group(store, "Readers", ACTOR, member_ids=[u1, u2])).group.id
    await _role(store, "reader", "doc.read", "doc.list")
    await _role(store, "writer", "doc.write")
    await _bind(store, subjects=[u1, u2], groups_=[g1], roles=["reader"])
    await _bind(
        store,
        subjects=[u1],
        roles=["writer"],
        permissions=["doc.share"],
        resource=Resource("project", "p-1"),
    )
    await rbac.replace_user_roles(store, u2, ["writer"], ACTOR)
    await rbac.replace_group_roles(store, g1, ["writer"], ACTOR)
    return [u1, u2], g1


# -- What reaches Rönd ---------------------------------------------------------------


async def test_roles_bindings_and_mappings_reach_rond_as_the_store_holds_them(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Every user's and group's bindings in Rönd are their Rönd state in the
    store: one binding each, permissions expanded, the resource kept."""
    (u1, u2), g1 = await _world(rstore)
    d = await make()
    totals = await deliver_all(d, clock)
    await assert_in_sync(rstore, rond, [u1, u2], [g1])
    assert totals.delivered == 3  # u1, u2, g1: each one delivery
    assert len(rond.bindings_of(subject=u1)) == 2
    assert ((), (g1,), ("reader",), ("doc.list", "doc.read"), None) in rond.bindings_of(group=g1)
    on_project = [r for r in rond.seen("grant") if r.path == "/grant/bindings/resource/project"]
    assert [r.body["resourceId"] for r in on_project] == ["p-1"]


async def test_changes_replacements_and_deletions_are_followed(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A binding replaced, another deleted, a role's permissions replaced,
    a group's roles emptied: Rönd follows each, and drops what is gone."""
    (u1, u2), g1 = await _world(rstore)
    d = await make()
    await deliver_all(d, clock)
    listing = await rbac.list_bindings(rstore)
    scoped = next(b for b in listing.items if b.resource is not None)
    shared = next(b for b in listing.items if b.resource is None)
    await rbac.delete_binding(rstore, scoped.binding_id, ACTOR)
    await rbac.replace_binding(
        rstore, shared.binding_id, BindingInput([u1], [g1], ["reader", "writer"], []), ACTOR
    )
    await rbac.replace_role(rstore, "reader", RoleInput("reader", None, ["doc.read"]), ACTOR)
    await rbac.replace_group_roles(rstore, g1, [], ACTOR)
    await deliver_all(d, clock)
    await assert_in_sync(rstore, rond, [u1, u2], [g1])
    assert rond.bindings_of(subject=u1) == [
        ((u1,), (), ("reader", "writer"), ("doc.read", "doc.write"), None)
    ]
    assert rond.bindings_of(group=g1) == [
        ((), (g1,), ("reader", "writer"), ("doc.read", "doc.write"), None)
    ]


async def test_a_delivery_made_twice_leaves_rond_as_once(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Delivering a user's state again (a replayed change) revokes and grants
    the same bindings: Rönd ends with the same bindings, none twice."""
    (u1, _), _ = await _world(rstore)
    d = await make()
    await deliver_all(d, clock)
    before = rond.bindings_of(subject=u1)
    count = len(rond.bindings)
    claim = Claim("rond", "User", u1, (), (), ("replay",), 0, clock.now())
    for _ in range(2):
        await d.carry_out(claim, await rbac.rond_state(rstore, "User", u1))
    assert rond.bindings_of(subject=u1) == before
    assert len(rond.bindings) == count


async def test_bindings_rond_holds_beyond_one_revoke_page_are_all_revoked(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Rönd revokes at most 200 bindings per call: a user named in 250
    stale ones there is revoked page by page, and ends with its state."""
    [u1] = await _users(rstore, "ada@example.com")
    for i in range(250):
        rond.add_binding(subjects=[u1], groups=[], roles=[f"stale-{i}"], permissions=[])
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], ACTOR)
    await deliver_all(await make(), clock)
    await assert_in_sync(rstore, rond, [u1])
    assert len(rond.seen("revoke")) == 2
    assert BINDINGS_MAX_PAGE_SIZE < 250


async def test_a_binding_another_tool_shares_with_others_keeps_them(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A Rönd binding naming the user and someone else loses only the user
    (Rönd's revoke modifies it); the store owns what Rönd says of its users."""
    [u1] = await _users(rstore, "ada@example.com")
    rond.add_binding(subjects=[u1, "someone-else"], groups=[], roles=["ops"], permissions=[])
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], ACTOR)
    await deliver_all(await make(), clock)
    await assert_in_sync(rstore, rond, [u1])
    assert rond.bindings_of(subject="someone-else") == [(("someone-else",), (), ("ops",), (), None)]


async def test_a_deprovisioned_user_and_a_deleted_group_end_with_no_bindings_in_rond(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """The deletion sync takes a user out of every binding and a deleted
    group leaves its bindings: Rönd holds nothing of either afterwards."""
    (u1, u2), g1 = await _world(rstore)
    d = await make()
    await deliver_all(d, clock)
    assert rond.bindings_of(subject=u1)
    assert rond.bindings_of(group=g1)
    await users.delete_user(rstore, u1, ACTOR)
    later = datetime.now(UTC) + timedelta(days=2)
    batch = await deprovisioning.deprovision_batch(
        rstore,
        cutoff=later,
        limit=100,
        actor=ACTOR,
        hard_delete=False,
        now=later,
    )
    assert batch.users == 1
    await groups.delete_group(rstore, g1, ACTOR)
    await deliver_all(d, clock)
    assert rond.bindings_of(subject=u1) == []
    assert rond.bindings_of(group=g1) == []
    await assert_in_sync(rstore, rond, [u2])


# -- Faults ---------------------------------------------------------------------------


async def test_transient_failures_are_retried_with_backoff_and_end_in_sync(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A 503, a 500 after Rönd applied the grant, and a connection dropped
    after it applied another: each retried later (counted, with backoff),
    and Rönd ends with the state, nothing granted twice."""
    (u1, u2), g1 = await _world(rstore)
    rond.fail_next(1, 503, only="revoke")
    rond.fail_next(1, 500, apply=True, only="grant")
    rond.drop_next(1, only="grant")
    d = await make(outbox_concurrency=1)
    first = await d.run_once()
    assert first.failed == 3
    rows = await _rows(rstore)
    assert {r.aggregate_id for r in rows} == {u1, u2, g1}
    for row in rows:
        assert (row.status, row.attempts) == ("PENDING", 1)
        assert row.next_attempt_at >= clock.now() + timedelta(seconds=0.5)  # base 1 s, half floor
        assert row.last_error
    await deliver_all(d, clock)
    await assert_in_sync(rstore, rond, [u1, u2], [g1])


async def test_a_429_waits_its_retry_after_for_every_worker_without_counting(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A 429 with ``Retry-After: 30`` puts the row off 30 s without counting
    an attempt, and pauses the shared budget until then."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], ACTOR)
    rond.fail_next(1, 429, retry_after="30")
    d = await make()
    done = await d.run_once()
    assert done.failed == 1
    [row] = await _rows(rstore)
    assert (row.status, row.attempts) == ("PENDING", 0)
    assert row.next_attempt_at >= clock.now() + timedelta(seconds=29)
    assert "throttled" in (row.last_error or "")
    waited = await outbox.reserve(rstore, "rond", rate=1000.0, burst=1, now=clock.now().timestamp())
    assert waited >= 29
    await deliver_all(d, clock)
    await assert_in_sync(rstore, rond, [u1])


async def test_a_400_dead_letters_the_change_with_rond_s_error(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Rönd's 400 is permanent: the rows are dead letters at once, their
    error Rönd's reason; a later change of the user settles them."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], ACTOR)
    rond.answer_next(
        400,
        b'{"error":"missing resource id","message":"Internal server error, please try '
        b'again later","statusCode":400}',
        headers={"content-type": "application/json"},
        only="grant",
    )
    d = await make()
    done = await deliver_all(d, clock)
    assert done.dead == 1
    [row] = await _rows(rstore)
    assert (row.status, row.attempts) == ("FAILED", 1)
    assert "400" in (row.last_error or "")
    assert "missing resource id" in (row.last_error or "")
    [dead] = await outbox.dead_letters(rstore, target="rond")
    assert dead.aggregate_id == u1
    await rbac.replace_user_roles(rstore, u1, [], ACTOR)
    await deliver_all(d, clock)
    assert [r.status for r in await _rows(rstore)] == ["DONE", "DONE"]
    await assert_in_sync(rstore, rond, [u1])


async def test_a_resource_type_rond_cannot_route_dead_letters_before_anything_is_revoked(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A binding on a resource type holding a ``/`` cannot be granted
    through Rönd's path: the delivery is refused before it revokes anything."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "reader", "doc.read")
    rond.add_binding(subjects=[u1], groups=[], roles=["reader"], permissions=[])
    await _bind(rstore, subjects=[u1], roles=["reader"], resource=Resource("team/a", "t-1"))
    done = await deliver_all(await make(), clock)
    assert done.dead == 1
    [row] = await _rows(rstore)
    assert "team/a" in (row.last_error or "")
    assert rond.requests == []
    assert len(rond.bindings_of(subject=u1)) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_a_gateway_refusing_the_credentials_waits_and_dead_letters_nothing(
    status: int, make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A 401 or 403 (a gateway in front of Rönd) is a configuration to fix:
    the rows wait the longest backoff, uncounted, then go through."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], ACTOR)
    rond.fail_next(1, status)
    d = await make()
    done = await d.run_once()
    assert (done.failed, done.dead) == (1, 0)
    [row] = await _rows(rstore)
    assert (row.status, row.attempts) == ("PENDING", 0)
    assert row.next_attempt_at >= clock.now() + timedelta(
        seconds=d.settings.outbox_backoff_max_seconds - 1
    )
    assert "refused" in (row.last_error or "")
    await deliver_all(d, clock)
    await assert_in_sync(rstore, rond, [u1])


# -- Ordering, coalescing, rate -------------------------------------------------------


async def test_many_pending_changes_of_one_user_are_one_delivery(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Five changes of a user's roles before the worker looks: one delivery
    (one revoke, one grant), of the last state."""
    [u1] = await _users(rstore, "ada@example.com")
    for name in ("a", "b", "c", "d", "e"):
        await _role(rstore, name, f"{name}.use")
    for name in ("a", "b", "c", "d", "e"):
        await rbac.replace_user_roles(rstore, u1, [name], ACTOR)
    totals = await deliver_all(await make(), clock)
    assert (totals.delivered, totals.rows) == (1, 5)
    assert len(rond.seen("revoke")) == 1
    assert rond.bindings_of(subject=u1) == [((u1,), (), ("e",), ("e.use",), None)]


async def test_a_later_change_is_delivered_after_the_earlier_one_failed(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """A change whose delivery failed and a later one of the same user: the
    user's rows go together, and Rönd ends with the later state, never
    overtaken by the earlier."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "old", "old.use")
    await _role(rstore, "new", "new.use")
    await rbac.replace_user_roles(rstore, u1, ["old"], ACTOR)
    rond.fail_next(1, 503, only="grant", apply=True)
    d = await make()
    await d.run_once()
    await rbac.replace_user_roles(rstore, u1, ["new"], ACTOR)
    await deliver_all(d, clock)
    assert rond.bindings_of(subject=u1) == [((u1,), (), ("new",), ("new.use",), None)]
    revokes = [r.at for r in rond.seen("revoke")]
    grants = [r.at for r in rond.seen("grant")]
    assert revokes[-1] < grants[-1]  # the last delivery: revoke, then its grant


async def test_two_workers_deliver_each_subject_once_at_a_time(
    make: Make, rstore: Store, rond: RondEmulator, clock: ManualClock
) -> None:
    """Two dispatchers on one database, Rönd slow: no user is delivered by
    both at once (each revoke of a user is followed by its grant before the
    next revoke of that user), and Rönd ends in sync."""
    ids = await _users(rstore, *(f"u{i}@example.com" for i in range(8)))
    await _role(rstore, "reader", "doc.read")
    for user_id in ids:
        await rbac.replace_user_roles(rstore, user_id, ["reader"], ACTOR)
    rond.delay = 0.01
    d1, d2 = await make("w1"), await make("w2")
    await asyncio.gather(deliver_all(d1, clock), deliver_all(d2, clock))
    await assert_in_sync(rstore, rond, ids)
    for user_id in ids:
        kinds = [
            r.path.split("/")[1]
            for r in rond.requests
            if user_id in (r.body or {}).get("subjects", [])
        ]
        assert kinds == ["revoke", "grant"]


async def test_the_rate_is_shared_by_every_worker(
    make: Make, rstore: Store, rond: RondEmulator, settings: Settings
) -> None:
    """Two workers at ``rond_requests_per_second=40``: Rönd sees the 24
    requests of 12 users spread over at least 23/40 s."""
    ids = await _users(rstore, *(f"r{i}@example.com" for i in range(12)))
    await _role(rstore, "reader", "doc.read")
    for user_id in ids:
        await rbac.replace_user_roles(rstore, user_id, ["reader"], ACTOR)
    d1 = await make("w1", real_time=True, rond_requests_per_second=40.0)
    d2 = await make("w2", real_time=True, rond_requests_per_second=40.0)
    await asyncio.gather(d1.drain(), d2.drain())
    assert await _due(rstore) is None
    times = sorted(r.at for r in rond.requests)
    assert len(times) == 24
    assert times[-1] - times[0] >= 23 / 40 * 0.9


# -- Dry run, request id, wiring ------------------------------------------------------


async def test_the_dry_run_logs_what_would_be_sent_and_sends_nothing(
    make: Make, rstore: Store, rond: RondEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``outbox_dry_run``, each due row is logged once with the grants
    it would make; Rönd sees nothing and the rows stay pending."""
    (u1, _u2), g1 = await _world(rstore)
    d = await make(outbox_dry_run=True)
    with caplog.at_level(logging.INFO, logger="idstore.outbox"):
        totals = await d.drain()
        again = await d.drain()
    assert again.rows == 0
    assert totals.rows == len(await _rows(rstore)) > 0
    assert rond.requests == []
    assert {r.status for r in await _rows(rstore)} == {"PENDING"}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "idstore.outbox"]
    assert {line["event"] for line in lines} == {"dry_run"}
    last_of_u1 = [line for line in lines if line.get("user") == u1][-1]
    assert (last_of_u1["grants"], last_of_u1["on_resources"]) == (2, 1)
    assert any(line.get("group") == g1 for line in lines)


async def test_the_change_s_request_id_reaches_rond_and_every_log_line(
    make: Make,
    rstore: Store,
    rond: RondEmulator,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request id of the change goes to Rönd as ``X-Request-Id`` and
    into the log line of each call and of the delivery; no user id is logged
    by the client."""
    [u1] = await _users(rstore, "ada@example.com")
    await _role(rstore, "reader", "doc.read")
    await rbac.replace_user_roles(rstore, u1, ["reader"], Actor(name="t", request_id="entra-9"))
    with caplog.at_level(logging.INFO):
        await deliver_all(await make(), clock)
    assert {r.headers.get("x-request-id") for r in rond.requests} == {"entra-9"}
    calls = [json.loads(r.getMessage()) for r in caplog.records if r.name == "idstore.rond"]
    assert [c["path"] for c in calls] == ["/revoke/bindings", "/grant/bindings"]
    assert {c["request_id"] for c in calls} == {"entra-9"}
    assert all(u1 not in r.getMessage() for r in caplog.records if r.name == "idstore.rond")
    delivered = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "idstore.outbox" and "delivered" in r.getMessage()
    ]
    assert delivered[0]["request_id"] == "entra-9"
    assert delivered[0]["outcome"].startswith("synced: 1 bindings")


async def test_the_worker_runs_the_rond_dispatcher_only_when_rond_is_configured(
    settings: Settings, rond: RondEmulator, opened: list[Store]
) -> None:
    """``build_dispatchers`` (``idstore worker``, the in-process worker)
    has a ``rond`` dispatcher when ``rond_base_url`` is set, none without."""
    with_rond = await _open(settings, rond, opened)
    without = await Store.open(Settings(DATABASE_URL=settings.database_url))
    opened.append(without)
    found = registry.build_dispatchers(with_rond, SystemClock(), "w")
    assert [d.label for d in found] == ["outbox:rond"]
    assert registry.build_dispatchers(without, SystemClock(), "w") == []
    worker = registry.build_worker(with_rond, SystemClock(), only=[registry.OUTBOX])
    assert [loop.label for loop in worker.loops] == ["outbox:rond"]
    for d in found:
        await d.close()
    await worker.close()


async def test_the_worker_command_delivers_rond_rows_and_the_outbox_commands_cover_them(
    rstore: Store, rond: RondEmulator
) -> None:
    """``idstore worker --until-idle --job outbox`` delivers the ``rond``
    rows; ``idstore outbox status --target rond``, ``show`` and ``retry``
    show and replay a Rönd dead letter."""
    (u1, u2), g1 = await _world(rstore)
    rond.fail_next(1, 400, only="grant")
    env = {
        **os.environ,
        "DATABASE_URL": rstore.settings.database_url,
        "IDSTORE_ROND_BASE_URL": rond.url,
        "IDSTORE_ROND_REQUESTS_PER_SECOND": "1000",
        "IDSTORE_LOG_LEVEL": "WARNING",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "idstore", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = await asyncio.to_thread(run, "worker", "--until-idle", "--job", "outbox")
    assert first.returncode == 0, first.stderr
    assert "outbox:rond: 2 users delivered" in first.stdout
    assert "1 dead letters" in first.stdout
    status = await asyncio.to_thread(run, "outbox", "status", "--target", "rond", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    [target] = shown["targets"]
    assert (target["target"], target["pending"]) == ("rond", 0)
    assert target["dead"] == len(shown["deadLetters"]) >= 1  # the rows of one user or group
    [dead] = {d["aggregateId"] for d in shown["deadLetters"]}
    assert dead in {u1, u2, g1}
    assert all("400" in d["lastError"] for d in shown["deadLetters"])
    rows = await asyncio.to_thread(run, "outbox", "show", dead, "--json")
    listed = json.loads(rows.stdout)
    assert {r["status"] for r in listed if r["target"] == "rond"} == {"FAILED"}
    retried = await asyncio.to_thread(run, "outbox", "retry", "--dead", "--target", "rond")
    assert "dead letters put back to pending" in retried.stdout
    again = await asyncio.to_thread(run, "worker", "--until-idle", "--job", "outbox")
    assert "outbox:rond: 1 users delivered" in again.stdout
    await assert_in_sync(rstore, rond, [u1, u2], [g1])


# -- The client's limits and answers ------------------------------------------------------


@pytest.fixture
async def client(rond: RondEmulator) -> AsyncIterator[RondClient]:
    settings = Settings(rond_base_url=rond.url, rond_timeout_seconds=0.5)
    async with RondClient(settings) as c:
        yield c


BINDING = RondBinding(["u1"], [], ["reader"], ["doc.read"], None)


async def test_a_2xx_answer_larger_than_the_limit_is_not_read(
    client: RondClient, rond: RondEmulator
) -> None:
    """An answer over :data:`MAX_BODY_BYTES` is refused as it streams in (permanent)."""
    rond.answer_next(200, b'{"bindingId":"' + b"x" * MAX_BODY_BYTES + b'"}')
    with pytest.raises(Permanent, match="bytes"):
        await client.grant(BINDING)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"bindingId": 7}',
        b'{"bindingId": ""}',
        b'{"bindingId": "a\\u0000b"}',
        b'{"bindingId": "' + b"i" * 300 + b'"}',
    ],
)
async def test_a_grant_answer_without_a_usable_binding_id_is_permanent(
    body: bytes, client: RondClient, rond: RondEmulator
) -> None:
    """A 2xx grant answer that is not ``{"bindingId": <short text>}`` is refused."""
    rond.answer_next(200, body)
    with pytest.raises(Permanent):
        await client.grant(BINDING)


@pytest.mark.parametrize(
    "body",
    [
        b'{"deletedBindings": "1", "modifiedBindings": 0}',
        b'{"deletedBindings": -1, "modifiedBindings": 0}',
        b'{"deletedBindings": true, "modifiedBindings": 0}',
        b'{"deletedBindings": 1}',
        b'{"deletedBindings": 150, "modifiedBindings": 100}',
        b'{"deletedBindings": 100000000000000000000, "modifiedBindings": 0}',
    ],
)
async def test_a_revoke_answer_without_usable_counts_is_permanent(
    body: bytes, client: RondClient, rond: RondEmulator
) -> None:
    """Counts that are not whole numbers within one page of Rönd's are refused."""
    rond.answer_next(200, body)
    with pytest.raises(Permanent, match="counts"):
        await client.revoke(subjects=["u1"])


async def test_a_slow_rond_times_out_as_a_transient_failure(
    client: RondClient, rond: RondEmulator
) -> None:
    """No answer within ``rond_timeout_seconds``: transient."""
    rond.delay = 1.0
    with pytest.raises(Transient, match="timed out"):
        await client.revoke(subjects=["u1"])


async def test_a_request_id_with_control_characters_is_sent_without_them(
    client: RondClient, rond: RondEmulator
) -> None:
    """A header never carries a CR, LF or NUL from a request id, nor more than 256 characters."""
    token = current_request_id.set("a\r\nX-Evil: 1\x00" + "z" * 400)
    try:
        await client.revoke(subjects=["u1"])
    finally:
        current_request_id.reset(token)
    [seen] = rond.requests
    assert seen.headers["x-request-id"] == ("aX-Evil:1" + "z" * 400)[:256]
    assert "x-evil" not in seen.headers


async def test_the_emulator_answers_as_rond_does(rond: RondEmulator) -> None:
    """Rönd's own answers, as standalone_apis.go writes them: the 400s, the
    500 on a body Go cannot decode, the text content type of a success."""
    async with httpx.AsyncClient(base_url=rond.url) as http:
        ok = await http.post("/grant/bindings", json={"subjects": ["u"], "roles": ["r"]})
        missing = await http.post("/grant/bindings/resource/project", json={"subjects": ["u"]})
        empty = await http.post("/grant/bindings", json={})
        nothing = await http.post("/revoke/bindings", json={"resourceIds": ["x"]})
        undecodable = await http.post("/grant/bindings", json={"subjects": "u"})
        by_resource = await http.post(
            "/revoke/bindings/resource/project", json={"resourceIds": ["p"]}
        )
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert ok.json()["bindingId"]
    assert (missing.status_code, missing.json()["error"]) == (400, "missing resource id")
    assert empty.status_code == 400
    assert "missing body fields" in empty.json()["error"]
    assert nothing.status_code == 400
    assert nothing.json()["message"] == "Internal server error, please try again later"
    assert undecodable.status_code == 500
    assert by_resource.json() == {"deletedBindings": 0, "modifiedBindings": 0}
