"""Auth0, as the sync talks to it: the Management API v2 through a
machine-to-machine application (https://auth0.com/docs/api/management/v2),
behind the :class:`~identity_sync.auth_service.AuthService` interface.

Calls: ``POST /api/v2/users`` (create, with our id as ``user_id`` so that the
account is ``auth0|{our id}`` and a second create of the same user is a 409,
never a second account), ``GET``/``PATCH``/``DELETE /api/v2/users/{id}``,
``GET /api/v2/users-by-email``, ``GET /api/v2/users`` (the connection's
users, page by page), ``POST /api/v2/jobs/users-imports`` with ``GET
/api/v2/jobs/{id}`` and ``/errors`` (bulk import), ``POST
/api/v2/tickets/password-change``. The token comes from ``POST
{base}/oauth/token`` (client-credentials grant, audience ``{base}/api/v2/``),
is cached until :data:`TOKEN_RENEW_MARGIN_SECONDS` (or a tenth of its
lifetime, when shorter) before it expires, is fetched once for all the
callers waiting for it, and is renewed once when the Management API answers
401 (the request is then sent once more).

Every answer is translated in one place, :func:`outcome_of`:

- 2xx: the call's result; a body that cannot be used (not JSON, not the
  shape documented, larger than :data:`MAX_BODY_BYTES`) is
  :class:`~identity_sync.auth_service.Permanent`: Auth0 answered, and
  asking again would get the same;
- 401 (after the one renewal of the token): :class:`Permanent`, the
  credentials are refused; 403: :class:`Permanent`, the application lacks a
  scope (a configuration error that affects every call: the message names
  the scopes to grant);
- 404: :class:`~identity_sync.auth_service.NotFound`; 409:
  :class:`~identity_sync.auth_service.Exists`;
- 429: :class:`~identity_sync.auth_service.Transient` with
  ``throttled=True`` and ``retry_at`` from ``X-RateLimit-Reset`` (epoch
  seconds, Auth0's header), else ``Retry-After`` (seconds or an HTTP date),
  never more than :data:`MAX_RETRY_WAIT_SECONDS` ahead; the rate limiter is
  told (``pause_until``) so that every user of the budget waits;
- 5xx, timeouts, refused or dropped connections, and a body cut short (the
  connection closed before the ``Content-Length`` arrived: Auth0 may have
  applied the change, the caller finds out on its next try, such as a 409
  on create): :class:`Transient`;
- any other status: :class:`Permanent` with Auth0's ``errorCode`` and
  ``message`` (e-mail addresses in the message replaced by ``[email]``).

With ``max_attempts`` above 1 (the CLI and import tools) the client itself
retries a :class:`Transient` outcome, waiting capped exponential backoff with
full jitter, or until ``retry_at`` when Auth0 said; throttled answers do not
count as attempts (at most :data:`MAX_THROTTLED_RETRIES` of them). The
dispatcher uses ``max_attempts=1`` and schedules retries itself. Every wait
goes through the injected :class:`~identity_sync.clock.Clock`.

Pacing: ``await limiter.acquire()`` before every Management API request (not
before the token endpoint, which has its own limit).

Each Management API request is logged as one line on ``idstore.auth0``, the
message being a JSON object: ``method``, ``path`` (the template, such as
``/api/v2/users/{id}``), ``auth0_id`` (the account or job the path names,
when it names one), ``status`` (``null`` without an answer), ``outcome``,
``error`` (Auth0's ``errorCode`` or the transport error's class),
``duration_ms``, ``attempt`` and ``request_id`` (from
:data:`~identity_sync.auth_service.current_request_id`). Never the token,
the client secret, a password, an e-mail address or a query string's values.

Accounts read from Auth0 are checked field by field (:func:`account_of`): an
account without a usable ``user_id`` (not a string, empty, longer than
:data:`MAX_ID_LENGTH`, with a NUL or a control character) makes the whole
answer :class:`Permanent`; any other field that is of the wrong type, longer
than its limit or holds a NUL is dropped (read as absent), so the drift
check sees a difference and repairs it rather than storing it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx
import orjson

from identity_store.settings import Settings

from .auth_service import (
    SYNCED_FIELDS,
    AuthAccount,
    AuthProfile,
    AuthService,
    AuthServiceError,
    Exists,
    ImportFailure,
    ImportStatus,
    NotFound,
    Permanent,
    RateLimiter,
    Transient,
    Unlimited,
    current_request_id,
)
from .clock import Clock, SystemClock
from .remote_http import RemoteClient

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_IDS_PER_SEARCH",
    "MAX_IMPORT_FILE_BYTES",
    "MAX_LISTED_USERS",
    "MAX_QUERY_LENGTH",
    "MAX_RETRY_WAIT_SECONDS",
    "READABLE_PROPERTIES",
    "REQUIRED_SCOPES",
    "STORE_ID_KEY",
    "Auth0Client",
    "account_of",
    "import_file",
    "outcome_of",
    "search_batches",
    "split_for_import",
]

log = logging.getLogger("idstore.auth0")

MANAGEMENT_PATH = "/api/v2"

REQUIRED_SCOPES = (
    "create:users",
    "read:users",
    "update:users",
    "delete:users",
    "create:user_tickets",
)
"""What the machine-to-machine application must be granted (docs/auth0.md)."""

STORE_ID_KEY = "idstore_user_id"
"""The key of the store's id in an account's ``app_metadata``."""

MAX_BODY_BYTES = 1_048_576
"""Largest answer read (a page of 100 accounts takes about 100 KB); a larger
2xx answer is :class:`Permanent`, unread; of an error answer only this much
is read."""

MAX_IMPORT_FILE_BYTES = 500_000
"""An import job's users file must stay below this (Auth0: 500 KB; counted
in decimal kilobytes, so that the multipart envelope fits too)."""

MAX_LISTED_USERS = 1000
"""Auth0's user search returns the first 1000 results only
(https://auth0.com/docs/manage-users/user-search/view-search-results-by-page#limitation)."""

PAGE_SIZE = 100
"""Accounts per page of ``GET /api/v2/users`` (Auth0's maximum)."""

MAX_GIVEN_NAME_LENGTH = 150
MAX_FAMILY_NAME_LENGTH = 150
MAX_NAME_LENGTH = 300
"""Auth0's limits on the name fields: longer values are cut when sent, dropped when read."""

MAX_EMAIL_LENGTH = 254
"""Longest e-mail address read (RFC 5321's path limit)."""

MAX_ID_LENGTH = 300
"""Longest account id read (``auth0|`` and Auth0's 255 characters, with room)."""

MAX_ACCOUNTS_BY_EMAIL = 100
"""Accounts one e-mail address may have across connections; a longer answer is refused."""

MAX_IMPORT_ERRORS = 50_000
"""Entries an import job's errors may have (a file under 500 KB holds fewer users)."""

MAX_ERRORS_PER_USER = 20
"""Messages kept per user of an import's errors (the rest counted in one line)."""

MAX_MESSAGE_LENGTH = 500
"""Longest message taken from Auth0 (errors, job details)."""

MAX_TICKET_URL_LENGTH = 4096

MAX_RETRY_WAIT_SECONDS = 300.0
"""Furthest ahead a 429's ``X-RateLimit-Reset`` or ``Retry-After`` may set
``retry_at``: a hostile or broken header cannot park the sync for days."""

TOKEN_RENEW_MARGIN_SECONDS = 60.0
MAX_TOKEN_LIFETIME_SECONDS = 30 * 86_400

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
MAX_THROTTLED_RETRIES = 20
"""Throttled answers one call waits through (with ``max_attempts`` above 1)."""

_TOKEN_SAFE = re.compile(r"[\x21-\x7e]{1,16384}")
_JOB_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_STORE_ID = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL_LIKE = re.compile(r"[^\s'\"<>(),;:@]+@[^\s'\"<>(),;:@]+")

Outcome = Literal["ok", "not_found", "exists", "throttled", "transient", "refused", "permanent"]


def _now(clock: Clock) -> float:
    return clock.now().timestamp()


def _clean(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """A message from Auth0 fit to keep and log: one line, no control
    characters, no e-mail addresses, at most ``limit`` characters."""
    text = _CONTROL.sub(" ", text)
    text = _EMAIL_LIKE.sub("[email]", text)
    return text[:limit]


def _error_of(body: bytes) -> tuple[str | None, str]:
    """Auth0's ``errorCode`` and ``message`` of an error body (the
    Authentication API's ``error`` and ``error_description``)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, ""
    if not isinstance(document, dict):
        return None, ""
    code = document.get("errorCode", document.get("error"))
    message = document.get("message", document.get("error_description"))
    return (
        _clean(code, 100) if isinstance(code, str) else None,
        _clean(message) if isinstance(message, str) else "",
    )


def retry_at_of(headers: httpx.Headers, now: float) -> float | None:
    """When a 429 says requests may go again (epoch seconds): its
    ``X-RateLimit-Reset`` (epoch seconds), else ``Retry-After`` (seconds or an
    HTTP date), between ``now`` and ``now +`` :data:`MAX_RETRY_WAIT_SECONDS`;
    ``None`` without one that parses."""
    latest = now + MAX_RETRY_WAIT_SECONDS
    reset = headers.get("x-ratelimit-reset", "").strip()
    if reset.isdigit() and len(reset) <= 12:
        return min(max(float(reset), now), latest)
    after = headers.get("retry-after", "").strip()
    if after.isdigit() and len(after) <= 9:
        return min(now + float(after), latest)
    if after:
        try:
            when = parsedate_to_datetime(after)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is not None:
            return min(max(when.timestamp(), now), latest)
    return None


def outcome_of(
    status: int, headers: httpx.Headers, body: bytes, now: float
) -> AuthServiceError | None:
    """What a Management API answer means (module docstring): ``None`` for
    success, else the error to raise. A 401 reaches here only after the
    token was renewed once."""
    if 200 <= status < 300:
        return None
    code, message = _error_of(body)
    described = ": ".join(p for p in (code, message) if p) or "no detail"
    if status == 401:
        return Permanent(
            f"Auth0 refused a freshly issued token (401 {described}); check the "
            "machine-to-machine application's credentials and its access to the Management API",
            status=status,
        )
    if status == 403:
        return Permanent(
            f"Auth0 denied the call (403 {described}): the machine-to-machine application "
            f"needs the Management API scopes {', '.join(REQUIRED_SCOPES)}",
            status=status,
        )
    if status == 404:
        return NotFound(f"not found in Auth0 ({described})", status=status)
    if status == 409:
        return Exists(f"Auth0 has this account already ({described})", status=status)
    if status == 429:
        return Transient(
            f"throttled by Auth0 (429 {described})",
            status=status,
            retry_at=retry_at_of(headers, now),
            throttled=True,
        )
    if status >= 500:
        return Transient(f"Auth0 failed (status {status}: {described})", status=status)
    return Permanent(f"Auth0 refused the request ({status} {described})", status=status)


# -- Reading what Auth0 answers ------------------------------------------------


def _json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Permanent(f"Auth0's answer to {what} is not JSON ({exc})") from exc


def _text(value: Any, limit: int) -> str | None:
    """``value`` when it is a string of 1 to ``limit`` characters without a
    NUL; else ``None`` (dropped)."""
    if isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value:
        return value
    return None


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else False


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _auth0_id(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_ID_LENGTH
        or _CONTROL.search(value)
        or value != value.strip()
    ):
        raise Permanent("Auth0 answered an account without a usable user_id")
    return value


def account_of(document: Any) -> AuthAccount:
    """An account as Auth0 answered it (module docstring: what is dropped,
    what is refused)."""
    if not isinstance(document, dict):
        raise Permanent(f"Auth0 answered a JSON {type(document).__name__} for an account")
    metadata = document.get("app_metadata")
    store_id = metadata.get(STORE_ID_KEY) if isinstance(metadata, dict) else None
    email = _text(document.get("email"), MAX_EMAIL_LENGTH)
    return AuthAccount(
        auth_user_id=_auth0_id(document.get("user_id")),
        email=email.lower() if email is not None else None,
        email_verified=_flag(document.get("email_verified")),
        given_name=_text(document.get("given_name"), MAX_GIVEN_NAME_LENGTH),
        family_name=_text(document.get("family_name"), MAX_FAMILY_NAME_LENGTH),
        name=_text(document.get("name"), MAX_NAME_LENGTH),
        blocked=_flag(document.get("blocked")),
        store_user_id=store_id
        if isinstance(store_id, str) and _STORE_ID.fullmatch(store_id)
        else None,
        last_login=_moment(document.get("last_login")),
        logins_count=_count(document.get("logins_count")),
    )


def _connections_of(document: Mapping[str, Any]) -> set[str]:
    """The connections an account has identities in."""
    identities = document.get("identities")
    if identities is None:
        return set()
    if not isinstance(identities, list) or len(identities) > 100:
        raise Permanent("Auth0 answered an account whose identities are not a short list")
    return {
        identity["connection"]
        for identity in identities
        if isinstance(identity, dict) and isinstance(identity.get("connection"), str)
    }


# -- Writing what Auth0 takes --------------------------------------------------


def _cut(value: str | None, limit: int) -> str | None:
    """A name field as Auth0 takes it: ``None`` when empty, else at most ``limit`` characters."""
    if not value:
        return None
    return value[:limit]


_LIMITS = {
    "given_name": MAX_GIVEN_NAME_LENGTH,
    "family_name": MAX_FAMILY_NAME_LENGTH,
    "name": MAX_NAME_LENGTH,
}


def _profile_fields(profile: AuthProfile) -> dict[str, Any]:
    """The account fields of ``profile`` as a create or an import sends them."""
    fields: dict[str, Any] = {
        "email": profile.email.lower(),
        "email_verified": profile.email_verified,
    }
    for name, limit in _LIMITS.items():
        value = _cut(getattr(profile, name), limit)
        if value is not None:
            fields[name] = value
    return fields


def _import_entry(profile: AuthProfile) -> dict[str, Any]:
    return {
        "user_id": profile.user_id,
        **_profile_fields(profile),
        "blocked": profile.blocked,
        "app_metadata": {STORE_ID_KEY: profile.user_id},
    }


def import_file(profiles: Sequence[AuthProfile]) -> bytes:
    """The users file of an import job: a JSON array of ``{user_id, email,
    email_verified, given_name, family_name, name, blocked, app_metadata}``."""
    return orjson.dumps([_import_entry(p) for p in profiles])


def split_for_import(
    profiles: Sequence[AuthProfile], limit: int = MAX_IMPORT_FILE_BYTES
) -> list[list[AuthProfile]]:
    """``profiles`` cut into consecutive parts whose :func:`import_file` stays
    below ``limit`` bytes (a profile too large to fit in any file raises ``ValueError``)."""
    parts: list[list[AuthProfile]] = []
    current: list[AuthProfile] = []
    size = 2  # the brackets
    for profile in profiles:
        entry = len(orjson.dumps(_import_entry(profile)))
        if entry + 2 >= limit:
            raise ValueError(f"one user's import entry takes {entry} bytes; a file holds < {limit}")
        extra = entry + (1 if current else 0)  # the comma
        if current and size + extra >= limit:
            parts.append(current)
            current, size, extra = [], 2, entry
        current.append(profile)
        size += extra
    if current:
        parts.append(current)
    return parts


MAX_IDS_PER_SEARCH = 50
"""Account ids one user search asks about (:meth:`Auth0Client.properties_of`)."""

MAX_QUERY_LENGTH = 3000
"""Longest ``q`` of a search by ids: with the rest of the URL it stays far
below the 8 KB a request line may take on the way to Auth0."""

MAX_PROPERTY_BYTES = 4096
"""Longest value of one property read for ``GET /api/v1/users`` (JSON-encoded)."""

READABLE_PROPERTIES = frozenset(
    {
        "app_metadata",
        "blocked",
        "created_at",
        "email",
        "email_verified",
        "family_name",
        "given_name",
        "identities",
        "last_ip",
        "last_login",
        "logins_count",
        "name",
        "nickname",
        "phone_number",
        "picture",
        "updated_at",
        "user_metadata",
        "username",
    }
)
"""The properties :meth:`Auth0Client.properties_of` may read (the values
``GET /api/v2/users/{id}`` takes in ``fields``, ``user_id`` aside)."""


def _ids_query(ids: Sequence[str]) -> str:
    return "user_id:(" + " OR ".join(_q_value(i) for i in ids) + ")"


def search_batches(auth_user_ids: Sequence[str]) -> list[list[str]]:
    """``auth_user_ids`` (distinct, in order) cut into the lists one search
    by ids takes (:data:`MAX_IDS_PER_SEARCH`, :data:`MAX_QUERY_LENGTH`); an
    id that cannot be searched alone (too long, or holding a control
    character) is left out."""
    batches: list[list[str]] = []
    current: list[str] = []
    for auth_id in dict.fromkeys(auth_user_ids):
        if not auth_id or len(auth_id) > MAX_ID_LENGTH or _CONTROL.search(auth_id):
            continue
        candidate = [*current, auth_id]
        if len(candidate) > MAX_IDS_PER_SEARCH or len(_ids_query(candidate)) > MAX_QUERY_LENGTH:
            batches.append(current)
            candidate = [auth_id]
        current = candidate
    if current:
        batches.append(current)
    return batches


def _small_json(value: Any) -> bool:
    """Whether ``value`` is JSON of at most :data:`MAX_PROPERTY_BYTES` without a NUL."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:
        return False
    return len(encoded) <= MAX_PROPERTY_BYTES and b"\\u0000" not in encoded


def _q_value(text: str) -> str:
    """A Lucene phrase for Auth0's user search (``"..."`` with ``"`` and ``\\`` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- The client ------------------------------------------------------------------


@dataclass(slots=True)
class _Token:
    value: str
    renew_at: float


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


class _Unreadable(Exception):
    """A 2xx answer larger than the client reads, or one it cannot decode."""


class Auth0Client(RemoteClient):
    """The Auth0 module of the sync (module docstring); use as ``async with``."""

    name = "auth0"

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 1,
        rng: random.Random | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not settings.auth0_configured:
            raise ValueError(
                "Auth0 is not configured (IDSTORE_AUTH0_BASE_URL, _CLIENT_ID, _CLIENT_SECRET)"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        assert settings.auth0_base_url is not None
        assert settings.auth0_client_secret is not None
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.limiter: RateLimiter = limiter or Unlimited()
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.max_body_bytes = max_body_bytes
        self.base_url = settings.auth0_base_url.rstrip("/")
        self.token_url = f"{self.base_url}/oauth/token"
        self.audience = f"{self.base_url}{MANAGEMENT_PATH}/"
        self._credentials = {
            "grant_type": "client_credentials",
            "client_id": str(settings.auth0_client_id),
            "client_secret": settings.auth0_client_secret.get_secret_value(),
            "audience": self.audience,
        }
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self.token_requests = 0
        """Tokens fetched so far."""
        super().__init__(
            timeout=settings.auth0_timeout_seconds,
            connections=settings.outbox_concurrency + 2,
            user_agent="idstore-auth0-sync",
            transport=transport,
        )

    def remote_id(self, user_id: str) -> str:
        """``auth0|{user_id}``: the id of the account created or imported for ``user_id``."""
        return f"auth0|{user_id}"

    # -- Accounts ------------------------------------------------------------

    async def create_user(self, profile: AuthProfile, *, password: str | None) -> AuthAccount:
        """``POST /api/v2/users`` in the configured connection, with
        ``user_id`` = the store's id (so the account is :meth:`remote_id`);
        :class:`Exists` when the id or the e-mail is taken there."""
        body: dict[str, Any] = {
            "connection": self.settings.auth0_connection,
            "user_id": profile.user_id,
            **_profile_fields(profile),
            "app_metadata": {STORE_ID_KEY: profile.user_id},
        }
        if profile.blocked:
            body["blocked"] = True
        if password is not None:
            body["password"] = password
        answer = await self._call("POST", "/users", json=body)
        return account_of(_json(answer.body, "a create"))

    async def get_user(self, auth_user_id: str) -> AuthAccount:
        answer = await self._call("GET", "/users/{id}", ident=auth_user_id)
        return account_of(_json(answer.body, "a user read"))

    async def update_user(
        self, auth_user_id: str, changes: Mapping[str, Any], *, store_user_id: str | None = None
    ) -> AuthAccount:
        """``PATCH /api/v2/users/{id}`` with only the given fields (a name
        that is ``None`` or empty is removed, a long one cut); with
        ``store_user_id``, ``app_metadata.idstore_user_id`` too (Auth0 merges
        ``app_metadata``: other keys stay). Nothing to change: the account is
        read instead."""
        unknown = sorted(set(changes) - set(SYNCED_FIELDS))
        if unknown:
            raise ValueError(f"not synced fields: {unknown}")
        body: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "email":
                if not isinstance(value, str) or not value:
                    raise ValueError("an account's e-mail cannot be removed")
                body["email"] = value.lower()
            elif name in ("email_verified", "blocked"):
                body[name] = bool(value)
            else:
                body[name] = _cut(value, _LIMITS[name])
        if store_user_id is not None:
            body["app_metadata"] = {STORE_ID_KEY: store_user_id}
        if not body:
            return await self.get_user(auth_user_id)
        answer = await self._call("PATCH", "/users/{id}", ident=auth_user_id, json=body)
        return account_of(_json(answer.body, "an update"))

    async def set_blocked(self, auth_user_id: str, blocked: bool) -> AuthAccount:
        return await self.update_user(auth_user_id, {"blocked": blocked})

    async def delete_user(self, auth_user_id: str) -> None:
        """``DELETE /api/v2/users/{id}`` (Auth0 answers 204 for an unknown id
        too; a 404 is taken as done as well)."""
        try:
            await self._call("DELETE", "/users/{id}", ident=auth_user_id)
        except NotFound:
            return

    async def find_by_email(self, email: str) -> list[AuthAccount]:
        """``GET /api/v2/users-by-email`` with the address in lower case (the
        way Auth0 stores a database connection's e-mails), keeping the
        accounts of the configured connection only: a social account with the
        same address is not ours to adopt."""
        answer = await self._call("GET", "/users-by-email", params={"email": email.lower()})
        documents = _json(answer.body, "a look-up by e-mail")
        if not isinstance(documents, list):
            raise Permanent("Auth0's answer to a look-up by e-mail is not a list")
        if len(documents) > MAX_ACCOUNTS_BY_EMAIL:
            raise Permanent(
                f"Auth0 answered {len(documents)} accounts for one e-mail address; "
                f"at most {MAX_ACCOUNTS_BY_EMAIL} taken"
            )
        found = []
        for document in documents:
            account = account_of(document)
            if self.settings.auth0_connection in _connections_of(document):
                found.append(account)
        return found

    async def list_users(self) -> AsyncIterator[AuthAccount]:
        """Every account of the configured connection: ``GET /api/v2/users``
        with ``q=identities.connection:"..."`` (search engine v3), 100 per
        page, until the total is reached.

        Auth0's search returns the first :data:`MAX_LISTED_USERS` (1000)
        results only. A connection with more accounts raises
        :class:`Permanent` before any account is yielded: a drift check over
        a larger tenant needs a user export job (``POST
        /api/v2/jobs/users-exports``), and a partial listing would make every
        account past the limit look missing.
        """
        page = 0
        seen = 0
        while True:
            answer = await self._call(
                "GET",
                "/users",
                params={
                    "q": f"identities.connection:{_q_value(self.settings.auth0_connection)}",
                    "search_engine": "v3",
                    "per_page": str(PAGE_SIZE),
                    "page": str(page),
                    "include_totals": "true",
                },
            )
            document = _json(answer.body, "a user listing")
            if not isinstance(document, dict):
                raise Permanent("Auth0's user listing is not an object with totals")
            users, total = document.get("users"), _count(document.get("total"))
            if not isinstance(users, list) or total is None:
                raise Permanent("Auth0's user listing has no users list or no total")
            if total > MAX_LISTED_USERS:
                raise Permanent(
                    f"the connection has {total} accounts in Auth0; its user search lists the "
                    f"first {MAX_LISTED_USERS} only, so a check over all of them needs a user "
                    "export job"
                )
            if len(users) > PAGE_SIZE:
                raise Permanent(f"Auth0 answered {len(users)} accounts for a page of {PAGE_SIZE}")
            for user in users:
                yield account_of(user)
            seen += len(users)
            page += 1
            if not users or seen >= total or page * PAGE_SIZE >= MAX_LISTED_USERS:
                return

    async def properties_of(
        self, auth_user_ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The properties ``names`` of the accounts ``auth_user_ids``, by
        account id, in one user search (``GET /api/v2/users`` with
        ``q=user_id:("..." OR "...")``, ``fields=user_id,<names>``): at most
        :data:`MAX_IDS_PER_SEARCH` ids whose query stays within
        :data:`MAX_QUERY_LENGTH` characters (cut longer lists with
        :func:`search_batches`). An account Auth0 does not have is absent.
        Values are as Auth0 answered them, of JSON's types, each at most
        :data:`MAX_PROPERTY_BYTES` long once encoded (a longer one is dropped).
        The search is eventually consistent: an account created a second ago
        may be missing."""
        ids = list(dict.fromkeys(auth_user_ids))
        if not ids:
            return {}
        query = _ids_query(ids)
        if len(ids) > MAX_IDS_PER_SEARCH or len(query) > MAX_QUERY_LENGTH:
            raise ValueError("too many ids for one search: cut them with search_batches")
        unknown = sorted(set(names) - READABLE_PROPERTIES)
        if unknown:
            raise ValueError(f"not readable Auth0 properties: {unknown}")
        answer = await self._call(
            "GET",
            "/users",
            params={
                "q": query,
                "search_engine": "v3",
                "per_page": str(PAGE_SIZE),
                "fields": ",".join(["user_id", *names]),
                "include_fields": "true",
            },
        )
        documents = _json(answer.body, "a user search")
        if not isinstance(documents, list) or len(documents) > PAGE_SIZE:
            raise Permanent("Auth0's answer to a user search is not a list of at most a page")
        wanted = set(ids)
        found: dict[str, dict[str, Any]] = {}
        for document in documents:
            if not isinstance(document, dict):
                raise Permanent("an account of Auth0's user search is not an object")
            auth_id = _auth0_id(document.get("user_id"))
            if auth_id not in wanted:
                continue
            values = {}
            for name in names:
                if name in document and _small_json(document[name]):
                    values[name] = document[name]
            found[auth_id] = values
        return found

    # -- Bulk import ---------------------------------------------------------

    async def start_import(
        self, profiles: Sequence[AuthProfile], *, upsert: bool, external_id: str | None = None
    ) -> str:
        """``POST /api/v2/jobs/users-imports``: a users file of ``profiles``
        (:func:`import_file`; below :data:`MAX_IMPORT_FILE_BYTES`, else
        ``ValueError``: cut it with :func:`split_for_import`) into the
        connection ``auth0_connection_id``, no completion e-mail; the job's id.
        ``external_id`` defaults to the current request id."""
        if not profiles:
            raise ValueError("an import job needs at least one user")
        connection_id = self.settings.auth0_connection_id
        if not connection_id:
            raise Permanent(
                "IDSTORE_AUTH0_CONNECTION_ID is not set: Auth0's import jobs name the "
                "connection by its id (con_...)"
            )
        users = import_file(profiles)
        if len(users) >= MAX_IMPORT_FILE_BYTES:
            raise ValueError(
                f"the users file takes {len(users):,} bytes; Auth0 takes files below "
                f"{MAX_IMPORT_FILE_BYTES:,} (split_for_import cuts a list to fit)"
            )
        external = external_id or current_request_id.get() or "idstore-import"
        answer = await self._call(
            "POST",
            "/jobs/users-imports",
            files={"users": ("users.json", users, "application/json")},
            data={
                "connection_id": connection_id,
                "upsert": "true" if upsert else "false",
                "external_id": external[:100],
                "send_completion_email": "false",
            },
        )
        document = _json(answer.body, "an import")
        job_id = document.get("id") if isinstance(document, dict) else None
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise Permanent("Auth0's answer to an import has no usable job id")
        return job_id

    async def import_status(self, job_id: str) -> ImportStatus:
        """``GET /api/v2/jobs/{id}``: its state and, once completed, its summary."""
        answer = await self._call("GET", "/jobs/{id}", ident=self._job_id(job_id))
        document = _json(answer.body, "a job read")
        if not isinstance(document, dict):
            raise Permanent("Auth0's answer to a job read is not an object")
        state = document.get("status")
        if state not in ("pending", "processing", "completed", "failed"):
            raise Permanent(f"Auth0 answered an unknown job status ({_clean(str(state), 40)})")
        summary = document.get("summary")
        counts = summary if isinstance(summary, dict) else {}
        details = document.get("status_details")
        return ImportStatus(
            job_id=job_id,
            state=state,
            total=_count(counts.get("total")) or 0,
            inserted=_count(counts.get("inserted")) or 0,
            updated=_count(counts.get("updated")) or 0,
            failed=_count(counts.get("failed")) or 0,
            message=_clean(details) if isinstance(details, str) and details else None,
        )

    async def import_errors(self, job_id: str) -> list[ImportFailure]:
        """``GET /api/v2/jobs/{id}/errors``: the users the job refused, each
        with the store's id (the file's ``user_id``, without ``auth0|``),
        the e-mail and Auth0's messages (``CODE: message``, at most
        :data:`MAX_ERRORS_PER_USER`). None when Auth0 answers 204, or the job
        itself (not finished, or failed as a whole: see :meth:`import_status`)."""
        answer = await self._call("GET", "/jobs/{id}/errors", ident=self._job_id(job_id))
        if answer.status == 204 or not answer.body.strip():
            return []
        document = _json(answer.body, "a job's errors")
        if isinstance(document, dict):
            return []
        if not isinstance(document, list):
            raise Permanent("Auth0's answer to a job's errors is neither a list nor a job")
        if len(document) > MAX_IMPORT_ERRORS:
            raise Permanent(
                f"Auth0 answered {len(document)} failed users for one job; at most "
                f"{MAX_IMPORT_ERRORS} taken"
            )
        return [self._failure_of(entry) for entry in document]

    @staticmethod
    def _failure_of(entry: Any) -> ImportFailure:
        if not isinstance(entry, dict):
            raise Permanent("an entry of Auth0's import errors is not an object")
        user = entry.get("user")
        user = user if isinstance(user, dict) else {}
        user_id = _text(user.get("user_id"), MAX_ID_LENGTH)
        if user_id is not None:
            user_id = user_id.removeprefix("auth0|")
        email = _text(user.get("email"), MAX_EMAIL_LENGTH)
        errors = entry.get("errors")
        messages: list[str] = []
        listed = errors if isinstance(errors, list) else []
        for error in listed[:MAX_ERRORS_PER_USER]:
            if not isinstance(error, dict):
                continue
            code, message = error.get("code"), error.get("message")
            parts = [
                _clean(p, 100 if p is code else MAX_MESSAGE_LENGTH)
                for p in (code, message)
                if isinstance(p, str) and p
            ]
            if parts:
                messages.append(": ".join(parts))
        if len(listed) > MAX_ERRORS_PER_USER:
            messages.append(f"... and {len(listed) - MAX_ERRORS_PER_USER} more errors")
        return ImportFailure(
            user_id=user_id, email=email.lower() if email is not None else None, errors=messages
        )

    @staticmethod
    def _job_id(job_id: str) -> str:
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError("not an Auth0 job id")
        return job_id

    # -- Tickets ---------------------------------------------------------------

    async def password_change_ticket(self, auth_user_id: str) -> str:
        """``POST /api/v2/tickets/password-change`` for the account (with
        ``result_url`` when ``auth0_ticket_result_url`` is set); its URL."""
        body: dict[str, Any] = {
            "user_id": auth_user_id,
            "ttl_sec": self.settings.auth0_ticket_ttl_seconds,
        }
        if self.settings.auth0_ticket_result_url:
            body["result_url"] = self.settings.auth0_ticket_result_url
        answer = await self._call("POST", "/tickets/password-change", json=body)
        document = _json(answer.body, "a ticket")
        ticket = document.get("ticket") if isinstance(document, dict) else None
        if (
            not isinstance(ticket, str)
            or len(ticket) > MAX_TICKET_URL_LENGTH
            or not ticket.startswith(("https://", "http://"))
            or _CONTROL.search(ticket)
            or " " in ticket
        ):
            raise Permanent("Auth0's answer to a ticket has no usable ticket URL")
        return ticket

    # -- One call, its retries, and what its answer means ---------------------------

    async def _call(
        self,
        method: str,
        template: str,
        *,
        ident: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> _Answer:
        """Send one Management API request until it has an outcome (module
        docstring): the answer when it is a success, else the error."""
        if ident is not None and (not ident or len(ident) > MAX_ID_LENGTH):
            raise ValueError("not an Auth0 id")
        path = template if ident is None else template.replace("{id}", quote(ident, safe=""))
        url = f"{self.base_url}{MANAGEMENT_PATH}{path}"
        failures = throttled = 0
        while True:
            attempt = failures + throttled + 1
            try:
                return await self._attempt(
                    method,
                    url,
                    MANAGEMENT_PATH + template,
                    ident,
                    attempt,
                    params,
                    json,
                    files,
                    data,
                )
            except Transient as exc:
                if exc.throttled:
                    throttled += 1
                    allowed = throttled <= (MAX_THROTTLED_RETRIES if self.max_attempts > 1 else 0)
                else:
                    failures += 1
                    allowed = failures < self.max_attempts
                if not allowed:
                    raise
                await self.clock.sleep(self._wait(exc, failures))

    def _wait(self, exc: Transient, failures: int) -> float:
        """Until ``retry_at`` when Auth0 said, else capped exponential backoff
        with full jitter."""
        if exc.retry_at is not None:
            return max(exc.retry_at - _now(self.clock), 0.0)
        step = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0))
        return float(self.rng.uniform(0, step))

    async def _attempt(
        self,
        method: str,
        url: str,
        template: str,
        ident: str | None,
        attempt: int,
        params: Mapping[str, str] | None,
        json: Any,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        data: Mapping[str, str] | None,
    ) -> _Answer:
        """One attempt: the request, sent again once with a new token after a 401."""
        renewed = False
        while True:
            token = await self._access_token()
            await self.limiter.acquire()
            request = self._http.build_request(
                method,
                url,
                params=params,
                json=json,
                files=files,
                data=data,
                headers={"Authorization": f"Bearer {token}"},
            )
            started = time.perf_counter()
            line: dict[str, Any] = {
                "event": "auth0_call",
                "method": method,
                "path": template,
                "auth0_id": ident,
                "attempt": attempt,
                "request_id": current_request_id.get(),
            }
            try:
                answer = await self._exchange(request)
            except _Unreadable as exc:
                self._log(line, None, "permanent", "unreadable", started)
                raise Permanent(str(exc)) from exc
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                self._log(line, None, "transient", type(exc).__name__, started)
                what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
                raise Transient(f"Auth0 request {what} ({type(exc).__name__})") from exc
            if answer.status == 401 and not renewed:
                self._log(line, 401, "refused", _error_of(answer.body)[0], started)
                renewed = True
                self._drop_token(token)
                continue
            error = outcome_of(answer.status, answer.headers, answer.body, _now(self.clock))
            self._log(
                line,
                answer.status,
                _outcome_name(error),
                _error_of(answer.body)[0] if error else None,
                started,
            )
            if error is None:
                return answer
            if isinstance(error, Transient) and error.retry_at is not None:
                await self.limiter.pause_until(error.retry_at)
            raise error

    def _log(
        self,
        line: dict[str, Any],
        status: int | None,
        outcome: Outcome,
        error: str | None,
        started: float,
    ) -> None:
        line["status"] = status
        line["outcome"] = outcome
        line["error"] = error
        line["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        level = logging.INFO if outcome in ("ok", "not_found", "exists") else logging.WARNING
        log.log(level, "%s", orjson.dumps(line).decode())

    async def _exchange(self, request: httpx.Request) -> _Answer:
        """Send ``request``; its answer, read up to :attr:`max_body_bytes`
        (a larger 2xx body is refused as it streams in, an error body cut)."""
        response = await self._http.send(request, stream=True)
        try:
            success = 200 <= response.status_code < 300
            declared = response.headers.get("content-length", "")
            if success and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _Unreadable(
                    f"Auth0's answer is {int(declared):,} bytes; at most "
                    f"{self.max_body_bytes:,} read"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_body_bytes:
                    if success:
                        raise _Unreadable(
                            f"Auth0's answer is larger than {self.max_body_bytes:,} bytes; not read"
                        )
                    break
                chunks.append(chunk)
        except httpx.DecodingError as exc:
            raise _Unreadable(f"Auth0's answer cannot be decoded ({exc})") from exc
        finally:
            await response.aclose()
        return _Answer(response.status_code, response.headers, b"".join(chunks))

    # -- The token -----------------------------------------------------------

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` (refused by Auth0), unless it was renewed meanwhile."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _access_token(self) -> str:
        """The cached token, or a new one when there is none or it nears its
        expiry (one fetch, whatever the number of callers waiting for it)."""
        token = self._token
        if token is not None and _now(self.clock) < token.renew_at:
            return token.value
        async with self._token_lock:
            token = self._token
            if token is None or _now(self.clock) >= token.renew_at:
                token = await self._fetch_token()
                self._token = token
            return token.value

    async def _fetch_token(self) -> _Token:
        requested_at = _now(self.clock)
        request = self._http.build_request("POST", self.token_url, json=self._credentials)
        started = time.perf_counter()
        line: dict[str, Any] = {
            "event": "auth0_token",
            "method": "POST",
            "path": "/oauth/token",
            "request_id": current_request_id.get(),
        }
        try:
            answer = await self._exchange(request)
        except _Unreadable as exc:
            self._log(line, None, "permanent", "unreadable", started)
            raise Permanent(f"the token endpoint's answer is unusable: {exc}") from exc
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            self._log(line, None, "transient", type(exc).__name__, started)
            raise Transient(
                f"Auth0's token endpoint is unreachable ({type(exc).__name__})"
            ) from exc
        self.token_requests += 1
        code, message = _error_of(answer.body)
        described = ": ".join(p for p in (code, message) if p) or "no detail"
        status = answer.status
        if status == 200:
            self._log(line, status, "ok", None, started)
            return self._token_of(answer.body, requested_at)
        if status == 429 or status >= 500:
            self._log(line, status, "throttled" if status == 429 else "transient", code, started)
            raise Transient(
                f"no token from Auth0 ({status} {described})",
                status=status,
                retry_at=retry_at_of(answer.headers, _now(self.clock)) if status == 429 else None,
                throttled=status == 429,
            )
        self._log(line, status, "permanent", code, started)
        if status in (401, 403):
            raise Permanent(
                f"Auth0 refused the client credentials ({status} {described}); check "
                "IDSTORE_AUTH0_CLIENT_ID/_CLIENT_SECRET and that the application is authorized "
                f"for the Management API ({self.audience})",
                status=status,
            )
        raise Permanent(
            f"Auth0's token endpoint refused the request ({status} {described})", status=status
        )

    def _token_of(self, body: bytes, requested_at: float) -> _Token:
        document = _json(body, "a token request")
        if not isinstance(document, dict):
            raise Permanent("the token endpoint's answer is not a JSON object")
        value = document.get("access_token")
        lifetime = document.get("expires_in")
        if not isinstance(value, str) or not _TOKEN_SAFE.fullmatch(value):
            raise Permanent("the token endpoint's answer has no usable access_token")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise Permanent("the token endpoint's answer has no usable expires_in")
        lifetime = min(lifetime, MAX_TOKEN_LIFETIME_SECONDS)
        margin = min(TOKEN_RENEW_MARGIN_SECONDS, lifetime / 10)
        return _Token(value, requested_at + lifetime - margin)


def _outcome_name(error: AuthServiceError | None) -> Outcome:
    if error is None:
        return "ok"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, Exists):
        return "exists"
    if isinstance(error, Transient):
        return "throttled" if error.throttled else "transient"
    return "permanent"


if TYPE_CHECKING:  # mypy checks that the client implements the interface

    def _implements(client: Auth0Client) -> AuthService:
        return client
