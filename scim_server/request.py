"""Reading SCIM requests: bodies, preconditions, the caller (RFC 7644 §3.1, §3.14)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from identity_store.actor import Actor
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.tokens import Principal

from .auth import authenticate, require
from .errors import ScimError
from .state import AppState, app_state

JSON_TYPES = ("application/scim+json", "application/json")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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


def base_url(request: Request, state: AppState) -> str:
    """The SCIM base URL used in ``meta.location`` and ``$ref``."""
    if state.settings.base_url:
        return state.settings.base_url.rstrip("/") + "/scim/v2"
    return f"{request.url.scheme}://{request.url.netloc}/scim/v2"


async def authorize(request: Request, scope: str) -> AuthorizedRequest:
    """Authenticate the request and check it may use ``scope``."""
    state = app_state(request)
    principal = await authenticate(request)
    require(principal, scope)
    actor = Actor(
        name=f"token:{principal.name}",
        token_id=principal.token_id,
        request_id=request.scope.get("state", {}).get("request_id"),
    )
    return AuthorizedRequest(request, state, principal, actor, base_url(request, state))


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(raw: bytes, limit: int) -> None:
    """400 ``invalidSyntax`` when ``raw`` nests arrays and objects deeper than
    ``limit``, found by one linear pass over the bytes outside strings, before
    the standard library's recursive parser (which raises ``RecursionError``
    at about 1,500 levels) sees them. An unterminated document counts the
    levels it opened."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # nothing to scan: most bodies
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                raise ScimError(
                    400, f"the request body nests deeper than {limit} levels", "invalidSyntax"
                )
        else:
            depth -= 1


def _nul_path(body: Any) -> str | None:
    """Where in ``body`` a string (key or value) holds a NUL character,
    walked without recursion; ``None`` when none does."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return f"{where}.{key!r}".lstrip(".")
                stack.append((f"{where}.{key}".lstrip("."), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


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

    415 for a media type that is not JSON, 413 ``tooLarge`` past ``limit``
    bytes (``maxPayloadSize``, checked while reading, so a missing ``Content-Length`` does not
    get around it), 400 ``invalidSyntax`` for malformed JSON (invalid UTF-8,
    raw or escaped lone surrogates, integers of more digits than Python
    converts, nesting deeper than ``max_depth``) or a non-object, 400
    ``invalidValue`` for a NUL character in any string (``nul_allowed``:
    left to the caller, as ``/Bulk`` leaves it to each operation).
    """
    limit = settings.max_payload_size
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise ScimError(415, f"unsupported media type {content_type!r}; send {JSON_TYPES[0]}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ScimError(413, f"the request body exceeds {limit} bytes", "tooLarge")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ScimError(413, f"the request body exceeds {limit} bytes", "tooLarge")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ScimError(400, "the request body is empty", "invalidSyntax")
    check_depth(raw, settings.max_json_depth)
    try:
        # Decoded strictly here: json.loads(bytes) decodes with
        # "surrogatepass", which lets raw UTF-8 surrogates (ED A0 80) through.
        text = raw.decode(json.detect_encoding(raw))
        # The standard library, not orjson: orjson reads an integer beyond
        # 64 bits as a float, silently changing it.
        body = json.loads(text)
        if _SURROGATE_ESCAPE.search(raw):
            # A \uD800-\uDFFF escape that does not pair up leaves a lone
            # surrogate no database can store: refuse it here, not with a 500.
            json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ScimError(
            400, "the request body has an unpaired UTF-16 surrogate escape", "invalidSyntax"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ScimError(
            400, f"the request body is not valid UTF-8: {exc}", "invalidSyntax"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, and the ValueError of an integer longer than
        # sys.get_int_max_str_digits().
        raise ScimError(400, f"the request body is not valid JSON: {exc}", "invalidSyntax") from exc
    if not isinstance(body, dict):
        raise ScimError(400, "the request body must be a JSON object", "invalidSyntax")
    if not nul_allowed and "\\u0000" in text:
        where = _nul_path(body)
        if where is not None:
            raise ScimError(400, f"{where} contains a NUL character", "invalidValue")
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
