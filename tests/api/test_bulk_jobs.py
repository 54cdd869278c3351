"""Bulk jobs and passwords over ``/api/v1`` (scim_server/api/bulk_jobs.py),
on SQLite and PostgreSQL: hostile bodies refused before anything is
written; jobs asked through the API and run to the end by a real worker
(identity_sync.registry's, as ``idstore worker`` builds it) against the
Auth0 emulator; a job whose worker died resumed; the ticket URLs kept for
``admin`` tokens only; one user's ticket answered at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store import accounts, jobs, password_tickets
from identity_store.models import AuditEntry, UserGroupConfig
from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.bulk_jobs import BulkJobs
from identity_sync.clock import ManualClock
from idstore.auth0_gateway import open_auth0
from scim_server.api import cursors
from scim_server.app import create_app
from tests.api.conftest import assert_problem
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.auth0_support import add_users, change_user

ACTIVATION = "/jobs/bulk-activation"
TICKETS = "/jobs/bulk-change-password"
ONE_TICKET = "/users/change-password"
UNKNOWN = "01JZZZZZZZZZZZZZZZZZZZZZZZ"


@pytest.fixture
def auth0_settings(settings: Settings, auth0: Auth0Emulator) -> Settings:
    """This backend's database, the Auth0 emulator, tickets at 4 a second
    (set by the User Manager Service's name of the setting)."""
    auth0.job_pending_seconds = 0.0
    auth0.job_processing_seconds = 0.0
    return Settings(
        **{
            "DATABASE_URL": settings.database_url,
            **auth0.settings_fields(),
            "IDSTORE_AUTH0_BULK_CHANGE_PASSWORD_RATE_LIMIT_PER_SECOND": 4,
            "auth0_ticket_ttl_seconds": 3600,
        }
    )


@pytest.fixture
async def auth0_app(auth0_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Starlette]:
    """The application as ``idstore serve`` builds it, Auth0 configured."""
    application = create_app(auth0_settings, auth0=open_auth0)
    async with application.router.lifespan_context(application):
        yield application


def _client(app: Starlette, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/api/v1",
        headers={"Authorization": f"Bearer {secret}"},
    )


@pytest.fixture
async def admin(auth0_app: Starlette, api_tokens: dict[str, str]) -> AsyncIterator[Any]:
    async with _client(auth0_app, api_tokens["admin"]) as client:
        yield client


@pytest.fixture
async def store(auth0_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Store]:
    opened = await Store.open(auth0_settings)
    yield opened
    await opened.close()


async def _partners(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            UserGroupConfig.__table__.insert().values(  # type: ignore[attr-defined]
                user_group="partners", json_schema={}, auth_user_creation_disabled=True
            )
        )


async def _run_worker(store: Store, clock: ManualClock) -> dict[str, Any]:
    """A worker as ``idstore worker --until-idle`` runs it: its loops drained."""
    clock.set(max(clock.now(), datetime.now(UTC)))  # what was written since is due
    worker = registry.build_worker(store, clock)
    try:
        return await worker.drain_loops()
    finally:
        await worker.close()


def _clock() -> ManualClock:
    """A clock the test moves, from the real time: the tenant's request
    budget in the database is shared with the server's Auth0 client, which
    runs on the real clock."""
    return ManualClock(datetime.now(UTC))


def _raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("10,001 ids", {"json": {"ids": [f"01J{i:023d}" for i in range(10_001)]}}, "ids"),
    ("an id twice", {"json": {"ids": [UNKNOWN, "01JAAAAAAAAAAAAAAAAAAAAAAA", UNKNOWN]}}, "twice"),
    ("a NUL in an id", {"json": {"ids": ["01J\u0000"]}}, ""),
    ("a lone surrogate", _raw('{"ids": ["01J\\ud800"]}'), ""),
    ("a 27-character id", {"json": {"ids": ["0" * 27]}}, "ids"),
    ("an id with a slash", {"json": {"ids": ["01J/.."]}}, "ids"),
    ("no ids", {"json": {"ids": []}}, "ids"),
    ("an unknown filter key", {"json": {"filter": {"userGroup": "x", "role": "y"}}}, "role"),
    ("an unknown top key", {"json": {"ids": [UNKNOWN], "all": True}}, "all"),
    ("ids and a filter", {"json": {"ids": [UNKNOWN], "filter": {}}}, "filter"),
    ("neither", {"json": {}}, "ids"),
    ("an INACTIVE filter", {"json": {"filter": {"lifecycle": "INACTIVE"}}}, "lifecycle"),
    ("a 20-digit lifecycle", {"json": {"filter": {"lifecycle": 10**20}}}, ""),
    ("a long group", {"json": {"filter": {"userGroup": "g" * 129}}}, "userGroup"),
    ("a filter that is a list", {"json": {"filter": [{"userGroup": "x"}]}}, "filter"),
    ("deep nesting", _raw('{"filter": ' + "[" * 200 + "]" * 200 + "}"), ""),
    ("a huge body", _raw('{"ids": ["' + "0" * 3_000_000 + '"]}'), "exceeds"),
]
KINDS = {
    "a NUL in an id": (400, "invalid-value"),
    "a lone surrogate": (400, "invalid-body"),
    "deep nesting": (400, "invalid-body"),
    "a huge body": (413, "too-large"),
}
"""Status and kind of a refusal other than 400 ``invalid-request``."""


@pytest.mark.parametrize("path", [ACTIVATION, TICKETS])
async def test_hostile_bodies_are_refused_and_nothing_is_written(
    admin: Any, store: Store, path: str
) -> None:
    """Each a problem naming what is wrong; no job is written."""
    for label, request, named in HOSTILE:
        response = await admin.post(path, **request)
        status, kind = KINDS.get(label, (400, "invalid-request"))
        body = assert_problem(response, status, kind)
        assert named in body["detail"] + json.dumps(body.get("errors")), (label, body)
        assert len(response.content) < 4096, label  # never the body echoed back
    assert await jobs.list_jobs(store) == []


async def test_without_auth0_the_jobs_and_tickets_are_refused(api: Any, directory: Any) -> None:
    """The default application has no Auth0: 409 before anything is written."""
    for path, body in (
        (ACTIVATION, {"filter": {}}),
        (TICKETS, {"ids": [UNKNOWN]}),
        (ONE_TICKET, {"id": await directory.user("ada")}),
    ):
        assert_problem(await api.post(path, json=body), 409, "state-conflict")


async def test_only_admin_tokens_ask_for_jobs_or_read_tickets(
    auth0_app: Starlette, api_tokens: dict[str, str]
) -> None:
    for scope in ("scim:read", "scim:write", "authz:check"):
        async with _client(auth0_app, api_tokens[scope]) as client:
            for method, path in (
                ("POST", ACTIVATION),
                ("POST", TICKETS),
                ("POST", ONE_TICKET),
                ("GET", f"/jobs/{UNKNOWN}/tickets"),
            ):
                response = await client.request(method, path, json={"ids": [UNKNOWN]})
                assert_problem(response, 403, "insufficient-scope")


async def test_an_activation_asked_through_the_api_is_run_by_a_worker(
    admin: Any, store: Store, auth0: Auth0Emulator, engine: AsyncEngine
) -> None:
    """202 with the job queued; a worker runs it to the end: the partners
    (whose group disables creation) get their accounts by an import job, the
    suspended one is a failure with its reason."""
    await _partners(engine)
    partners = await add_users(store, 3, prefix="partner", user_group="partners")
    await change_user(store, partners[2], active=False)
    response = await admin.post(ACTIVATION, json={"filter": {"userGroup": "partners"}})
    assert response.status_code == 202, response.text
    document = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{document['id']}"
    assert document["kind"] == "BULK_ACTIVATION"
    assert document["status"] == "QUEUED"
    assert document["params"] == {"selection": {"user_group": "partners"}}
    assert document["startedAt"] is None
    assert document["finishedAt"] is None
    assert document["createdBy"].startswith("token:")
    assert set(document) == {
        "id",
        "kind",
        "status",
        "params",
        "summary",
        "failures",
        "createdBy",
        "createdAt",
        "startedAt",
        "finishedAt",
    }

    drained = await _run_worker(store, _clock())
    assert drained["bulk-jobs"].succeeded == 1
    job = await jobs.get(store, document["id"])
    assert job is not None
    assert job.status == "SUCCEEDED", job
    assert (job.summary["activated"], job.summary["failed"]) == (2, 1)
    [failure] = job.failures
    assert failure["user_id"] == partners[2]
    assert "suspended" in failure["error"]
    assert len(auth0.seen("POST /api/v2/jobs/users-imports")) == 1
    found = await accounts.subjects(store, "auth0", partners)
    assert [found[p].auth_user_id for p in partners] == [f"auth0|{p}" for p in partners[:2]] + [
        None
    ]
    # Asked for and audited under the admin's token.
    async with engine.connect() as connection:
        [entry] = (
            await connection.execute(select(AuditEntry).where(AuditEntry.action == "job.submit"))
        ).all()
    assert entry.resource_id == document["id"]
    assert entry.actor == "token:api-admin"


async def test_tickets_asked_through_the_api_are_kept_for_admins_only(
    admin: Any, store: Store, auth0: Auth0Emulator, auth0_app: Starlette, api_tokens: Any
) -> None:
    """A ticket per user with an account, paced at the configured rate (429
    and 503 waited out); the
    user without one and the unknown id are failures; the URLs are read
    with ``GET /jobs/{id}/tickets`` (no-store, audited), never in the job's
    document, and are gone once expired."""
    clock = _clock()
    users = await add_users(store, 5, prefix="staff")
    await _run_worker(store, clock)  # the dispatcher gives them accounts
    [late] = await add_users(store, 1, prefix="late")  # no account yet
    chosen = [*users, late, UNKNOWN]
    response = await admin.post(TICKETS, json={"ids": chosen})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["summary"] == {"done": 0, "tickets": 0, "failed": 0}

    clock.set(max(clock.now(), datetime.now(UTC)))
    # Auth0 throttles the second ticket, then fails once: both waited out.
    ticket = "POST /api/v2/tickets/password-change"
    auth0.fail_next(1, 429, reset=datetime.now(UTC).timestamp() + 1, only=ticket, after=1)
    auth0.fail_next(1, 503, only=ticket)
    worker = registry.build_worker(store, clock)
    bulk = next(loop for loop in worker.loops if isinstance(loop, BulkJobs))
    try:
        await bulk.drain()  # only the bulk jobs: the late user keeps no account
    finally:
        await worker.close()
    job = await jobs.get(store, job_id)
    assert job is not None
    assert job.status == "SUCCEEDED", job
    assert (job.summary["tickets"], job.summary["failed"]) == (5, 2), job.failures
    assert {f["user_id"]: f["error"] for f in job.failures} == {
        UNKNOWN: "no such live user",
        late: "no Auth0 account (the store knows none)",
    }
    # Paced: four a second (the User Manager Service's name of the setting).
    assert [round(s, 2) for s in clock.sleeps if s > 0][-3:] == [0.25] * 3
    assert len(auth0.seen(ticket)) == 7
    issued = {t["user_id"]: t["ticket"] for t in auth0.tickets}
    assert all(t["ttl_sec"] == 3600 for t in auth0.tickets)
    assert all(url not in json.dumps(job.summary) + json.dumps(job.failures) for url in issued)

    page = await admin.get(f"/jobs/{job_id}/tickets", params={"count": 3})
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    rest = await admin.get(f"/jobs/{job_id}/tickets", params={"cursor": page.json()["nextCursor"]})
    items = page.json()["items"] + rest.json()["items"]
    assert rest.json()["nextCursor"] is None
    assert {i["ticketUrl"] for i in items} == {issued[f"auth0|{u}"] for u in users}
    assert {i["userId"] for i in items} == set(users)
    forged = cursors.encode("tickets", "1 OR 1=1")
    assert_problem(
        await admin.get(f"/jobs/{job_id}/tickets", params={"cursor": forged}),
        400,
        "invalid-cursor",
    )
    assert items[0]["email"] == "staff0@example.com"
    # Gone once Auth0 lets them expire.
    assert await password_tickets.purge_expired(store, now=clock.now() + timedelta(hours=2)) == 5
    emptied = await admin.get(f"/jobs/{job_id}/tickets")
    assert emptied.json() == {"items": [], "nextCursor": None}
    for missing in (UNKNOWN, (await jobs.list_jobs(store, kind="AUTH0_IMPORT") or [job])[0].id):
        if missing != job_id:
            assert_problem(await admin.get(f"/jobs/{missing}/tickets"), 404, "not-found")


async def test_a_job_whose_worker_died_is_resumed_by_the_next(
    admin: Any, store: Store, auth0: Auth0Emulator
) -> None:
    """A job claimed by a worker that died (its lease ran out) is taken by
    the next worker's loop and finished."""
    clock = _clock()
    users = await add_users(store, 2, prefix="staff")
    await _run_worker(store, clock)
    response = await admin.post(TICKETS, json={"filter": {"lifecycle": "ACTIVE"}})
    job_id = response.json()["id"]
    held = await jobs.claim(
        store, job_id, worker="dead-worker", now=clock.now(), lease=timedelta(seconds=30)
    )
    assert held is not None
    assert held.status == "RUNNING"
    clock.set(max(clock.now(), datetime.now(UTC)))
    worker = registry.build_worker(store, clock)
    bulk = next(loop for loop in worker.loops if isinstance(loop, BulkJobs))
    try:
        assert await bulk.start_due() == []  # its lease still runs
        clock.advance(31)
        assert await bulk.start_due() == [job_id]
        await bulk.settle()
    finally:
        await worker.close()
    job = await jobs.get(store, job_id)
    assert job is not None
    assert job.status == "SUCCEEDED", job
    assert job.summary["tickets"] == len(users)
    assert job.locked_by is None


async def test_one_users_ticket_is_answered_at_once(
    admin: Any, store: Store, auth0: Auth0Emulator, engine: AsyncEngine
) -> None:
    clock = _clock()
    [user] = await add_users(store, 1, prefix="staff")
    await _run_worker(store, clock)
    [late] = await add_users(store, 1, prefix="late")

    by_id = await admin.post(ONE_TICKET, json={"id": user})
    assert by_id.status_code == 200, by_id.text
    assert by_id.headers["cache-control"] == "no-store"
    assert by_id.json()["ticketUrl"] == auth0.tickets[-1]["ticket"]
    assert by_id.json()["authUserId"] == f"auth0|{user}"
    by_email = await admin.post(ONE_TICKET, json={"email": "STAFF0@example.com"})
    assert by_email.status_code == 200, by_email.text
    assert by_email.json()["userId"] == user
    assert len(auth0.tickets) == 2
    async with engine.connect() as connection:
        audited = (
            await connection.execute(select(AuditEntry).where(AuditEntry.action == "auth0.ticket"))
        ).all()
    assert [a.resource_id for a in audited] == [user, user]
    assert all(auth0.tickets[0]["ticket"] not in json.dumps(a.details) for a in audited)

    assert_problem(await admin.post(ONE_TICKET, json={"id": UNKNOWN}), 404, "not-found")
    assert_problem(
        await admin.post(ONE_TICKET, json={"email": "nobody@example.com"}), 404, "not-found"
    )
    assert_problem(
        await admin.post(ONE_TICKET, json={"id": late}),
        409,
        "state-conflict",
        "the user has no Auth0 account",
    )
    auth0.fail_next(1, 404, only="POST /api/v2/tickets/password-change")
    assert_problem(
        await admin.post(ONE_TICKET, json={"id": user}),
        409,
        "state-conflict",
        "the user has no Auth0 account (Auth0 has none)",
    )
    for body, kind in (
        ({"id": user, "email": "staff0@example.com"}, "invalid-request"),
        ({}, "invalid-request"),
        ({"email": "no-at-sign"}, "invalid-request"),
        ({"email": "a\u0000@example.com"}, "invalid-value"),
        ({"id": user, "extra": 1}, "invalid-request"),
    ):
        assert_problem(await admin.post(ONE_TICKET, json=body), 400, kind)
    assert len(auth0.tickets) == 2
    # Throttled: 503 with Auth0's wait (last: the tenant's budget now waits too).
    auth0.fail_next(1, 429, retry_after="7", only="POST /api/v2/tickets/password-change")
    throttled = await admin.post(ONE_TICKET, json={"id": user})
    assert_problem(throttled, 503, "unavailable")
    assert throttled.headers["retry-after"] == "7"
