"""Reading SCIM requests: bodies, preconditions, the caller (RFC 7644 §3.1, §3.14)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from identity_store.actor import Actor
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.tokens import Principal

from . import json_body
from .auth import authenticate, require
from .errors import ScimError
from .state import AppState, app_state

JSON_TYPES = ("application/scim+json", "application/json")


@dataclass(slots=True)
class AuthorizedRequest:
    """A SCIM request whose bearer token was checked for the scope it needs."""

    request: Request
    state: AppState
    principal: Principal
    actor: Actor
    base_url: str

    @property
    def store(self) -> Store:
        return self.state.store


_BASE_URLS: dict[tuple[str, bytes | None, Any], str] = {}
MAX_BASE_URLS = 64
"""How many (scheme, ``Host``, server address) combinations :func:`base_url`
remembers: a client chooses its ``Host`` header, so the memo is bounded."""


def _host_header(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"host":
            return value
    return None


def base_url(request: Request, state: AppState) -> str:
    """The SCIM base URL used in ``meta.location`` and ``$ref``.

    Without a configured base URL it comes from the request's scheme and
    authority as Starlette reads them (``request.url``), which depend on the
    scheme, the ``Host`` header and the server's address alone: each
    combination is worked out once (building ``request.url`` costs more than
    the rest of authorizing a request)."""
    if state.settings.base_url:
        return state.settings.base_url.rstrip("/") + "/scim/v2"
    scope = request.scope
    server = scope.get("server")
    key = (
        scope.get("scheme", "http"),
        _host_header(scope["headers"]),
        tuple(server) if server is not None else None,
    )
    known = _BASE_URLS.get(key)
    if known is None:
        known = f"{request.url.scheme}://{request.url.netloc}/scim/v2"
        if len(_BASE_URLS) < MAX_BASE_URLS:
            _BASE_URLS[key] = known
    return known


async def authorize(request: Request, scope: str) -> AuthorizedRequest:
    """Authenticate the request and check it may use ``scope``."""
    state = app_state(request)
    principal = await authenticate(request, state)
    require(principal, scope)
    request_state = request.scope.get("state")
    actor = Actor(
        name=f"token:{principal.name}",
        token_id=principal.token_id,
        request_id=request_state.get("request_id") if request_state else None,
    )
    return AuthorizedRequest(request, state, principal, actor, base_url(request, state))


def refuse_nul(value: str, what: str) -> None:
    """400 ``invalidValue`` for a NUL character, which no SCIM attribute may
    hold and PostgreSQL cannot store in text."""
    if "\x00" in value:
        raise ScimError(400, f"{what} contains a NUL character", "invalidValue")


def path_id(request: Request) -> str:
    """The ``{id}`` of the request's path, refused when no resource could have it."""
    value = str(request.path_params["id"])
    refuse_nul(value, "the id in the path")
    return value


async def read_json(
    request: Request, settings: Settings, *, nul_allowed: bool = False
) -> dict[str, Any]:
    """The request's JSON object, or the right SCIM error.

    415 for a media type that is not JSON; then :mod:`scim_server.json_body`'s
    limits: 413 ``tooLarge`` past ``maxPayloadSize`` bytes, 400
    ``invalidSyntax`` for malformed JSON (invalid UTF-8, raw or escaped lone
    surrogates, integers of more digits than Python converts, nesting deeper
    than ``IDSTORE_MAX_JSON_DEPTH``), 400 ``invalidValue`` for a NUL
    character in any string (``nul_allowed``: left to the caller, as
    ``/Bulk`` leaves it to each operation); and 400 ``invalidSyntax`` for an
    empty body or one that is not an object.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise ScimError(415, f"unsupported media type {content_type!r}; send {JSON_TYPES[0]}")
    try:
        raw = await json_body.read_limited(
            request.stream(), request.headers.get("content-length"), settings.max_payload_size
        )
        if not raw.strip():
            raise ScimError(400, "the request body is empty", "invalidSyntax")
        body = json_body.parse(raw, settings.max_json_depth, nul_allowed=nul_allowed)
    except json_body.BodyError as exc:
        raise ScimError(exc.status, exc.detail, exc.kind) from exc
    if not isinstance(body, dict):
        raise ScimError(400, "the request body must be a JSON object", "invalidSyntax")
    return body


_ETAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')
"""One of our versions: a 64-bit counter, so a longer number is no version
of ours (and never reaches ``int()``, which refuses 4,300 digits and more)."""


def _versions(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


def if_match_version(request: Request) -> int | None:
    """The version ``If-Match`` requires, ``None`` when absent or ``*``.

    A tag that is not one of ours can never match: 412 right away.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = _versions(header)
    if len(tags) != 1:
        raise ScimError(412, "If-Match must name exactly one version")
    match = _ETAG.match(tags[0])
    if match is None:
        raise ScimError(412, f"If-Match {tags[0]!r} does not match the resource's version")
    return int(match.group(1))


def if_none_match(request: Request, version: int) -> bool:
    """Whether ``If-None-Match`` names ``version`` (or ``*``): answer 304."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    for tag in _versions(header):
        if tag == "*":
            return True
        match = _ETAG.match(tag)
        if match is not None and int(match.group(1)) == version:
            return True
    return False
