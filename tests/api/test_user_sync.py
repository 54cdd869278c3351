"""A user's lifecycle history, sync state and the replay of a dead letter
over ``/api/v1``, on both databases, with the real Auth0 dispatcher against
the Auth0 emulator; and Auth0's ``last_login`` reaching the profile's
``last_logged_in_time`` through the sync.

The dispatcher's clock is a :class:`ManualClock` an hour ahead of real time,
so rows written now are due at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.models import AuditEntry
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.auth0 import Auth0Client
from identity_sync.clock import ManualClock
from identity_sync.dispatcher import DatabaseRateLimiter, Dispatcher
from tests.emulators.auth0 import Auth0Emulator

from .conftest import PATCH, Directory, assert_problem
from .described import assert_described


@pytest.fixture
async def dispatcher(
    settings: Settings, engine: AsyncEngine, auth0: Auth0Emulator
) -> AsyncIterator[Dispatcher]:
    """The Auth0 dispatcher of ``idstore worker``, on this backend's database."""
    store = await Store.open(
        Settings(
            DATABASE_URL=settings.database_url,
            **auth0.settings_fields(),
            auth0_requests_per_second=1000.0,
            auth0_burst=1000,
        )
    )
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=1))
    limiter = DatabaseRateLimiter(store, "auth0", rate=1000.0, burst=1000, clock=clock)
    d = Dispatcher(
        store, Auth0Client(store.settings, clock=clock, limiter=limiter), clock=clock, name="t"
    )
    yield d
    await d.close()
    await store.close()


async def patch(directory: Directory, user_id: str, path: str, value: Any) -> dict[str, Any]:
    body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": path, "value": value}]}
    response = await directory.scim.patch(f"/Users/{user_id}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_auth0_s_last_login_becomes_the_profile_s_last_logged_in_time(
    api: httpx.AsyncClient, directory: Directory, dispatcher: Dispatcher, auth0: Auth0Emulator
) -> None:
    """A delivery whose answer names a ``last_login`` keeps it on the user:
    the profile answers it in epoch seconds; an older one never replaces
    it; the user's version (its SCIM ETag) does not move for it."""
    user_id = await directory.user("ada@example.com")
    await dispatcher.drain()
    account = f"auth0|{user_id}"
    assert account in auth0.users
    assert (await api.get(f"/users/{user_id}/profile")).json()["last_logged_in_time"] is None

    first = datetime(2026, 11, 30, 8, 15, 42, tzinfo=UTC)
    auth0.log_in(account, at=first)
    version = (await patch(directory, user_id, "name.givenName", "Ada"))["meta"]["version"]
    assert (await dispatcher.drain()).outcomes == {"updated": 1}
    profile = (await api.get(f"/users/{user_id}/profile")).json()
    assert profile["last_logged_in_time"] == int(first.timestamp())
    scim = (await directory.scim.get(f"/Users/{user_id}")).json()
    assert scim["meta"]["version"] == version

    auth0.users[account]["last_login"] = "2025-01-01T00:00:00.000Z"  # an older answer
    await patch(directory, user_id, "name.givenName", "Augusta")
    await dispatcher.drain()
    profile = (await api.get(f"/users/{user_id}/profile")).json()
    assert profile["last_logged_in_time"] == int(first.timestamp())

    later = first + timedelta(days=2)
    auth0.log_in(account, at=later)
    await patch(directory, user_id, "active", False)  # blocked in Auth0: its answer counts too
    await dispatcher.drain()
    profile = (await api.get(f"/users/{user_id}/profile")).json()
    assert profile["last_logged_in_time"] == int(later.timestamp())


def target(body: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [t for t in body["targets"] if t["target"] == name]
    return found


async def test_sync_state_dead_letter_and_its_replay(
    api: httpx.AsyncClient,
    directory: Directory,
    dispatcher: Dispatcher,
    auth0: Auth0Emulator,
    engine: AsyncEngine,
) -> None:
    """Pending before the first delivery; then the last delivery; a change
    Auth0 refuses is a dead letter with its error; replaying it puts it back
    to pending (audited), once: a pending or delivered row is 409."""
    user_id = await directory.user("grace@example.com")
    before = (await api.get(f"/users/{user_id}/sync")).json()
    assert_described(before, "UserSync")
    assert before["userId"] == user_id
    auth = target(before, "auth0")
    assert (auth["pending"], auth["dead"], auth["lastDelivered"], auth["inFlight"]) == (
        1,
        0,
        None,
        False,
    )
    [waiting] = auth["pendingRows"]
    assert (waiting["operation"], waiting["status"], waiting["aggregateId"]) == (
        "upsert",
        "PENDING",
        user_id,
    )

    await dispatcher.drain()
    auth = target((await api.get(f"/users/{user_id}/sync")).json(), "auth0")
    assert (auth["pending"], auth["dead"], auth["pendingRows"], auth["deadLetters"]) == (
        0,
        0,
        [],
        [],
    )
    delivered = auth["lastDelivered"]
    assert delivered["outboxId"] == waiting["id"]
    assert (delivered["outcome"], delivered["remoteId"]) == ("created", f"auth0|{user_id}")
    assert delivered["synced"]["email"] == "grace@example.com"

    auth0.fail_next(status=400, only="PATCH /api/v2/users/{id}")
    await patch(directory, user_id, "name.givenName", "Grace")
    assert (await dispatcher.drain()).dead == 1
    with_dead = (await api.get(f"/users/{user_id}/sync")).json()
    assert_described(with_dead, "UserSync")
    auth = target(with_dead, "auth0")
    assert (auth["pending"], auth["dead"]) == (0, 1)
    [dead] = auth["deadLetters"]
    assert dead["status"] == "FAILED"
    assert "Payload validation error" in dead["lastError"]

    replayed = await api.post(f"/outbox/{dead['id']}/retry")
    assert replayed.status_code == 200, replayed.text
    assert_described(replayed.json(), "OutboxRow")
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("PENDING", 0)
    auth = target((await api.get(f"/users/{user_id}/sync")).json(), "auth0")
    assert (auth["pending"], auth["dead"]) == (1, 0)
    again = await api.post(f"/outbox/{dead['id']}/retry")
    assert_problem(
        again,
        409,
        "state-conflict",
        f"outbox row {dead['id']} is pending: only a dead letter can be retried",
    )

    await dispatcher.drain()
    auth = target((await api.get(f"/users/{user_id}/sync")).json(), "auth0")
    assert (auth["pending"], auth["dead"]) == (0, 0)
    assert auth["lastDelivered"]["outcome"] == "updated: given_name"
    assert auth0.users[f"auth0|{user_id}"]["given_name"] == "Grace"
    assert_problem(await api.post(f"/outbox/{dead['id']}/retry"), 409, "state-conflict")

    async with engine.connect() as connection:
        audited = (
            await connection.execute(
                select(AuditEntry.action, AuditEntry.resource_id, AuditEntry.details).where(
                    AuditEntry.action == "outbox.retry"
                )
            )
        ).all()
    assert [(a.action, a.resource_id, a.details["outbox_id"]) for a in audited] == [
        ("outbox.retry", user_id, dead["id"])
    ]


async def test_history_with_cause_and_actor(api: httpx.AsyncClient, directory: Directory) -> None:
    """Every transition, oldest first, with cause, actor and request id;
    kept for a user deleted over SCIM."""
    user_id = await directory.user("hopper")
    await patch(directory, user_id, "active", False)
    await patch(directory, user_id, "active", True)
    assert (await directory.scim.delete(f"/Users/{user_id}")).status_code == 204
    response = await api.get(f"/users/{user_id}/history")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_described(body, "UserHistory")
    assert (body["userId"], body["stored"], body["deleted"]) == (user_id, True, True)
    assert body["lifecycle"] == "SUSPENDED"
    moves = [(t["fromState"], t["toState"], t["actor"]) for t in body["items"]]
    actor = "token:api-scim:write"
    assert moves == [
        (None, "ACTIVE", actor),
        ("ACTIVE", "SUSPENDED", actor),
        ("SUSPENDED", "ACTIVE", actor),
        ("ACTIVE", "SUSPENDED", actor),
    ]
    assert all(t["cause"] and t["requestId"] for t in body["items"])
    times = [t["occurredAt"] for t in body["items"]]
    assert times == sorted(times)


async def test_refusals(api: httpx.AsyncClient, as_scope: Any, directory: Directory) -> None:
    """404 for ids no user has (and no row), 400 for ids that cannot be
    one, 403 for every scope but ``admin``."""
    unknown = "01J00000000000000000000000"
    assert_problem(await api.get(f"/users/{unknown}/history"), 404, "not-found")
    assert_problem(await api.get(f"/users/{unknown}/sync"), 404, "not-found")
    assert_problem(await api.post("/outbox/999999/retry"), 404, "not-found")
    for bad in ("0", "-1", "x", str(2**63), "1" * 20):
        assert_problem(await api.post(f"/outbox/{bad}/retry"), 400, "invalid-request")
    assert_problem(await api.get(f"/users/{'x' * 27}/sync"), 400, "invalid-request")
    user_id = await directory.user("kept")
    for scope in ("scim:read", "scim:write", "authz:check"):
        client = as_scope(scope)
        assert_problem(await client.get(f"/users/{user_id}/history"), 403, "insufficient-scope")
        assert_problem(await client.get(f"/users/{user_id}/sync"), 403, "insufficient-scope")
        assert_problem(await client.post("/outbox/1/retry"), 403, "insufficient-scope")
