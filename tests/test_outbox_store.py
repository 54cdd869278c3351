"""The outbox as its dispatchers use it (identity_store/outbox.py), on SQLite
and PostgreSQL: leases per user, coalescing, outcomes, dead letters and
replay, the shared rate budget, and the request id a change carries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import accounts, audit, outbox, users
from identity_store.actor import Actor
from identity_store.models import OutboxEntry
from identity_store.outbox import Delivered, Failed
from identity_store.row_inserts import insert_rows
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
ACTOR = Actor(name="test", request_id="req-1")


async def _rows(
    store: Store, *specs: tuple[str, str], at: datetime = NOW, request_id: str | None = None
) -> None:
    async def work(session: Any) -> None:
        rows = [
            audit.outbox_row("auth0", operation, "User", aggregate, {}, at, request_id)
            for aggregate, operation in specs
        ]
        await insert_rows(session, audit.OUTBOX, rows)

    await store.transaction(work)


async def _all(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(OutboxEntry).order_by(OutboxEntry.id))).all())


async def test_a_claim_leases_each_user_once_and_coalesces_its_rows(store: Store) -> None:
    await _rows(store, ("u1", "upsert"), ("u2", "upsert"), ("u1", "block"), ("u1", "upsert"))
    claims = await outbox.claim(store, "auth0", worker="w1", now=NOW, lease=LEASE, limit=10)
    assert [(c.aggregate_id, c.operations) for c in claims] == [
        ("u1", ("upsert", "block", "upsert")),
        ("u2", ("upsert",)),
    ]
    # Held: another worker gets nothing, even for a row written after the claim.
    await _rows(store, ("u1", "upsert"))
    assert await outbox.claim(store, "auth0", worker="w2", now=NOW, lease=LEASE, limit=10) == []
    # Once the lease ran out, the next worker takes the user over, with every row.
    later = NOW + LEASE + timedelta(seconds=1)
    taken = await outbox.claim(store, "auth0", worker="w2", now=later, lease=LEASE, limit=10)
    assert sorted(c.aggregate_id for c in taken) == ["u1", "u2"]
    assert len(next(c for c in taken if c.aggregate_id == "u1").row_ids) == 4


async def test_claim_takes_due_rows_only_and_respects_the_limit(store: Store) -> None:
    await _rows(store, ("late", "upsert"), at=NOW + timedelta(minutes=5))
    await _rows(store, *[(f"u{i}", "upsert") for i in range(5)])
    claims = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=3)
    assert [c.aggregate_id for c in claims] == ["u0", "u1", "u2"]
    other_target = await outbox.claim(store, "rbac", worker="w", now=NOW, lease=LEASE, limit=3)
    assert other_target == []


async def test_only_named_users_are_claimed_when_named(store: Store) -> None:
    await _rows(store, ("a", "upsert"), ("b", "upsert"), ("c", "upsert"))
    claims = await outbox.claim(
        store, "auth0", worker="w", now=NOW, lease=LEASE, limit=10, aggregate_ids=["c", "a"]
    )
    assert sorted(c.aggregate_id for c in claims) == ["a", "c"]


async def test_concurrent_claims_never_lease_one_user_twice(
    settings: Settings, store: Store
) -> None:
    await _rows(store, *[(f"u{i % 40}", "upsert") for i in range(200)])
    stores = [await Store.open(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(
                outbox.claim(s, "auth0", worker=f"w{i}", now=NOW, lease=LEASE, limit=15)
                for i, s in enumerate(stores)
            )
        )
    finally:
        for s in stores:
            await s.close()
    leased = [c.aggregate_id for claims in results for c in claims]
    assert len(leased) == len(set(leased))
    rows = [r for claims in results for c in claims for r in c.row_ids]
    assert len(rows) == len(set(rows))


async def test_renew_keeps_only_leases_still_held(store: Store) -> None:
    await _rows(store, ("u1", "upsert"), ("u2", "upsert"))
    await outbox.claim(store, "auth0", worker="w1", now=NOW, lease=LEASE, limit=1)
    later = NOW + LEASE * 2
    await outbox.claim(store, "auth0", worker="w2", now=later, lease=LEASE, limit=5)
    kept = await outbox.renew(store, "auth0", ["u1", "u2"], worker="w1", until=later + LEASE)
    assert kept == set()
    kept = await outbox.renew(store, "auth0", ["u1", "u2"], worker="w2", until=later + LEASE)
    assert kept == {"u1", "u2"}


async def _user(store: Store, name: str) -> str:
    record = await users.create_user(
        store,
        UserInput(
            user_name=name,
            columns={"idp_username": name, "idp_cloud_username": name},
            multi_values=[{"attribute": "emails", "value": name, "primary": True}],
        ),
        ACTOR,
    )
    return record.user.id


async def test_complete_marks_rows_done_keeps_the_account_and_frees_the_user(
    store: Store, engine: AsyncEngine
) -> None:
    user_id = await _user(store, "ada@example.com")
    before = (await users.get_user(store, user_id)).user.version
    [c] = await outbox.claim(store, "auth0", worker="w", now=NOW + LEASE, lease=LEASE, limit=5)
    synced = {"email": "ada@example.com", "blocked": False}
    await outbox.complete(
        store,
        [Delivered(c, "created", remote_id="auth0|x", synced=synced, set_auth_user_id=True)],
        worker="w",
        now=NOW,
    )
    rows = await _all(engine)
    assert [(r.status, r.outcome, r.request_id) for r in rows] == [("DONE", "created", "req-1")]
    record = await users.get_user(store, user_id)
    assert record.user.version == before + 1  # authUserId is part of the SCIM representation
    subject = (await accounts.subjects(store, "auth0", [user_id]))[user_id]
    assert subject.auth_user_id == "auth0|x"
    assert subject.sync is not None
    assert subject.sync.synced == synced
    assert subject.email == "ada@example.com"
    # The lease is gone: a new change is claimed at once.
    await _rows(store, (user_id, "upsert"))
    assert (
        len(await outbox.claim(store, "auth0", worker="w2", now=NOW + LEASE, lease=LEASE, limit=5))
        == 1
    )


async def test_a_delivery_without_new_fields_keeps_what_was_synced(store: Store) -> None:
    await _rows(store, ("u1", "upsert"))
    [c] = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=5)
    await outbox.complete(
        store, [Delivered(c, "created", "auth0|1", {"name": "A"})], worker="w", now=NOW
    )
    await _rows(store, ("u1", "upsert"))
    [c] = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=5)
    await outbox.complete(store, [Delivered(c, "unchanged")], worker="w", now=NOW)
    record = (await outbox.sync_records(store, "auth0", ["u1"]))["u1"]
    assert (record.remote_id, record.synced, record.outcome) == (
        "auth0|1",
        {"name": "A"},
        "unchanged",
    )
    await _rows(store, ("u1", "delete"))
    [c] = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=5)
    await outbox.complete(store, [Delivered(c, "deleted", forget_remote=True)], worker="w", now=NOW)
    record = (await outbox.sync_records(store, "auth0", ["u1"]))["u1"]
    assert (record.remote_id, record.synced) == (None, {})


async def test_adopting_an_account_takes_it_from_the_user_that_had_it(store: Store) -> None:
    old = await _user(store, "old@example.com")
    new = await _user(store, "new@example.com")
    claims = await outbox.claim(store, "auth0", worker="w", now=NOW + LEASE, lease=LEASE, limit=5)
    by_user = {c.aggregate_id: c for c in claims}
    await outbox.complete(
        store,
        [Delivered(by_user[old], "created", "auth0|shared", {}, set_auth_user_id=True)],
        worker="w",
        now=NOW,
    )
    await outbox.complete(
        store,
        [
            Delivered(
                by_user[new], "adopted", "auth0|shared", {}, set_auth_user_id=True, took_over=True
            )
        ],
        worker="w",
        now=NOW,
    )
    found = await accounts.subjects(store, "auth0", [old, new])
    assert found[new].remote_id == "auth0|shared"
    assert found[old].remote_id is None  # its later block cannot touch the account


async def test_fail_retries_later_or_dead_letters_and_a_later_delivery_settles_it(
    store: Store, engine: AsyncEngine
) -> None:
    await _rows(store, ("u1", "upsert"), ("u2", "upsert"), ("u3", "upsert"))
    claims = {
        c.aggregate_id: c
        for c in await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=5)
    }
    retry_at = NOW + timedelta(seconds=30)
    await outbox.fail(
        store,
        [
            Failed(claims["u1"], "bad gateway", retry_at),
            Failed(claims["u2"], "throttled", retry_at, counts=False),
            Failed(claims["u3"], "invalid email", None),
        ],
        worker="w",
        now=NOW,
    )
    rows = {r.aggregate_id: r for r in await _all(engine)}
    assert (rows["u1"].status, rows["u1"].attempts, rows["u1"].last_error) == (
        "PENDING",
        1,
        "bad gateway",
    )
    assert rows["u1"].next_attempt_at == retry_at
    assert (rows["u2"].status, rows["u2"].attempts) == ("PENDING", 0)
    assert (rows["u3"].status, rows["u3"].last_error) == ("FAILED", "invalid email")
    # Not due yet; then due.
    assert await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=5) == []
    assert (
        len(await outbox.claim(store, "auth0", worker="w", now=retry_at, lease=LEASE, limit=5)) == 2
    )
    # A later change of u3 delivered: its dead letter is settled too.
    await _rows(store, ("u3", "upsert"))
    [c] = await outbox.claim(store, "auth0", worker="w", now=retry_at, lease=LEASE, limit=5)
    await outbox.complete(store, [Delivered(c, "updated")], worker="w", now=NOW)
    u3 = [r for r in await _all(engine) if r.aggregate_id == "u3"]
    assert [r.status for r in u3] == ["DONE", "DONE"]
    assert u3[0].outcome == "settled by a later delivery"


async def test_retry_puts_dead_letters_back_and_leaves_other_rows(
    store: Store, engine: AsyncEngine
) -> None:
    await _rows(store, ("u1", "upsert"), ("u2", "upsert"), ("u3", "upsert"))
    claims = await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=2)
    await outbox.fail(store, [Failed(c, "permanent", None) for c in claims], worker="w", now=NOW)
    ids = [r.id for r in await _all(engine)]
    assert await outbox.retry(store, now=NOW, ids=[ids[0], ids[2]]) == [ids[0]]
    status = {s.target: s for s in await outbox.status(store, now=NOW)}["auth0"]
    assert (status.pending, status.dead, status.due, status.users_pending) == (2, 1, 2, 2)
    assert [d.id for d in await outbox.dead_letters(store)] == [ids[1]]
    assert await outbox.retry(store, now=NOW, all_dead=True, target="rbac") == []
    assert await outbox.retry(store, now=NOW, all_dead=True) == [ids[1]]
    rows = await _all(engine)
    assert [(r.status, r.attempts) for r in rows] == [("PENDING", 0)] * 3


async def test_status_reports_backlog_age_and_in_flight(store: Store) -> None:
    await _rows(store, ("u1", "upsert"), ("u1", "block"), at=NOW - timedelta(minutes=3))
    await _rows(store, ("u2", "upsert"), at=NOW + timedelta(minutes=3))
    await outbox.claim(store, "auth0", worker="w", now=NOW, lease=LEASE, limit=1)
    [s] = await outbox.status(store, now=NOW)
    assert (s.target, s.pending, s.due, s.users_pending, s.in_flight) == ("auth0", 3, 2, 2, 1)
    assert s.oldest_due_at == NOW - timedelta(minutes=3)


async def test_the_rate_budget_allows_a_burst_then_paces(store: Store) -> None:
    now = 1_000.0
    waits = [await outbox.reserve(store, "auth0", rate=10, burst=3, now=now) for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    # A quiet second refills the burst.
    waits = [await outbox.reserve(store, "auth0", rate=10, burst=3, now=now + 5) for _ in range(4)]
    assert waits == pytest.approx([0, 0, 0, 0.1])
    # A reservation of several slots: the wait for the first; the next
    # reservation waits for the slots after them.
    now = 10_000.0
    assert await outbox.reserve(store, "auth0", rate=10, burst=1, now=now, cost=5) == 0
    assert await outbox.reserve(store, "auth0", rate=10, burst=1, now=now, cost=5) == (
        pytest.approx(0.5)
    )
    assert await outbox.reserve(store, "auth0", rate=10, burst=1, now=now) == pytest.approx(1.0)
    # Another target has its own budget.
    assert await outbox.reserve(store, "rbac", rate=10, burst=1, now=now) == 0


async def test_a_pause_holds_every_reservation_until_its_time(store: Store) -> None:
    now = 2_000.0
    await outbox.pause(store, "auth0", until=now + 30)
    assert await outbox.reserve(store, "auth0", rate=10, burst=5, now=now) == pytest.approx(30)
    assert await outbox.reserve(store, "auth0", rate=10, burst=5, now=now) == pytest.approx(30.1)
    await outbox.pause(store, "auth0", until=now + 1)  # an earlier pause does not shorten it
    assert await outbox.reserve(store, "auth0", rate=10, burst=5, now=now) == pytest.approx(30.2)


async def test_concurrent_reservations_share_one_budget(settings: Settings, store: Store) -> None:
    stores = [await Store.open(settings) for _ in range(3)]
    try:
        waits = await asyncio.gather(
            *(
                outbox.reserve(s, "auth0", rate=100, burst=1, now=5_000.0)
                for s in stores
                for _ in range(10)
            )
        )
    finally:
        for s in stores:
            await s.close()
    # 30 reservations of one budget: one slot each, 10 ms apart, none twice.
    assert sorted(round(w, 4) for w in waits) == [round(i * 0.01, 4) for i in range(30)]


async def test_the_request_id_of_a_scim_request_reaches_its_outbox_row(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await scim.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "grace@example.com",
        },
        headers={"X-Request-Id": "entra-req-42"},
    )
    assert response.status_code == 201, response.text
    rows = await _all(engine)
    assert [(r.target, r.operation, r.request_id) for r in rows] == [
        ("auth0", "upsert", "entra-req-42")
    ]


async def test_subjects_read_the_primary_email_and_the_user_group_flag(
    store: Store, session: Any
) -> None:
    from identity_store.models import UserGroupConfig

    session.add(
        UserGroupConfig(user_group="partners", json_schema={}, auth_user_creation_disabled=True)
    )
    await session.commit()
    record = await users.create_user(
        store,
        UserInput(
            user_name="upn@example.com",
            columns={"user_group": "partners"},
            multi_values=[
                {"attribute": "emails", "value": "second@example.com", "primary": False},
                {
                    "attribute": "emails",
                    "value": "Main@Example.com",
                    "primary": True,
                    "verified": True,
                },
            ],
        ),
        ACTOR,
    )
    bare = await users.create_user(store, UserInput(user_name="no-mail"), ACTOR)
    found = await accounts.subjects(store, "auth0", [record.user.id, bare.user.id, "gone"])
    assert (found[record.user.id].email, found[record.user.id].email_verified) == (
        "Main@Example.com",
        True,
    )
    assert found[record.user.id].creation_disabled is True
    assert (found[bare.user.id].email, found[bare.user.id].creation_disabled) == (None, False)
    assert found["gone"].present is False
    later = datetime.now(UTC) + timedelta(minutes=1)
    pending = await accounts.backlog_without_account(
        store, "auth0", now=later, after=None, limit=10
    )
    assert pending == sorted([record.user.id, bare.user.id])
    assert (
        await accounts.backlog_without_account(
            store, "auth0", now=later, after=max(pending), limit=10
        )
        == []
    )
