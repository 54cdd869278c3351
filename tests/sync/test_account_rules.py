"""The authentication-service sync's rules (identity_sync/account_rules.py),
one row per rule: what the service should hold for a user, which fields an
update sends, and what a failed delivery becomes."""

from __future__ import annotations

import random
import string
from dataclasses import replace
from typing import Any

import pytest

from identity_store.accounts import AccountSubject
from identity_store.outbox import SyncRecord
from identity_sync.account_rules import (
    Action,
    RetryPolicy,
    backoff,
    changes,
    decide,
    plan,
    random_password,
)
from identity_sync.auth_service import AuthProfile, Exists, NotFound, Permanent, Transient

ACTIVE = AccountSubject(
    user_id="01HUSER",
    present=True,
    user_name="ada@example.com",
    email="Ada@Example.com",
    email_verified=True,
    given_name="Ada",
    family_name="Lovelace",
    name="Ada Lovelace",
    lifecycle="ACTIVE",
    active=True,
)
WITH_ACCOUNT = replace(ACTIVE, auth_user_id="auth0|01HUSER")
KEPT_ONLY = replace(ACTIVE, sync=SyncRecord(remote_id="auth0|kept"))

PLAN_ROWS: list[tuple[str, AccountSubject, bool, Action, str | None, bool | None]] = [
    # (rule, subject, hard_delete, action, remote id, blocked of the profile)
    ("active user without account: ensure, unblocked", ACTIVE, False, Action.ENSURE, None, False),
    (
        "active user with account: ensure it",
        WITH_ACCOUNT,
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        False,
    ),
    (
        "account known only from the last delivery",
        KEPT_ONLY,
        False,
        Action.ENSURE,
        "auth0|kept",
        False,
    ),
    (
        "CREATED user: account created blocked",
        replace(ACTIVE, lifecycle="CREATED"),
        False,
        Action.ENSURE,
        None,
        True,
    ),
    ("ERROR user: blocked", replace(ACTIVE, lifecycle="ERROR"), False, Action.ENSURE, None, True),
    (
        "active=false: blocked",
        replace(WITH_ACCOUNT, active=False),
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        True,
    ),
    (
        "blocked flag: blocked",
        replace(WITH_ACCOUNT, blocked=True),
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        True,
    ),
    (
        "suspended with account: blocked",
        replace(WITH_ACCOUNT, lifecycle="SUSPENDED"),
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        True,
    ),
    (
        "suspended without account: nothing created",
        replace(ACTIVE, lifecycle="SUSPENDED"),
        False,
        Action.SKIP,
        None,
        None,
    ),
    (
        "creation disabled, no account: skipped",
        replace(ACTIVE, creation_disabled=True, user_group="g"),
        False,
        Action.SKIP,
        None,
        None,
    ),
    (
        "creation disabled but an account exists: kept in sync",
        replace(WITH_ACCOUNT, creation_disabled=True),
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        False,
    ),
    (
        "no e-mail and no account: refused",
        replace(ACTIVE, email=None),
        False,
        Action.REFUSE,
        None,
        None,
    ),
    (
        "no e-mail but an account: updated without it",
        replace(WITH_ACCOUNT, email=None),
        False,
        Action.ENSURE,
        "auth0|01HUSER",
        False,
    ),
    (
        "SCIM-deleted with account: blocked",
        replace(WITH_ACCOUNT, deleted=True, lifecycle="SUSPENDED"),
        False,
        Action.BLOCK,
        "auth0|01HUSER",
        None,
    ),
    (
        "SCIM-deleted with account, hard delete: still only blocked until the deletion sync",
        replace(WITH_ACCOUNT, deleted=True, lifecycle="SUSPENDED"),
        True,
        Action.BLOCK,
        "auth0|01HUSER",
        None,
    ),
    (
        "SCIM-deleted without account: nothing",
        replace(ACTIVE, deleted=True),
        False,
        Action.SKIP,
        None,
        None,
    ),
    (
        "INACTIVE, soft: blocked",
        replace(WITH_ACCOUNT, lifecycle="INACTIVE", deleted=True),
        False,
        Action.BLOCK,
        "auth0|01HUSER",
        None,
    ),
    (
        "INACTIVE, hard delete: deleted",
        replace(WITH_ACCOUNT, lifecycle="INACTIVE", deleted=True),
        True,
        Action.DELETE,
        "auth0|01HUSER",
        None,
    ),
    (
        "INACTIVE without account: nothing",
        replace(ACTIVE, lifecycle="INACTIVE"),
        True,
        Action.SKIP,
        None,
        None,
    ),
    (
        "removed for good, account kept in sync state, hard delete: deleted",
        AccountSubject(user_id="x", present=False, sync=SyncRecord(remote_id="auth0|x")),
        True,
        Action.DELETE,
        "auth0|x",
        None,
    ),
    (
        "removed for good, soft: blocked",
        AccountSubject(user_id="x", present=False, sync=SyncRecord(remote_id="auth0|x")),
        False,
        Action.BLOCK,
        "auth0|x",
        None,
    ),
    (
        "removed for good, no account: nothing",
        AccountSubject(user_id="x", present=False),
        True,
        Action.SKIP,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("rule", "subject", "hard_delete", "action", "remote_id", "blocked"),
    PLAN_ROWS,
    ids=[row[0] for row in PLAN_ROWS],
)
def test_plan(
    rule: str,
    subject: AccountSubject,
    hard_delete: bool,
    action: Action,
    remote_id: str | None,
    blocked: bool | None,
) -> None:
    result = plan(subject, hard_delete=hard_delete)
    assert result.action is action, result.reason
    assert result.remote_id == remote_id
    if blocked is None:
        assert result.profile is None
    else:
        assert result.profile is not None
        assert result.profile.blocked is blocked


def test_plan_profile_carries_the_user_lower_cased_and_cut() -> None:
    long = replace(ACTIVE, given_name="G" * 400, family_name="F" * 151, name="N" * 301)
    profile = plan(long, hard_delete=False).profile
    assert profile is not None
    assert profile.email == "ada@example.com"
    assert profile.email_verified is True
    assert (
        len(profile.given_name or ""),
        len(profile.family_name or ""),
        len(profile.name or ""),
    ) == (150, 150, 300)
    assert profile.user_id == "01HUSER"


def test_plan_skip_names_the_user_group() -> None:
    result = plan(replace(ACTIVE, creation_disabled=True, user_group="partners"), hard_delete=False)
    assert "partners" in result.reason
    assert "authUserCreationDisabled" in result.reason


PROFILE = AuthProfile(
    user_id="u",
    email="a@x.io",
    email_verified=True,
    given_name="A",
    family_name=None,
    name="A B",
    blocked=False,
)
SYNCED = {
    "email": "a@x.io",
    "email_verified": True,
    "given_name": "A",
    "family_name": None,
    "name": "A B",
    "blocked": False,
}

CHANGE_ROWS: list[tuple[str, AuthProfile, dict[str, Any] | None, dict[str, Any]]] = [
    (
        "nothing synced: every non-empty field",
        PROFILE,
        None,
        {
            "email": "a@x.io",
            "email_verified": True,
            "given_name": "A",
            "name": "A B",
            "blocked": False,
        },
    ),
    ("same as synced: nothing", PROFILE, SYNCED, {}),
    ("one field differs: only it", replace(PROFILE, given_name="B"), SYNCED, {"given_name": "B"}),
    ("blocked flips: only blocked", replace(PROFILE, blocked=True), SYNCED, {"blocked": True}),
    (
        "a field missing from synced is sent",
        PROFILE,
        {k: v for k, v in SYNCED.items() if k != "name"},
        {"name": "A B"},
    ),
    ("an emptied name is not sent", replace(PROFILE, name=None), SYNCED, {}),
    (
        "an empty e-mail is never sent",
        replace(PROFILE, email=""),
        {**SYNCED, "email": "old@x.io"},
        {},
    ),
    (
        "email_verified false is sent when it changed",
        replace(PROFILE, email_verified=False),
        SYNCED,
        {"email_verified": False},
    ),
]


@pytest.mark.parametrize(
    ("rule", "profile", "synced", "expected"), CHANGE_ROWS, ids=[r[0] for r in CHANGE_ROWS]
)
def test_changes(
    rule: str, profile: AuthProfile, synced: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    assert changes(profile, synced) == expected


POLICY = RetryPolicy(max_attempts=5, base_seconds=2.0, max_seconds=60.0)
NOW = 1_000_000.0

DECIDE_ROWS: list[tuple[str, Exception, int, float | None, float | None, bool, str]] = [
    # (rule, error, attempts before, earliest retry, latest (None: dead), counts, message)
    (
        "429 with a reset time: retried then, not counted",
        Transient("slow down", status=429, retry_at=NOW + 30, throttled=True),
        0,
        NOW + 30,
        NOW + 30,
        False,
        "throttled",
    ),
    (
        "429 does not count even at the last attempt",
        Transient("slow down", status=429, retry_at=NOW + 5, throttled=True),
        4,
        NOW + 5,
        NOW + 5,
        False,
        "throttled",
    ),
    (
        "429 without a time: backoff of one attempt",
        Transient("slow down", status=429, throttled=True),
        0,
        NOW + 1,
        NOW + 2,
        False,
        "throttled",
    ),
    (
        "429 with a reset in the past: now",
        Transient("slow down", status=429, retry_at=NOW - 10, throttled=True),
        0,
        NOW,
        NOW,
        False,
        "throttled",
    ),
    (
        "5xx, first failure: backoff 1-2 s",
        Transient("bad gateway", status=502),
        0,
        NOW + 1,
        NOW + 2,
        True,
        "bad gateway",
    ),
    (
        "5xx, third failure: backoff 4-8 s",
        Transient("bad gateway", status=502),
        2,
        NOW + 4,
        NOW + 8,
        True,
        "bad gateway",
    ),
    (
        "transient with a retry-after later than the backoff: that time",
        Transient("unavailable", status=503, retry_at=NOW + 40),
        0,
        NOW + 40,
        NOW + 40,
        True,
        "unavailable",
    ),
    (
        "transient at the last attempt: dead letter",
        Transient("timeout"),
        4,
        None,
        None,
        True,
        "gave up after 5 attempts: timeout",
    ),
    (
        "401 after a token refresh: not this change's fault, waits the longest backoff",
        Permanent("Invalid token", status=401),
        3,
        NOW + 60,
        NOW + 60,
        False,
        "credentials refused: Invalid token",
    ),
    (
        "403 (a scope missing): waits likewise, never a dead letter",
        Permanent("Insufficient scope", status=403),
        9,
        NOW + 60,
        NOW + 60,
        False,
        "credentials refused",
    ),
    (
        "permanent: dead letter at once",
        Permanent("invalid email", status=400),
        0,
        None,
        None,
        True,
        "invalid email",
    ),
    (
        "not found escaping the delivery: dead letter",
        NotFound("no such user", status=404),
        0,
        None,
        None,
        True,
        "no such user",
    ),
    (
        "exists escaping the delivery: dead letter",
        Exists("already exists", status=409),
        0,
        None,
        None,
        True,
        "already exists",
    ),
    (
        "a bug (any other exception): retried, counted",
        ValueError("boom"),
        0,
        NOW + 1,
        NOW + 2,
        True,
        "ValueError: boom",
    ),
    (
        "a bug at the last attempt: dead letter",
        ValueError("boom"),
        4,
        None,
        None,
        True,
        "gave up after 5 attempts: ValueError: boom",
    ),
]


@pytest.mark.parametrize(
    ("rule", "error", "attempts", "earliest", "latest", "counts", "message"),
    DECIDE_ROWS,
    ids=[r[0] for r in DECIDE_ROWS],
)
def test_decide(
    rule: str,
    error: Exception,
    attempts: int,
    earliest: float | None,
    latest: float | None,
    counts: bool,
    message: str,
) -> None:
    for seed in range(20):
        decision = decide(error, attempts=attempts, now=NOW, policy=POLICY, rng=random.Random(seed))
        assert decision.counts is counts
        assert message in decision.error
        if earliest is None:
            assert decision.retry_at is None
        else:
            assert decision.retry_at is not None
            assert earliest <= decision.retry_at <= (latest or earliest)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    rng = random.Random(7)
    samples = {n: [backoff(n, POLICY, rng) for _ in range(200)] for n in (1, 2, 3, 10)}
    assert all(1.0 <= s <= 2.0 for s in samples[1])
    assert all(2.0 <= s <= 4.0 for s in samples[2])
    assert all(4.0 <= s <= 8.0 for s in samples[3])
    assert all(30.0 <= s <= 60.0 for s in samples[10])  # capped at max_seconds
    assert len({round(s, 6) for s in samples[3]}) > 100  # jittered, not one value


@pytest.mark.parametrize("length", [12, 32, 128])
def test_random_password_has_every_class_and_the_length(length: int) -> None:
    seen = {random_password(length) for _ in range(50)}
    assert len(seen) == 50
    for password in seen:
        assert len(password) == length
        assert any(c in string.ascii_lowercase for c in password)
        assert any(c in string.ascii_uppercase for c in password)
        assert any(c in string.digits for c in password)
        assert any(not c.isalnum() for c in password)


def test_random_password_puts_its_guaranteed_classes_anywhere() -> None:
    firsts = {random_password(16)[0] for _ in range(200)}
    assert any(c.isupper() for c in firsts)
    assert any(c.isdigit() for c in firsts)
    assert any(c.islower() for c in firsts)
