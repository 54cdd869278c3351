"""The rules of the authentication-service sync, as pure functions (one
table-driven test row per rule in tests/sync/test_account_rules.py):

- :func:`plan`: what the service should hold for a user, from the user's
  current state in the store (docs/auth0.md, "What each change does");
- :func:`changes`: the fields an update sends (only those that differ from
  what was last delivered);
- :func:`decide`: what a failed delivery becomes: a retry at a time
  (exponential backoff with jitter, or the time the service named), counted
  or not as a failed attempt, or a dead letter.
"""

from __future__ import annotations

import random
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from identity_store.accounts import AccountSubject

from .auth_service import (
    SYNCED_FIELDS,
    AuthProfile,
    AuthServiceError,
    Exists,
    NotFound,
    Permanent,
    Transient,
)

__all__ = [
    "Action",
    "Decision",
    "Plan",
    "RetryPolicy",
    "backoff",
    "changes",
    "decide",
    "plan",
    "random_password",
]

ACTIVE = "ACTIVE"
SUSPENDED = "SUSPENDED"
INACTIVE = "INACTIVE"
CREDENTIALS_REFUSED = frozenset({401, 403})
"""Statuses of a permanent error that is the service refusing our
credentials or scopes (after one token refresh): every change would fail
alike, so none is dead-lettered; they wait for the configuration to be fixed."""
NAME_LIMITS = {"given_name": 150, "family_name": 150, "name": 300}
"""Longest names the service takes (Auth0's ``CreateUserRequestContent``)."""


class Action(StrEnum):
    ENSURE = "ensure"
    """The account exists with these fields (created, adopted or updated)."""
    BLOCK = "block"
    """An existing account is blocked; none is created."""
    DELETE = "delete"
    """An existing account is deleted (hard delete)."""
    SKIP = "skip"
    """Nothing to do for this user: ``reason`` says why."""
    REFUSE = "refuse"
    """The user cannot have an account as it is (dead letter with ``reason``)."""


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    reason: str
    profile: AuthProfile | None = None
    remote_id: str | None = None


def _cut(value: str | None, field: str) -> str | None:
    if not value:
        return None
    return value[: NAME_LIMITS[field]]


def plan(subject: AccountSubject, *, hard_delete: bool) -> Plan:
    """What the service should hold for ``subject`` now."""
    remote = subject.remote_id
    gone = Action.DELETE if hard_delete else Action.BLOCK
    if not subject.present or subject.lifecycle == INACTIVE:
        why = "removed from the store" if not subject.present else "inactive"
        if remote is None:
            return Plan(Action.SKIP, f"{why}; no account")
        return Plan(gone, why, remote_id=remote)
    if subject.deleted:
        if remote is None:
            return Plan(Action.SKIP, "deleted; no account")
        return Plan(Action.BLOCK, "deleted, waiting for the deletion sync", remote_id=remote)
    if remote is None:
        if subject.creation_disabled:
            return Plan(
                Action.SKIP,
                f"user group {subject.user_group!r} has authUserCreationDisabled",
            )
        if subject.lifecycle == SUSPENDED:
            return Plan(Action.SKIP, "suspended; no account to block")
        if not subject.email:
            return Plan(Action.REFUSE, "the user has no e-mail address to create an account with")
    blocked = subject.lifecycle != ACTIVE or subject.active is False or subject.blocked is True
    profile = AuthProfile(
        user_id=subject.user_id,
        email=(subject.email or "").lower(),
        email_verified=subject.email_verified,
        given_name=_cut(subject.given_name, "given_name"),
        family_name=_cut(subject.family_name, "family_name"),
        name=_cut(subject.name, "name"),
        blocked=blocked,
    )
    return Plan(Action.ENSURE, "current state", profile=profile, remote_id=remote)


def changes(profile: AuthProfile, synced: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of ``profile`` that differ from ``synced`` (all of them when
    nothing is known to be synced); an empty e-mail or name is never sent
    (the service keeps what it has rather than losing a login)."""
    wanted = profile.fields()
    result = {}
    for name in SYNCED_FIELDS:
        value = wanted[name]
        if value in (None, "") and name != "blocked":
            continue
        if synced is None or name not in synced or synced[name] != value:
            result[name] = value
    return result


_PASSWORD_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "!@#$%^&*-_=+")


def random_password(length: int) -> str:
    """A random password of ``length`` characters (``secrets``) with at least
    one of each class, to satisfy any password policy of the connection."""
    alphabet = "".join(_PASSWORD_CLASSES)
    chars = [secrets.choice(c) for c in _PASSWORD_CLASSES]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates with secrets
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What a failed delivery becomes."""

    retry_at: float | None
    """Epoch seconds of the next try; ``None``: dead letter."""
    counts: bool
    """Whether it counts as a failed attempt."""
    error: str


def backoff(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds before try ``attempt + 1`` after ``attempt`` failures: half of
    ``min(max, base * 2**(attempt-1))`` plus up to as much again at random
    (jitter keeps the workers' retries apart, the half keeps a floor)."""
    ceiling = min(policy.max_seconds, policy.base_seconds * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def decide(
    error: AuthServiceError | Exception,
    *,
    attempts: int,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """What a delivery that failed with ``error`` becomes; ``attempts`` is
    how many failed attempts its rows had before this one."""
    if isinstance(error, Transient) and error.throttled:
        at = error.retry_at if error.retry_at is not None else now + backoff(1, policy, rng)
        return Decision(max(at, now), counts=False, error=f"throttled: {error.message}")
    if isinstance(error, Permanent) and error.status in CREDENTIALS_REFUSED:
        # Every call fails alike: a configuration to fix, not this change's fault.
        at = now + policy.max_seconds
        return Decision(at, counts=False, error=f"credentials refused: {error.message}")
    if isinstance(error, Permanent | NotFound | Exists):
        return Decision(None, counts=True, error=error.message)
    message = error.message if isinstance(error, Transient) else f"{type(error).__name__}: {error}"
    failed = attempts + 1
    if failed >= policy.max_attempts:
        return Decision(None, counts=True, error=f"gave up after {failed} attempts: {message}")
    at = now + backoff(failed, policy, rng)
    if isinstance(error, Transient) and error.retry_at is not None:
        at = max(at, error.retry_at)
    return Decision(at, counts=True, error=message)
