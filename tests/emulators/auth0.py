"""An Auth0 tenant on loopback, for the tests and the bench: the
Authentication API's token endpoint and the Management API v2 endpoints the
sync uses, answering as Auth0 documents them.

- ``POST /oauth/token`` (client-credentials grant, JSON or form body;
  https://auth0.com/docs/api/authentication#client-credentials-flow):
  ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``; an
  unknown client or a wrong secret is 401 ``access_denied``/``Unauthorized``,
  a missing parameter 400 ``invalid_request``, an unknown grant 400
  ``unsupported_grant_type``, another grant 403 ``unauthorized_client``, a
  missing or foreign audience 403 ``access_denied``.
- Under ``/api/v2`` every path of Auth0's OpenAPI description
  (:data:`~tests.emulators.openapi_contract.AUTH0_DOCUMENT`): ``/users``
  (GET with ``page``, ``per_page`` up to 100, ``include_totals``, ``q`` in
  the Lucene subset ``field:"value" AND ...`` (a value may be a group,
  ``field:("a" OR "b")``) over ``identities.connection``,
  ``email``, ``user_id``, ``app_metadata.idstore_user_id`` and ``blocked``,
  ``connection``, ``sort``, ``fields``; the first 1000 results only, as
  Auth0; POST), ``/users/{id}`` (GET, PATCH, DELETE), ``/users-by-email``,
  ``/jobs/users-imports``, ``/jobs/{id}``, ``/jobs/{id}/errors``,
  ``/tickets/password-change``.
- ``GET /.well-known/jwks.json``: the tenant's signing keys as Auth0
  publishes them (``{"keys": [...]}``, each RSA key with ``alg`` RS256,
  ``kty``, ``use`` ``sig``, ``n``, ``e``, ``kid``, ``x5t`` and ``x5c``, a
  self-signed certificate), the current key first, earlier ones kept after a
  rotation (:meth:`~Auth0Emulator.rotate_signing_key`). End users' access
  tokens are signed with the current key by
  :meth:`~Auth0Emulator.access_token` (RS256, ``iss`` ``{url}/``, the
  ``kid`` in the header), as Auth0 issues them to an application for an API
  (the audience). :meth:`~Auth0Emulator.log_in` records a login as Auth0
  does (``last_login``, ``last_ip``, ``logins_count``).

It behaves as Auth0 does where the sync can tell: a user created with
``user_id`` gets ``auth0|{user_id}`` (else a random ``auth0|<24 hex>``);
stored e-mails are lower case, unique per connection; ``name`` defaults to
the e-mail and ``nickname`` to its local part; ``app_metadata`` is merged by
PATCH (a ``null`` removes a key); a changed e-mail is unverified unless the
PATCH says otherwise; DELETE of an unknown id is 204; a database connection
wants a password of 8 characters or more (:attr:`Auth0Emulator.require_password`).
Errors are Auth0's bodies (``{"statusCode", "error", "message",
"errorCode"}``), and every Management API answer carries
``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset``
(epoch seconds); with :meth:`Auth0Emulator.limit_rate` (a token bucket)
excess requests get 429 ``too_many_requests``.

Import jobs: a ``users`` file (a JSON array) of at most 500 KB (the whole
multipart body above 512,000 bytes is 413, as Auth0's API gateway does), at
most 2 jobs pending or processing (a third is 429); a job is ``pending`` for
:attr:`~Auth0Emulator.job_pending_seconds`, ``processing`` for
:attr:`~Auth0Emulator.job_processing_seconds`, then ``completed`` with its
summary, its users applied at that moment; per-user failures (a bad e-mail,
a duplicate without ``upsert``) are listed by ``/jobs/{id}/errors`` (204
without any).

The contract is checked on every exchange: each Management API request
against the request schema of its operation (parameters, content type,
body) and each answer against the response schema of its status; what is
wrong lands in :attr:`Auth0Emulator.contract_violations`, which the tests'
fixture requires to be empty at teardown. A request that breaks the schema
is also answered 400 ``invalid_body`` (``invalid_query_string``,
``invalid_uri``), as Auth0, which validates payloads against the same
schemas. Injected answers (below) are not checked: they are wrong on purpose.

Tests inject a bad day: the next answers with a given status
(:meth:`~Auth0Emulator.fail_next`; 429 with ``x-ratelimit-reset`` or
``Retry-After``), a raw answer (:meth:`~Auth0Emulator.answer_next`), a
fraction of 5xx answers (:meth:`~Auth0Emulator.fail_ratio`, seeded), any of
these after applying the change (``apply=True``) or, by default, without;
``201`` then a dropped connection (:meth:`~Auth0Emulator.drop_after_commit`),
tokens that expire (:meth:`~Auth0Emulator.expire_tokens`,
:attr:`~Auth0Emulator.token_lifetime`), an outage, a delay. Everything seen
is in :attr:`~Auth0Emulator.requests`; every account created, per e-mail,
in :attr:`~Auth0Emulator.created_per_email`.

It serves on ``127.0.0.1`` on a free port, with a real uvicorn in a
background thread; it imports nothing of pytest, so the bench uses it too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import email.parser
import email.policy
import hashlib
import logging
import math
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import jwt
import orjson
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.emulators.openapi_contract import Contract, Problem

DEFAULT_SCOPES = frozenset(
    {"read:users", "create:users", "update:users", "delete:users", "create:user_tickets"}
)
"""What the machine-to-machine application is granted (docs/auth0.md)."""

MAX_IMPORT_BODY_BYTES = 512_000
"""Largest multipart body of an import job (500 KB, as Auth0's gateway counts)."""

MAX_ACTIVE_IMPORT_JOBS = 2
MAX_SEARCH_RESULTS = 1000
"""Results ``GET /users`` pages through at most (Auth0's search limit)."""

DEFAULT_RATE_HEADERS_LIMIT = 1000
"""``x-ratelimit-limit`` announced when no rate limit is set."""

JWKS_PATH = "/.well-known/jwks.json"

_JOB_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_Q_TERM = re.compile(r'\s*([A-Za-z_.]+):("(?:[^"\\]|\\.)*"|[^\s"]+)\s*')
_Q_GROUP = re.compile(r"\s*([A-Za-z_.]+):\((.*)\)\s*")
_Q_ALTERNATIVE = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[^\s"()]+)\s*(?:OR\s+|$)')
_Q_FIELDS = {
    "identities.connection",
    "email",
    "user_id",
    "app_metadata.idstore_user_id",
    "blocked",
}
_GRANTS_OTHER = {
    "password",
    "authorization_code",
    "refresh_token",
    "http://auth0.com/oauth/grant-type/password-realm",
    "urn:ietf:params:oauth:grant-type:device_code",
}
_IMPORT_FIELDS = {
    "user_id",
    "email",
    "email_verified",
    "given_name",
    "family_name",
    "name",
    "nickname",
    "picture",
    "blocked",
    "app_metadata",
    "user_metadata",
    "username",
}
_ERROR_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
INJECTED_MESSAGES = {
    400: ("Payload validation error: 'Injected.'", "invalid_body"),
    401: ("Invalid token", None),
    403: ("Insufficient scope, expected any of: create:users", "insufficient_scope"),
    404: ("The user does not exist.", "inexistent_user"),
    409: ("The user already exists.", "auth0_idp_error"),
    429: ("Global limit has been reached", "too_many_requests"),
    500: ("Internal error", None),
    502: ("Bad gateway", None),
    503: ("Service Unavailable", None),
    504: ("Gateway timeout", None),
}
"""The message and ``errorCode`` of an injected answer of each status."""


def _iso(epoch: float) -> str:
    """A time as Auth0 writes it: ``2026-12-07T09:00:00.000Z``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def auth0_error(
    status: int, message: str, error_code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A Management API error body."""
    body: dict[str, Any] = {
        "statusCode": status,
        "error": _ERROR_TITLES.get(status, "Error"),
        "message": message,
    }
    if error_code is not None:
        body["errorCode"] = error_code
    body.update(extra)
    return body


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the emulator answered."""

    method: str
    path: str
    """Percent-decoded (``/api/v2/users/auth0|01J...``)."""
    raw_path: str
    """As sent (``/api/v2/users/auth0%7C01J...``)."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names."""
    body: Any
    """The parsed body: JSON, form fields, or multipart fields (the
    ``users`` file parsed as JSON when it is); ``None`` without one."""
    status: int
    at: float
    """``time.monotonic()`` when it arrived."""
    injected: bool = False
    """Answered by an injected fault, not by the tenant's logic."""


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected answer (:meth:`Auth0Emulator.fail_next`)."""

    status: int
    retry_after: str | None = None
    """A ``Retry-After`` header, as given."""
    reset: float | None = None
    """``x-ratelimit-reset`` (epoch seconds) of a 429 (with ``-remaining: 0``)."""
    apply: bool = False
    """Apply the request first, then answer this ("apply then fail")."""
    drop: bool = False
    """Apply, send the status line and half the body, drop the connection."""
    body: bytes | None = None
    """The answer's body as it is (else Auth0's error body for the status)."""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    chunked: bool = False
    """Stream the body without a ``Content-Length`` (64 KiB chunks)."""
    only: str | None = None
    """The operation it waits for: ``"POST /api/v2/users"``, ``"/api/v2/users/{id}"``
    (any method), ``"POST /oauth/token"``; ``None``: any Management API request."""
    passes: bool = False
    """A placeholder: the request it meets is answered normally (``after=``)."""

    def matches(self, method: str, operation: str) -> bool:
        if self.only is None:
            return operation not in ("/oauth/token", JWKS_PATH)
        return self.only in (operation, f"{method} {operation}")


@dataclass(slots=True)
class RandomFaults:
    """A fraction of answers injected at random (:meth:`Auth0Emulator.fail_ratio`)."""

    fraction: float
    statuses: tuple[int, ...]
    rng: random.Random
    apply: bool = False
    only: str | None = None

    def draw(self, method: str, operation: str) -> Fault | None:
        if not Fault(0, only=self.only).matches(method, operation):
            return None
        if self.rng.random() >= self.fraction:
            return None
        return Fault(self.rng.choice(self.statuses), apply=self.apply)


@dataclass(slots=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second, ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> bool:
        """Whether a request may pass (it takes its token)."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def headers(self, refused: bool) -> dict[str, str]:
        """``x-ratelimit-*``: the bucket's size, what is left, and when it is
        full again (refused: when the next request may pass), epoch seconds."""
        self._refill()
        wait = (1 - self.tokens) / self.rate if refused else (self.burst - self.tokens) / self.rate
        return {
            "x-ratelimit-limit": str(int(self.burst)),
            "x-ratelimit-remaining": "0" if refused else str(int(self.tokens)),
            "x-ratelimit-reset": str(math.ceil(time.time() + max(wait, 0.0))),
        }


@dataclass(slots=True)
class Token:
    """An issued access token."""

    scopes: frozenset[str]
    expires: float
    """``time.monotonic()`` when it expires."""
    expired: bool = False
    """Expired by :meth:`Auth0Emulator.expire_tokens`."""


@dataclass(slots=True)
class ImportJob:
    """A users-import job."""

    id: str
    connection_id: str
    connection: str
    users: list[Any]
    upsert: bool
    external_id: str | None
    send_completion_email: bool
    created_at: float
    """``time.time()``."""
    started: float
    """``time.monotonic()``."""
    fail_with: str | None = None
    status: Literal["pending", "processing", "completed", "failed"] = "pending"
    summary: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "users_import",
            "status": self.status,
            "id": self.id,
            "connection_id": self.connection_id,
            "connection": self.connection,
            "created_at": _iso(self.created_at),
            "upsert": self.upsert,
            "send_completion_email": self.send_completion_email,
        }
        if self.external_id is not None:
            body["external_id"] = self.external_id
        if self.status == "completed":
            body["summary"] = dict(self.summary)
        if self.status == "failed" and self.fail_with:
            body["status_details"] = self.fail_with
        return body


@dataclass(slots=True)
class Answer:
    """What a handler answers."""

    status: int
    document: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return b"" if self.document is None else orjson.dumps(self.document)


class _Dropped(Response):
    """Sends the status line, the headers (with the full ``Content-Length``)
    and half the body, then returns: uvicorn closes the connection mid-body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )


class _QuietDrops(logging.Filter):
    """Keeps uvicorn's complaint about a dropped answer (made on purpose by
    the emulator's thread) out of the logs; anything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            threading.current_thread().name.startswith("auth0-emulator")
            and record.getMessage().startswith("ASGI callable returned without completing")
        )


_quiet_drops = _QuietDrops()


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]] | None:
    """The fields and files of a ``multipart/form-data`` body (``None`` when
    it is not one), read by the standard library's MIME parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            files[name] = data
        fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _project(user: Mapping[str, Any], fields: str | None, include: str | None) -> dict[str, Any]:
    """``fields``/``include_fields`` of the Management API applied to a user."""
    document = copy.deepcopy(dict(user))
    if not fields:
        return document
    names = {f.strip() for f in fields.split(",") if f.strip()}
    if include == "false":
        return {k: v for k, v in document.items() if k not in names}
    return {k: v for k, v in document.items() if k in names}


def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the tenant's RS256 signing keys, with its certificate."""

    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: bytes
    """DER of a self-signed certificate of the key (Auth0's ``x5c``)."""

    @classmethod
    def generate(cls, tenant: str = "emulator") -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{tenant}.auth0.example")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(secrets.token_urlsafe(16), key, der)

    def jwk(self) -> dict[str, Any]:
        """The key as Auth0's JWKS lists it."""
        numbers = self.private_key.public_key().public_numbers()
        thumbprint = hashlib.sha1(self.certificate, usedforsecurity=False).digest()
        return {
            "kty": "RSA",
            "use": "sig",
            "n": _b64_int(numbers.n),
            "e": _b64_int(numbers.e),
            "kid": self.kid,
            "x5t": base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode(),
            "x5c": [base64.b64encode(self.certificate).decode()],
            "alg": "RS256",
        }


class Auth0Emulator:
    """The emulator; ``with Auth0Emulator() as auth0:`` (or ``async with``) serves it."""

    def __init__(
        self,
        *,
        client_id: str = "EmulatorM2MClient0000000000000001",
        client_secret: str = "emulator-client-secret",  # noqa: S107 - the emulator's own
        connection: str = "Username-Password-Authentication",
        connection_id: str = "con_emulatorConn0001",
        token_lifetime: int = 86_400,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        job_pending_seconds: float = 0.05,
        job_processing_seconds: float = 0.05,
        require_password: bool = True,
        seed: int = 0,
    ) -> None:
        self._defaults = {
            "client_secret": client_secret,
            "token_lifetime": token_lifetime,
            "scopes": frozenset(scopes),
            "job_pending_seconds": job_pending_seconds,
            "job_processing_seconds": job_processing_seconds,
            "require_password": require_password,
        }
        self.client_id = client_id
        self.client_secret = client_secret
        self.connection = connection
        self.connection_id = connection_id
        self.connections: dict[str, str] = {connection: connection_id}
        """Connection name -> id: the tenant's database connections."""
        self.token_lifetime = token_lifetime
        """``expires_in`` of the tokens issued from now on (seconds)."""
        self.scopes: frozenset[str] = frozenset(scopes)
        """What tokens issued from now on are granted."""
        self.job_pending_seconds = job_pending_seconds
        self.job_processing_seconds = job_processing_seconds
        self.require_password = require_password
        """A create without a password is 400 (a database connection needs one)."""
        self.seed = seed
        self.contract = Contract.auth0()
        self._lock = threading.RLock()
        self.users: dict[str, dict[str, Any]] = {}
        """Auth0 id -> the user as Auth0 answers it (``user_id``, ``email``,
        ``identities``, ``app_metadata``, ``created_at``...); tests read and
        seed it (:meth:`add_user`; after changing an ``email`` here in place,
        call :meth:`reindex`)."""
        self._addresses: dict[str, set[str]] = {}
        """Lower-case e-mail -> ids of the users with it (a look-up index)."""
        self._indexed = 0
        """``len(self.users)`` as the index knows it (a test that adds or
        removes users directly makes it differ, and the index is rebuilt)."""
        self.record_requests = True
        self._generation = 0
        """Bumped by :meth:`reset`: a request that arrived before a reset (one
        still sleeping out :attr:`delay` after its client timed out) neither
        changes nor is recorded in the next test's tenant."""
        """Keep every request in :attr:`requests` (a long bench may turn it off)."""
        self.passwords: dict[str, str] = {}
        """Auth0 id -> the password it was created or last changed with."""
        self.jobs: dict[str, ImportJob] = {}
        self.tickets: list[dict[str, Any]] = []
        """Password-change tickets issued: the request's fields and ``ticket``."""
        self.tokens: dict[str, Token] = {}
        self.token_requests = 0
        """Tokens issued so far."""
        self.requests: list[Seen] = []
        self.statuses: Counter[int] = Counter()
        """Answers given, by status (kept also with ``record_requests`` off)."""
        self.created_per_email: Counter[str] = Counter()
        """Lower-case e-mail -> accounts created with it (by ``POST /users``
        or an import; not by :meth:`add_user`): above 1 is a duplicate."""
        self.contract_violations: list[str] = []
        """Every way a request or an answer broke the OpenAPI description."""
        self.faults: list[Fault] = []
        self.random_faults: RandomFaults | None = None
        self.rate_limit: RateLimit | None = None
        self.delay = 0.0
        """Seconds before each Management API answer (after its checks)."""
        self.token_delay = 0.0
        self.outage: int | None = None
        """A status (503...) every request gets, the token endpoint's included."""
        self._next_job_failure: str | None = None
        self._rng = random.Random(seed)
        self._first_key: SigningKey | None = None
        self.signing_keys: list[SigningKey] = []
        """The keys the JWKS lists, the current one first (made on first use)."""
        self.app = Starlette(
            routes=[
                Route("/oauth/token", self._token, methods=["POST"]),
                Route(JWKS_PATH, self._jwks, methods=["GET"]),
                Route(
                    "/api/v2/{rest:path}",
                    self._management,
                    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                ),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    # -- Serving -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The tenant's base URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def audience(self) -> str:
        """The Management API's identifier (``{url}/api/v2/``)."""
        return f"{self.url}/api/v2/"

    def start(self, port: int = 0) -> Auth0Emulator:
        """Serve on ``port`` of 127.0.0.1 (a free one by default)."""
        logging.getLogger("uvicorn.error").addFilter(_quiet_drops)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            loop="auto",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="auth0-emulator"
        )
        self._thread.start()
        self._socket = sock
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            if self._socket is not None:
                self._socket.close()
            self._server = self._thread = self._socket = None

    def __enter__(self) -> Auth0Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Auth0Emulator:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def settings_fields(self) -> dict[str, Any]:
        """:class:`~identity_store.settings.Settings` fields that point the
        product at this tenant."""
        return {
            "auth0_base_url": self.url,
            "auth0_client_id": self.client_id,
            "auth0_client_secret": self.client_secret,
            "auth0_connection": self.connection,
            "auth0_connection_id": self.connection_id,
        }

    def settings_env(self) -> dict[str, str]:
        """The same, as the environment (``IDSTORE_AUTH0_...``)."""
        return {f"IDSTORE_{k.upper()}": str(v) for k, v in self.settings_fields().items()}

    # -- Set-up by the tests -------------------------------------------------

    def reset(self) -> None:
        """Back to an empty tenant: no users, jobs, tokens, faults, limit or
        requests seen; the constructor's settings again."""
        with self._lock:
            self._generation += 1
            self.users.clear()
            self._addresses.clear()
            self._indexed = 0
            self.record_requests = True
            self.passwords.clear()
            self.jobs.clear()
            self.tickets.clear()
            self.tokens.clear()
            self.requests.clear()
            self.statuses.clear()
            self.created_per_email.clear()
            self.contract_violations.clear()
            self.faults.clear()
            self.random_faults = None
            self.rate_limit = None
            self.delay = self.token_delay = 0.0
            self.outage = None
            self.token_requests = 0
            self._next_job_failure = None
            self.signing_keys = [self._first_key] if self._first_key is not None else []
            self.connections = {self.connection: self.connection_id}
            self._rng = random.Random(self.seed)
            for name, value in self._defaults.items():
                setattr(self, name, value)

    def add_user(
        self,
        email: str,
        *,
        user_id: str | None = None,
        connection: str | None = None,
        **fields: Any,
    ) -> str:
        """Put a user in the tenant as if created there (``user_id`` as
        Auth0's full id, made up unless given; any other field as Auth0
        stores it, ``app_metadata`` included); its id. Not counted in
        :attr:`created_per_email`."""
        with self._lock:
            user = self._new_user(
                user_id or f"auth0|{secrets.token_hex(12)}",
                email,
                connection or self.connection,
            )
            user.update(fields)
            self._store(user)
            return str(user["user_id"])

    def reindex(self) -> None:
        """Rebuild the e-mail index: needed only after a test changed a
        user's ``email`` in :attr:`users` in place (adding or removing users
        there is noticed)."""
        with self._lock:
            self._addresses = {}
            for auth0_id, user in self.users.items():
                self._addresses.setdefault(str(user.get("email", "")).lower(), set()).add(auth0_id)
            self._indexed = len(self.users)

    def user_by_email(self, email: str, connection: str | None = None) -> dict[str, Any] | None:
        """The user with this e-mail (any case) in the connection, if any."""
        with self._lock:
            return self._by_email(email, connection or self.connection)

    def limit_rate(self, rate: float | None, burst: float | None = None) -> None:
        """Answer 429 beyond ``rate`` Management API requests per second
        (``burst`` at once: a tenth of a second's worth by default, at least
        one); ``None`` lifts the limit."""
        with self._lock:
            if rate is None:
                self.rate_limit = None
                return
            size = burst if burst is not None else max(1.0, rate / 10)
            self.rate_limit = RateLimit(rate, size, tokens=size)

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        retry_after: str | None = None,
        reset: float | None = None,
        apply: bool = False,
        only: str | None = None,
        after: int = 0,
    ) -> None:
        """The ``count`` requests after the next ``after`` ones (of
        operation ``only``, else of any Management API operation) are
        answered ``status`` with Auth0's error body for it, without applying
        them (``apply=True``: after applying them). A 429 carries
        ``x-ratelimit-reset: reset`` (and ``-remaining: 0``) when ``reset``
        is given, ``Retry-After: retry_after`` when that is, nothing else."""
        with self._lock:
            self.faults.extend([Fault(0, only=only, passes=True)] * after)
            fault = Fault(status, retry_after=retry_after, reset=reset, apply=apply, only=only)
            self.faults.extend([fault] * count)

    def answer_next(
        self,
        count: int = 1,
        status: int = 200,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
        apply: bool = False,
        only: str | None = None,
    ) -> None:
        """The next ``count`` requests (of ``only``) get this answer as it
        is: a body that is not JSON, too large, hostile..."""
        with self._lock:
            fault = Fault(
                status,
                apply=apply,
                body=body,
                content_type=content_type,
                headers=dict(headers or {}),
                chunked=chunked,
                only=only,
            )
            self.faults.extend([fault] * count)

    def fail_ratio(
        self,
        fraction: float,
        *,
        statuses: Iterable[int] = (500, 502, 503, 504),
        seed: int | None = None,
        apply: bool = False,
        only: str | None = None,
    ) -> None:
        """Answer about ``fraction`` of the Management API requests (of
        ``only``) with one of ``statuses``, drawn by a random generator seeded
        with ``seed`` (the emulator's seed by default), without applying them
        (``apply=True``: after applying them); 0 stops it."""
        with self._lock:
            if fraction <= 0:
                self.random_faults = None
                return
            rng = random.Random(self.seed if seed is None else seed)
            self.random_faults = RandomFaults(fraction, tuple(statuses), rng, apply, only)

    def drop_after_commit(self, count: int = 1, *, only: str = "POST /api/v2/users") -> None:
        """The next ``count`` requests of ``only`` are applied, answered with
        their status line and half their body, and their connection dropped:
        the client sees a transport error after the change happened."""
        with self._lock:
            self.faults.extend([Fault(0, drop=True, apply=True, only=only)] * count)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (a 401
        ``Expired token received for JSON Web Token validation``)."""
        with self._lock:
            for token in self.tokens.values():
                token.expired = True

    def fail_next_job(self, message: str = "Internal error processing the job") -> None:
        """The next import job submitted ends ``failed`` with this
        ``status_details`` and imports nobody."""
        with self._lock:
            self._next_job_failure = message

    def advance_jobs(self) -> None:
        """Move every job along its timeline now (requests do it anyway)."""
        with self._lock:
            self._advance_jobs()

    def seen(self, operation: str | None = None) -> list[Seen]:
        """Requests seen, of the operation named as in ``only`` (``"GET
        /api/v2/users/{id}"``, ``"/api/v2/users"``, ``"POST /oauth/token"``),
        else every Management API request."""
        with self._lock:
            requests = list(self.requests)
        picked = []
        for seen in requests:
            template = self._template(seen.method, seen.path)
            if operation is None:
                if template not in ("/oauth/token", JWKS_PATH):
                    picked.append(seen)
            elif operation in (template, f"{seen.method} {template}"):
                picked.append(seen)
        return picked

    def duplicates(self) -> dict[str, int]:
        """E-mails with more than one account created."""
        with self._lock:
            return {e: n for e, n in self.created_per_email.items() if n > 1}

    # -- End users: logins, signing keys, access tokens -------------------------

    def log_in(self, auth0_id: str, at: datetime | None = None, ip: str = "192.0.2.10") -> str:
        """Record a login of the user as Auth0 does (``last_login``,
        ``last_ip``, ``logins_count``); the ``last_login`` written."""
        when = _iso((at or datetime.now(UTC)).timestamp())
        with self._lock:
            user = self.users[auth0_id]
            user["last_login"] = when
            user["last_ip"] = ip
            user["logins_count"] = int(user.get("logins_count", 0)) + 1
        return when

    @property
    def signing_key(self) -> SigningKey:
        """The key tokens are signed with now (made on first use)."""
        with self._lock:
            if self._first_key is None:
                self._first_key = SigningKey.generate()
                self.signing_keys = [self._first_key]
            elif not self.signing_keys:
                self.signing_keys = [self._first_key]
            return self.signing_keys[0]

    def rotate_signing_key(self) -> SigningKey:
        """A new current key, listed first; the earlier ones stay listed."""
        current = self.signing_key
        new = SigningKey.generate()
        with self._lock:
            self.signing_keys = [new, *[k for k in self.signing_keys if k is not current], current]
        return new

    def jwks(self) -> dict[str, Any]:
        """The JWKS document served now."""
        _ = self.signing_key
        with self._lock:
            return {"keys": [k.jwk() for k in self.signing_keys]}

    def access_token(
        self,
        sub: str,
        /,
        *,
        audience: str | list[str],
        lifetime: int = 86_400,
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An access token of ``sub`` for the API ``audience``, as Auth0
        issues it (RS256 with the current key; ``claims`` added or
        overriding, ``None`` removing one)."""
        signing = key or self.signing_key
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": f"{self.url}/",
            "sub": sub,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "scope": "openid profile email",
            "azp": "EmulatorSpaClient000000000000001",
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload,
            signing.private_key,
            algorithm="RS256",
            headers={"kid": signing.kid, **(headers or {})},
        )

    # -- Shared machinery ----------------------------------------------------

    def _template(self, method: str, path: str) -> str:
        """The operation's path template (``/api/v2/users/{id}``), or the path."""
        found = self.contract.operation(method, path)
        if found is None:
            return path
        return self.contract.prefix + found[0].template

    def _take_fault(self, method: str, operation: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self.faults):
                if fault.matches(method, operation):
                    del self.faults[index]
                    return None if fault.passes else fault
            if self.random_faults is not None:
                return self.random_faults.draw(method, operation)
        return None

    def _fault_response(
        self, fault: Fault, applied: Answer | None, rate_headers: dict[str, str]
    ) -> Response:
        if fault.drop:
            assert applied is not None
            headers = {**rate_headers, **applied.headers}
            return _Dropped(applied.body(), applied.status, headers, "application/json")
        headers = dict(rate_headers)
        if fault.status == 429:
            headers = {}
            if fault.reset is not None:
                headers = {
                    "x-ratelimit-limit": rate_headers.get("x-ratelimit-limit", "0"),
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(int(fault.reset)),
                }
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
        elif fault.retry_after is not None:
            headers["retry-after"] = fault.retry_after
        headers.update(fault.headers)
        if fault.body is not None:
            if not fault.chunked:
                return Response(fault.body, fault.status, headers, fault.content_type)
            data = fault.body

            async def chunks() -> Any:
                for start in range(0, len(data), 65_536):
                    yield data[start : start + 65_536]

            return StreamingResponse(chunks(), fault.status, headers, fault.content_type)
        message, code = INJECTED_MESSAGES.get(fault.status, ("Injected.", None))
        body = orjson.dumps(auth0_error(fault.status, message, code))
        return Response(body, fault.status, headers, "application/json")

    def _arrived(self, request: Request) -> float:
        """When ``request`` arrived; it is tied to the tenant as it is now."""
        request.state.emulator_generation = self._generation
        return time.monotonic()

    def _stale(self, request: Request) -> bool:
        """``request`` arrived before the last :meth:`reset`."""
        return bool(request.state.emulator_generation != self._generation)

    def _record(
        self,
        request: Request,
        body: Any,
        status: int,
        at: float,
        injected: bool = False,
    ) -> None:
        raw = request.scope.get("raw_path", b"")
        seen = Seen(
            request.method,
            request.url.path,
            raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            status,
            at,
            injected,
        )
        with self._lock:
            if self._stale(request):
                return
            self.statuses[status] += 1
            if self.record_requests:
                self.requests.append(seen)

    # -- The token endpoint (Authentication API) ------------------------------

    async def _token(self, request: Request) -> Response:
        at = self._arrived(request)
        raw = await request.body()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        form: dict[str, Any] = {}
        if media == "application/json":
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            form = parsed if isinstance(parsed, dict) else {}
        elif media == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
            if self._stale(request):  # as in _respond
                return Response(b"", 503)
        fault = self._take_fault("POST", "/oauth/token") if self.outage is None else None
        if self.outage is not None:
            response: Response = Response(
                orjson.dumps(
                    {"error": "temporarily_unavailable", "error_description": "Service Unavailable"}
                ),
                self.outage,
                media_type="application/json",
            )
        elif fault is not None:
            response = self._fault_response(fault, None, {})
        else:
            status, document = self._grant(form)
            response = Response(orjson.dumps(document), status, media_type="application/json")
        recorded = {k: ("[secret]" if k == "client_secret" else v) for k, v in form.items()}
        self._record(request, recorded, response.status_code, at, fault is not None)
        return response

    def _grant(self, form: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if not grant:
            return 400, {
                "error": "invalid_request",
                "error_description": "Missing required parameter: grant_type",
            }
        if grant != "client_credentials":
            if grant in _GRANTS_OTHER:
                return 403, {
                    "error": "unauthorized_client",
                    "error_description": f"Grant type '{grant}' not allowed for the client.",
                }
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": f"Unsupported grant type: {grant}",
            }
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}
        audience = form.get("audience")
        if not audience:
            return 403, {
                "error": "access_denied",
                "error_description": (
                    "No audience parameter was provided, and no default audience has been "
                    "configured"
                ),
            }
        if audience != self.audience:
            return 403, {
                "error": "access_denied",
                "error_description": f"Service not enabled within domain: {audience}",
            }
        now = time.time()
        with self._lock:
            lifetime = self.token_lifetime
            scopes = self.scopes
            claims = {
                "iss": f"{self.url}/",
                "sub": f"{self.client_id}@clients",
                "aud": audience,
                "iat": int(now),
                "exp": int(now + lifetime),
                "scope": " ".join(sorted(scopes)),
                "gty": "client-credentials",
                "azp": self.client_id,
                "jti": secrets.token_hex(8),
            }
            token = ".".join(
                [
                    _b64({"alg": "RS256", "typ": "JWT", "kid": "emulator"}),
                    _b64(claims),
                    secrets.token_urlsafe(32),
                ]
            )
            self.tokens[token] = Token(scopes, time.monotonic() + lifetime)
            self.token_requests += 1
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(sorted(scopes)),
        }

    # -- The signing keys (JWKS) ------------------------------------------------

    async def _jwks(self, request: Request) -> Response:
        at = self._arrived(request)
        fault = None
        if self.outage is not None:
            response: Response = Response(
                orjson.dumps({"error": "Service Unavailable"}),
                self.outage,
                media_type="application/json",
            )
        else:
            fault = self._take_fault("GET", JWKS_PATH)
            if fault is not None:
                response = self._fault_response(fault, None, {})
            else:
                response = Response(
                    orjson.dumps(self.jwks()),
                    200,
                    {"cache-control": "public, max-age=15, stale-while-revalidate=15"},
                    media_type="application/json",
                )
        if self.delay:
            await asyncio.sleep(self.delay)
        self._record(request, None, response.status_code, at, fault is not None)
        return response

    # -- The Management API ----------------------------------------------------

    async def _management(self, request: Request) -> Response:
        at = self._arrived(request)
        method, path = request.method, request.url.path
        raw = await request.body()
        content_type = request.headers.get("content-type")
        body, files = self._parse_body(content_type, raw)
        query = list(parse_qsl(request.url.query, keep_blank_values=True))
        found = self.contract.operation(method, path)
        operation = self.contract.prefix + found[0].template if found else path
        problems = self.contract.check_request(method, path, query, content_type, body)
        with self._lock:
            self.contract_violations.extend(f"request: {p}" for p in problems)
            self._advance_jobs()
        recorded = body
        if isinstance(body, dict) and "password" in body:
            recorded = {**body, "password": "[secret]"}
        if files.get("users") is not None and isinstance(body, dict):
            with contextlib.suppress(orjson.JSONDecodeError):
                recorded = {**body, "users": orjson.loads(files["users"])}

        response, injected = await self._respond(
            request, method, path, operation, found is not None, problems, body, files
        )
        if not injected and not isinstance(response, _Dropped):
            violations = self.contract.check_response(
                method,
                path,
                response.status_code,
                response.headers.get("content-type"),
                bytes(response.body),
            )
            with self._lock:
                if not self._stale(request):
                    self.contract_violations.extend(f"response: {v}" for v in violations)
        self._record(request, recorded, response.status_code, at, injected)
        return response

    async def _respond(
        self,
        request: Request,
        method: str,
        path: str,
        operation: str,
        known: bool,
        problems: list[Problem],
        body: Any,
        files: dict[str, bytes],
    ) -> tuple[Response, bool]:
        """The answer to a Management API request, and whether it was injected."""
        if self.outage is not None:
            message, code = INJECTED_MESSAGES.get(self.outage, ("Unavailable", None))
            document = auth0_error(self.outage, message, code)
            return Response(
                orjson.dumps(document), self.outage, media_type="application/json"
            ), True
        refused = self._authenticate(request)
        if refused is not None:
            return self._json(refused, self._rate_headers(refused=False)), False
        with self._lock:
            passes = self.rate_limit.take() if self.rate_limit is not None else True
            rate_headers = self._rate_headers(refused=not passes)
        if not passes:
            document = auth0_error(429, "Global limit has been reached", "too_many_requests")
            return self._json(Answer(429, document), rate_headers), False
        denied = self._authorize(request, method, path)
        if denied is not None:
            return self._json(denied, rate_headers), False
        fault = self._take_fault(method, operation)
        if self.delay:
            await asyncio.sleep(self.delay)
            if self._stale(request):  # its client gave up; the tenant was reset since
                return Response(b"", 503), True
        if fault is not None and not (fault.apply or fault.drop):
            return self._fault_response(fault, None, rate_headers), True
        with self._lock:
            answer = self._handle(request, method, path, known, problems, body, files)
        if fault is not None:
            return self._fault_response(fault, answer, rate_headers), True
        return self._json(answer, rate_headers), False

    @staticmethod
    def _json(answer: Answer, rate_headers: Mapping[str, str]) -> Response:
        headers = {**rate_headers, **answer.headers}
        if answer.document is None:
            return Response(b"", answer.status, headers)
        return Response(answer.body(), answer.status, headers, "application/json")

    def _rate_headers(self, refused: bool) -> dict[str, str]:
        if self.rate_limit is not None:
            return self.rate_limit.headers(refused)
        return {
            "x-ratelimit-limit": str(DEFAULT_RATE_HEADERS_LIMIT),
            "x-ratelimit-remaining": str(DEFAULT_RATE_HEADERS_LIMIT - 1),
            "x-ratelimit-reset": str(math.ceil(time.time())),
        }

    def _parse_body(self, content_type: str | None, raw: bytes) -> tuple[Any, dict[str, bytes]]:
        if not raw:
            return None, {}
        media = (content_type or "").split(";")[0].strip().lower()
        if media == "application/json":
            try:
                return orjson.loads(raw), {}
            except orjson.JSONDecodeError:
                return raw.decode("utf-8", "replace"), {}
        if media == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw.decode("utf-8", "replace"))), {}
        if media == "multipart/form-data" and content_type is not None:
            parsed = _multipart(content_type, raw)
            if parsed is not None:
                return parsed
        return raw.decode("utf-8", "replace"), {}

    def _authenticate(self, request: Request) -> Answer | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return Answer(401, auth0_error(401, "Missing authentication"))
        with self._lock:
            token = self.tokens.get(value.strip())
        if token is None:
            return Answer(
                401, auth0_error(401, "Invalid token", attributes={"error": "Invalid token"})
            )
        if token.expired or token.expires <= time.monotonic():
            message = "Expired token received for JSON Web Token validation"
            return Answer(401, auth0_error(401, message, attributes={"error": message}))
        return None

    def _authorize(self, request: Request, method: str, path: str) -> Answer | None:
        found = self.contract.operation(method, path)
        if found is None:
            return None
        _, _, value = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            token = self.tokens.get(value.strip())
        if token is None:
            return None
        wanted: list[str] = []
        for requirement in found[0].spec.get("security", []):
            wanted += requirement.get("oAuth2ClientCredentials", [])
        if wanted and not token.scopes.intersection(wanted):
            return Answer(
                403,
                auth0_error(
                    403,
                    f"Insufficient scope, expected any of: {','.join(wanted)}",
                    "insufficient_scope",
                ),
            )
        return None

    # -- The tenant's logic (called with the lock held) ------------------------

    def _handle(
        self,
        request: Request,
        method: str,
        path: str,
        known: bool,
        problems: list[Problem],
        body: Any,
        files: dict[str, bytes],
    ) -> Answer:
        if not known:
            return Answer(404, auth0_error(404, "Not Found"))
        for part, code, label in (
            ("path", "invalid_uri", "Path validation error"),
            ("query", "invalid_query_string", "Query validation error"),
            ("content-type", "invalid_body", "Payload validation error"),
            ("body", "invalid_body", "Payload validation error"),
        ):
            wrong = [p for p in problems if p.part == part]
            if wrong:
                return Answer(400, auth0_error(400, f"{label}: '{wrong[0].detail}'.", code))
        query = request.query_params
        local = path[len(self.contract.prefix) :]
        if local == "/users" and method == "GET":
            return self._list_users(query)
        if local == "/users" and method == "POST":
            return self._create_user(body)
        if local == "/users-by-email":
            return self._users_by_email(query)
        if local == "/jobs/users-imports":
            return self._start_import(body, files, request.headers.get("content-length"))
        if local == "/tickets/password-change":
            return self._ticket(body)
        if local.startswith("/jobs/"):
            job_id, _, rest = local.removeprefix("/jobs/").partition("/")
            return self._job_errors(job_id) if rest == "errors" else self._job(job_id)
        user_id = local.removeprefix("/users/")
        if method == "GET":
            user = self.users.get(user_id)
            if user is None:
                return self._no_user()
            return Answer(200, _project(user, query.get("fields"), query.get("include_fields")))
        if method == "PATCH":
            return self._update_user(user_id, body)
        self._discard(user_id)
        return Answer(204)

    @staticmethod
    def _no_user() -> Answer:
        return Answer(404, auth0_error(404, "The user does not exist.", "inexistent_user"))

    @staticmethod
    def _bad(message: str, code: str = "invalid_body") -> Answer:
        return Answer(400, auth0_error(400, message, code))

    def _store(self, user: dict[str, Any]) -> None:
        """Keep ``user`` (new, or with a new e-mail) and index its e-mail."""
        if len(self.users) != self._indexed:
            self.reindex()
        auth0_id = user["user_id"]
        if auth0_id not in self.users:
            self._indexed += 1
        self.users[auth0_id] = user
        self._addresses.setdefault(str(user.get("email", "")).lower(), set()).add(auth0_id)

    def _discard(self, auth0_id: str) -> None:
        if len(self.users) != self._indexed:
            self.reindex()
        if self.users.pop(auth0_id, None) is not None:
            self._indexed -= 1
        self.passwords.pop(auth0_id, None)

    def _with_email(self, email: str) -> list[dict[str, Any]]:
        """The users whose e-mail is ``email`` in any case, oldest first."""
        if len(self.users) != self._indexed:
            self.reindex()
        wanted = email.lower()
        found = []
        for auth0_id in self._addresses.get(wanted, ()):
            user = self.users.get(auth0_id)
            if user is not None and str(user.get("email", "")).lower() == wanted:
                found.append(user)
        return sorted(found, key=lambda u: (str(u.get("created_at", "")), u["user_id"]))

    def _by_email(self, email: str, connection: str) -> dict[str, Any] | None:
        for user in self._with_email(email):
            identities = user.get("identities") or [{}]
            if identities[0].get("connection") == connection:
                return user
        return None

    def _new_user(self, auth0_id: str, email: str, connection: str) -> dict[str, Any]:
        now = _iso(time.time())
        email = email.lower()
        digest = hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()
        provider, _, bare = auth0_id.partition("|")
        return {
            "user_id": auth0_id,
            "email": email,
            "email_verified": False,
            "name": email,
            "nickname": email.split("@")[0],
            "picture": f"https://s.gravatar.com/avatar/{digest}?s=480&r=pg&d=identicon",
            "identities": [
                {
                    "connection": connection,
                    "provider": provider or "auth0",
                    "user_id": bare or auth0_id,
                    "isSocial": False,
                }
            ],
            "app_metadata": {},
            "user_metadata": {},
            "created_at": now,
            "updated_at": now,
        }

    def _create_user(self, body: dict[str, Any]) -> Answer:
        connection = body["connection"]
        if connection not in self.connections:
            return self._bad("The connection does not exist.", "inexistent_connection")
        email = body.get("email")
        if not isinstance(email, str):
            return self._bad("Payload validation error: 'Missing required property: email'.")
        password = body.get("password")
        if password is None and self.require_password:
            return self._bad("Payload validation error: 'Missing required property: password'.")
        if password is not None and len(password) < 8:
            return self._bad("PasswordStrengthError: Password is too weak", "invalid_password")
        given_id = body.get("user_id")
        auth0_id = f"auth0|{given_id}" if given_id else f"auth0|{secrets.token_hex(12)}"
        if auth0_id in self.users or self._by_email(email, connection) is not None:
            return Answer(409, auth0_error(409, "The user already exists.", "auth0_idp_error"))
        user = self._new_user(auth0_id, email, connection)
        for key in ("email_verified", "given_name", "family_name", "name", "nickname", "picture"):
            if key in body:
                user[key] = body[key]
        for key in ("blocked", "username", "phone_number", "phone_verified"):
            if key in body:
                user[key] = body[key]
        user["app_metadata"] = copy.deepcopy(body.get("app_metadata", {}))
        user["user_metadata"] = copy.deepcopy(body.get("user_metadata", {}))
        self._store(user)
        if password is not None:
            self.passwords[auth0_id] = password
        self.created_per_email[user["email"]] += 1
        return Answer(201, copy.deepcopy(user))

    def _update_user(self, user_id: str, body: dict[str, Any]) -> Answer:
        user = self.users.get(user_id)
        if user is None:
            return self._no_user()
        email = body.get("email")
        if isinstance(email, str) and email.lower() != user.get("email"):
            connection = user["identities"][0]["connection"]
            other = self._by_email(email, connection)
            if other is not None and other["user_id"] != user_id:
                return self._bad("The specified new email already exists", "email_exists")
            user["email"] = email.lower()
            user["email_verified"] = bool(body.get("email_verified", False))
            self._store(user)
        for key, value in body.items():
            if key in ("app_metadata", "user_metadata"):
                merged = dict(user.get(key) or {})
                for name, item in (value or {}).items():
                    if item is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = copy.deepcopy(item)
                user[key] = merged
            elif key == "password":
                if value is not None:
                    self.passwords[user_id] = value
            elif key in ("email", "connection", "client_id", "verify_email", "verify_phone_number"):
                continue
            elif value is None:
                user.pop(key, None)
            else:
                user[key] = value
        user["updated_at"] = _iso(time.time())
        return Answer(200, copy.deepcopy(user))

    def _users_by_email(self, query: Mapping[str, str]) -> Answer:
        found = [
            _project(u, query.get("fields"), query.get("include_fields"))
            for u in self._with_email(query["email"])
        ]
        return Answer(200, found)

    def _list_users(self, query: Mapping[str, str]) -> Answer:
        page = int(query.get("page", "0"))
        per_page = int(query.get("per_page", "50"))
        if query.get("search_engine") == "v1":
            return self._bad(
                "You are not allowed to use search_engine=v1.", "operation_not_supported"
            )
        if page * per_page + per_page > MAX_SEARCH_RESULTS:
            return self._bad(
                "You can only page through the first 1000 records. See "
                "https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
                "invalid_paging",
            )
        terms: list[tuple[str, tuple[str, ...]]] = []
        q = (query.get("q") or "").strip()
        if q and q != "*":
            for clause in re.split(r"\s+AND\s+", q):
                term = _q_term(clause)
                if term is None:
                    return self._bad(
                        f"Query validation error: 'Invalid query: {clause}'.",
                        "invalid_query_string",
                    )
                terms.append(term)
        connection = query.get("connection")
        users = [u for u in self.users.values() if _matches(u, terms, connection)]
        key, _, order = (query.get("sort") or "created_at:1").partition(":")
        users.sort(key=lambda u: (str(u.get(key, "")), u["user_id"]), reverse=order == "-1")
        chosen = users[page * per_page : (page + 1) * per_page]
        documents = [_project(u, query.get("fields"), query.get("include_fields")) for u in chosen]
        if query.get("include_totals") == "true":
            return Answer(
                200,
                {
                    "start": page * per_page,
                    "limit": per_page,
                    "length": len(documents),
                    "total": len(users),
                    "users": documents,
                },
            )
        return Answer(200, documents)

    def _ticket(self, body: dict[str, Any]) -> Answer:
        user_id = body.get("user_id")
        if not isinstance(user_id, str):
            return self._bad("Payload validation error: 'Missing required property: user_id'.")
        if user_id not in self.users:
            return self._no_user()
        ticket = f"{self.url}/lo/reset?ticket={secrets.token_urlsafe(24)}#"
        self.tickets.append({**body, "ticket": ticket})
        return Answer(201, {"ticket": ticket})

    # -- Import jobs -----------------------------------------------------------

    def _start_import(
        self, body: dict[str, Any], files: dict[str, bytes], length: str | None
    ) -> Answer:
        if length is not None and length.isdigit() and int(length) > MAX_IMPORT_BODY_BYTES:
            return Answer(
                413,
                auth0_error(
                    413,
                    f"Payload content length greater than maximum allowed: {MAX_IMPORT_BODY_BYTES}",
                ),
            )
        connection_id = body["connection_id"]
        names = {v: k for k, v in self.connections.items()}
        if connection_id not in names:
            return self._bad("The connection does not exist.", "inexistent_connection")
        active = [j for j in self.jobs.values() if j.status in ("pending", "processing")]
        if len(active) >= MAX_ACTIVE_IMPORT_JOBS:
            return Answer(
                429,
                auth0_error(
                    429,
                    f"There are already {len(active)} import jobs running; wait for one to "
                    "finish before starting another.",
                    "too_many_requests",
                ),
            )
        content = files.get("users")
        if content is None:
            return self._bad("Payload validation error: 'Missing required property: users'.")
        try:
            users = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            return self._bad(f"Users file is not valid JSON: {exc}", "invalid_body")
        if not isinstance(users, list):
            return self._bad("Users file must be an array of users.", "invalid_body")
        job = ImportJob(
            id="job_" + "".join(self._rng.choices(_JOB_ID_ALPHABET, k=16)),
            connection_id=connection_id,
            connection=names[connection_id],
            users=users,
            upsert=body.get("upsert") == "true",
            external_id=body.get("external_id"),
            send_completion_email=body.get("send_completion_email", "true") == "true",
            created_at=time.time(),
            started=time.monotonic(),
            fail_with=self._next_job_failure,
        )
        self._next_job_failure = None
        self.jobs[job.id] = job
        document = job.document()
        document.pop("summary", None)
        return Answer(202, document)

    def _advance_jobs(self) -> None:
        now = time.monotonic()
        for job in self.jobs.values():
            if job.status in ("completed", "failed"):
                continue
            elapsed = now - job.started
            if elapsed < self.job_pending_seconds:
                continue
            if elapsed < self.job_pending_seconds + self.job_processing_seconds:
                job.status = "processing"
                continue
            if job.fail_with is not None:
                job.status = "failed"
                continue
            self._run_import(job)
            job.status = "completed"

    def _run_import(self, job: ImportJob) -> None:
        inserted = updated = failed = 0
        for entry in job.users:
            problems = _import_problems(entry)
            if problems:
                job.errors.append({"user": entry, "errors": problems})
                failed += 1
                continue
            email = entry["email"].lower()
            given = entry.get("user_id")
            existing = self._by_email(email, job.connection)
            if existing is None and given and f"auth0|{given}" in self.users:
                existing = self.users[f"auth0|{given}"]
            if existing is not None:
                if not job.upsert:
                    job.errors.append(
                        {
                            "user": entry,
                            "errors": [
                                {
                                    "code": "DUPLICATED_USER",
                                    "message": "The user already exist and upsert parameter "
                                    "is false",
                                }
                            ],
                        }
                    )
                    failed += 1
                    continue
                self._apply_import(existing, entry)
                self._store(existing)
                updated += 1
                continue
            auth0_id = f"auth0|{given}" if given else f"auth0|{secrets.token_hex(12)}"
            user = self._new_user(auth0_id, email, job.connection)
            self._apply_import(user, entry)
            self._store(user)
            self.created_per_email[email] += 1
            inserted += 1
        job.summary = {
            "failed": failed,
            "updated": updated,
            "inserted": inserted,
            "total": len(job.users),
        }

    @staticmethod
    def _apply_import(user: dict[str, Any], entry: Mapping[str, Any]) -> None:
        for key, value in entry.items():
            if key == "user_id":
                continue
            if key in ("app_metadata", "user_metadata"):
                user[key] = {**(user.get(key) or {}), **copy.deepcopy(value)}
            elif key == "email":
                user["email"] = value.lower()
            else:
                user[key] = value
        user["updated_at"] = _iso(time.time())

    def _job(self, job_id: str) -> Answer:
        job = self.jobs.get(job_id)
        if job is None:
            return Answer(404, auth0_error(404, "The job does not exist.", "inexistent_job"))
        document = job.document()
        if job.status == "processing":
            document["percentage_done"] = 50
            document["time_left_seconds"] = max(1, math.ceil(self.job_processing_seconds / 2))
        return Answer(200, document)

    def _job_errors(self, job_id: str) -> Answer:
        job = self.jobs.get(job_id)
        if job is None:
            return Answer(404, auth0_error(404, "The job does not exist.", "inexistent_job"))
        if job.status != "completed":
            document = {
                k: v
                for k, v in job.document().items()
                if k in ("id", "type", "status", "connection_id", "created_at", "status_details")
            }
            return Answer(200, document)
        if not job.errors:
            return Answer(204)
        return Answer(200, copy.deepcopy(job.errors))


def _b64(document: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(document)).rstrip(b"=").decode()


def _q_value(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value


def _q_term(clause: str) -> tuple[str, tuple[str, ...]] | None:
    """``field:value`` or ``field:(value OR value ...)`` (Lucene's grouping,
    which Auth0's search v3 takes): the field and the values any of which
    matches; ``None`` when the clause is none of these or names another field."""
    group = _Q_GROUP.fullmatch(clause)
    if group is not None:
        name, inner = group.group(1), group.group(2).strip()
        values = []
        position = 0
        while position < len(inner):
            match = _Q_ALTERNATIVE.match(inner, position)
            if match is None:
                return None
            values.append(_q_value(match.group(1)))
            position = match.end()
        if not values or name not in _Q_FIELDS:
            return None
        return name, tuple(values)
    match = _Q_TERM.fullmatch(clause)
    if match is None or match.group(1) not in _Q_FIELDS:
        return None
    return match.group(1), (_q_value(match.group(2)),)


def _matches(
    user: Mapping[str, Any], terms: list[tuple[str, tuple[str, ...]]], connection: str | None
) -> bool:
    identities = user.get("identities") or [{}]
    if connection is not None and identities[0].get("connection") != connection:
        return False
    for name, values in terms:
        if name == "identities.connection":
            actual: Any = identities[0].get("connection")
        elif name == "app_metadata.idstore_user_id":
            actual = (user.get("app_metadata") or {}).get("idstore_user_id")
        elif name == "blocked":
            actual = "true" if user.get("blocked") else "false"
        elif name == "email":
            actual, values = str(user.get("email", "")).lower(), tuple(v.lower() for v in values)
        else:
            actual = user.get(name)
        if actual not in values:
            return False
    return True


def _import_problems(entry: Any) -> list[dict[str, str]]:
    """What Auth0's import schema finds wrong with one user of a file."""
    if not isinstance(entry, dict):
        return [{"code": "INVALID_TYPE", "message": "Expected type object", "path": ""}]
    problems: list[dict[str, str]] = []

    def problem(code: str, message: str, path: str) -> None:
        problems.append({"code": code, "message": message, "path": path})

    email = entry.get("email")
    if email is None:
        problem("OBJECT_MISSING_REQUIRED_PROPERTY", "Missing required property: email", "")
    elif not isinstance(email, str) or not _EMAIL.fullmatch(email):
        problem(
            "INVALID_FORMAT",
            f"Error in email property - Object didn't pass validation for format email: {email}",
            "email",
        )
    for name in sorted(set(entry) - _IMPORT_FIELDS):
        problem("OBJECT_ADDITIONAL_PROPERTIES", f"Additional properties not allowed: {name}", "")
    user_id = entry.get("user_id")
    if user_id is not None and not (
        isinstance(user_id, str) and re.fullmatch(r"\S{1,255}", user_id)
    ):
        problem("INVALID_FORMAT", "user_id must be a string without spaces", "user_id")
    for name, limit in (("given_name", 150), ("family_name", 150), ("name", 300)):
        value = entry.get(name)
        if value is not None and not (isinstance(value, str) and 1 <= len(value) <= limit):
            problem("INVALID_FORMAT", f"{name} must be a string of 1 to {limit} characters", name)
    for name in ("email_verified", "blocked"):
        if name in entry and not isinstance(entry[name], bool):
            problem("INVALID_TYPE", f"Expected type boolean but found another type: {name}", name)
    for name in ("app_metadata", "user_metadata"):
        if name in entry and not isinstance(entry[name], dict):
            problem("INVALID_TYPE", f"Expected type object but found another type: {name}", name)
    return problems
