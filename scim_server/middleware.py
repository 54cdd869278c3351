"""ASGI middleware: request ids and SCIM path normalisation."""

from __future__ import annotations

import random
import re

from scim2_models import ScimProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

SCIM_PREFIX = "/scim/v2"
CANONICAL_SEGMENTS = {
    name.lower(): name
    for name in (
        "Users",
        "Groups",
        "Me",
        "Bulk",
        "Schemas",
        "ResourceTypes",
        "ServiceProviderConfig",
        ".search",
    )
}


class RequestIdMiddleware:
    """Gives every request an id (the caller's ``X-Request-Id`` when it is
    sane, a new one otherwise), stores it in ``scope["state"]`` for the audit
    log and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    request_id = candidate
                break
        # Not a secret, only distinct: the Mersenne Twister's 64 bits, not a
        # system call for os.urandom's (secrets.token_hex) on every request.
        request_id = request_id or f"{random.getrandbits(64):016x}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class ScimPathMiddleware:
    """Resource paths in any letter case (``/scim/v2/users``), as Microsoft's
    SCIM test collection sends them, reach the canonical routes; a trailing
    slash is ignored."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.lower().startswith(SCIM_PREFIX):
                rest = path[len(SCIM_PREFIX) :].rstrip("/")
                parts = rest.split("/")
                if len(parts) > 1:
                    parts[1] = CANONICAL_SEGMENTS.get(parts[1].lower(), parts[1])
                if len(parts) > 2 and parts[2].lower() == ".search":
                    parts[2] = ".search"
                normalised = SCIM_PREFIX + "/".join(parts)
                if normalised != path:
                    scope = dict(scope)
                    scope["path"] = normalised
                    scope["raw_path"] = normalised.encode()
        await self.app(scope, receive, send)


class ProviderMiddleware:
    """Runs each request inside the service's :class:`~scim2_models.ScimProvider`
    block, so scim2-models reads every payload under its policy (see
    :func:`scim_server.schemas.entra_tolerant_policy`). The block is a context
    variable, hence per request rather than once in the lifespan."""

    def __init__(self, app: ASGIApp, provider: ScimProvider) -> None:
        self.app = app
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.provider:
            await self.app(scope, receive, send)
