"""The ``profile-sync`` job against the Graph emulator, on SQLite and
PostgreSQL: what it does to each kind of ``CREATED`` user (a table, one row
per rule), what it leaves alone, outages, dry runs, repeated runs, a run
taken over, and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from identity_store import job_runs, migrate, profiles, users
from identity_store.actor import Actor, job_actor
from identity_store.job_runs import RunRecord
from identity_store.models import AuditEntry, LifecycleTransition, OutboxEntry, User
from identity_store.profiles import Lookup
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput
from identity_sync.clock import ManualClock
from identity_sync.profile_sync import NO_KEY, NOT_CONFIGURED, ProfileSync
from identity_sync.worker import Worker
from tests.emulators.graph import GraphEmulator

SAM = "onPremisesSamAccountName"
UPN = "userPrincipalName"
EMPLOYEE_ID = "employeeId"
ACTOR = Actor(name="test", request_id="req-test")
JOB = "profile-sync"

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_store(
    settings: Settings, engine: AsyncEngine, graph: GraphEmulator
) -> AsyncIterator[OpenStore]:
    """Opens the store of this backend's database with the Graph emulator
    configured (and any other settings given)."""
    opened: list[Store] = []

    async def open_(**overrides: Any) -> Store:
        fields: dict[str, Any] = {
            "DATABASE_URL": settings.database_url,
            **graph.settings_fields(),
            "graph_requests_per_second": 1000.0,
            "job_batch_size": 2,
            **overrides,
        }
        store = await Store.open(Settings(**fields))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


def _worker(store: Store, clock: ManualClock) -> Worker:
    return Worker(store, {JOB: ProfileSync(store.settings, clock)}, {}, clock=clock)


async def _run(
    store: Store, clock: ManualClock, *, dry_run: bool = False, as_of: datetime | None = None
) -> RunRecord:
    run = await _worker(store, clock).run_now(JOB, as_of=as_of, dry_run=dry_run)
    assert run is not None
    return run


async def _create(
    store: Store,
    name: str,
    *,
    key: str | None,
    cloud: str | None = "derived",
    attempts: int = 0,
    lifecycle: str | None = None,
    **columns: Any,
) -> str:
    """A user as a client creates it (``key``: its externalId, the directory
    object id), then, as the test needs, without its derived UPN, with
    attempts counted already, or in another state."""
    data = UserInput(user_name=name, columns={"external_id": key, **columns})
    record = await users.create_user(store, data, ACTOR, idp_source="AAD")
    changes: dict[str, Any] = {}
    if cloud != "derived":
        changes["idp_cloud_username"] = cloud
    if attempts:
        changes["profile_sync_attempts"] = attempts
    if lifecycle:
        changes["lifecycle"] = lifecycle
    if changes:

        async def work(session: AsyncSession) -> None:
            await session.execute(update(User).where(User.id == record.user.id).values(**changes))

        await store.transaction(work)
    return record.user.id


async def _user(store: Store, user_id: str) -> User:
    async with store.reading() as session:
        user = await session.scalar(select(User).where(User.id == user_id))
    assert user is not None
    return user


async def _count(store: Store, model: Any, **where: Any) -> int:
    async with store.reading() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(await session.scalar(query) or 0)


def _step(user: User) -> dict[str, Any]:
    steps = [s for s in user.status if s["name"] == profiles.STEP]
    assert len(steps) == 1, user.status
    return steps[0]


# -- The rules, one row each ---------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    user: dict[str, Any]
    """``_create`` arguments besides the name and the key."""
    directory: dict[str, Any] | None
    """The directory's user (Graph properties), or ``None``: not there."""
    lifecycle: str
    attempts: int
    status: str
    message: str
    stored: dict[str, Any] = field(default_factory=dict)
    selected: str | None = None
    """The ``$select`` sent, or ``None``: no look-up at all."""
    has_key: bool = True
    told_auth0: bool = False
    """An ``auth0 upsert`` outbox row was written (an attribute or the state changed)."""


CASES = [
    Case(
        "everything found: ACTIVE",
        {"cloud": None},
        {SAM: "ada", UPN: "ada@contoso.com", EMPLOYEE_ID: "E-1"},
        "ACTIVE",
        0,
        "OK",
        "filled idp_username, idp_cloud_username, idp_workforce_id from the directory",
        {"idp_username": "ada", "idp_cloud_username": "ada@contoso.com", "idp_workforce_id": "E-1"},
        f"{SAM},{UPN},{EMPLOYEE_ID}",
        told_auth0=True,
    ),
    Case(
        "partly found: what was found is stored, still CREATED",
        {"cloud": None},
        {SAM: None, UPN: "ada@contoso.com"},
        "CREATED",
        1,
        "PENDING",
        f"missing idp_username: {SAM} empty in the directory (attempt 1 of 3)",
        {"idp_username": None, "idp_cloud_username": "ada@contoso.com"},
        f"{SAM},{UPN},{EMPLOYEE_ID}",
        told_auth0=True,
    ),
    Case(
        "an empty string is empty",
        {},
        {SAM: ""},
        "CREATED",
        1,
        "PENDING",
        f"missing idp_username: {SAM} empty in the directory (attempt 1 of 3)",
        {"idp_username": None},
        f"{SAM},{EMPLOYEE_ID}",
    ),
    Case(
        "not in the directory: an attempt counted",
        {},
        None,
        "CREATED",
        1,
        "PENDING",
        "missing idp_username: not found in the directory (404) (attempt 1 of 3)",
        selected=f"{SAM},{EMPLOYEE_ID}",
    ),
    Case(
        "not in the directory at the last attempt: ERROR",
        {"attempts": 2},
        None,
        "ERROR",
        3,
        "ERROR",
        "missing idp_username: not found in the directory (404) (after 3 attempts)",
        selected=f"{SAM},{EMPLOYEE_ID}",
        told_auth0=True,
    ),
    Case(
        "a client's values are never overwritten, nor asked for",
        {"idp_workforce_id": "W-SCIM"},
        {SAM: "ada", UPN: "someone.else@contoso.com", EMPLOYEE_ID: "E-DIR"},
        "ACTIVE",
        0,
        "OK",
        "filled idp_username from the directory",
        {
            "idp_username": "ada",
            "idp_cloud_username": "u@example.com",
            "idp_workforce_id": "W-SCIM",
        },
        SAM,
        told_auth0=True,
    ),
    Case(
        "a value the directory should not hold is refused, not stored",
        {},
        {SAM: "ad\x00a"},
        "CREATED",
        1,
        "PENDING",
        f"missing idp_username: {SAM} refused: contains a NUL character (attempt 1 of 3)",
        {"idp_username": None},
        f"{SAM},{EMPLOYEE_ID}",
    ),
    Case(
        "no directory id to look up by",
        {},
        None,
        "CREATED",
        1,
        "PENDING",
        f"missing idp_username: {NO_KEY} (attempt 1 of 3)",
        has_key=False,
    ),
    Case(
        "nothing missing: ACTIVE without a look-up",
        {"idp_username": "ada", "lifecycle": "CREATED"},
        None,
        "ACTIVE",
        0,
        "OK",
        "required attributes present",
        {"idp_username": "ada"},
        told_auth0=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_profile_sync_rules(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock, case: Case
) -> None:
    """Each kind of ``CREATED`` user ends where SPEC §4 says, with its
    ``PROFILE_SYNC`` step saying why, and only empty attributes filled."""
    store = await open_store()
    key = "9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11" if case.has_key else None
    user_id = await _create(store, "u@example.com", key=key, **case.user)
    if case.directory is not None:
        graph.add_user(id=key, **case.directory)
    before = await _user(store, user_id)
    run = await _run(store, clock)
    assert run.status == "SUCCEEDED", run.message
    user = await _user(store, user_id)
    assert (user.lifecycle, user.profile_sync_attempts) == (case.lifecycle, case.attempts)
    step = _step(user)
    assert (step["status"], step["message"]) == (case.status, case.message)
    assert step["updated_at"] == run.as_of.isoformat()
    for column, value in case.stored.items():
        assert getattr(user, column) == value, column
    assert user.version == before.version + 1
    selects = [seen.query.get("$select") for seen in graph.seen()]
    assert selects == ([case.selected] if case.selected else [])
    upserts = await _count(store, OutboxEntry, aggregate_id=user_id, operation="upsert")
    assert upserts - 1 == int(case.told_auth0)  # the create wrote the first


async def test_a_user_that_goes_active_leaves_its_trail(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """The transition is recorded with the job's cause, actor and run, the
    change audited, and Auth0 told (one ``upsert`` outbox row)."""
    store = await open_store()
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    graph.add_user(id="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", **{SAM: "ada"})
    run = await _run(store, clock)
    assert run.counts == {"looked_up": 1, "activated": 1, "filled": 1}
    async with store.reading() as session:
        history = (
            await session.scalars(
                select(LifecycleTransition).where(
                    LifecycleTransition.user_id == user_id, LifecycleTransition.to_state == "ACTIVE"
                )
            )
        ).one()
    assert (history.from_state, history.cause, history.actor) == (
        "CREATED",
        "profile-sync",
        "job:profile-sync",
    )
    assert history.job_run_id == run.id
    assert history.request_id == f"job-run-{run.id}"
    assert await _count(store, AuditEntry, resource_id=user_id, action="user.profile_sync") == 1
    assert await _count(store, OutboxEntry, aggregate_id=user_id, operation="upsert") == 2


async def test_an_attempt_alone_tells_auth0_nothing(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """A look-up that fills nothing and moves nothing writes its step and
    audit row, and no outbox row (nothing downstream changed)."""
    store = await open_store()
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    await _run(store, clock)
    assert await _count(store, OutboxEntry, aggregate_id=user_id) == 1  # the create's
    assert await _count(store, AuditEntry, resource_id=user_id, action="user.profile_sync") == 1


async def test_users_not_created_are_left_alone(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """``ACTIVE``, ``ERROR``, ``SUSPENDED`` and deleted users are neither
    looked up nor written, whatever they lack."""
    store = await open_store()
    ids = []
    for n, state in enumerate(("ACTIVE", "ERROR", "SUSPENDED", "INACTIVE")):
        key = f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}"
        graph.add_user(id=key, **{SAM: f"u{n}"})
        ids.append(await _create(store, f"u{n}@example.com", key=key, lifecycle=state))
    deleted = await _create(store, "gone@example.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c19")
    await users.delete_user(store, deleted, ACTOR)
    before = {i: (await _user(store, i)).version for i in [*ids, deleted]}
    run = await _run(store, clock)
    assert run.status == "SUCCEEDED"
    assert run.counts == {}
    assert graph.seen() == []
    assert {i: (await _user(store, i)).version for i in before} == before


# -- Repeated runs: attempts, then ERROR; idempotence ------------------------


async def test_a_user_the_directory_never_knows_goes_error_after_max_attempts(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """One attempt per run: CREATED (1), CREATED (2), ERROR (3); a fourth run
    leaves the ERROR user alone. The run that gives up names the user."""
    store = await open_store()
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    states = []
    for _ in range(4):
        run = await _run(store, clock)
        user = await _user(store, user_id)
        states.append((user.lifecycle, user.profile_sync_attempts, _step(user)["status"]))
        clock.advance(300)
    assert states == [
        ("CREATED", 1, "PENDING"),
        ("CREATED", 2, "PENDING"),
        ("ERROR", 3, "ERROR"),
        ("ERROR", 3, "ERROR"),
    ]
    assert len(graph.seen()) == 3
    async with store.reading() as session:
        third = (await job_runs.history(store, JOB, limit=4))[1]
        history = (
            await session.scalars(
                select(LifecycleTransition).where(LifecycleTransition.to_state == "ERROR")
            )
        ).one()
    assert third.counts["errored"] == 1
    assert third.errors == [
        {
            "user_id": user_id,
            "message": "missing idp_username: not found in the directory (404) (after 3 attempts)",
        }
    ]
    assert history.message == third.errors[0]["message"]
    assert run.counts == {}


async def test_a_second_run_changes_nothing_once_everything_is_filled(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """Run twice in a row: the first activates everyone, the second finds
    nobody to look up and writes nothing."""
    store = await open_store()
    ids = []
    for n in range(5):
        key = f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}"
        graph.add_user(id=key, **{SAM: f"u{n}"})
        ids.append(await _create(store, f"u{n}@example.com", key=key))
    first = await _run(store, clock)
    assert first.counts["activated"] == 5
    versions = {i: (await _user(store, i)).version for i in ids}
    audits = await _count(store, AuditEntry)
    second = await _run(store, clock)
    assert second.status == "SUCCEEDED"
    assert second.counts == {}
    assert {i: (await _user(store, i)).version for i in ids} == versions
    assert await _count(store, AuditEntry) == audits
    assert len(graph.seen()) == 5


async def test_a_run_taken_over_counts_one_attempt_per_user(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """A worker told to stop while its second batch is looked up stores its
    first batch and hands the run back; the worker that takes the tick over
    neither looks the stored user up again nor counts it twice."""
    store = await open_store(job_batch_size=1)
    ids = [
        await _create(store, f"u{n}@example.com", key=f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}")
        for n in range(3)
    ]
    tick = clock.now().replace(second=0, microsecond=0)
    lease = timedelta(seconds=60)
    first = _worker(store, clock)
    run = await job_runs.claim_tick(
        store, JOB, tick, worker=first.name, now=clock.now(), lease=lease
    )
    assert run is not None
    loop = asyncio.get_running_loop()
    # SIGTERM while the second user is being looked up.
    graph.on_look_up = lambda n: loop.call_soon_threadsafe(first.stop) if n == 2 else None
    released = await first.execute(run)
    assert released is not None
    assert released.status == "INTERRUPTED"
    assert [(await _user(store, i)).profile_sync_attempts for i in ids] == [1, 0, 0]

    graph.on_look_up = None
    second = _worker(store, clock)
    taken = await job_runs.claim_tick(
        store, JOB, tick, worker=second.name, now=clock.now(), lease=lease
    )
    assert taken is not None
    assert (taken.id, taken.attempts) == (run.id, 2)
    done = await second.execute(taken)
    assert done is not None
    assert done.status == "SUCCEEDED"
    assert [(await _user(store, i)).profile_sync_attempts for i in ids] == [1, 1, 1]
    looked_up = [seen.path.rsplit("/", 1)[1] for seen in graph.seen()]
    assert looked_up == [f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}" for n in (0, 1, 1, 2)]
    assert done.counts["counted_before_take_over"] == 1
    assert done.counts["still_created"] == 3


# -- Outages, configuration, dry runs -----------------------------------------


async def test_without_graph_settings_the_run_succeeds_and_changes_nothing(
    settings: Settings, engine: AsyncEngine, graph: GraphEmulator, clock: ManualClock
) -> None:
    """No tenant, client or secret: "not configured", nothing looked up or written."""
    store = await Store.open(Settings(DATABASE_URL=settings.database_url))
    try:
        user_id = await _create(
            store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11"
        )
        before = await _user(store, user_id)
        run = await _run(store, clock)
        assert (run.status, run.message, run.counts) == ("SUCCEEDED", NOT_CONFIGURED, {})
        after = await _user(store, user_id)
        assert (after.version, after.status) == (before.version, before.status)
    finally:
        await store.close()


async def test_a_graph_outage_fails_the_run_and_leaves_users_untouched(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """Graph answers 503 to everything: the run fails saying so; no user is
    counted an attempt, none goes ERROR, none is written."""
    store = await open_store(profile_sync_max_attempts=1)
    ids = [
        await _create(store, f"u{n}@example.com", key=f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}")
        for n in range(3)
    ]
    graph.outage = 503
    before = {i: (await _user(store, i)).version for i in ids}
    run = await _run(store, clock)
    assert run.status == "FAILED"
    assert run.message is not None
    assert run.message.startswith("GraphUnavailable: ")
    assert "503" in run.message
    for user_id, version in before.items():
        user = await _user(store, user_id)
        assert (user.lifecycle, user.profile_sync_attempts, user.version) == ("CREATED", 0, version)
    assert await _count(store, AuditEntry, action="user.profile_sync") == 0


async def test_an_outage_mid_run_keeps_the_batches_done_and_drops_the_one_in_flight(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """Graph goes down after the first batch (2 users): those keep what they
    got; the other users are untouched, and the run reports only the batch
    it stored."""
    store = await open_store()
    ids = []
    for n in range(4):
        key = f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}"
        graph.add_user(id=key, **{SAM: f"u{n}"})
        ids.append(await _create(store, f"u{n}@example.com", key=key))
    graph.fail_next(50, 503, after=2)
    run = await _run(store, clock)
    assert run.status == "FAILED"
    assert [(await _user(store, i)).lifecycle for i in ids] == [
        "ACTIVE",
        "ACTIVE",
        "CREATED",
        "CREATED",
    ]
    assert [(await _user(store, i)).profile_sync_attempts for i in ids] == [0, 0, 0, 0]
    assert run.counts == {"looked_up": 2, "activated": 2, "filled": 2}


async def test_wrong_credentials_fail_the_run_with_the_identity_platforms_reason(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """An expired or wrong client secret is an outage of the job: FAILED,
    naming AADSTS7000215, users untouched."""
    store = await open_store(graph_client_secret="expired-secret")
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    run = await _run(store, clock)
    assert run.status == "FAILED"
    assert run.message is not None
    assert "AADSTS7000215" in run.message
    assert (await _user(store, user_id)).profile_sync_attempts == 0


async def test_a_dry_run_looks_up_and_counts_but_writes_nothing(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """The dry run asks Graph and reports what would change; the users, the
    audit log and the outbox stay as they were."""
    store = await open_store()
    found = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    graph.add_user(id="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", **{SAM: "ada"})
    missing = await _create(store, "bob@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c12")
    before = {i: await _user(store, i) for i in (found, missing)}
    audits, outbox = await _count(store, AuditEntry), await _count(store, OutboxEntry)
    run = await _run(store, clock, dry_run=True)
    assert run.status == "SUCCEEDED"
    assert run.dry_run
    assert run.counts == {
        "looked_up": 2,
        "not_found": 1,
        "activated": 1,
        "still_created": 1,
        "filled": 1,
    }
    assert run.message is not None
    assert run.message.startswith("dry run: ")
    for user_id, user in before.items():
        after = await _user(store, user_id)
        assert (after.version, after.lifecycle, after.status) == (
            user.version,
            user.lifecycle,
            user.status,
        )
        assert after.profile_sync_attempts == 0
    assert (await _count(store, AuditEntry), await _count(store, OutboxEntry)) == (audits, outbox)
    assert len(graph.seen()) == 2


# -- The store side directly ---------------------------------------------------


async def test_apply_lookups_skips_a_user_written_since_it_was_read(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """A client's write between the read and the store wins: the look-up
    answered an older state and is dropped (the next run sees the new one)."""
    store = await open_store()
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    [pending] = await profiles.created_users(store, after_id=None, limit=10)
    await users.update_user(
        store,
        user_id,
        lambda r: UserInput(r.user.user_name, {"external_id": r.user.external_id, "title": "Dr"}),
        ACTOR,
    )
    applied = await profiles.apply_lookups(
        store, [Lookup(pending, values={"idp_username": "ada"})], ACTOR, clock.now(), 3
    )
    assert applied.counts == {"skipped": 1}
    assert (await _user(store, user_id)).idp_username is None


async def test_apply_lookups_skips_a_user_moved_on_without_a_new_version(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """A user another job moved out of ``CREATED`` (a set-based statement
    that left its version) is not the profile sync's any more."""
    store = await open_store()
    user_id = await _create(store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    [pending] = await profiles.created_users(store, after_id=None, limit=10)

    async def suspend(session: AsyncSession) -> None:
        await session.execute(update(User).where(User.id == user_id).values(lifecycle="SUSPENDED"))

    await store.transaction(suspend)
    applied = await profiles.apply_lookups(
        store, [Lookup(pending, values={"idp_username": "ada"})], ACTOR, clock.now(), 3
    )
    assert applied.counts == {"skipped": 1}
    user = await _user(store, user_id)
    assert (user.lifecycle, user.idp_username) == ("SUSPENDED", None)


async def test_apply_lookups_never_overwrites_a_value_that_is_there(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """Whatever a look-up brings, an attribute with a value keeps it; only
    the empty ones are filled."""
    store = await open_store()
    user_id = await _create(
        store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", idp_workforce_id="W-1"
    )
    [pending] = await profiles.created_users(store, after_id=None, limit=10)
    values = {
        "idp_username": "ada",
        "idp_cloud_username": "x@contoso.com",
        "idp_workforce_id": "W-2",
    }
    applied = await profiles.apply_lookups(
        store, [Lookup(pending, values=values)], ACTOR, clock.now(), 3
    )
    assert applied.counts == {"activated": 1, "filled": 1}
    user = await _user(store, user_id)
    assert (user.idp_username, user.idp_cloud_username, user.idp_workforce_id) == (
        "ada",
        "ada@contoso.com",
        "W-1",
    )


async def test_apply_lookups_refuses_what_the_column_cannot_hold(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """The store has the last word on a value: longer than its column, a NUL,
    not a string: not stored, reported, and the attempt counted."""
    store = await open_store()
    ids = [
        await _create(store, f"u{n}@example.com", key=f"9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1{n}")
        for n in range(3)
    ]
    pending = await profiles.created_users(store, after_id=None, limit=10)
    values: list[Any] = ["a" * 256, "a\x00b", 42]
    lookups = [
        Lookup(user, values={"idp_username": value})
        for user, value in zip(pending, values, strict=True)
    ]
    applied = await profiles.apply_lookups(store, lookups, ACTOR, clock.now(), 3)
    assert applied.counts["refused_values"] == 3
    assert applied.counts["still_created"] == 3
    assert [e["message"] for e in applied.errors] == [
        "idp_username: the directory's value refused: 256 characters long; the column holds 255",
        "idp_username: the directory's value refused: contains a NUL character",
        "idp_username: the directory's value refused: not a string (int)",
    ]
    for user_id in ids:
        user = await _user(store, user_id)
        assert (user.idp_username, user.profile_sync_attempts) == (None, 1)


async def test_created_users_pages_by_id_and_says_what_is_missing(
    open_store: OpenStore, graph: GraphEmulator, clock: ManualClock
) -> None:
    """Keyset pages of live CREATED users, each with its look-up key
    (``idp_reference_id`` before ``externalId``) and its empty attributes."""
    store = await open_store()
    first = await _create(store, "a@example.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11")
    second = await _create(
        store, "b@example.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c12",
        idp_reference_id="1b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c12", cloud=None,
    )  # fmt: skip
    await _create(store, "c@example.com", key=None, idp_username="c")  # ACTIVE
    page = await profiles.created_users(store, after_id=None, limit=1)
    assert [(u.id, u.lookup_key, u.missing) for u in page] == [
        (first, "9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", ("idp_username",))
    ]
    assert page[0].empty == ("idp_username", "idp_workforce_id")
    page = await profiles.created_users(store, after_id=first, limit=10)
    assert [(u.id, u.lookup_key, u.missing) for u in page] == [
        (second, "1b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c12", ("idp_username", "idp_cloud_username"))
    ]
    assert await profiles.created_users(store, after_id=second, limit=10) == []
    run_actor = job_actor(JOB, 99)
    [counted] = await profiles.created_users(store, after_id=first, limit=1, counted_by=run_actor)
    assert not counted.counted


# -- The command line ----------------------------------------------------------


async def test_jobs_run_as_of_against_the_emulator_on_a_sqlite_file(
    graph: GraphEmulator, tmp_path: Path, repo_root: Path
) -> None:
    """``idstore jobs run profile-sync --as-of`` in its own process: it reads
    the Graph settings from the environment, asks the emulator over HTTP,
    and records the transition at the time it was given."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'idstore.db'}"
    await migrate.upgrade_async(Settings(DATABASE_URL=url))
    store = await Store.open(Settings(DATABASE_URL=url))
    try:
        user_id = await _create(
            store, "ada@contoso.com", key="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11"
        )
    finally:
        await store.close()
    graph.add_user(id="9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", **{SAM: "ada"})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDSTORE_")},
        **graph.settings_env(),
        "DATABASE_URL": url,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "idstore",
            "jobs",
            "run",
            JOB,
            "--as-of",
            "2030-01-02T03:04:05Z",
            "--json",
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    assert (run["status"], run["as_of"]) == ("SUCCEEDED", "2030-01-02T03:04:05+00:00")
    assert run["counts"] == {"looked_up": 1, "activated": 1, "filled": 1}
    store = await Store.open(Settings(DATABASE_URL=url))
    try:
        user = await _user(store, user_id)
        assert (user.lifecycle, user.idp_username) == ("ACTIVE", "ada")
        assert _step(user)["updated_at"] == "2030-01-02T03:04:05+00:00"
        assert user.lifecycle_changed_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    finally:
        await store.close()
    assert [seen.status for seen in graph.seen()] == [200]
