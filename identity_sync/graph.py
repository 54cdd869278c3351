"""Microsoft Graph, as the profile sync asks it: one user's properties by
object id or UPN (``GET /v1.0/users/{id}?$select=...``), with an app-only
token from the Microsoft identity platform (client-credentials grant).

Every answer of Graph is translated here, in :meth:`GraphClient._send`, into
one of three outcomes:

- a user (:class:`GraphUser`), or ``None`` when the directory has no such
  user (404 ``Request_ResourceNotFound``: a normal answer, not an outage);
- :class:`LookupRefused`: this one look-up cannot be done or its answer is
  unusable (an id that is no object id or UPN, a 400, an answer that is too
  large or not a JSON object); the caller records it against the user;
- :class:`GraphUnavailable`: Graph cannot be used at all right now (it keeps
  failing or timing out, it refuses our credentials or permissions); the
  caller stops and leaves its users as they are.

Graph's throttling is honoured (https://learn.microsoft.com/graph/throttling):
a 429, 503 or 504 waits the ``Retry-After`` it names (seconds), and pauses
every concurrent look-up of this client, not just the one that was told;
``RateLimit-Remaining: 0`` with ``RateLimit-Reset`` pauses them likewise
before Graph has to say no. Other 5xx answers, timeouts and connection
errors are retried with capped exponential backoff and jitter. Besides, the
client sends no more than ``graph_requests_per_second`` on average, in bursts
of at most :data:`PACER_BURST` (a pacer shared by all its look-ups), and no
more than ``graph_concurrency`` requests at once.

All waiting goes through the injected :class:`~identity_sync.clock.Clock`,
so tests drive time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from identity_store.settings import Settings

from .clock import Clock
from .remote_http import RemoteClient

__all__ = [
    "GRAPH_SCOPE",
    "MAX_BODY_BYTES",
    "MAX_VALUE_LENGTH",
    "GraphClient",
    "GraphError",
    "GraphUnavailable",
    "GraphUser",
    "LookupRefused",
    "plausible_user_key",
]

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
"""The scope of an app-only token for Graph (client-credentials flow)."""

MAX_BODY_BYTES = 1_048_576
"""Largest answer read from Graph or the token endpoint (a user's selected
properties take a few hundred bytes); a larger one is refused unread."""

MAX_VALUE_LENGTH = 255
"""Longest property value taken (the store's columns hold 255 characters)."""

MAX_ATTEMPTS = 5
"""Tries of one request that fails transiently (5xx, timeout, connection)."""

MAX_THROTTLED = 10
"""Throttled answers (429) one look-up waits through before Graph counts as
unavailable: the limit should be met by the pacer, not by waiting forever."""

PACER_BURST = 10
"""Look-ups that may start at once after a lull: enough to catch up on slots
a busy event loop made late, far below what Graph tolerates in a burst."""

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 300.0
"""Longest wait a ``Retry-After`` (or ``RateLimit-Reset``) may ask for; a
larger value is taken as this (a hostile or broken answer cannot park the
job for days)."""

_OBJECT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_UPN = re.compile(r"[A-Za-z0-9'._!#^~+\-]{1,113}@[A-Za-z0-9\-]{1,63}(\.[A-Za-z0-9\-]{1,63}){1,8}")
"""A user principal name as Entra allows it (letters, digits, ``'._!#^~-``
before the ``@``; guests look like ``ada_contoso.com#EXT#@tenant.onmicrosoft.com``)."""
_PROPERTY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_TOKEN_SAFE = re.compile(r"[\x21-\x7e]{1,16384}")


def plausible_user_key(key: str) -> bool:
    """Whether ``key`` may name a user in ``/users/{id}``: an object id (a
    GUID) or a user principal name. Anything else is never sent."""
    return bool(_OBJECT_ID.fullmatch(key) or _UPN.fullmatch(key))


class GraphError(Exception):
    """Something went wrong asking Microsoft Graph."""


class GraphUnavailable(GraphError):
    """Graph cannot be used now: the run stops and changes nothing more."""


class LookupRefused(GraphError):
    """This look-up cannot be done, or its answer cannot be used."""


@dataclass(frozen=True, slots=True)
class GraphUser:
    """The selected properties of one directory user, as far as they are usable."""

    values: dict[str, str] = field(default_factory=dict)
    """Property -> its value: a string of 1 to :data:`MAX_VALUE_LENGTH`
    characters without NUL."""
    refused: dict[str, str] = field(default_factory=dict)
    """Property -> why its value is not used (not a string, too long, NUL).
    A property that is absent or ``null`` is in neither: empty in the directory."""


def _value_problem(value: Any, max_length: int) -> str | None:
    """Why a property value is unusable, or ``None`` when it is a good string."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if "\x00" in value:
        return "contains a NUL character"
    if len(value) > max_length:
        return f"{len(value)} characters long; at most {max_length} taken"
    return None


def _retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, as Graph
    sends it, or an HTTP date); ``None`` when there is none that parses."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and len(value) <= 9:
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_SECONDS)


def _rate_limit_reset(headers: httpx.Headers) -> float | None:
    """Seconds until the quota renews when ``RateLimit-Remaining`` says it is
    spent (``RateLimit-*`` headers, which Graph sends near some limits)."""
    remaining = headers.get("ratelimit-remaining", "").strip()
    reset = headers.get("ratelimit-reset", "").strip()
    if remaining == "0" and reset.isdigit() and len(reset) <= 9:
        return min(float(reset), MAX_RETRY_AFTER_SECONDS)
    return None


def _error_of(body: bytes) -> str:
    """``code: message`` of a Graph error body, or of an identity platform
    one (``error: error_description``), shortened; ``""`` when it has neither."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(document, dict):
        return ""
    error = document.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = error, document.get("error_description")
    parts = [str(p) for p in (code, message) if isinstance(p, str) and p]
    text = ": ".join(parts).replace("\r", " ").replace("\n", " ")
    return text[:300]


class Pacer:
    """At most ``rate`` starts per second among all who ask, on average, and
    at most ``burst`` at once: a token bucket of ``burst`` tokens on the clock
    (as the generic cell rate algorithm: a theoretical arrival time that each
    start pushes one interval further), with pauses everyone waits out.

    Each caller reserves the next free slot and sleeps until it; a pause
    (a ``Retry-After``) that begins meanwhile voids the slot and the caller
    takes a new one after the pause. The burst lets starts that came late
    (the event loop was busy) catch up, so the allowance is used, not lost."""

    def __init__(self, rate: float, clock: Clock, burst: int = 1) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (max(burst, 1) - 1) * self.interval
        self.clock = clock
        self._origin = clock.now()
        self._arrival = 0.0
        self._paused_until = 0.0

    def _now(self) -> float:
        """Seconds since the pacer was made (small numbers keep their precision)."""
        return (self.clock.now() - self._origin).total_seconds()

    def pause(self, seconds: float) -> None:
        """Let nobody start for ``seconds`` from now."""
        self._paused_until = max(self._paused_until, self._now() + seconds)

    async def wait(self) -> None:
        while True:
            now = self._now()
            arrival = max(self._arrival, now, self._paused_until)
            slot = max(now, arrival - self.tolerance, self._paused_until)
            self._arrival = arrival + self.interval
            if slot > now:
                await self.clock.sleep(slot - now)
            if self._paused_until <= self._now():
                return


@dataclass(slots=True)
class _Token:
    value: str
    renew_at: float


class GraphClient(RemoteClient):
    """Microsoft Graph for the profile sync; use as ``async with``."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_value_length: int = MAX_VALUE_LENGTH,
    ) -> None:
        if not settings.graph_configured:
            raise ValueError("Microsoft Graph is not configured")
        assert settings.graph_client_secret is not None
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.max_body_bytes = max_body_bytes
        self.max_value_length = max_value_length
        self.token_url = (
            f"{settings.graph_login_url}/{quote(str(settings.graph_tenant_id), safe='')}"
            "/oauth2/v2.0/token"
        )
        self.users_url = f"{settings.graph_base_url}/v1.0/users/"
        self._credentials = {
            "client_id": str(settings.graph_client_id),
            "client_secret": settings.graph_client_secret.get_secret_value(),
            "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials",
        }
        self.pacer = Pacer(settings.graph_requests_per_second, clock, PACER_BURST)
        self._slots = asyncio.Semaphore(settings.graph_concurrency)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self.token_requests = 0
        """Tokens fetched so far (for the logs and tests)."""
        super().__init__(
            timeout=settings.graph_timeout_seconds,
            connections=settings.graph_concurrency + 1,
            user_agent="idstore-profile-sync",
        )

    # -- Look-ups ------------------------------------------------------------

    async def get_user(self, key: str, properties: Sequence[str]) -> GraphUser | None:
        """The ``properties`` of the user whose object id or UPN is ``key``;
        ``None`` when the directory has no such user.

        :raises LookupRefused: ``key`` is no object id or UPN (nothing is
            sent), or Graph's answer for it cannot be used.
        :raises GraphUnavailable: Graph cannot be used now.
        """
        if not plausible_user_key(key):
            raise LookupRefused("not an object id or user principal name; not looked up")
        wanted = list(dict.fromkeys(properties))
        bad = [p for p in wanted if not _PROPERTY.fullmatch(p)]
        if bad or not wanted:
            raise ValueError(f"not Graph property names: {bad or wanted}")
        url = f"{self.users_url}{quote(key, safe='')}?$select={','.join(wanted)}"
        status, body = await self._send(url)
        if status == 404:
            return None
        document = self._json_object(body)
        values: dict[str, str] = {}
        refused: dict[str, str] = {}
        for name in wanted:
            value = document.get(name)
            if value is None or value == "":
                continue
            problem = _value_problem(value, self.max_value_length)
            if problem is None:
                values[name] = value
            else:
                refused[name] = problem
        return GraphUser(values, refused)

    def _json_object(self, body: bytes) -> dict[str, Any]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise LookupRefused(f"Graph's answer is not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise LookupRefused(
                f"Graph's answer is a JSON {type(document).__name__}, not an object"
            )
        return document

    # -- One request, and what its answer means -------------------------------

    async def _send(self, url: str) -> tuple[int, bytes]:
        """GET ``url`` until it has an answer that means something: 2xx or
        404 (returned), a refusal (:class:`LookupRefused`), or an outage
        (:class:`GraphUnavailable`)."""
        failures = throttled = 0
        renewed = False
        while True:
            token = await self._access_token()
            try:
                async with self._slots:
                    await self.pacer.wait()
                    status, headers, body = await self._get(url, token)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failures += 1
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if failures >= MAX_ATTEMPTS:
                    raise GraphUnavailable(
                        f"Microsoft Graph unreachable after {failures} attempts ({problem})"
                    ) from exc
                await self.clock.sleep(self._backoff(failures))
                continue
            reset = _rate_limit_reset(headers)
            if reset:
                self.pacer.pause(reset)
            if 200 <= status < 300 or status == 404:
                return status, body
            detail = _error_of(body)
            described = f"{status} {detail}".strip()
            if status == 401:
                if renewed:
                    raise GraphUnavailable(f"Microsoft Graph refused a fresh token ({described})")
                renewed = True
                self._drop_token(token)
                continue
            if status == 403:
                raise GraphUnavailable(
                    f"Microsoft Graph denied access ({described}); the app registration "
                    "needs the User.Read.All application permission"
                )
            if status in (429, 503, 504):
                wait = _retry_after(headers, self.clock.now().timestamp())
                if status == 429:
                    throttled += 1
                    if throttled > MAX_THROTTLED:
                        raise GraphUnavailable(
                            f"Microsoft Graph kept throttling ({throttled} answers 429)"
                        )
                else:
                    failures += 1
                    if failures >= MAX_ATTEMPTS:
                        raise GraphUnavailable(
                            f"Microsoft Graph unavailable after {failures} attempts ({described})"
                        )
                if wait is None:
                    wait = self._backoff(max(failures, throttled))
                self.pacer.pause(wait)
                continue
            if status >= 500:
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise GraphUnavailable(f"Microsoft Graph failed {failures} times ({described})")
                await self.clock.sleep(self._backoff(failures))
                continue
            raise LookupRefused(f"refused by Microsoft Graph ({described})")

    async def _get(self, url: str, token: str) -> tuple[int, httpx.Headers, bytes]:
        request = self._http.build_request("GET", url, headers={"Authorization": f"Bearer {token}"})
        return await self._exchange(request)

    async def _exchange(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        """Send ``request``; its status, headers and body, read up to
        :attr:`max_body_bytes` (a larger body is refused as it streams in)."""
        response = await self._http.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise LookupRefused(
                    f"Graph's answer is {int(declared):,} bytes; at most "
                    f"{self.max_body_bytes:,} read"
                )
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise LookupRefused(
                            f"Graph's answer is larger than {self.max_body_bytes:,} bytes; not read"
                        )
                    chunks.append(chunk)
            except httpx.DecodingError as exc:
                raise LookupRefused(f"Graph's answer cannot be decoded ({exc})") from exc
        finally:
            await response.aclose()
        return response.status_code, response.headers, b"".join(chunks)

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter: half the step, plus up to
        the other half at random."""
        step = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
        return float(step / 2 + self.rng.uniform(0, step / 2))

    # -- The token -----------------------------------------------------------

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` (refused by Graph), unless it was renewed meanwhile."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _access_token(self) -> str:
        """The cached token, or a new one when there is none or it is about to
        expire (one fetch, whatever the number of look-ups waiting for it)."""
        token = self._token
        if token is not None and self.clock.now().timestamp() < token.renew_at:
            return token.value
        async with self._token_lock:
            token = self._token
            if token is None or self.clock.now().timestamp() >= token.renew_at:
                token = await self._fetch_token()
                self._token = token
            return token.value

    async def _fetch_token(self) -> _Token:
        failures = 0
        while True:
            requested_at = self.clock.now().timestamp()
            request = self._http.build_request("POST", self.token_url, data=self._credentials)
            try:
                status, headers, body = await self._exchange(request)
            except LookupRefused as exc:
                raise GraphUnavailable(f"the token endpoint's answer is unusable: {exc}") from exc
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise GraphUnavailable(
                        f"the Microsoft identity platform is unreachable after {failures} "
                        f"attempts ({type(exc).__name__})"
                    ) from exc
                await self.clock.sleep(self._backoff(failures))
                continue
            self.token_requests += 1
            if status == 200:
                return self._token_of(body, requested_at)
            detail = _error_of(body)
            if status in (429, 500, 502, 503, 504):
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise GraphUnavailable(
                        f"no token from the Microsoft identity platform after {failures} "
                        f"attempts ({status} {detail})".strip()
                    )
                wait = _retry_after(headers, self.clock.now().timestamp())
                await self.clock.sleep(wait if wait is not None else self._backoff(failures))
                continue
            raise GraphUnavailable(
                f"the Microsoft identity platform refused the client credentials "
                f"({status} {detail})".strip()
            )

    def _token_of(self, body: bytes, requested_at: float) -> _Token:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise GraphUnavailable("the token endpoint's answer is not JSON") from exc
        if not isinstance(document, Mapping):
            raise GraphUnavailable("the token endpoint's answer is not a JSON object")
        value = document.get("access_token")
        lifetime = document.get("expires_in")
        if isinstance(lifetime, str) and lifetime.isdigit() and len(lifetime) <= 9:
            lifetime = int(lifetime)  # the v1 endpoint sends it as a string
        if not isinstance(value, str) or not _TOKEN_SAFE.fullmatch(value):
            raise GraphUnavailable("the token endpoint's answer has no usable access_token")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise GraphUnavailable("the token endpoint's answer has no usable expires_in")
        lifetime = min(lifetime, 86_400)
        # Renew 5 minutes before it expires (MSAL's margin), or half-way for a
        # token that lives less than 10 minutes.
        margin = 300 if lifetime >= 600 else lifetime / 2
        return _Token(value, requested_at + lifetime - margin)
