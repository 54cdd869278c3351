"""The Auth0 Management API client against the Auth0 emulator on loopback:
each call and what it sends, the token, every rule of the one outcome
mapping, the limits on what Auth0 may answer, and the log line of each call.
Every request and answer is checked against Auth0's OpenAPI description by
the emulator (the ``auth0`` fixture fails a test that broke it)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from identity_store.settings import Settings
from identity_sync.auth0 import (
    MAX_ACCOUNTS_BY_EMAIL,
    MAX_BODY_BYTES,
    MAX_ERRORS_PER_USER,
    MAX_IMPORT_FILE_BYTES,
    MAX_RETRY_WAIT_SECONDS,
    REQUIRED_SCOPES,
    Auth0Client,
    import_file,
    split_for_import,
)
from identity_sync.auth_service import (
    AuthProfile,
    AuthServiceError,
    Exists,
    ImportStatus,
    NotFound,
    Permanent,
    Transient,
    current_request_id,
)
from identity_sync.clock import ManualClock
from tests.emulators.auth0 import Auth0Emulator

ULID = "01JDZ8N4Q5X6Y7Z8A9B0C1D2E3"


class RecordingLimiter:
    """A :class:`~identity_sync.auth_service.RateLimiter` that lets every
    request go and remembers what it was told."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []

    async def acquire(self) -> None:
        self.acquired += 1

    async def pause_until(self, epoch_seconds: float) -> None:
        self.pauses.append(epoch_seconds)


def _settings(auth0: Auth0Emulator, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        **auth0.settings_fields(),
        **overrides,
    }
    return Settings(**fields)


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
async def auth0_client(
    auth0: Auth0Emulator, clock: ManualClock, limiter: RecordingLimiter
) -> AsyncIterator[Auth0Client]:
    async with Auth0Client(_settings(auth0), clock=clock, limiter=limiter) as client:
        yield client


def _profile(n: int = 0, **fields: Any) -> AuthProfile:
    values: dict[str, Any] = {
        "user_id": f"01JDZ8N4Q5X6Y7Z8A9B0C1{n:04d}",
        "email": f"Person.{n}@Example.com",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        **fields,
    }
    return AuthProfile(**values)


def _statuses(auth0: Auth0Emulator, operation: str | None = None) -> list[int]:
    return [seen.status for seen in auth0.seen(operation)]


async def _wait_for_job(client: Auth0Client, job_id: str) -> ImportStatus:
    for _ in range(500):
        status = await client.import_status(job_id)
        if status.done:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never finished")


# -- Accounts ------------------------------------------------------------------


async def test_create_makes_the_account_with_our_id_and_metadata(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A create sends the connection, our id as ``user_id``, the lower-case
    e-mail, the names, our id in ``app_metadata`` and the password; the
    account is ``auth0|{our id}``."""
    profile = _profile(1)
    account = await auth0_client.create_user(profile, password="correct-horse-battery")
    assert account.auth_user_id == auth0_client.remote_id(profile.user_id)
    assert account.auth_user_id == f"auth0|{profile.user_id}"
    assert account.email == "person.1@example.com"
    assert account.store_user_id == profile.user_id
    assert (account.given_name, account.family_name, account.name) == (
        "Ada",
        "Lovelace",
        "Ada Lovelace",
    )
    [sent] = auth0.seen("POST /api/v2/users")
    assert sent.body == {
        "connection": auth0.connection,
        "user_id": profile.user_id,
        "email": "person.1@example.com",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        "app_metadata": {"idstore_user_id": profile.user_id},
        "password": "[secret]",
    }
    stored = auth0.users[account.auth_user_id]
    assert stored["identities"][0]["connection"] == auth0.connection
    assert auth0.passwords[account.auth_user_id] == "correct-horse-battery"
    assert auth0.created_per_email == {"person.1@example.com": 1}


async def test_create_leaves_out_empty_names_cuts_long_ones_and_sends_blocked(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A name that is ``None`` or empty is not sent, one longer than Auth0's
    limit is cut to it (150/150/300), and ``blocked`` goes only when true."""
    profile = _profile(2, given_name=None, family_name="", name="N" * 400, blocked=True)
    account = await auth0_client.create_user(profile, password="correct-horse-battery")
    [sent] = auth0.seen("POST /api/v2/users")
    assert "given_name" not in sent.body
    assert "family_name" not in sent.body
    assert sent.body["name"] == "N" * 300
    assert sent.body["blocked"] is True
    assert account.blocked is True
    await auth0_client.create_user(_profile(3, given_name="G" * 151), password="another-password")
    assert auth0.seen("POST /api/v2/users")[1].body["given_name"] == "G" * 150
    assert "blocked" not in auth0.seen("POST /api/v2/users")[1].body


async def test_create_without_a_password_sends_none(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """``password=None`` sends no password field (for a connection that needs none)."""
    auth0.require_password = False
    await auth0_client.create_user(_profile(4), password=None)
    [sent] = auth0.seen("POST /api/v2/users")
    assert "password" not in sent.body


async def test_a_second_create_of_one_user_is_exists_and_makes_no_second_account(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Our id is the account's id: creating the same user again is a 409."""
    profile = _profile(5)
    await auth0_client.create_user(profile, password="correct-horse-battery")
    with pytest.raises(Exists) as raised:
        await auth0_client.create_user(profile, password="correct-horse-battery")
    assert raised.value.status == 409
    assert auth0.created_per_email == {"person.5@example.com": 1}
    assert auth0.duplicates() == {}


async def test_a_create_with_an_email_taken_in_the_connection_is_exists(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Another account with the same e-mail (any case) in the connection is a 409."""
    auth0.add_user("PERSON.6@example.com")
    with pytest.raises(Exists):
        await auth0_client.create_user(_profile(6), password="correct-horse-battery")
    assert auth0.created_per_email == {}


async def test_get_user_reads_the_account_and_an_unknown_one_is_not_found(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A read gives the synced fields, the store id, the last login and the
    login count; an unknown id is :class:`NotFound`."""
    auth0_id = auth0.add_user(
        "ada@example.com",
        user_id="auth0|abc",
        given_name="Ada",
        blocked=True,
        app_metadata={"idstore_user_id": ULID, "other": 1},
        last_login="2026-11-30T08:15:00.000Z",
        logins_count=42,
    )
    account = await auth0_client.get_user(auth0_id)
    assert account.auth_user_id == "auth0|abc"
    assert account.email == "ada@example.com"
    assert account.given_name == "Ada"
    assert account.name == "ada@example.com"  # Auth0's default name is the e-mail
    assert account.blocked is True
    assert account.store_user_id == ULID
    assert account.last_login is not None
    assert account.last_login.isoformat() == "2026-11-30T08:15:00+00:00"
    assert account.logins_count == 42
    with pytest.raises(NotFound) as raised:
        await auth0_client.get_user("auth0|nobody")
    assert raised.value.status == 404


async def test_update_sends_only_the_given_fields_to_the_encoded_id(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A PATCH carries only the changed fields (a removed name as ``null``,
    the e-mail in lower case) to ``/users/auth0%7C...``; ``store_user_id``
    sets our id in ``app_metadata`` and leaves its other keys."""
    auth0_id = auth0.add_user(
        "old@example.com",
        user_id="auth0|u1",
        given_name="Old",
        family_name="Name",
        app_metadata={"kept": "yes"},
    )
    account = await auth0_client.update_user(
        auth0_id,
        {"email": "New@Example.com", "given_name": None, "family_name": "F" * 200},
        store_user_id=ULID,
    )
    [sent] = auth0.seen("PATCH /api/v2/users/{id}")
    assert sent.raw_path == "/api/v2/users/auth0%7Cu1"
    assert sent.body == {
        "email": "new@example.com",
        "given_name": None,
        "family_name": "F" * 150,
        "app_metadata": {"idstore_user_id": ULID},
    }
    assert account.email == "new@example.com"
    assert account.given_name is None
    assert account.store_user_id == ULID
    assert auth0.users[auth0_id]["app_metadata"] == {"kept": "yes", "idstore_user_id": ULID}


async def test_an_update_with_nothing_to_change_reads_the_account(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """No field and no store id: a GET, not an empty PATCH."""
    auth0_id = auth0.add_user("ada@example.com")
    account = await auth0_client.update_user(auth0_id, {})
    assert account.auth_user_id == auth0_id
    assert [s.method for s in auth0.seen()] == ["GET"]


async def test_an_update_of_fields_that_are_not_synced_is_refused_unsent(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Only :data:`SYNCED_FIELDS` may change; the e-mail cannot be removed."""
    with pytest.raises(ValueError, match="not synced"):
        await auth0_client.update_user("auth0|x", {"password": "x"})
    with pytest.raises(ValueError, match="e-mail"):
        await auth0_client.update_user("auth0|x", {"email": None})
    assert auth0.seen() == []


async def test_an_update_of_an_unknown_account_is_not_found(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A PATCH of an id Auth0 does not have is a 404 (the dispatcher recreates)."""
    with pytest.raises(NotFound):
        await auth0_client.update_user("auth0|gone", {"blocked": True})


async def test_set_blocked_blocks_and_unblocks(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """``blocked`` true, then false, by PATCH."""
    auth0_id = auth0.add_user("ada@example.com")
    assert (await auth0_client.set_blocked(auth0_id, True)).blocked is True
    assert auth0.users[auth0_id]["blocked"] is True
    assert (await auth0_client.set_blocked(auth0_id, False)).blocked is False
    assert [s.body for s in auth0.seen("PATCH /api/v2/users/{id}")] == [
        {"blocked": True},
        {"blocked": False},
    ]


async def test_delete_removes_the_account_and_an_unknown_id_is_no_error(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """DELETE is 204, for an unknown id too; a 404 would be taken as done."""
    auth0_id = auth0.add_user("ada@example.com")
    await auth0_client.delete_user(auth0_id)
    assert auth0_id not in auth0.users
    await auth0_client.delete_user(auth0_id)
    auth0.fail_next(1, 404)
    await auth0_client.delete_user(auth0_id)
    assert _statuses(auth0) == [204, 204, 404]


async def test_find_by_email_asks_in_lower_case_and_keeps_the_connection(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """The address goes in lower case; an account of another connection
    (a social login with the same address) is left out."""
    ours = auth0.add_user("ada@example.com")
    auth0.add_user("ada@example.com", user_id="google-oauth2|123", connection="google-oauth2")
    found = await auth0_client.find_by_email("Ada@Example.COM")
    assert [a.auth_user_id for a in found] == [ours]
    [sent] = auth0.seen("GET /api/v2/users-by-email")
    assert sent.query == {"email": "ada@example.com"}
    assert await auth0_client.find_by_email("nobody@example.com") == []


async def test_list_users_pages_through_the_connection(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Pages of 100 with totals, search engine v3, the connection in ``q``,
    until the total; accounts of other connections are not listed."""
    ours = {auth0.add_user(f"user{n}@example.com") for n in range(250)}
    for n in range(5):
        auth0.add_user(f"other{n}@example.com", connection="google-oauth2")
    listed = [account.auth_user_id async for account in auth0_client.list_users()]
    assert sorted(listed) == sorted(ours)
    pages = auth0.seen("GET /api/v2/users")
    assert [p.query["page"] for p in pages] == ["0", "1", "2"]
    assert pages[0].query == {
        "q": f'identities.connection:"{auth0.connection}"',
        "search_engine": "v3",
        "per_page": "100",
        "page": "0",
        "include_totals": "true",
    }


async def test_list_users_refuses_a_connection_larger_than_auth0_can_list(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Over 1000 accounts: :class:`Permanent` before any account is given
    (a partial listing would make the rest look missing)."""
    for n in range(1001):
        auth0.add_user(f"user{n}@example.com")
    accounts = auth0_client.list_users()
    with pytest.raises(Permanent, match="export job"):
        await anext(accounts)  # the first account is never given
    assert len(auth0.seen("GET /api/v2/users")) == 1


# -- Bulk import ---------------------------------------------------------------


async def test_an_import_job_goes_from_pending_to_completed_with_its_errors(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """The file, the fields and the job's life: pending, processing,
    completed with its summary; the users it refused with our id, the
    e-mail and Auth0's messages; the accounts it made are ``remote_id``."""
    auth0.add_user("taken@example.com")
    good = _profile(10, blocked=True)
    bad_email = _profile(11, email="not-an-address")
    taken = _profile(12, email="Taken@Example.com")
    auth0.job_pending_seconds = 3600
    token = current_request_id.set("req-import-1")
    try:
        job_id = await auth0_client.start_import([good, bad_email, taken], upsert=False)
    finally:
        current_request_id.reset(token)
    [sent] = auth0.seen("POST /api/v2/jobs/users-imports")
    assert sent.body["connection_id"] == auth0.connection_id
    assert sent.body["upsert"] == "false"
    assert sent.body["send_completion_email"] == "false"
    assert sent.body["external_id"] == "req-import-1"
    assert sent.body["users"][0] == {
        "user_id": good.user_id,
        "email": "person.10@example.com",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        "blocked": True,
        "app_metadata": {"idstore_user_id": good.user_id},
    }
    assert (await auth0_client.import_status(job_id)).state == "pending"
    assert await auth0_client.import_errors(job_id) == []
    auth0.job_pending_seconds, auth0.job_processing_seconds = 0, 3600
    assert (await auth0_client.import_status(job_id)).state == "processing"
    auth0.job_processing_seconds = 0
    status = await auth0_client.import_status(job_id)
    assert status == ImportStatus(job_id, "completed", total=3, inserted=1, updated=0, failed=2)
    failures = {f.user_id: f for f in await auth0_client.import_errors(job_id)}
    assert set(failures) == {bad_email.user_id, taken.user_id}
    assert failures[taken.user_id].email == "taken@example.com"
    assert failures[taken.user_id].errors == [
        "DUPLICATED_USER: The user already exist and upsert parameter is false"
    ]
    assert failures[bad_email.user_id].errors[0].startswith("INVALID_FORMAT: ")
    created = auth0.users[auth0_client.remote_id(good.user_id)]
    assert created["blocked"] is True
    assert created["app_metadata"] == {"idstore_user_id": good.user_id}


async def test_an_upsert_import_updates_the_accounts_it_finds_by_email(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """``upsert`` updates the account with the same e-mail; a clean job has
    no errors (Auth0 answers 204)."""
    auth0.job_pending_seconds = auth0.job_processing_seconds = 0
    auth0_id = auth0.add_user("person.20@example.com", given_name="Before")
    job_id = await auth0_client.start_import([_profile(20, given_name="After")], upsert=True)
    status = await _wait_for_job(auth0_client, job_id)
    assert (status.inserted, status.updated, status.failed) == (0, 1, 0)
    assert auth0.users[auth0_id]["given_name"] == "After"
    assert await auth0_client.import_errors(job_id) == []
    assert _statuses(auth0, "GET /api/v2/jobs/{id}/errors") == [204]


async def test_an_import_file_of_500_kb_is_refused_and_split_for_import_cuts_below(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A file of :data:`MAX_IMPORT_FILE_BYTES` or more is a ``ValueError``
    and nothing is sent; :func:`split_for_import` cuts the list, in order,
    into files below the limit that the emulator (Auth0's 500 KB) accepts."""
    profiles = [_profile(n, name="N" * 280) for n in range(2500)]
    assert len(import_file(profiles)) >= MAX_IMPORT_FILE_BYTES
    with pytest.raises(ValueError, match="split_for_import"):
        await auth0_client.start_import(profiles, upsert=False)
    assert auth0.seen() == []
    parts = split_for_import(profiles)
    assert len(parts) > 1
    assert [p for part in parts for p in part] == profiles
    assert all(len(import_file(part)) < MAX_IMPORT_FILE_BYTES for part in parts)
    assert len(import_file(parts[0])) > MAX_IMPORT_FILE_BYTES * 0.9  # full, not timid
    auth0.job_pending_seconds = auth0.job_processing_seconds = 0
    job_id = await auth0_client.start_import(parts[0], upsert=False)
    assert (await _wait_for_job(auth0_client, job_id)).inserted == len(parts[0])


def test_split_for_import_cuts_at_the_exact_limit() -> None:
    """Each part is the longest prefix whose file stays below the limit."""
    profiles = [_profile(n) for n in range(10)]
    one = len(import_file(profiles[:1]))
    three = len(import_file(profiles[:3]))
    parts = split_for_import(profiles, limit=three + 1)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    parts = split_for_import(profiles, limit=three)
    assert [len(p) for p in parts] == [2, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="one user"):
        split_for_import(profiles, limit=one)
    assert split_for_import([]) == []


async def test_an_import_without_the_connection_id_is_permanent(
    auth0: Auth0Emulator, clock: ManualClock
) -> None:
    """Auth0's import names the connection by id: without the setting, nothing is sent."""
    settings = _settings(auth0, auth0_connection_id=None)
    async with Auth0Client(settings, clock=clock) as client:
        with pytest.raises(Permanent, match="CONNECTION_ID"):
            await client.start_import([_profile(1)], upsert=False)
    assert auth0.seen() == []


async def test_a_third_running_import_job_is_throttled(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Auth0 runs at most 2 import jobs at once; a third is a 429."""
    auth0.job_pending_seconds = 3600
    for n in range(2):
        await auth0_client.start_import([_profile(n)], upsert=False)
    with pytest.raises(Transient) as raised:
        await auth0_client.start_import([_profile(3)], upsert=False)
    assert raised.value.throttled
    assert raised.value.status == 429


async def test_a_failed_import_job_reports_why(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A job that failed as a whole: state ``failed``, Auth0's detail as the
    message, no per-user errors."""
    auth0.job_pending_seconds = auth0.job_processing_seconds = 0
    auth0.fail_next_job("Internal error processing the job (ada@example.com)")
    job_id = await auth0_client.start_import([_profile(1)], upsert=False)
    status = await _wait_for_job(auth0_client, job_id)
    assert status.state == "failed"
    assert status.message == "Internal error processing the job ([email])"
    assert await auth0_client.import_errors(job_id) == []


async def test_an_import_job_id_that_is_not_one_is_refused_unsent(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A job id goes into a path: anything but ``[A-Za-z0-9_-]`` is refused."""
    with pytest.raises(ValueError, match="job id"):
        await auth0_client.import_status("../users")
    assert auth0.seen() == []


# -- Tickets -----------------------------------------------------------------------


async def test_a_password_change_ticket_is_its_url(
    auth0: Auth0Emulator, clock: ManualClock
) -> None:
    """The ticket for an account, with the configured result URL; an
    unknown account is :class:`NotFound`."""
    auth0_id = auth0.add_user("ada@example.com")
    settings = _settings(auth0, auth0_ticket_result_url="https://app.example.com/done")
    async with Auth0Client(settings, clock=clock) as client:
        url = await client.password_change_ticket(auth0_id)
        with pytest.raises(NotFound):
            await client.password_change_ticket("auth0|nobody")
    assert url == auth0.tickets[0]["ticket"]
    assert url.startswith(f"{auth0.url}/lo/reset?ticket=")
    assert auth0.tickets[0]["user_id"] == auth0_id
    assert auth0.tickets[0]["result_url"] == "https://app.example.com/done"


# -- The token -------------------------------------------------------------------


async def test_one_token_serves_until_a_minute_before_it_expires(
    auth0: Auth0Emulator, auth0_client: Auth0Client, clock: ManualClock
) -> None:
    """A token of a day is used until 60 s before it expires, then renewed."""
    auth0_id = auth0.add_user("ada@example.com")
    await auth0_client.get_user(auth0_id)
    clock.advance(86_400 - 61)
    await auth0_client.get_user(auth0_id)
    assert auth0.token_requests == 1
    clock.advance(1)
    await auth0_client.get_user(auth0_id)
    assert auth0.token_requests == 2
    assert auth0_client.token_requests == 2
    [first, second] = auth0.seen("POST /oauth/token")
    assert first.body == {
        "grant_type": "client_credentials",
        "client_id": auth0.client_id,
        "client_secret": "[secret]",
        "audience": auth0.audience,
    }
    assert second.status == 200


async def test_a_short_lived_token_is_renewed_a_tenth_before_it_expires(
    auth0: Auth0Emulator, auth0_client: Auth0Client, clock: ManualClock
) -> None:
    """For a token of 300 s, the margin is 30 s (a tenth), not 60 s."""
    auth0.token_lifetime = 300
    auth0_id = auth0.add_user("ada@example.com")
    await auth0_client.get_user(auth0_id)
    clock.advance(269)
    await auth0_client.get_user(auth0_id)
    assert auth0.token_requests == 1
    clock.advance(1)
    await auth0_client.get_user(auth0_id)
    assert auth0.token_requests == 2


async def test_a_token_refused_as_expired_is_renewed_once_and_the_call_sent_again(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Auth0 says 401 (the token expired early, or was revoked): one new
    token, the same request again, and it succeeds."""
    auth0_id = auth0.add_user("ada@example.com")
    await auth0_client.get_user(auth0_id)
    auth0.expire_tokens()
    account = await auth0_client.get_user(auth0_id)
    assert account.auth_user_id == auth0_id
    assert _statuses(auth0) == [200, 401, 200]
    assert auth0.token_requests == 2


async def test_concurrent_callers_share_one_token_fetch(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Twenty calls at once, no token yet: one token request."""
    auth0.token_delay = 0.05
    auth0_id = auth0.add_user("ada@example.com")
    accounts = await asyncio.gather(*(auth0_client.get_user(auth0_id) for _ in range(20)))
    assert {a.auth_user_id for a in accounts} == {auth0_id}
    assert auth0.token_requests == 1
    assert len(auth0.seen("POST /oauth/token")) == 1


@pytest.mark.parametrize(
    ("setup", "expected", "words"),
    [
        pytest.param(
            lambda a: setattr(a, "client_secret", "rotated"),
            Permanent,
            "refused the client credentials (401 access_denied",
            id="wrong-secret-401",
        ),
        pytest.param(
            lambda a: a.fail_next(1, 503, only="POST /oauth/token"),
            Transient,
            "no token from Auth0 (503",
            id="token-endpoint-503",
        ),
        pytest.param(
            lambda a: a.fail_next(1, 429, reset=0, only="POST /oauth/token"),
            Transient,
            "no token from Auth0 (429",
            id="token-endpoint-429",
        ),
        pytest.param(
            lambda a: a.answer_next(1, 200, b"<html>", only="POST /oauth/token"),
            Permanent,
            "token request is not JSON",
            id="token-not-json",
        ),
        pytest.param(
            lambda a: a.answer_next(
                1, 200, b'{"access_token": "a b", "expires_in": 60}', only="POST /oauth/token"
            ),
            Permanent,
            "no usable access_token",
            id="token-with-a-space",
        ),
        pytest.param(
            lambda a: a.answer_next(
                1, 200, b'{"access_token": "abc", "expires_in": "60"}', only="POST /oauth/token"
            ),
            Permanent,
            "no usable expires_in",
            id="lifetime-not-a-number",
        ),
    ],
)
async def test_what_the_token_endpoint_answers_decides_the_call(
    auth0: Auth0Emulator,
    auth0_client: Auth0Client,
    setup: Callable[[Auth0Emulator], None],
    expected: type[AuthServiceError],
    words: str,
) -> None:
    """Credentials refused or an unusable token: :class:`Permanent`; the
    endpoint failing or throttling: :class:`Transient`. Nothing reaches the
    Management API."""
    setup(auth0)
    with pytest.raises(expected) as raised:
        await auth0_client.get_user("auth0|x")
    assert type(raised.value) is expected
    assert words in raised.value.message
    assert auth0.seen() == []


# -- The outcome of every answer (one row per rule) -----------------------------------


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def _get(client: Auth0Client) -> Any:
    return await client.get_user("auth0|someone")


async def _create(client: Auth0Client) -> Any:
    return await client.create_user(_profile(1), password="correct-horse-battery")


OUTCOMES: list[Any] = [
    # (id, injection, call, error class, status, throttled, retry_at offset or None)
    ("400", lambda a, now: a.fail_next(1, 400), _get, Permanent, 400, False, None),
    ("401-twice", lambda a, now: a.fail_next(2, 401), _get, Permanent, 401, False, None),
    ("403", lambda a, now: a.fail_next(1, 403), _get, Permanent, 403, False, None),
    ("404", lambda a, now: None, _get, NotFound, 404, False, None),
    ("409", lambda a, now: a.fail_next(1, 409), _create, Exists, 409, False, None),
    (
        "429-ratelimit-reset",
        lambda a, now: a.fail_next(1, 429, reset=now + 30),
        _get,
        Transient,
        429,
        True,
        30,
    ),
    (
        "429-reset-capped",
        lambda a, now: a.fail_next(1, 429, reset=now + 86_400),
        _get,
        Transient,
        429,
        True,
        MAX_RETRY_WAIT_SECONDS,
    ),
    (
        "429-reset-past",
        lambda a, now: a.fail_next(1, 429, reset=now - 100),
        _get,
        Transient,
        429,
        True,
        0,
    ),
    (
        "429-retry-after-seconds",
        lambda a, now: a.fail_next(1, 429, retry_after="7"),
        _get,
        Transient,
        429,
        True,
        7,
    ),
    (
        "429-retry-after-date",
        lambda a, now: a.fail_next(1, 429, retry_after=format_datetime(_at(now + 20), usegmt=True)),
        _get,
        Transient,
        429,
        True,
        20,
    ),
    ("429-nothing", lambda a, now: a.fail_next(1, 429), _get, Transient, 429, True, None),
    ("500", lambda a, now: a.fail_next(1, 500), _get, Transient, 500, False, None),
    ("502", lambda a, now: a.fail_next(1, 502), _get, Transient, 502, False, None),
    ("503", lambda a, now: a.fail_next(1, 503), _get, Transient, 503, False, None),
    ("504", lambda a, now: a.fail_next(1, 504), _get, Transient, 504, False, None),
    ("418-other-4xx", lambda a, now: a.fail_next(1, 418), _get, Permanent, 418, False, None),
    (
        "dropped-after-201",
        lambda a, now: a.drop_after_commit(),
        _create,
        Transient,
        None,
        False,
        None,
    ),
    (
        "non-json-2xx",
        lambda a, now: a.answer_next(1, 200, b"<html>ok</html>", content_type="text/html"),
        _get,
        Permanent,
        None,
        False,
        None,
    ),
    (
        "oversized-2xx",
        lambda a, now: a.answer_next(1, 200, b'{"user_id":"' + b"x" * MAX_BODY_BYTES + b'"}'),
        _get,
        Permanent,
        None,
        False,
        None,
    ),
    (
        "oversized-2xx-chunked",
        lambda a, now: a.answer_next(
            1, 200, b'{"user_id":"' + b"x" * MAX_BODY_BYTES + b'"}', chunked=True
        ),
        _get,
        Permanent,
        None,
        False,
        None,
    ),
    (
        "oversized-503-is-still-transient",
        lambda a, now: a.answer_next(1, 503, b"x" * (2 * MAX_BODY_BYTES)),
        _get,
        Transient,
        503,
        False,
        None,
    ),
]


@pytest.mark.parametrize(
    ("inject", "call", "expected", "status", "throttled", "retry_in"),
    [pytest.param(*row[1:], id=row[0]) for row in OUTCOMES],
)
async def test_each_answer_of_auth0_has_one_outcome(
    auth0: Auth0Emulator,
    auth0_client: Auth0Client,
    clock: ManualClock,
    limiter: RecordingLimiter,
    inject: Callable[[Auth0Emulator, float], None],
    call: Callable[[Auth0Client], Awaitable[Any]],
    expected: type[AuthServiceError],
    status: int | None,
    throttled: bool,
    retry_in: float | None,
) -> None:
    """The one mapping of answers to outcomes, a row per rule: the error
    class, its status, whether it is throttling, when to retry (and the
    limiter told so)."""
    now = clock.now().timestamp()
    inject(auth0, now)
    with pytest.raises(AuthServiceError) as raised:
        await call(auth0_client)
    error = raised.value
    assert type(error) is expected, error.message
    assert error.status == status
    if isinstance(error, Transient):
        assert error.throttled is throttled
        if retry_in is None:
            assert error.retry_at is None
            assert limiter.pauses == []
        else:
            assert error.retry_at == pytest.approx(now + retry_in)
            assert limiter.pauses == [error.retry_at]
    else:
        assert retry_in is None


async def test_a_401_twice_fetches_one_new_token_and_says_credentials(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """401, a new token, 401 again: :class:`Permanent`, after exactly two tokens."""
    auth0.fail_next(2, 401)
    with pytest.raises(Permanent, match="freshly issued token"):
        await auth0_client.get_user("auth0|x")
    assert auth0.token_requests == 2
    assert _statuses(auth0) == [401, 401]


async def test_a_403_names_the_scopes_to_grant(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A token without ``read:users`` is refused by Auth0 with 403
    ``insufficient_scope``; the error names every scope the sync needs."""
    auth0.scopes = frozenset({"create:users"})
    with pytest.raises(Permanent) as raised:
        await auth0_client.get_user("auth0|x")
    assert "insufficient_scope" in raised.value.message
    assert all(scope in raised.value.message for scope in REQUIRED_SCOPES)


async def test_a_request_that_times_out_is_transient(
    auth0: Auth0Emulator, clock: ManualClock
) -> None:
    """Auth0 slower than ``auth0_timeout_seconds``: :class:`Transient`."""
    auth0.add_user("ada@example.com", user_id="auth0|slow")
    async with Auth0Client(_settings(auth0, auth0_timeout_seconds=0.2), clock=clock) as client:
        await client.get_user("auth0|slow")  # the token, and a connection
        auth0.delay = 1.0
        with pytest.raises(Transient, match="timed out") as raised:
            await client.get_user("auth0|slow")
    assert raised.value.status is None
    assert not raised.value.throttled


async def test_a_refused_connection_is_transient(auth0: Auth0Emulator, clock: ManualClock) -> None:
    """Nothing listens at the tenant's address: :class:`Transient`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = _settings(auth0, auth0_base_url=f"http://127.0.0.1:{port}")
    async with Auth0Client(settings, clock=clock) as client:
        with pytest.raises(Transient, match="unreachable"):
            await client.get_user("auth0|x")


async def test_a_create_dropped_after_201_is_transient_then_exists(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Auth0 made the account, then the connection dropped mid-answer: the
    create is :class:`Transient`, the next one :class:`Exists`, and there
    is one account."""
    auth0.drop_after_commit()
    with pytest.raises(Transient, match="RemoteProtocolError"):
        await _create(auth0_client)
    with pytest.raises(Exists):
        await _create(auth0_client)
    assert auth0.created_per_email == {"person.1@example.com": 1}


async def test_a_5xx_that_applied_nothing_leaves_auth0_unchanged(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A 503 is a change not made: the retry creates the account once."""
    auth0.fail_next(1, 503)
    with pytest.raises(Transient):
        await _create(auth0_client)
    assert auth0.users == {}
    await _create(auth0_client)
    assert auth0.created_per_email == {"person.1@example.com": 1}


async def test_with_max_attempts_the_client_retries_through_the_clock(
    auth0: Auth0Emulator, clock: ManualClock
) -> None:
    """``max_attempts=4``: three 5xx answers are waited out with capped,
    jittered backoff (on the clock, not slept), a 429 with a reset waits
    until it without counting as an attempt, and the call succeeds."""
    auth0_id = auth0.add_user("ada@example.com")
    reset = clock.now().timestamp() + 45
    auth0.fail_next(2, 503)
    auth0.fail_next(1, 429, reset=reset)
    auth0.fail_next(1, 502)
    async with Auth0Client(_settings(auth0), clock=clock, max_attempts=4) as client:
        account = await client.get_user(auth0_id)
    assert account.auth_user_id == auth0_id
    assert _statuses(auth0) == [503, 503, 429, 502, 200]
    backoffs = [clock.sleeps[0], clock.sleeps[1], clock.sleeps[3]]
    assert 0 <= backoffs[0] <= 1
    assert 0 <= backoffs[1] <= 2
    assert 0 <= backoffs[2] <= 4
    assert clock.sleeps[2] == pytest.approx(45 - sum(clock.sleeps[:2]))


async def test_with_max_attempts_the_last_transient_error_is_raised(
    auth0: Auth0Emulator, clock: ManualClock
) -> None:
    """Three attempts, three 503: the third 503 is raised."""
    auth0.fail_next(5, 503)
    async with Auth0Client(_settings(auth0), clock=clock, max_attempts=3) as client:
        with pytest.raises(Transient):
            await client.get_user("auth0|x")
    assert _statuses(auth0) == [503, 503, 503]


async def test_the_limiter_is_asked_before_every_management_request(
    auth0: Auth0Emulator, auth0_client: Auth0Client, limiter: RecordingLimiter
) -> None:
    """One ``acquire`` per Management API request (the renewal's resend
    included), none for the token endpoint."""
    auth0_id = auth0.add_user("ada@example.com")
    await auth0_client.get_user(auth0_id)
    auth0.expire_tokens()
    await auth0_client.set_blocked(auth0_id, True)
    assert limiter.acquired == len(auth0.seen()) == 3


# -- Limits on what Auth0 may answer ------------------------------------------------


def _user_body(**fields: Any) -> bytes:
    return orjson.dumps({"user_id": "auth0|abc", "email": "ada@example.com", **fields})


async def test_unusable_account_fields_are_dropped(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Wrong types, NUL, values over Auth0's lengths, 20-digit and huge
    numbers, bad dates: each such field is read as absent."""
    auth0.answer_next(
        1,
        200,
        _user_body(
            email="ada\x00@example.com",
            email_verified="yes",
            given_name="A\x00da",
            family_name="F" * 151,
            name=["Ada"],
            blocked=1,
            app_metadata={"idstore_user_id": "x" * 65},
            last_login="yesterday",
            logins_count=12345678901234567890,
        ),
    )
    account = await auth0_client.get_user("auth0|abc")
    assert account.auth_user_id == "auth0|abc"
    assert account.email is None
    assert account.email_verified is False
    assert account.given_name is None
    assert account.family_name is None
    assert account.name is None
    assert account.blocked is False
    assert account.store_user_id is None
    assert account.last_login is None
    assert account.logins_count is None
    auth0.answer_next(1, 200, b'{"user_id": "auth0|abc", "logins_count": 123456789012345678901}')
    assert (await auth0_client.get_user("auth0|abc")).logins_count is None


@pytest.mark.parametrize(
    "user_id",
    [None, 42, "", "auth0|a\x00b", "auth0|" + "x" * 400, " auth0|abc", "auth0|a\nb"],
    ids=["missing", "number", "empty", "nul", "too-long", "padded", "newline"],
)
async def test_an_account_without_a_usable_id_is_permanent(
    auth0: Auth0Emulator, auth0_client: Auth0Client, user_id: Any
) -> None:
    """The id is what the store keeps: without a usable one the answer is refused."""
    document = {"email": "ada@example.com"} if user_id is None else {"user_id": user_id}
    auth0.answer_next(1, 200, orjson.dumps(document))
    with pytest.raises(Permanent, match="user_id"):
        await auth0_client.get_user("auth0|abc")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'"auth0|abc"', "JSON str"),
        (b"[]", "JSON list"),
        (b"", "not JSON"),
        (b'{"user_id": "auth0|abc"', "not JSON"),
        (b"NaN", "not JSON"),
    ],
    ids=["nested-100000-deep", "a-string", "a-list", "empty", "cut-short", "nan"],
)
async def test_a_2xx_answer_that_is_no_account_is_permanent(
    auth0: Auth0Emulator, auth0_client: Auth0Client, body: bytes, words: str
) -> None:
    """Hostile JSON in a 2xx answer (deep nesting, the wrong type, nothing)
    is :class:`Permanent`, never a crash."""
    auth0.answer_next(1, 200, body)
    with pytest.raises(Permanent, match=words):
        await auth0_client.get_user("auth0|abc")


async def test_deep_nesting_inside_metadata_is_ignored(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Nesting that JSON parsing takes (500 deep) in a field not read is harmless."""
    nested = b"[" * 500 + b"]" * 500
    auth0.answer_next(1, 200, b'{"user_id": "auth0|abc", "user_metadata": {"x": ' + nested + b"}}")
    assert (await auth0_client.get_user("auth0|abc")).auth_user_id == "auth0|abc"


async def test_a_look_up_by_email_of_10000_accounts_is_refused(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """One address has a handful of accounts at most; 10,000 is hostile."""
    entries = [{"user_id": f"auth0|{n}", "email": "a@example.com"} for n in range(10_000)]
    auth0.answer_next(1, 200, orjson.dumps(entries))
    with pytest.raises(Permanent, match=f"at most {MAX_ACCOUNTS_BY_EMAIL}"):
        await auth0_client.find_by_email("a@example.com")
    auth0.answer_next(1, 200, orjson.dumps([1] * 10))
    with pytest.raises(Permanent, match="JSON int"):
        await auth0_client.find_by_email("a@example.com")


async def test_a_page_longer_than_asked_is_refused(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A listing page of 101 accounts for ``per_page=100`` is refused."""
    users = [{"user_id": f"auth0|{n}"} for n in range(101)]
    auth0.answer_next(1, 200, orjson.dumps({"total": 101, "users": users}))
    with pytest.raises(Permanent, match="101 accounts for a page of 100"):
        await anext(auth0_client.list_users())


async def test_import_errors_with_10000_messages_keep_the_first_ones(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A user's errors are cut to :data:`MAX_ERRORS_PER_USER` with a count
    of the rest; messages lose control characters and e-mail addresses."""
    errors = [{"code": "E", "message": f"bad {n}\x00 ada@example.com"} for n in range(10_000)]
    entry = {"user": {"user_id": "auth0|01AB", "email": "Ada@Example.com"}, "errors": errors}
    auth0.answer_next(1, 200, orjson.dumps([entry]))
    [failure] = await auth0_client.import_errors("job_abcdefghijklmnop")
    assert failure.user_id == "01AB"
    assert failure.email == "ada@example.com"
    assert len(failure.errors) == MAX_ERRORS_PER_USER + 1
    assert failure.errors[0] == "E: bad 0  [email]"
    assert failure.errors[-1] == f"... and {10_000 - MAX_ERRORS_PER_USER} more errors"


async def test_job_counts_of_20_digits_are_not_taken(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A summary count that is no sensible integer is read as 0; an unknown
    job status is :class:`Permanent`."""
    job = {
        "id": "job_abcdefghijklmnop",
        "type": "users_import",
        "status": "completed",
        "summary": {"total": 12345678901234567890, "inserted": -1, "updated": 2.5, "failed": 3},
    }
    auth0.answer_next(1, 200, orjson.dumps(job))
    status = await auth0_client.import_status("job_abcdefghijklmnop")
    assert (status.total, status.inserted, status.updated, status.failed) == (0, 0, 0, 3)
    auth0.answer_next(1, 200, orjson.dumps({**job, "status": "exploded"}))
    with pytest.raises(Permanent, match="unknown job status"):
        await auth0_client.import_status("job_abcdefghijklmnop")


async def test_auth0_messages_lose_email_addresses(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """An error message that quotes the address keeps ``[email]`` instead
    (it is kept with dead letters and may be logged)."""
    auth0.add_user("taken@example.com", user_id="auth0|a")
    other = auth0.add_user("other@example.com", user_id="auth0|b")
    with pytest.raises(Permanent) as raised:
        await auth0_client.update_user(other, {"email": "not an address@x"})
    assert "@" not in raised.value.message
    assert raised.value.status == 400
    auth0.contract_violations.clear()  # the bad address was sent on purpose


async def test_a_ticket_answer_without_a_url_is_permanent(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """A ticket that is not an http(s) URL, or holds a space, is refused."""
    for ticket in ("javascript:alert(1)", "https://x/ y", 42):
        auth0.answer_next(1, 201, orjson.dumps({"ticket": ticket}))
        with pytest.raises(Permanent, match="ticket URL"):
            await auth0_client.password_change_ticket("auth0|abc")


# -- The log line of each call ----------------------------------------------------------


async def test_each_call_logs_one_json_line_with_the_request_id_and_no_secret(
    auth0: Auth0Emulator, auth0_client: Auth0Client, caplog: pytest.LogCaptureFixture
) -> None:
    """One JSON object per Management API request on ``idstore.auth0``:
    method, path template, the Auth0 id, status, outcome, duration, attempt
    and the change's request id; never the token, the client secret, the
    password, an e-mail address or a query value."""
    caplog.set_level(logging.INFO, logger="idstore.auth0")
    token = current_request_id.set("req-7f3a")
    try:
        account = await auth0_client.create_user(_profile(1), password="correct-horse-battery")
        await auth0_client.find_by_email("Person.1@Example.com")
        with pytest.raises(NotFound):
            await auth0_client.get_user("auth0|nobody")
    finally:
        current_request_id.reset(token)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "idstore.auth0"]
    calls = [line for line in lines if line["event"] == "auth0_call"]
    assert [(c["method"], c["path"], c["status"], c["outcome"]) for c in calls] == [
        ("POST", "/api/v2/users", 201, "ok"),
        ("GET", "/api/v2/users-by-email", 200, "ok"),
        ("GET", "/api/v2/users/{id}", 404, "not_found"),
    ]
    assert calls[2]["auth0_id"] == "auth0|nobody"
    assert calls[2]["error"] == "inexistent_user"
    assert all(c["request_id"] == "req-7f3a" for c in lines)
    assert all(c["attempt"] == 1 and c["duration_ms"] >= 0 for c in calls)
    assert set(calls[0]) == {
        "event",
        "method",
        "path",
        "auth0_id",
        "status",
        "outcome",
        "error",
        "duration_ms",
        "attempt",
        "request_id",
    }
    text = caplog.text.lower()
    for secret in (
        auth0.client_secret,
        "correct-horse-battery",
        "person.1@example.com",
        "example.com",
        *auth0.tokens,
    ):
        assert secret.lower() not in text
    assert account.email == "person.1@example.com"


async def test_requests_keep_auth0s_contract(
    auth0: Auth0Emulator, auth0_client: Auth0Client
) -> None:
    """Every call the client makes is one Auth0's OpenAPI description allows
    (checked by the emulator against the document), answers included."""
    auth0.job_pending_seconds = auth0.job_processing_seconds = 0
    account = await auth0_client.create_user(_profile(1), password="correct-horse-battery")
    await auth0_client.get_user(account.auth_user_id)
    await auth0_client.update_user(
        account.auth_user_id, {"given_name": None, "email": "x@example.com"}, store_user_id=ULID
    )
    await auth0_client.set_blocked(account.auth_user_id, True)
    await auth0_client.find_by_email("x@example.com")
    _ = [a async for a in auth0_client.list_users()]
    job_id = await auth0_client.start_import([_profile(2), _profile(3)], upsert=True)
    await _wait_for_job(auth0_client, job_id)
    await auth0_client.import_errors(job_id)
    await auth0_client.password_change_ticket(account.auth_user_id)
    await auth0_client.delete_user(account.auth_user_id)
    assert len(auth0.seen()) >= 11
    assert auth0.contract_violations == []


def test_the_client_needs_auth0_configured(auth0: Auth0Emulator) -> None:
    """Without the base URL or the credentials the client is not made."""
    with pytest.raises(ValueError, match="not configured"):
        Auth0Client(_settings(auth0, auth0_client_secret=None))
    with pytest.raises(ValueError, match="max_attempts"):
        Auth0Client(_settings(auth0), max_attempts=0)
