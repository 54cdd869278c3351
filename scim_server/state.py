"""What the running application holds: settings, the open store, the token
cache, the verifier of end users' access tokens."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.requests import Request

from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.tokens import Principal

from .access_tokens import AccessTokenVerifier
from .auth0_gateway import PropertyProvider, TicketIssuer


class TokenCache:
    """Principals of recently seen secrets, for ``ttl`` seconds, so that a busy
    client is not looked up in the database on every request. A revoked or
    expired token is refused at most ``ttl`` seconds late; ``ttl`` 0 disables
    the cache. Keys are SHA-256 digests, never secrets."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        self._entries[digest] = (time.monotonic() + self.ttl, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass(slots=True)
class AppState:
    settings: Settings
    store: Store
    tokens: TokenCache = field(default_factory=lambda: TokenCache(0))
    auth0_properties: PropertyProvider | None = None
    """Auth0 user properties for user reads (``None``: none configured)."""
    tickets: TicketIssuer | None = None
    """Password-change tickets (``None``: Auth0 is not configured)."""
    access_tokens: AccessTokenVerifier | None = None
    """End users' Auth0 access tokens (``/userinfo``); ``None`` when none
    are accepted (``IDSTORE_USERINFO_AUDIENCE`` unset, or no key source wired)."""


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.idstore
    return state
