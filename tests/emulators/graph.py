"""A Microsoft Graph emulator on loopback, for the tests and the bench: the
two endpoints the profile sync uses, answering as Microsoft documents them.

- ``POST /{tenant}/oauth2/v2.0/token`` (Microsoft identity platform,
  client-credentials grant; https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
  ``{"token_type": "Bearer", "expires_in": 3599, "access_token": ...}``, or
  an AADSTS error body (``error``, ``error_description``, ``error_codes``,
  ``timestamp``, ``trace_id``, ``correlation_id``): an unknown tenant
  (AADSTS90002), client (AADSTS700016) or secret (AADSTS7000215, error
  ``invalid_client``), a scope without ``/.default`` (AADSTS1002012), a
  missing parameter (AADSTS900144);
- ``GET /v1.0/users/{id | userPrincipalName}`` with ``$select``
  (https://learn.microsoft.com/graph/api/user-get): the selected properties
  (``null`` when unset), ``id`` always, and ``@odata.context``; without
  ``$select``, Graph's default set. Errors as Graph writes them
  (``{"error": {"code", "message", "innerError"}}``): 401
  ``InvalidAuthenticationToken`` without a valid bearer token, 404
  ``Request_ResourceNotFound``, 400 ``Request_BadRequest`` for an unknown
  property or a malformed id, and, when a rate limit is set, 429
  ``TooManyRequests`` with ``Retry-After`` in whole seconds
  (https://learn.microsoft.com/graph/throttling).

Tests inject what a real service does on a bad day: the next answers as
503/504/500 (with or without ``Retry-After``), a delay before answering, an
outage, a raw answer for one user (huge, not JSON, not an object), tokens
that expire. It serves on ``127.0.0.1`` on a free port, with a real uvicorn
in a background thread; everything it saw is in :attr:`GraphEmulator.requests`.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

SCOPE = "https://graph.microsoft.com/.default"

USER_PROPERTIES = (
    "id",
    "accountEnabled",
    "businessPhones",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "onPremisesSamAccountName",
    "onPremisesImmutableId",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
"""The user properties the emulator knows (a subset of microsoft.graph.user)."""

DEFAULT_SELECT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
"""What ``GET /users/{id}`` returns without ``$select`` (Graph's default set)."""

_GUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the emulator answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float
    """``time.monotonic()`` when it arrived."""


@dataclass(frozen=True, slots=True)
class Raw:
    """An answer given as it is, for one user."""

    status: int
    body: bytes
    content_type: str = "application/json"
    chunked: bool = False
    """Streamed without a ``Content-Length`` (in 64 KiB chunks)."""
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if not self.chunked:
            return Response(
                self.body, self.status, headers=self.headers, media_type=self.content_type
            )

        async def chunks() -> Any:
            for start in range(0, len(self.body), 65_536):
                yield self.body[start : start + 65_536]

        return StreamingResponse(
            chunks(), self.status, headers=self.headers, media_type=self.content_type
        )


@dataclass(slots=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second, ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 when a request may pass (and takes its token), else the seconds
        until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status, headers=headers, media_type="application/json")


def _graph_error(status: int, code: str, message: str, **headers: str) -> Response:
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return _json(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def _aad_error(status: int, error: str, code: int, description: str) -> Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return _json(
        status,
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
                f"{correlation} Timestamp: {_now_text()}"
            ),
            "error_codes": [code],
            "timestamp": _now_text(),
            "trace_id": trace,
            "correlation_id": correlation,
        },
    )


class GraphEmulator:
    """The emulator; ``with GraphEmulator() as graph:`` serves it."""

    def __init__(
        self,
        *,
        tenant: str = "8f2c1f3e-0000-4000-8000-00000000c0de",
        client_id: str = "5a0e7c53-0000-4000-8000-0000000a9901",
        client_secret: str = "emulator-secret",  # noqa: S107 - the emulator's own
        token_lifetime: int = 3599,
    ) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self.users: dict[str, dict[str, Any]] = {}
        """Object id -> properties (``id`` included)."""
        self.raw: dict[str, Raw] = {}
        """Object id or UPN -> an answer given as it is."""
        self.tokens: dict[str, float] = {}
        """Issued token -> when it expires (``time.monotonic()``)."""
        self.requests: list[Seen] = []
        self.faults: deque[tuple[int, str | None] | None] = deque()
        """What the next look-ups get: a fault (status, ``Retry-After``) or
        ``None`` (a normal answer)."""
        self.tokens_valid = True
        """``False``: every bearer token is refused as expired, even a new one."""
        self.token_raw: Raw | None = None
        """An answer of the token endpoint given as it is."""
        self.quota_headers: dict[str, str] = {}
        """Headers added to every look-up answered (``RateLimit-Remaining``...)."""
        self._generation = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.on_look_up: Callable[[int], None] | None = None
        """Called (in the emulator's thread) with the number of each look-up
        as it arrives: a test's way to act at a given point of a run."""
        self._look_ups = 0
        """Most look-ups that were being answered at once."""
        self.rate_limit: RateLimit | None = None
        self.delay = 0.0
        """Seconds before each user look-up is answered (a slow Graph)."""
        self.token_delay = 0.0
        self.outage: int | None = None
        """A status (503...) every request gets, token requests included."""
        self.app = Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/v1.0/users/{key:path}", self._user, methods=["GET"]),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- Set-up by the tests -------------------------------------------------

    def add_user(self, **properties: Any) -> str:
        """Add a directory user (``id`` made up unless given); its id."""
        user_id = str(properties.pop("id", None) or uuid.uuid4())
        with self._lock:
            self.users[user_id] = {"id": user_id, **properties}
        return user_id

    def limit_rate(self, rate: float, burst: float | None = None) -> None:
        """Answer 429 beyond ``rate`` look-ups per second (``burst`` at once:
        a tenth of a second's worth by default)."""
        burst = burst if burst is not None else max(1.0, rate / 10)
        with self._lock:
            self.rate_limit = RateLimit(rate, burst, tokens=burst)

    def fail_next(
        self, count: int, status: int = 503, retry_after: str | None = None, *, after: int = 0
    ) -> None:
        """The ``count`` look-ups after the next ``after`` ones answer
        ``status`` (with ``Retry-After``)."""
        with self._lock:
            self.faults.extend([None] * after)
            self.faults.extend([(status, retry_after)] * count)

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (it expired, or was revoked)."""
        with self._lock:
            self.tokens.clear()

    def reset(self) -> None:
        """Back to an empty directory, no limit, no fault, nothing seen."""
        with self._lock:
            self.users.clear()
            self.raw.clear()
            self.tokens.clear()
            self.requests.clear()
            self.faults.clear()
            self.rate_limit = None
            self.delay = self.token_delay = 0.0
            self.outage = None
            self.tokens_valid = True
            self.token_raw = None
            self.quota_headers = {}
            self.in_flight = self.max_in_flight = 0
            self._generation += 1  # look-ups still being answered count no more
            self.on_look_up = None
            self._look_ups = 0
            self.client_secret = "emulator-secret"
            self.token_lifetime = 3599

    def seen(self, path_part: str = "/v1.0/users/") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if path_part in r.path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings_env(self) -> dict[str, str]:
        """The environment that points the product at this emulator."""
        return {
            "IDSTORE_GRAPH_BASE_URL": self.url,
            "IDSTORE_GRAPH_LOGIN_URL": self.url,
            "IDSTORE_GRAPH_TENANT_ID": self.tenant,
            "IDSTORE_GRAPH_CLIENT_ID": self.client_id,
            "IDSTORE_GRAPH_CLIENT_SECRET": self.client_secret,
        }

    def settings_fields(self) -> dict[str, Any]:
        """The same, as :class:`~identity_store.settings.Settings` fields."""
        return {
            "graph_base_url": self.url,
            "graph_login_url": self.url,
            "graph_tenant_id": self.tenant,
            "graph_client_id": self.client_id,
            "graph_client_secret": self.client_secret,
        }

    # -- Serving -------------------------------------------------------------

    def start(self, port: int = 0) -> GraphEmulator:
        """Serve on ``port`` of 127.0.0.1 (a free one by default)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(512)  # connections wait in the backlog until uvicorn accepts
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            loop="auto",  # uvloop when installed (uvicorn[standard])
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="graph-emulator"
        )
        self._thread.start()
        self._socket = sock
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._socket.close()
            self._server = self._thread = None

    def __enter__(self) -> GraphEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: Request, status: int, at: float) -> None:
        with self._lock:
            self.requests.append(
                Seen(request.method, request.url.path, dict(request.query_params), status, at)
            )

    # -- The token endpoint --------------------------------------------------

    async def _token(self, request: Request) -> Response:
        at = time.monotonic()
        response = await self._token_answer(request)
        self._record(request, response.status_code, at)
        return response

    async def _token_answer(self, request: Request) -> Response:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.outage is not None:
            return _aad_error(self.outage, "temporarily_unavailable", 90033, "Service unavailable.")
        if self.token_raw is not None:
            return self.token_raw.response()
        if request.path_params["tenant"] != self.tenant:
            tenant = request.path_params["tenant"]
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                return _aad_error(
                    400,
                    "invalid_request",
                    900144,
                    f"The request body must contain the following parameter: '{name}'.",
                )
        if form["grant_type"] != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if form["client_id"] != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form['client_id']}' was not found in the "
                f"directory '{self.tenant}'.",
            )
        if form.get("client_secret") != self.client_secret:
            return _aad_error(
                400,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the "
                f"request is the client secret value, not the client secret ID, for a "
                f"secret added to app '{self.client_id}'.",
            )
        if form["scope"] != SCOPE:
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form['scope']} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime
        return _json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
        )

    # -- Users ---------------------------------------------------------------

    async def _user(self, request: Request) -> Response:
        at = time.monotonic()
        with self._lock:
            generation = self._generation
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._look_ups += 1
            number, hook = self._look_ups, self.on_look_up
        if hook is not None:
            hook(number)
        try:
            response = await self._user_answer(request)
        finally:
            with self._lock:
                if generation == self._generation:
                    self.in_flight -= 1
        self._record(request, response.status_code, at)
        return response

    def _authorized(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        with self._lock:
            expires = self.tokens.get(token)
        if expires is None:
            return _graph_error(
                401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed."
            )
        if expires <= time.monotonic() or not self.tokens_valid:
            return _graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return None

    async def _user_answer(self, request: Request) -> Response:
        if self.outage is not None:
            return _graph_error(self.outage, "serviceNotAvailable", "Service unavailable.")
        refused = self._authorized(request)
        if refused is not None:
            return refused
        with self._lock:
            wait = self.rate_limit.take() if self.rate_limit is not None else 0.0
            fault = self.faults.popleft() if self.faults and not wait else None
        if wait:
            return _graph_error(
                429,
                "TooManyRequests",
                "Too many requests.",
                Retry_After=str(max(1, math.ceil(wait))),
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        if fault is not None:
            status, retry_after = fault
            codes = {
                429: "TooManyRequests",
                503: "serviceNotAvailable",
                504: "UnknownError",
                500: "generalException",
            }
            headers = {"Retry_After": retry_after} if retry_after is not None else {}
            return _graph_error(status, codes.get(status, "UnknownError"), "Injected.", **headers)
        key = request.path_params["key"]
        with self._lock:
            raw = self.raw.get(key)
        if raw is not None:
            return raw.response()
        if not _GUID.fullmatch(key) and "@" not in key:
            return _graph_error(400, "Request_BadRequest", f"Invalid object identifier '{key}'.")
        select = request.query_params.get("$select")
        wanted = [s.strip() for s in select.split(",")] if select else list(DEFAULT_SELECT)
        known = {p.lower(): p for p in USER_PROPERTIES}
        for name in wanted:
            if name.lower() not in known:
                return _graph_error(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.user'.",
                )
        user = self._find(key)
        if user is None:
            return _graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        properties = [known[name.lower()] for name in wanted]
        context = (
            f"https://graph.microsoft.com/v1.0/$metadata#users({','.join(properties)})/$entity"
            if select
            else "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
        )
        document: dict[str, Any] = {"@odata.context": context}
        for name in properties:
            document[name] = user.get(name)
        document["id"] = user["id"]
        return _json(200, document, dict(self.quota_headers))

    def _find(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self.users:
                return self.users[key]
            lowered = key.lower()
            for user in self.users.values():
                upn = user.get("userPrincipalName")
                if isinstance(upn, str) and upn.lower() == lowered:
                    return user
        return None
