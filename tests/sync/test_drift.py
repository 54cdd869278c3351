"""The drift check and its repair (identity_sync/drift.py) against the Auth0
emulator, on SQLite and PostgreSQL: each kind of difference found, the
repair delivered by the dispatcher, and a tenant above Auth0's listing limit."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store import outbox, users
from identity_store.models import User
from identity_store.store import Store
from identity_sync import drift
from identity_sync.auth0 import MAX_LISTED_USERS
from identity_sync.clock import ManualClock
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import ACTOR, add_users, change_user, dispatcher
from tests.sync.conftest import NewClient, OpenStore


async def _deliver(store: Store, clock: ManualClock, auth0_clients: NewClient) -> None:
    worker = dispatcher(store, auth0_clients(store, clock), clock)
    await worker.drain()


async def _drifted(
    store: Store, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> dict[str, str]:
    """A tenant with one difference of each kind; the users, by role."""
    ids = await add_users(store, 6)
    gone, renamed, fine, suspended, deleted, _ = ids
    await _deliver(store, clock, auth0_clients)
    await change_user(store, suspended, active=False)
    await users.delete_user(store, deleted, ACTOR)
    await _deliver(store, clock, auth0_clients)
    del auth0.users[f"auth0|{gone}"]
    auth0.users[f"auth0|{renamed}"]["given_name"] = "Changed in Auth0"
    auth0.users[f"auth0|{renamed}"]["email"] = "someone.else@example.com"
    auth0.users[f"auth0|{suspended}"]["blocked"] = False
    auth0.users[f"auth0|{deleted}"]["blocked"] = False
    [never] = await add_users(store, 1, prefix="never")  # its row waits: no account yet
    [lost] = await add_users(store, 1, prefix="lost")  # created in Auth0, the answer lost
    auth0.add_user(
        "lost0@example.com", user_id=f"auth0|{lost}", app_metadata={"idstore_user_id": lost}
    )
    stranger = auth0.add_user("stranger@example.com")
    return {
        "gone": gone,
        "renamed": renamed,
        "fine": fine,
        "suspended": suspended,
        "deleted": deleted,
        "never": never,
        "lost": lost,
        "stranger": stranger,
    }


async def test_every_kind_of_drift_is_found(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    who = await _drifted(store, auth0, clock, auth0_clients)
    report = await drift.check(store, auth0_clients(store, clock))

    found = {(f.kind, f.user_id or f.auth_user_id): f for f in report.findings}
    assert sorted(found) == sorted(
        [
            ("missing", who["gone"]),
            ("missing", who["never"]),
            ("differs", who["renamed"]),
            ("differs", who["suspended"]),
            ("not_blocked", who["deleted"]),
            ("unlinked", who["lost"]),
            ("orphan", who["stranger"]),
        ]
    )
    assert found["differs", who["renamed"]].fields == ("email", "given_name")
    assert found["differs", who["suspended"]].fields == ("blocked",)
    assert found["missing", who["gone"]].detail == f"auth0|{who['gone']} is gone"
    assert found["missing", who["never"]].detail == "none was ever created"
    assert found["unlinked", who["lost"]].auth_user_id == f"auth0|{who['lost']}"
    assert found["orphan", who["stranger"]].email == "stranger@example.com"
    assert not found["orphan", who["stranger"]].repairable
    assert report.users == 8
    assert report.accounts == 7
    assert report.listing_refused is None
    assert report.to_repair() == sorted(
        who[k] for k in ("gone", "never", "renamed", "suspended", "deleted", "lost")
    )


async def test_a_repair_lets_the_dispatcher_bring_auth0_to_the_store(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    who = await _drifted(store, auth0, clock, auth0_clients)
    report = await drift.check(store, auth0_clients(store, clock))
    enqueued = await drift.repair(store, "auth0", report, ACTOR, now=clock.now())
    assert enqueued == report.to_repair()
    rows = await outbox.aggregate_rows(store, who["renamed"])
    assert (rows[0].operation, rows[0].status, rows[0].request_id) == (
        "upsert",
        "PENDING",
        "req-test",
    )
    await _deliver(store, clock, auth0_clients)

    again = await drift.check(store, auth0_clients(store, clock))
    assert [(f.kind, f.auth_user_id) for f in again.findings] == [("orphan", who["stranger"])]
    renamed = auth0.users[f"auth0|{who['renamed']}"]
    assert (renamed["given_name"], renamed["email"]) == ("Given1", "user1@example.com")
    assert auth0.users[f"auth0|{who['deleted']}"]["blocked"] is True
    assert auth0.users[f"auth0|{who['suspended']}"]["blocked"] is True
    assert f"auth0|{who['gone']}" in auth0.users
    assert stranger_untouched(auth0, who["stranger"])
    # The account deleted in Auth0 was created again (once); no e-mail has two.
    assert auth0.created_per_email["user0@example.com"] == 2
    emails = [a["email"] for a in auth0.users.values()]
    assert len(emails) == len(set(emails)) == 9


def stranger_untouched(auth0: Auth0Emulator, auth_user_id: str) -> bool:
    account = auth0.users[auth_user_id]
    return account["email"] == "stranger@example.com" and not account.get("blocked")


async def test_a_clean_tenant_has_no_drift(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    await add_users(store, 5)
    await _deliver(store, clock, auth0_clients)
    report = await drift.check(store, auth0_clients(store, clock), page_size=2)
    assert report.findings == []
    assert (report.users, report.accounts) == (5, 5)
    assert await drift.repair(store, "auth0", report, ACTOR, now=clock.now()) == []


async def test_with_hard_delete_an_account_of_a_removed_user_should_be_gone(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store(hard_delete=True)
    [user] = await add_users(store, 1)
    await _deliver(store, clock, auth0_clients)
    await change_user(store, user, active=False)
    # The store says the user is gone for good; Auth0 still has it.
    await drift_inactive(store, user)
    report = await drift.check(store, auth0_clients(store, clock))
    assert [(f.kind, f.user_id) for f in report.findings] == [("not_deleted", user)]


async def drift_inactive(store: Store, user_id: str) -> None:
    """The user as the deletion sync leaves it (``INACTIVE``), without its Auth0 row."""

    async def work(session: AsyncSession) -> None:
        await session.execute(update(User).where(User.id == user_id).values(lifecycle="INACTIVE"))

    await store.transaction(work)


async def test_above_auth0s_listing_limit_each_user_is_looked_up(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    """Auth0 lists 1000 accounts at most: the check asks about each store
    user's account by id instead, and says orphans were not looked for."""
    store = await auth0_store()
    who = await _drifted(store, auth0, clock, auth0_clients)
    for i in range(MAX_LISTED_USERS):
        auth0.add_user(f"filler{i}@example.com")
    report = await drift.check(store, auth0_clients(store, clock))
    assert report.listing_refused is not None
    assert "user export job" in report.listing_refused
    assert report.accounts is None
    kinds = sorted((f.kind, f.user_id) for f in report.findings)
    assert kinds == sorted(
        [
            ("missing", who["gone"]),
            ("missing", who["never"]),
            ("differs", who["renamed"]),
            ("differs", who["suspended"]),
            ("not_blocked", who["deleted"]),
            ("unlinked", who["lost"]),
        ]
    )
    # One look-up per user that has or should have an account: by the id
    # the store names, else by the deterministic one.
    assert len(auth0.seen("GET /api/v2/users/{id}")) == 8


async def test_a_user_the_service_cannot_be_asked_about_is_reported(
    auth0_store: OpenStore, auth0: Auth0Emulator, clock: ManualClock, auth0_clients: NewClient
) -> None:
    store = await auth0_store()
    [user] = await add_users(store, 1)
    await _deliver(store, clock, auth0_clients)
    for i in range(MAX_LISTED_USERS):
        auth0.add_user(f"filler{i}@example.com")
    auth0.fail_next(1, 503, only="GET /api/v2/users/{id}")
    report = await drift.check(store, auth0_clients(store, clock))
    [finding] = report.findings
    assert (finding.kind, finding.user_id) == ("unchecked", user)
    assert report.to_repair() == []
