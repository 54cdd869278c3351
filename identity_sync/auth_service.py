"""The authentication service as the sync sees it: one small interface that
every authentication module implements (Auth0 is the first,
:mod:`identity_sync.auth0`), and one vocabulary of errors.

Like the User Manager Service, which takes new authentication modules behind
one interface, the dispatcher (:mod:`identity_sync.dispatcher`), the import
and password-ticket jobs and the drift check talk to :class:`AuthService`
only. A module translates its vendor's answers into these outcomes in one
place:

- :class:`Transient`: try again later (5xx, timeouts, connection errors,
  throttling; ``retry_at`` when the service said when);
- :class:`NotFound`: the account does not exist there;
- :class:`Exists`: creating it clashes with an existing account (same id or
  same e-mail in the connection);
- :class:`Permanent`: the request can never succeed as it is (any other 4xx,
  credentials refused, an answer that cannot be used); the change is
  dead-lettered with this message kept.

A module paces its requests through a :class:`RateLimiter`: the dispatcher
passes one whose budget lives in the database, shared by every worker
(:func:`identity_store.outbox.reserve`), so N workers together stay under
the tenant's limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = [
    "SYNCED_FIELDS",
    "AuthAccount",
    "AuthProfile",
    "AuthService",
    "AuthServiceError",
    "Exists",
    "ImportFailure",
    "ImportStatus",
    "NotFound",
    "Permanent",
    "RateLimiter",
    "Transient",
    "Unlimited",
    "current_request_id",
]

SYNCED_FIELDS = ("email", "email_verified", "given_name", "family_name", "name", "blocked")
"""The account fields the store owns: what an update may change, what the
drift check compares."""

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
"""The request id of the store change being delivered (the SCIM request's
``X-Request-Id``, or ``job-run-N``): a module writes it into the log line of
every call it makes for that change."""


class AuthServiceError(Exception):
    """An outcome of a call to the authentication service other than success."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        """The HTTP status behind it, when there was one."""


class Transient(AuthServiceError):
    """Try again later: nothing is known to have changed for good."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_at: float | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_at = retry_at
        """When the service said it will take requests again (epoch seconds), if it did."""
        self.throttled = throttled
        """The service refused for rate (429): not a failure of this change."""


class NotFound(AuthServiceError):
    """No such account."""


class Exists(AuthServiceError):
    """An account with this id or e-mail exists already."""


class Permanent(AuthServiceError):
    """The request cannot succeed as it is: retrying changes nothing."""


@dataclass(frozen=True, slots=True)
class AuthProfile:
    """What the store wants the authentication service to hold for one user."""

    user_id: str
    """The store's id (a ULID): kept in the account's metadata, and the id the
    account is created with, so that creating twice cannot make two."""
    email: str
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    name: str | None = None
    blocked: bool = False

    def fields(self) -> dict[str, Any]:
        """The :data:`SYNCED_FIELDS` of this profile."""
        return {name: getattr(self, name) for name in SYNCED_FIELDS}


@dataclass(frozen=True, slots=True)
class AuthAccount:
    """One account as the authentication service holds it."""

    auth_user_id: str
    email: str | None = None
    email_verified: bool = False
    given_name: str | None = None
    family_name: str | None = None
    name: str | None = None
    blocked: bool = False
    store_user_id: str | None = None
    """The store's id in the account's metadata, when it has one."""
    last_login: datetime | None = None
    logins_count: int | None = None

    def fields(self) -> dict[str, Any]:
        """The :data:`SYNCED_FIELDS` of this account."""
        return {name: getattr(self, name) for name in SYNCED_FIELDS}


@dataclass(frozen=True, slots=True)
class ImportStatus:
    """Where a bulk import job stands."""

    job_id: str
    state: Literal["pending", "processing", "completed", "failed"]
    total: int = 0
    inserted: int = 0
    updated: int = 0
    failed: int = 0
    message: str | None = None
    """Why the whole job failed, when it did."""

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed")


@dataclass(frozen=True, slots=True)
class ImportFailure:
    """One user of an import job that the service refused."""

    user_id: str | None
    """The store's id of the user (the import file's ``user_id``), when known."""
    email: str | None
    errors: list[str] = field(default_factory=list)


class RateLimiter(Protocol):
    """Paces a module's requests: :meth:`acquire` returns when one more
    request may go; :meth:`pause_until` tells every user of the budget that
    the service refused for rate until then."""

    async def acquire(self) -> None: ...

    async def pause_until(self, epoch_seconds: float) -> None: ...


class Unlimited:
    """A :class:`RateLimiter` that never waits (tests of one call, tools)."""

    async def acquire(self) -> None:
        return None

    async def pause_until(self, epoch_seconds: float) -> None:
        return None


class AuthService(Protocol):
    """An authentication service module (module docstring)."""

    name: str
    """The outbox target it serves (``auth0``)."""

    def remote_id(self, user_id: str) -> str:
        """The id the service gives an account created (or imported) for the
        store's ``user_id``: known before the answer, so an import can write
        it back without looking every user up."""
        ...

    async def create_user(self, profile: AuthProfile, *, password: str | None) -> AuthAccount:
        """Create the account (:class:`Exists` when its id or e-mail is taken)."""
        ...

    async def get_user(self, auth_user_id: str) -> AuthAccount:
        """The account (:class:`NotFound` when there is none)."""
        ...

    async def update_user(
        self, auth_user_id: str, changes: Mapping[str, Any], *, store_user_id: str | None = None
    ) -> AuthAccount:
        """Change the given :data:`SYNCED_FIELDS` (and, with ``store_user_id``,
        the store's id in the metadata); :class:`NotFound` when there is none."""
        ...

    async def set_blocked(self, auth_user_id: str, blocked: bool) -> AuthAccount:
        """Block or unblock the account (:class:`NotFound` when there is none)."""
        ...

    async def delete_user(self, auth_user_id: str) -> None:
        """Delete the account; an unknown id is not an error."""
        ...

    async def find_by_email(self, email: str) -> list[AuthAccount]:
        """The accounts with this e-mail (compared in lower case)."""
        ...

    def list_users(self) -> AsyncIterator[AuthAccount]:
        """Every account of the configured connection, page by page."""
        ...

    async def start_import(self, profiles: Sequence[AuthProfile], *, upsert: bool) -> str:
        """Start a bulk import job of ``profiles``; its id."""
        ...

    async def import_status(self, job_id: str) -> ImportStatus: ...

    async def import_errors(self, job_id: str) -> list[ImportFailure]: ...

    async def password_change_ticket(self, auth_user_id: str) -> str:
        """A password-change ticket for the account; its URL."""
        ...

    async def aclose(self) -> None: ...
