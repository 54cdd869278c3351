"""The Auth0 outbox dispatcher against the Auth0 emulator, on SQLite and
PostgreSQL: what each store change does in Auth0, coalescing, adoption on
409, recreation on 404, dead letters and replay, the dry run, the request id
in the log lines; and the faults of issue 12, each ending with Auth0 holding
exactly the store's users and no account ever created twice: 30% of answers
5xx, 429 storms, a token that expires mid-run, 201 then a dropped
connection, two dispatchers on one database.

Times: the dispatcher's clock is a :class:`ManualClock` started an hour
after the real time (rows written now are due at once); retries become due
by moving it (:func:`deliver_all`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import outbox, users
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.models import OutboxEntry, User, UserGroupConfig
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput
from identity_sync.auth0 import Auth0Client
from identity_sync.clock import ManualClock
from identity_sync.dispatcher import DatabaseRateLimiter, Dispatcher, Totals
from tests.emulators.auth0 import Auth0Emulator

ACTOR = Actor(name="test", request_id="req-test")

Make = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC) + timedelta(hours=1))


@pytest.fixture
async def make(
    settings: Settings, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> AsyncIterator[Make]:
    """Builds dispatchers of this backend's database against the emulator
    (each with a store of its own, as separate workers have)."""
    opened: list[tuple[Store, Dispatcher]] = []

    async def make_(name: str = "w1", **overrides: Any) -> Dispatcher:
        fields: dict[str, Any] = {
            "DATABASE_URL": settings.database_url,
            **auth0.settings_fields(),
            "auth0_requests_per_second": 1000.0,
            "auth0_burst": 1000,
            "outbox_batch_size": 5,
            "outbox_concurrency": 4,
            "outbox_backoff_seconds": 1.0,
            "outbox_max_attempts": 10,
            **overrides,
        }
        store = await Store.open(Settings(**fields))
        limiter = DatabaseRateLimiter(
            store,
            "auth0",
            rate=store.settings.auth0_requests_per_second,
            burst=store.settings.auth0_burst,
            clock=clock,
        )
        client = Auth0Client(store.settings, clock=clock, limiter=limiter)
        dispatcher = Dispatcher(store, client, clock=clock, name=name)
        opened.append((store, dispatcher))
        return dispatcher

    yield make_
    for store, dispatcher in opened:
        await dispatcher.close()
        await store.close()


async def deliver_all(d: Dispatcher, clock: ManualClock, *, deadline_s: float = 60.0) -> Totals:
    """Drain, and move the clock to the next retry, until no row is pending
    (rows another dispatcher holds are waited for, in real time)."""
    total = Totals()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done = await d.drain()
        total.add(done)
        async with d.store.reading() as session:
            due = await session.scalar(
                select(func.min(OutboxEntry.next_attempt_at)).where(
                    OutboxEntry.status == "PENDING", OutboxEntry.target == "auth0"
                )
            )
        if due is None:
            return total
        if due > clock.now():
            clock.set(due + timedelta(milliseconds=1))
        elif not done.rounds:
            await asyncio.sleep(0.01)  # held by another dispatcher
    raise AssertionError(f"rows still pending after {deadline_s} s")


def _input(
    name: str, *, active: bool = True, group: str | None = None, **columns: Any
) -> UserInput:
    cols: dict[str, Any] = {
        "idp_username": name.split("@")[0],
        "idp_cloud_username": name,
        "given_name": "Given",
        "family_name": "Family",
        "active": active,
        **columns,
    }
    if group is not None:
        cols["user_group"] = group
    return UserInput(
        user_name=name,
        columns=cols,
        multi_values=[{"attribute": "emails", "value": name, "primary": True, "verified": True}],
    )


async def _create(store: Store, name: str, **kwargs: Any) -> str:
    return (await users.create_user(store, _input(name, **kwargs), ACTOR)).user.id


async def _patch(store: Store, user_id: str, **columns: Any) -> None:
    def change(record: Any) -> UserInput:
        user = record.user
        data = _input(user.user_name, active=columns.get("active", user.active))
        data.columns.update({k: v for k, v in columns.items() if k != "active"})
        return data

    await users.update_user(store, user_id, change, ACTOR)


async def _rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(OutboxEntry).order_by(OutboxEntry.id))).all())


async def _auth_ids(engine: AsyncEngine) -> dict[str, str | None]:
    async with engine.connect() as connection:
        return dict((await connection.execute(select(User.id, User.auth_user_id))).all())


async def assert_in_sync(engine: AsyncEngine, auth0: Auth0Emulator) -> None:
    """Auth0 holds one account per live user of the store (but users
    suspended before their first delivery), with its fields, blocked unless
    ACTIVE; no duplicate was ever created; nothing pending."""
    async with engine.connect() as connection:
        live = (
            await connection.execute(
                select(
                    User.id, User.user_name, User.lifecycle, User.auth_user_id, User.given_name
                ).where(User.deleted_at.is_(None))
            )
        ).all()
        pending = await connection.scalar(
            select(func.count()).select_from(OutboxEntry).where(OutboxEntry.status != "DONE")
        )
    assert auth0.duplicates() == {}
    assert pending == 0
    accounts = 0
    for user in live:
        account = auth0.user_by_email(user.user_name)
        if user.lifecycle == "SUSPENDED" and user.auth_user_id is None:
            assert account is None, user.user_name  # never created for a suspended user
            continue
        accounts += 1
        assert account is not None, user.user_name
        assert account["user_id"] == user.auth_user_id
        assert account.get("blocked", False) is (user.lifecycle != "ACTIVE")
        assert account["given_name"] == user.given_name
        assert account["app_metadata"]["idstore_user_id"] == user.id
    assert len(auth0.users) == accounts


# -- What each change does ---------------------------------------------------------


async def test_a_user_s_life_in_auth0(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make()
    user_id = await _create(store, "ada@example.com")
    totals = await deliver_all(d, clock)
    assert totals.outcomes == {"created": 1}
    account = auth0.users[f"auth0|{user_id}"]
    assert (account["email"], account["email_verified"], account.get("blocked", False)) == (
        "ada@example.com",
        True,
        False,
    )
    assert auth0.passwords[f"auth0|{user_id}"]  # a random password was set
    assert (await _auth_ids(engine))[user_id] == f"auth0|{user_id}"
    [row] = await _rows(engine)
    assert (row.status, row.outcome, row.request_id) == ("DONE", "created", "req-test")

    # An update sends only what changed.
    await _patch(store, user_id, given_name="Augusta")
    await deliver_all(d, clock)
    patches = auth0.seen("PATCH /api/v2/users/{id}")
    assert [p.body for p in patches] == [{"given_name": "Augusta"}]
    # Deactivated: blocked; reactivated: unblocked.
    await _patch(store, user_id, given_name="Augusta", active=False)
    await deliver_all(d, clock)
    assert auth0.users[f"auth0|{user_id}"].get("blocked", False) is True
    await _patch(store, user_id, given_name="Augusta", active=True)
    await deliver_all(d, clock)
    assert auth0.users[f"auth0|{user_id}"].get("blocked", False) is False
    assert [p.body for p in auth0.seen("PATCH /api/v2/users/{id}")][1:] == [
        {"blocked": True},
        {"blocked": False},
    ]
    # A write that changes nothing Auth0 holds sends nothing.
    await _patch(store, user_id, given_name="Augusta", title="Countess")
    before = len(auth0.seen())
    totals = await deliver_all(d, clock)
    assert (len(auth0.seen()), totals.outcomes) == (before, {"unchanged": 1})
    await assert_in_sync(engine, auth0)
    # SCIM DELETE: blocked, kept.
    await users.delete_user(store, user_id, ACTOR)
    await deliver_all(d, clock)
    assert auth0.users[f"auth0|{user_id}"].get("blocked", False) is True


async def test_hard_delete_deletes_the_account_of_an_inactive_user(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make(hard_delete=True)
    user_id = await _create(store, "leaver@example.com")
    await deliver_all(d, clock)
    async with create_session_factory(engine)() as session:
        await session.execute(
            User.__table__.update().where(User.id == user_id).values(lifecycle="INACTIVE")  # type: ignore[attr-defined]
        )
        session.add(
            OutboxEntry(
                target="auth0",
                operation="delete",
                aggregate_type="User",
                aggregate_id=user_id,
                payload={},
            )
        )
        await session.commit()
    totals = await deliver_all(d, clock)
    assert totals.outcomes == {"deleted": 1}
    assert f"auth0|{user_id}" not in auth0.users
    assert (await _auth_ids(engine))[user_id] is None


async def test_pending_changes_of_a_user_are_coalesced_into_one_call(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make()
    user_id = await _create(store, "grace@example.com")
    for name in ("A", "B", "C", "D"):
        await _patch(store, user_id, given_name=name)
    totals = await deliver_all(d, clock)
    assert (totals.delivered, totals.rows) == (1, 5)
    assert len(auth0.seen("POST /api/v2/users")) == 1
    assert auth0.seen("PATCH /api/v2/users/{id}") == []  # created with the latest state
    assert auth0.users[f"auth0|{user_id}"]["given_name"] == "D"
    await assert_in_sync(engine, auth0)


async def test_an_existing_account_with_the_email_is_adopted_and_unblocked(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    old = auth0.add_user(
        "back@example.com", blocked=True, app_metadata={"idstore_user_id": "01OLDUSER"}
    )
    d = await make()
    user_id = await _create(store, "back@example.com")
    totals = await deliver_all(d, clock)
    assert totals.outcomes == {"adopted": 1}
    assert auth0.created_per_email["back@example.com"] == 0
    account = auth0.users[old]
    assert account.get("blocked", False) is False
    assert account["app_metadata"]["idstore_user_id"] == user_id
    assert (await _auth_ids(engine))[user_id] == old
    await assert_in_sync(engine, auth0)


async def test_an_account_deleted_in_auth0_is_created_again(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make()
    user_id = await _create(store, "lost@example.com")
    await deliver_all(d, clock)
    auth0.users.pop(f"auth0|{user_id}")  # deleted by hand in Auth0
    auth0.created_per_email.clear()
    await _patch(store, user_id, given_name="Found")
    totals = await deliver_all(d, clock)
    assert totals.outcomes == {"recreated": 1}
    assert auth0.users[f"auth0|{user_id}"]["given_name"] == "Found"
    await assert_in_sync(engine, auth0)


async def test_users_of_a_group_without_auth_accounts_are_not_pushed(
    make: Make,
    store: Store,
    engine: AsyncEngine,
    auth0: Auth0Emulator,
    clock: ManualClock,
    session: Any,
) -> None:
    session.add(
        UserGroupConfig(user_group="robots", json_schema={}, auth_user_creation_disabled=True)
    )
    await session.commit()
    d = await make()
    await _create(store, "bot@example.com", group="robots")
    totals = await deliver_all(d, clock)
    assert auth0.seen() == []
    assert totals.outcomes == {"skipped": 1}
    [row] = await _rows(engine)
    assert row.outcome == "skipped: user group 'robots' has authUserCreationDisabled"


async def test_permanent_errors_are_dead_letters_until_replayed(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make()
    user_id = await _create(store, "ok@example.com")
    auth0.fail_next(1, 400, only="POST /api/v2/users")
    totals = await deliver_all(d, clock)
    assert totals.dead == 1
    [row] = await _rows(engine)
    assert row.status == "FAILED"
    assert row.last_error
    [status] = await outbox.status(store, now=clock.now())
    assert (status.dead, status.pending) == (1, 0)
    assert await outbox.retry(store, now=clock.now(), all_dead=True) == [row.id]
    await deliver_all(d, clock)
    assert f"auth0|{user_id}" in auth0.users
    await assert_in_sync(engine, auth0)


async def test_a_user_without_email_is_a_dead_letter_naming_why(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    d = await make()
    await users.create_user(
        store,
        UserInput(user_name="no-mail", columns={"idp_username": "x", "idp_cloud_username": "y"}),
        ACTOR,
    )
    await deliver_all(d, clock)
    [row] = await _rows(engine)
    assert (row.status, row.last_error) == (
        "FAILED",
        "the user has no e-mail address to create an account with",
    )
    assert auth0.seen() == []


async def test_dry_run_sends_nothing_and_keeps_the_rows(
    make: Make,
    store: Store,
    engine: AsyncEngine,
    auth0: Auth0Emulator,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = await make(outbox_dry_run=True)
    user_id = await _create(store, "dry@example.com")
    with caplog.at_level(logging.INFO, logger="idstore.outbox"):
        totals = await d.drain()
        again = await d.drain()  # a row is logged once
    assert (totals.rows, again.rows) == (1, 0)
    assert auth0.requests == []
    [row] = await _rows(engine)
    assert row.status == "PENDING"
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "idstore.outbox"]
    assert line["event"] == "dry_run"
    assert (line["user"], line["action"], line["request_id"]) == (user_id, "ensure", "req-test")
    assert "email" in line["fields"]


async def test_one_request_id_from_the_scim_request_to_the_auth0_call(
    make: Make,
    scim: Any,
    engine: AsyncEngine,
    auth0: Auth0Emulator,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = await scim.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "trace@example.com",
            "emails": [{"value": "trace@example.com", "primary": True}],
        },
        headers={"X-Request-Id": "entra-req-7"},
    )
    assert response.status_code == 201
    d = await make()
    with caplog.at_level(logging.INFO):
        await deliver_all(d, clock)
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name in ("idstore.auth0", "idstore.outbox")
    ]
    calls = [line for line in lines if line.get("path") == "/api/v2/users"]
    assert calls
    assert {c["request_id"] for c in calls} == {"entra-req-7"}
    delivered = [line for line in lines if line.get("event") == "delivered"]
    assert delivered[0]["request_id"] == "entra-req-7"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "trace@example.com" not in text  # no personal data in the log lines
    assert auth0.client_secret not in text


# -- Faults ------------------------------------------------------------------------


async def _population(store: Store, n: int, prefix: str) -> list[str]:
    ids = [await _create(store, f"{prefix}{i:03}@example.com") for i in range(n)]
    for i, user_id in enumerate(ids):
        if i % 3 == 0:
            await _patch(store, user_id, given_name=f"Renamed{i}")
        if i % 5 == 0:
            await _patch(store, user_id, given_name=f"Renamed{i}", active=False)
    return ids


async def test_thirty_percent_of_answers_5xx(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    await _population(store, 30, "flaky")
    auth0.fail_ratio(0.3, seed=12)
    d = await make()
    totals = await deliver_all(d, clock)
    assert totals.failed > 0
    auth0.fail_ratio(0)
    await assert_in_sync(engine, auth0)


async def test_thirty_percent_of_changes_applied_then_answered_5xx(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    await _population(store, 30, "applied")
    auth0.fail_ratio(0.3, seed=5, apply=True)
    d = await make()
    await deliver_all(d, clock)
    auth0.fail_ratio(0)
    await assert_in_sync(engine, auth0)


async def test_a_429_storm_waits_as_told_without_spending_attempts(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    await _population(store, 12, "storm")
    reset = int(clock.now().timestamp()) + 30
    auth0.fail_next(20, 429, reset=reset)
    d = await make(outbox_max_attempts=2)  # a counted 429 would dead-letter at the second
    totals = await deliver_all(d, clock)
    assert totals.failed > 0
    assert totals.dead == 0
    assert len([s for s in auth0.seen() if s.status == 429]) == 20
    assert {(r.status, r.attempts) for r in await _rows(engine)} == {("DONE", 0)}
    # The dispatcher waited for the reset (on its clock) instead of hammering.
    assert clock.now().timestamp() >= reset
    assert max(clock.sleeps) >= 25
    await assert_in_sync(engine, auth0)


async def test_retry_after_pauses_every_worker_sharing_the_budget(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    await _create(store, "first@example.com")
    auth0.fail_next(1, 429, retry_after="40")
    one = await make("w1")
    await one.run_once()
    # Another worker's next request waits for the same moment.
    wait = await outbox.reserve(store, "auth0", rate=1000, burst=1000, now=clock.now().timestamp())
    assert 39 <= wait <= 41
    await deliver_all(one, clock)
    await assert_in_sync(engine, auth0)


async def test_a_token_that_expires_mid_run_is_renewed(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    ids = await _population(store, 10, "token")
    d = await make()
    await d.run_once()
    auth0.expire_tokens()
    await deliver_all(d, clock)
    assert auth0.token_requests == 2
    assert len(ids) == 10
    await assert_in_sync(engine, auth0)


async def test_201_then_a_dropped_connection_creates_no_second_account(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    user_id = await _create(store, "dropped@example.com")
    auth0.drop_after_commit(1)
    d = await make()
    first = await d.drain()
    assert first.failed == 1
    assert f"auth0|{user_id}" in auth0.users  # Auth0 has it; we did not record it
    assert (await _auth_ids(engine))[user_id] is None
    totals = await deliver_all(d, clock)
    assert totals.outcomes == {"adopted": 1}
    assert auth0.created_per_email["dropped@example.com"] == 1
    await assert_in_sync(engine, auth0)


async def test_two_dispatchers_on_one_database(
    make: Make, store: Store, engine: AsyncEngine, auth0: Auth0Emulator, clock: ManualClock
) -> None:
    ids = await _population(store, 40, "pair")
    auth0.delay = 0.002
    one, two = await make("w1"), await make("w2")
    totals = await asyncio.gather(deliver_all(one, clock), deliver_all(two, clock))
    assert totals[0].delivered > 0
    assert totals[1].delivered > 0
    assert totals[0].delivered + totals[1].delivered == len(ids)
    suspended = len(range(0, len(ids), 5))  # deactivated before any delivery: no account
    assert len(auth0.seen("POST /api/v2/users")) == len(ids) - suspended
    await assert_in_sync(engine, auth0)


async def test_above_the_threshold_the_worker_creates_by_import_jobs_only(
    settings: Settings, store: Store, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    """The dispatcher as ``idstore worker`` builds it: a backlog above the
    import threshold is created by Auth0 import jobs, none one by one, while
    a user that has an account already is updated meanwhile."""
    from identity_sync import registry
    from identity_sync.clock import SystemClock

    known = await _create(store, "known@example.com")
    opened = await Store.open(
        Settings(
            DATABASE_URL=settings.database_url,
            **auth0.settings_fields(),
            auth0_import_threshold=5,
            auth0_import_poll_seconds=0.05,
            auth0_requests_per_second=1000.0,
            auth0_burst=100,
        )
    )
    try:
        [d] = registry.build_dispatchers(opened, SystemClock(), "w-import")
        await d.drain()  # the one user: created one by one (no backlog yet)
        assert len(auth0.seen("POST /api/v2/users")) == 1
        ids = [await _create(store, f"bulk{i:02}@example.com") for i in range(12)]
        await _patch(store, known, given_name="Updated")
        await asyncio.sleep(0.06)  # the import runner looks again once per poll
        totals = await d.drain()
        await d.close()
    finally:
        await opened.close()
    assert len(auth0.seen("POST /api/v2/users")) == 1  # none more one by one
    assert auth0.seen("POST /api/v2/jobs/users-imports")
    assert auth0.users[f"auth0|{known}"]["given_name"] == "Updated"
    assert totals.outcomes.get("updated") == 1
    assert {f"auth0|{i}" for i in ids} <= set(auth0.users)
    await assert_in_sync(engine, auth0)
