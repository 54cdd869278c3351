"""A Rönd deployment in standalone mode on loopback, for the tests: the four
binding endpoints the push uses, answering as Rönd v1.15 does
(``service/standalone_apis.go`` and ``service/router.go`` of
github.com/rond-authz/rond; its bindings live in a CRUD service, here a
list in memory, in insertion order as MongoDB's natural order).

- ``POST /grant/bindings`` and ``POST
  /grant/bindings/resource/{resourceType}``, body ``{resourceId, subjects,
  groups, roles, permissions}``: a new binding with a ``uuid4``
  ``bindingId`` (and ``resource {resourceType, resourceId}`` with a type),
  answered ``200 {"bindingId"}``. A type without ``resourceId`` is 400
  ``missing resource id``; all four lists empty is 400 ``missing body
  fields, one of groups, permissions, subjects or roles is required``.
- ``POST /revoke/bindings`` and ``POST
  /revoke/bindings/resource/{resourceType}``, body ``{subjects, groups,
  resourceIds}``: the bindings that name any of ``subjects`` or
  ``groups`` (with a type, only those on one of ``resourceIds`` of that
  type; with a type, ids and neither subjects nor groups, every binding on
  those resources), **at most 200 of them** (``BINDINGS_MAX_PAGE_SIZE``:
  Rönd reads one page and leaves the rest); from each, the subjects and
  groups named are taken out; those left with neither are deleted, the
  others modified; ``200 {"deletedBindings", "modifiedBindings"}``.
  Nothing to match (no subjects, no groups, and no type with ids) is 400
  ``empty subjects and groups lists or resource ids``.

Rönd's quirks, kept: a body that does not decode into its Go struct (not
JSON, a list where a string list belongs) is a **500**, not a 400, with
Go's message as ``error``; error bodies are ``{"error": <technical>,
"message": "Internal server error, please try again later", "statusCode"}``
with ``content-type: application/json``; a success body is written without
a content type, so Go's sniffing labels it ``text/plain; charset=utf-8``.
An unknown path is 404 ``404 page not found`` (text), another method 405.
Rönd itself checks no credentials (a gateway in front may; tests inject
401/403 as that gateway would answer).

Tests inject a bad day: the next answers with a status
(:meth:`RondEmulator.fail_next`, a 429 or 503 with ``Retry-After``), after
applying the request or without (``apply``); the request applied, half its
answer sent and the connection dropped (:meth:`RondEmulator.drop_next`); a
raw answer (:meth:`RondEmulator.answer_next`). Everything seen is in
:attr:`RondEmulator.requests`, with the time it arrived.

It serves on ``127.0.0.1`` on a free port, with a real uvicorn in a
background thread (as :mod:`tests.emulators.auth0`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

GENERIC_BUSINESS_ERROR_MESSAGE = "Internal server error, please try again later"
"""Rönd's ``message`` of every error (``utils.GENERIC_BUSINESS_ERROR_MESSAGE``)."""

BINDINGS_MAX_PAGE_SIZE = 200
"""Bindings one revoke reads and changes at most (Rönd's TODO: no paging)."""

GRANT_FIELDS = {
    "resourceId": str,
    "subjects": list,
    "groups": list,
    "roles": list,
    "permissions": list,
}
REVOKE_FIELDS = {"subjects": list, "groups": list, "resourceIds": list}


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the emulator answered."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: Any
    """The parsed JSON body (``None`` when it is not JSON)."""
    status: int
    at: float
    """``time.monotonic()`` when it arrived."""
    injected: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    status: int
    retry_after: str | None = None
    apply: bool = False
    drop: bool = False
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    only: str | None = None
    """``"grant"`` or ``"revoke"``; ``None``: any request."""


class _Dropped(Response):
    """The status line, the headers (with the full ``Content-Length``) and
    half the body; then uvicorn closes the connection mid-body."""

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
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            threading.current_thread().name.startswith("rond-emulator")
            and record.getMessage().startswith("ASGI callable returned without completing")
        )


_quiet_drops = _QuietDrops()


class _Undecodable(Exception):
    """A body Go's ``json.Decoder`` would not decode into the request struct."""


def _decode(raw: bytes, fields: Mapping[str, type]) -> dict[str, Any]:
    """The request struct as Go's decoder fills it: unknown fields ignored,
    ``null`` as the zero value, a value of another type an error."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Undecodable(f"invalid character in request body ({exc})") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise _Undecodable(
            f"json: cannot unmarshal {type(document).__name__} into Go value of type struct"
        )
    decoded: dict[str, Any] = {}
    for name, kind in fields.items():
        value = document.get(name)
        if value is None:
            decoded[name] = "" if kind is str else []
            continue
        if kind is str and not isinstance(value, str):
            raise _Undecodable(
                f"json: cannot unmarshal into Go struct field .{name} of type string"
            )
        if kind is list and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise _Undecodable(
                f"json: cannot unmarshal into Go struct field .{name} of type []string"
            )
        decoded[name] = list(value) if kind is list else value
    return decoded


def _error(status: int, technical: str) -> Response:
    """Rönd's ``FailResponseWithCode``."""
    body = {"error": technical, "message": GENERIC_BUSINESS_ERROR_MESSAGE, "statusCode": status}
    return Response(orjson.dumps(body), status, media_type="application/json")


def _ok(document: Any) -> Response:
    """A success as Go writes it: no content type set, so sniffed as text."""
    return Response(orjson.dumps(document), 200, media_type="text/plain; charset=utf-8")


class RondEmulator:
    """The emulator; ``with RondEmulator() as rond:`` serves it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.bindings: list[dict[str, Any]] = []
        """Rönd's ``bindings`` collection, as its CRUD service keeps them
        (``bindingId``, ``subjects``, ``groups``, ``roles``,
        ``permissions``, ``resource``?)."""
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self.delay = 0.0
        """Seconds before each answer."""
        self.app = Starlette(
            routes=[
                Route("/grant/bindings", self._grant, methods=["POST"]),
                Route("/grant/bindings/resource/{resourceType}", self._grant, methods=["POST"]),
                Route("/revoke/bindings", self._revoke, methods=["POST"]),
                Route("/revoke/bindings/resource/{resourceType}", self._revoke, methods=["POST"]),
            ]
        )
        self.app.add_exception_handler(404, self._not_found)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    # -- Serving -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RondEmulator:
        logging.getLogger("uvicorn.error").addFilter(_quiet_drops)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="rond-emulator"
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

    def __enter__(self) -> RondEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def settings_fields(self) -> dict[str, Any]:
        """Settings fields that point the product at this deployment."""
        return {"rond_base_url": self.url}

    # -- Set-up and inspection by the tests -----------------------------------

    def reset(self) -> None:
        """No bindings, requests, faults or delay."""
        with self._lock:
            self.bindings.clear()
            self.requests.clear()
            self.faults.clear()
            self.delay = 0.0

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        retry_after: str | None = None,
        apply: bool = False,
        only: str | None = None,
    ) -> None:
        """The next ``count`` requests (of ``only``: ``"grant"`` or
        ``"revoke"``) are answered ``status`` with Rönd's error body,
        without applying them (``apply=True``: after applying them); with
        ``Retry-After: retry_after`` when given."""
        with self._lock:
            fault = Fault(status, retry_after=retry_after, apply=apply, only=only)
            self.faults.extend([fault] * count)

    def drop_next(self, count: int = 1, *, only: str | None = None) -> None:
        """The next ``count`` requests are applied, half their answer sent,
        and their connection dropped."""
        with self._lock:
            self.faults.extend([Fault(200, apply=True, drop=True, only=only)] * count)

    def answer_next(
        self,
        status: int,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        apply: bool = False,
        only: str | None = None,
    ) -> None:
        """The next request gets this answer as it is."""
        with self._lock:
            self.faults.append(
                Fault(status, apply=apply, body=body, headers=dict(headers or {}), only=only)
            )

    def add_binding(self, **binding: Any) -> str:
        """A binding put there as another tool would; its id."""
        with self._lock:
            stored = {"bindingId": str(uuid.uuid4()), **binding}
            self.bindings.append(stored)
            return str(stored["bindingId"])

    def bindings_of(self, *, subject: str | None = None, group: str | None = None) -> list[Any]:
        """The bindings naming ``subject`` (or ``group``), without their
        ids, as comparable tuples (``subjects, groups, roles, permissions,
        resource``), sorted."""
        with self._lock:
            found = [
                b
                for b in self.bindings
                if (subject is not None and subject in b.get("subjects", []))
                or (group is not None and group in b.get("groups", []))
            ]
            return sorted(_comparable(b) for b in found)

    def seen(self, kind: str | None = None) -> list[Seen]:
        """Requests seen (of ``"grant"`` or ``"revoke"``)."""
        with self._lock:
            return [r for r in self.requests if kind is None or _kind(r.path) == kind]

    # -- Answering -------------------------------------------------------------

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404 page not found\n", 404)

    def _take_fault(self, kind: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self.faults):
                if fault.only is None or fault.only == kind:
                    del self.faults[index]
                    return fault
        return None

    async def _answer(self, request: Request, apply: Any) -> Response:
        at = time.monotonic()
        raw = await request.body()
        kind = _kind(request.url.path)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        fault = self._take_fault(kind)
        if self.delay:
            await asyncio.sleep(self.delay)
        response = Response(b"", 500)
        if fault is None or fault.apply:
            with self._lock:
                response = apply(raw, request.path_params.get("resourceType", ""))
        if fault is not None:
            if fault.drop:
                response = _Dropped(response.body, response.status_code, media_type="text/plain")
            elif fault.body is not None:
                response = Response(fault.body, fault.status, headers=dict(fault.headers))
            else:
                response = _error(fault.status, f"injected {fault.status}")
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = fault.retry_after
        with self._lock:
            self.requests.append(
                Seen(
                    request.method,
                    request.url.path,
                    {k.lower(): v for k, v in request.headers.items()},
                    parsed,
                    response.status_code,
                    at,
                    injected=fault is not None,
                )
            )
        return response

    async def _grant(self, request: Request) -> Response:
        return await self._answer(request, self._apply_grant)

    async def _revoke(self, request: Request) -> Response:
        return await self._answer(request, self._apply_revoke)

    def _apply_grant(self, raw: bytes, resource_type: str) -> Response:
        """``grantHandler``."""
        try:
            body = _decode(raw, GRANT_FIELDS)
        except _Undecodable as exc:
            return _error(500, str(exc))
        if resource_type and not body["resourceId"]:
            return _error(400, "missing resource id")
        if not any(body[k] for k in ("groups", "permissions", "subjects", "roles")):
            return _error(
                400,
                "missing body fields, one of groups, permissions, subjects or roles is required",
            )
        binding: dict[str, Any] = {
            "bindingId": str(uuid.uuid4()),
            "groups": body["groups"],
            "permissions": body["permissions"],
            "roles": body["roles"],
            "subjects": body["subjects"],
        }
        if resource_type:
            binding["resource"] = {"resourceType": resource_type, "resourceId": body["resourceId"]}
        self.bindings.append(binding)
        return _ok({"bindingId": binding["bindingId"]})

    def _apply_revoke(self, raw: bytes, resource_type: str) -> Response:
        """``revokeHandler`` with ``buildQuery`` and ``prepareBindings``."""
        try:
            body = _decode(raw, REVOKE_FIELDS)
        except _Undecodable as exc:
            return _error(500, str(exc))
        subjects, groups, ids = body["subjects"], body["groups"], body["resourceIds"]
        has_resource_id = bool(resource_type) and bool(ids)
        if not has_resource_id and not (subjects or groups):
            return _error(400, "empty subjects and groups lists or resource ids")

        def matches(b: dict[str, Any]) -> bool:
            named = bool(set(b.get("subjects", [])) & set(subjects)) or bool(
                set(b.get("groups", [])) & set(groups)
            )
            if not resource_type:
                return named
            resource = b.get("resource") or {}
            on = resource.get("resourceType") == resource_type and resource.get("resourceId") in ids
            return on and (named or not (subjects or groups))

        page = [b for b in self.bindings if matches(b)][:BINDINGS_MAX_PAGE_SIZE]
        deleted = modified = 0
        for binding in page:
            if not subjects and not groups:
                self.bindings.remove(binding)
                deleted += 1
                continue
            binding["subjects"] = [s for s in binding.get("subjects", []) if s not in subjects]
            binding["groups"] = [g for g in binding.get("groups", []) if g not in groups]
            if not binding["subjects"] and not binding["groups"]:
                self.bindings.remove(binding)
                deleted += 1
            else:
                modified += 1
        return _ok({"deletedBindings": deleted, "modifiedBindings": modified})


def _kind(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


def _comparable(binding: Mapping[str, Any]) -> tuple[Any, ...]:
    b = copy.deepcopy(dict(binding))
    resource = b.get("resource")
    return (
        tuple(b.get("subjects", [])),
        tuple(b.get("groups", [])),
        tuple(b.get("roles", [])),
        tuple(b.get("permissions", [])),
        (resource["resourceType"], resource["resourceId"]) if resource else None,
    )
