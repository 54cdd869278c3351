"""The push of roles and bindings to an external Rönd deployment (SPEC §6,
docs/authorization.md "Pushing to a Rönd deployment"): its client and its
outbox dispatcher.

**What a delivery does.** The store writes one ``rond`` row (operation
``sync``) per user and group whose bindings in Rönd change. Delivering a
user's (or group's) rows brings Rönd's bindings of that user to
:func:`identity_store.rbac.rond_state`, read when the delivery starts: one
``POST /revoke/bindings {"subjects": [id]}`` (``{"groups": [id]}``) takes
it out of every binding there, deleting those left with no subject and no
group, then one ``POST /grant/bindings[/resource/{resourceType}]`` per
binding it should hold, each naming it alone. Delivering twice leaves Rönd
as once. Rönd revokes at most 200 bindings per call (it reads one page of
its CRUD service), so the revoke is repeated while an answer counts 200.
Rönd has no atomic replace: between the revoke and the last grant, Rönd
holds only part of the user's bindings (documented).

**Rönd's API** (v1.15, ``service/standalone_apis.go``; the standalone
routes have no path prefix, ``PATH_PREFIX_STANDALONE`` applies to the
evaluation routes only): grant's body ``{resourceId, subjects, groups,
roles, permissions}`` answers ``{bindingId}``; revoke's ``{subjects,
groups, resourceIds}`` answers ``{deletedBindings, modifiedBindings}``;
errors are ``{error, message, statusCode}`` where ``error`` holds the
reason (``message`` is always "Internal server error, please try again
later"). Rönd forwards ``x-request-id`` to its CRUD service: the change's
request id goes there as ``X-Request-Id``.

Every answer is translated in one place, :func:`outcome_of`, into the
sync's error vocabulary (:mod:`identity_sync.auth_service`), which
:func:`identity_sync.account_rules.decide` turns into a retry or a dead
letter:

- 2xx: success; a body that is not the documented shape (or larger than
  :data:`MAX_BODY_BYTES`) is :class:`Permanent`;
- 400: :class:`Permanent` with Rönd's ``error`` kept (dead letter);
- 401, 403 (a gateway in front of Rönd refusing us): :class:`Permanent`
  with the status, which ``decide`` makes wait without counting an attempt
  (a configuration to fix, not the change's fault);
- 408, 5xx, timeouts, refused or dropped connections: :class:`Transient`
  (a 503's ``Retry-After`` honoured); Rönd answers a body it cannot decode
  with 500, which we never send;
- 429: :class:`Transient` ``throttled`` at its ``Retry-After`` (at most
  :data:`MAX_RETRY_WAIT_SECONDS` ahead), every worker paused until then;
- any other status (404: not a Rönd in standalone mode at that URL):
  :class:`Permanent`.

Each call is one line on ``idstore.rond`` (a JSON object: ``method``,
``path`` (the template), ``resource_type``, ``status``, ``outcome``,
``error``, ``duration_ms``, ``request_id``); never the user or group ids it
carries.

Written by hand: Rönd publishes no client library for Python; the HTTP side
is httpx (:class:`~identity_sync.remote_http.RemoteClient`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from identity_store import rbac
from identity_store.outbox import Claim, Delivered, OutboxRow
from identity_store.rbac import RondBinding
from identity_store.settings import Settings
from identity_store.store import Store

from .auth_service import (
    AuthServiceError,
    Permanent,
    RateLimiter,
    Transient,
    Unlimited,
    current_request_id,
)
from .clock import Clock, SystemClock
from .dispatcher import OutboxDispatcher
from .remote_http import RemoteClient, Unreadable, retry_after_at

__all__ = [
    "MAX_BODY_BYTES",
    "ROND",
    "GrantRequest",
    "Revoked",
    "RondClient",
    "RondDispatcher",
    "outcome_of",
]

log = logging.getLogger("idstore.rond")

ROND = rbac.ROND
"""The outbox target."""

MAX_BODY_BYTES = 65_536
"""Largest answer read: Rönd's answers are a few dozen bytes."""

MAX_RETRY_WAIT_SECONDS = 300.0
"""Furthest ahead a ``Retry-After`` may set the next try."""

MAX_MESSAGE_LENGTH = 500
"""Longest error taken from Rönd's answer."""

REVOKE_PAGE = 200
"""Bindings one revoke changes at most (Rönd's ``BINDINGS_MAX_PAGE_SIZE``)."""

MAX_REVOKE_ROUNDS = 100
"""Revokes of one delivery at most (20,000 bindings); a Rönd that keeps
counting a full page is not making progress."""

MAX_BINDING_ID_LENGTH = 256
MAX_REQUEST_ID_LENGTH = 256
"""Longest ``X-Request-Id`` sent (the coalesced rows' ids, joined by commas)."""

MAX_BINDING_IDS_KEPT = 100
"""Rönd binding ids kept in the sync record of a delivery."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_UNSAFE = re.compile(r"[^\x21-\x7e]")

Outcome = Literal["ok", "throttled", "transient", "refused", "permanent"]


def _clean(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    return _CONTROL.sub(" ", text)[:limit]


def _error_of(body: bytes) -> str:
    """Rönd's ``error`` (the reason) and ``message`` of an error body, or
    the start of a body that is not Rönd's."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _clean(body.decode("utf-8", "replace").strip(), 200)
    if not isinstance(document, dict):
        return ""
    parts = [document.get("error"), document.get("message")]
    return ": ".join(_clean(p) for p in parts if isinstance(p, str) and p)


def outcome_of(
    status: int, headers: httpx.Headers, body: bytes, now: float
) -> AuthServiceError | None:
    """What Rönd's answer means (module docstring): ``None`` for success,
    else the error to raise. ``now`` is epoch seconds."""
    if 200 <= status < 300:
        return None
    described = _error_of(body) or "no detail"
    if status == 400:
        return Permanent(f"Rönd refused the request (400 {described})", status=status)
    if status in (401, 403):
        return Permanent(
            f"Rönd's gateway refused the call ({status} {described}); check what "
            "IDSTORE_ROND_BASE_URL points at and the gateway's access rules",
            status=status,
        )
    if status == 429:
        return Transient(
            f"throttled by Rönd (429 {described})",
            status=status,
            retry_at=retry_after_at(headers, now, longest=MAX_RETRY_WAIT_SECONDS),
            throttled=True,
        )
    if status == 408 or status >= 500:
        return Transient(
            f"Rönd failed (status {status}: {described})",
            status=status,
            retry_at=retry_after_at(headers, now, longest=MAX_RETRY_WAIT_SECONDS),
        )
    if status == 404:
        return Permanent(
            f"no such endpoint (404 {described}): is IDSTORE_ROND_BASE_URL a Rönd "
            "in standalone mode?",
            status=status,
        )
    return Permanent(f"Rönd refused the request ({status} {described})", status=status)


def _outcome_name(error: AuthServiceError | None) -> Outcome:
    if error is None:
        return "ok"
    if isinstance(error, Transient):
        return "throttled" if error.throttled else "transient"
    if error.status in (401, 403):
        return "refused"
    return "permanent"


def _request_id_header(request_id: str | None) -> dict[str, str]:
    if not request_id:
        return {}
    value = _HEADER_UNSAFE.sub("", request_id)[:MAX_REQUEST_ID_LENGTH]
    return {"X-Request-Id": value} if value else {}


def _document(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Permanent(f"Rönd's answer to {what} is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise Permanent(f"Rönd's answer to {what} is not an object")
    return document


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= REVOKE_PAGE:
        return value
    return None


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """One grant, ready to send."""

    template: str
    path: str
    body: dict[str, Any]
    resource_type: str | None


@dataclass(frozen=True, slots=True)
class Revoked:
    """What one revoke did."""

    deleted: int
    modified: int

    @property
    def touched(self) -> int:
        return self.deleted + self.modified


class RondClient(RemoteClient):
    """Rönd's grant and revoke (module docstring); use as ``async with``."""

    name = ROND

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if not settings.rond_base_url:
            raise ValueError("Rönd is not configured (IDSTORE_ROND_BASE_URL)")
        self.base_url = settings.rond_base_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self.limiter: RateLimiter = limiter or Unlimited()
        self.max_body_bytes = max_body_bytes
        super().__init__(
            timeout=settings.rond_timeout_seconds,
            connections=settings.outbox_concurrency + 2,
            user_agent="idstore-rond-push",
            transport=transport,
        )

    @staticmethod
    def grant_request(binding: RondBinding) -> GrantRequest:
        """The grant that makes ``binding`` (:class:`Permanent` for one Rönd
        cannot take: its path cannot carry a resource type that is empty or
        holds a ``/``, and it refuses a type without a resource id)."""
        body: dict[str, Any] = {
            "subjects": list(binding.subjects),
            "groups": list(binding.groups),
            "roles": list(binding.roles),
            "permissions": list(binding.permissions),
        }
        if binding.resource is None:
            return GrantRequest("/grant/bindings", "/grant/bindings", body, None)
        resource_type = binding.resource.type
        if not resource_type or "/" in resource_type or not binding.resource.id:
            raise Permanent(
                "Rönd cannot take a binding on a resource whose type is empty or holds "
                f"a '/' ({_clean(resource_type, 100)!r}), or whose id is empty"
            )
        body["resourceId"] = binding.resource.id
        return GrantRequest(
            "/grant/bindings/resource/{resourceType}",
            f"/grant/bindings/resource/{quote(resource_type, safe='')}",
            body,
            resource_type,
        )

    async def grant(self, binding: RondBinding | GrantRequest) -> str:
        """``POST /grant/bindings`` (``/resource/{resourceType}`` for a
        binding on a resource): a new binding; Rönd's id of it."""
        request = binding if isinstance(binding, GrantRequest) else self.grant_request(binding)
        answer = await self._call(
            request.template, request.path, request.body, request.resource_type
        )
        binding_id = _document(answer, "a grant").get("bindingId")
        if (
            not isinstance(binding_id, str)
            or not binding_id
            or len(binding_id) > MAX_BINDING_ID_LENGTH
            or _CONTROL.search(binding_id)
        ):
            raise Permanent("Rönd's answer to a grant has no usable bindingId")
        return binding_id

    async def revoke(self, *, subjects: Sequence[str] = (), groups: Sequence[str] = ()) -> Revoked:
        """``POST /revoke/bindings``: ``subjects`` and ``groups`` taken out
        of the bindings naming them, on any resource (at most
        :data:`REVOKE_PAGE` bindings per call)."""
        body: dict[str, Any] = {}
        if subjects:
            body["subjects"] = list(subjects)
        if groups:
            body["groups"] = list(groups)
        if not body:
            raise ValueError("a revoke names subjects or groups")
        answer = _document(
            await self._call("/revoke/bindings", "/revoke/bindings", body, None), "a revoke"
        )
        deleted = _count(answer.get("deletedBindings"))
        modified = _count(answer.get("modifiedBindings"))
        if deleted is None or modified is None or deleted + modified > REVOKE_PAGE:
            raise Permanent("Rönd's answer to a revoke has no usable counts")
        return Revoked(deleted, modified)

    async def _call(
        self, template: str, path: str, body: Mapping[str, Any], resource_type: str | None
    ) -> bytes:
        """Send one request; its body when Rönd took it, else the error
        (:func:`outcome_of`)."""
        await self.limiter.acquire()
        request_id = current_request_id.get()
        request = self._http.build_request(
            "POST",
            f"{self.base_url}{path}",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", **_request_id_header(request_id)},
        )
        line: dict[str, Any] = {
            "event": "rond_call",
            "method": "POST",
            "path": template,
            "resource_type": _clean(resource_type, 100) if resource_type else None,
            "request_id": request_id,
        }
        started = time.perf_counter()
        try:
            answer = await self._receive(request, max_body_bytes=self.max_body_bytes, who="Rönd")
        except Unreadable as exc:
            self._log(line, None, "permanent", "unreadable", started)
            raise Permanent(str(exc)) from exc
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            self._log(line, None, "transient", type(exc).__name__, started)
            what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
            raise Transient(f"Rönd request {what} ({type(exc).__name__})") from exc
        error = outcome_of(answer.status, answer.headers, answer.body, self.clock.now().timestamp())
        self._log(
            line, answer.status, _outcome_name(error), error.message if error else None, started
        )
        if error is None:
            return answer.body
        if isinstance(error, Transient) and error.throttled and error.retry_at is not None:
            await self.limiter.pause_until(error.retry_at)
        raise error

    @staticmethod
    def _log(
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
        log.log(
            logging.INFO if outcome == "ok" else logging.WARNING, "%s", orjson.dumps(line).decode()
        )


class RondDispatcher(OutboxDispatcher[list[RondBinding]]):
    """Delivers the ``rond`` rows (module docstring)."""

    def __init__(
        self,
        store: Store,
        client: RondClient,
        *,
        clock: Clock | None = None,
        name: str = "dispatcher",
    ) -> None:
        super().__init__(store, ROND, clock=clock, name=name)
        self.client = client

    async def close(self) -> None:
        await self.client.aclose()

    async def look_up(self, claims: Sequence[Claim]) -> Mapping[str, list[RondBinding]]:
        """Each claim's user or group's bindings as Rönd should hold them;
        a row of another kind is left out (and dead-lettered)."""
        found: dict[str, list[RondBinding]] = {}
        for claim in claims:
            if claim.aggregate_type in ("User", "Group"):
                found[claim.aggregate_id] = await rbac.rond_state(
                    self.store, claim.aggregate_type, claim.aggregate_id
                )
        return found

    async def carry_out(self, claim: Claim, found: list[RondBinding] | None) -> Delivered:
        if found is None:
            raise Permanent(f"no Rönd delivery for {claim.aggregate_type!r} rows")
        grants = [self.client.grant_request(b) for b in found]  # refused before revoking
        whom = {"subjects" if claim.aggregate_type == "User" else "groups": [claim.aggregate_id]}
        revoked = Revoked(0, 0)
        for _ in range(MAX_REVOKE_ROUNDS):
            page = await self.client.revoke(**whom)
            revoked = Revoked(revoked.deleted + page.deleted, revoked.modified + page.modified)
            if page.touched < REVOKE_PAGE:
                break
        else:
            raise Permanent(
                f"Rönd still finds bindings to revoke after {MAX_REVOKE_ROUNDS} revokes"
            )
        ids = [await self.client.grant(grant) for grant in grants]
        return Delivered(
            claim,
            f"synced: {len(ids)} bindings granted, {revoked.touched} revoked",
            synced={"bindings": len(ids), "bindingIds": ids[:MAX_BINDING_IDS_KEPT]},
        )

    async def describe(self, rows: Sequence[OutboxRow]) -> Mapping[int, Mapping[str, object]]:
        described: dict[int, Mapping[str, object]] = {}
        states: dict[tuple[str, str], list[RondBinding]] = {}
        for row in rows:
            key = (row.aggregate_type, row.aggregate_id)
            if row.aggregate_type not in ("User", "Group"):
                continue
            if key not in states:
                states[key] = await rbac.rond_state(self.store, *key)
            described[row.id] = {
                "revoke": "subjects" if row.aggregate_type == "User" else "groups",
                "grants": len(states[key]),
                "on_resources": sum(1 for b in states[key] if b.resource is not None),
            }
        return described
