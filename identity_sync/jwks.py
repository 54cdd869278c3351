"""The Auth0 tenant's signing keys (its JSON Web Key Set), for the server to
verify end users' access tokens (``GET /api/v1/userinfo``): fetched from
``{IDSTORE_AUTH0_BASE_URL}/.well-known/jwks.json``, held, fetched again.

- **Bounded.** One request at a time (concurrent look-ups wait for the
  fetch in flight instead of sending their own), a timeout, an answer of
  at most :data:`MAX_JWKS_BYTES` and :data:`MAX_KEYS` keys; only RSA
  signing keys for RS256 with a key id are kept, anything else in the set
  is skipped.
- **Held.** The keys serve for ``userinfo_jwks_cache_seconds``; then the
  next look-up fetches them again (while one does, the others answer from
  the keys held). A fetch that fails keeps the keys held: a tenant that is
  briefly away does not refuse every token.
- **Refreshed on an unknown key id, within a limit.** A token signed with a
  key not held (Auth0 rotated its keys) makes a fetch, but never sooner
  than ``userinfo_jwks_min_refresh_seconds`` after the last attempt,
  failed ones included: a flood of tokens with made-up key ids costs the
  tenant one request per interval, and an unreachable tenant is not asked
  again on every request.

:meth:`JwksClient.signing_key` answers a key (the JWK as a dict), ``None``
when the tenant does not list the id, or raises :class:`JwksUnavailable`
when no key set could ever be fetched. The server sees it through its own
key-source interface (:mod:`scim_server.access_tokens`), wired by the
composition root (:mod:`idstore.asgi`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from identity_store.settings import Settings

from .remote_http import RemoteClient, Unreadable

__all__ = ["MAX_JWKS_BYTES", "MAX_KEYS", "JwksClient", "JwksUnavailable"]

log = logging.getLogger("idstore.jwks")

MAX_JWKS_BYTES = 65_536
"""Largest key set read (Auth0's is about 3 KB: two or three keys)."""

MAX_KEYS = 50
"""Most keys a set may list; a longer one is refused whole."""

MAX_KID_LENGTH = 256
JWKS_PATH = "/.well-known/jwks.json"


class JwksUnavailable(Exception):
    """No key set is held and none could be fetched now."""


def _usable(key: Any) -> str | None:
    """The key id of ``key`` when it is an RSA signing key for RS256, else ``None``."""
    if not isinstance(key, dict):
        return None
    kid = key.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        return None
    if key.get("kty") != "RSA" or key.get("use", "sig") != "sig":
        return None
    if key.get("alg", "RS256") != "RS256":
        return None
    if not isinstance(key.get("n"), str) or not isinstance(key.get("e"), str):
        return None
    return kid


def parse_key_set(body: bytes) -> dict[str, dict[str, Any]]:
    """The usable keys of a JWKS document, by key id (:class:`JwksUnavailable`
    when it is not one)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JwksUnavailable(f"the key set is not JSON ({exc})") from exc
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksUnavailable('the key set has no "keys" list')
    if len(keys) > MAX_KEYS:
        raise JwksUnavailable(f"the key set lists {len(keys):,} keys; at most {MAX_KEYS} read")
    found: dict[str, dict[str, Any]] = {}
    for key in keys:
        kid = _usable(key)
        if kid is not None:
            found.setdefault(
                kid, {k: key[k] for k in ("kty", "use", "alg", "kid", "n", "e") if k in key}
            )
    return found


class JwksClient(RemoteClient):
    """The tenant's signing keys (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.auth0_base_url:
            raise ValueError("the signing keys need IDSTORE_AUTH0_BASE_URL")
        super().__init__(
            timeout=settings.auth0_timeout_seconds,
            connections=1,
            user_agent="idstore-jwks",
            transport=transport,
        )
        self.url = settings.auth0_base_url + JWKS_PATH
        self.cache_seconds = settings.userinfo_jwks_cache_seconds
        self.min_refresh_seconds = settings.userinfo_jwks_min_refresh_seconds
        self._monotonic = monotonic
        self._keys: dict[str, dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._tried_at: float | None = None
        self._error = "the signing keys were never fetched"
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Requests sent to the tenant so far."""

    async def signing_key(self, kid: str) -> Mapping[str, Any] | None:
        """The key ``kid`` as the tenant lists it; ``None`` when it does not
        (after a fetch, if the interval allowed one)."""
        keys = self._keys
        asked = self._monotonic()
        fresh = asked - self._fetched_at < self.cache_seconds
        if keys is not None and kid in keys and (fresh or self._lock.locked()):
            return keys[kid]  # held and fresh, or being fetched again by another look-up
        await self._refresh(asked)
        if self._keys is None:
            raise JwksUnavailable(self._error)
        return self._keys.get(kid)

    async def _refresh(self, asked: float) -> None:
        async with self._lock:
            tried = self._tried_at
            if tried is not None and (tried >= asked or asked - tried < self.min_refresh_seconds):
                return  # fetched while this look-up waited, or too soon after the last try
            self._tried_at = self._monotonic()
            try:
                self._keys = await self._fetch()
                self._fetched_at = self._tried_at
            except JwksUnavailable as exc:
                self._error = str(exc)
                held = "keeping the keys held" if self._keys is not None else "no keys held"
                log.warning("jwks: cannot fetch %s: %s (%s)", self.url, exc, held)

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        self.fetches += 1
        request = self._http.build_request("GET", self.url)
        try:
            answer = await self._receive(request, max_body_bytes=MAX_JWKS_BYTES, who="the JWKS")
        except Unreadable as exc:
            raise JwksUnavailable(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise JwksUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if answer.status != 200:
            raise JwksUnavailable(f"the tenant answered {answer.status}")
        keys = parse_key_set(answer.body)
        log.info("jwks: %d signing key(s) fetched from %s", len(keys), self.url)
        return keys
