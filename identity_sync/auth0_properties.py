"""Auth0 user properties for the management API's reads (docs/management-api.md,
"Auth0 properties"): ``auth0_user_properties`` (such as ``last_login``,
``logins_count``) of the accounts of a page of users, read through the Auth0
client (the tenant's shared request budget, its answers checked) and kept
for ``auth0_properties_cache_seconds`` in a cache of at most
``auth0_properties_cache_size`` accounts.

A page's accounts that are not cached are asked for in user searches by id
(:meth:`~identity_sync.auth0.Auth0Client.properties_of`, 50 per search),
one after the other, all within ``auth0_timeout_seconds``: a read never
waits on Auth0 longer than that. An account Auth0 does not have is cached
as having none. What Auth0 could not answer (throttled, unreachable, too
slow) is left out of the answer and not cached, so the next read asks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from identity_store.settings import Settings

from .auth0 import Auth0Client, search_batches
from .auth_service import AuthServiceError
from .clock import Clock, SystemClock

__all__ = ["Auth0Properties", "PropertyCache"]

log = logging.getLogger("idstore.auth0")


class PropertyCache:
    """Properties by account id, each kept ``ttl`` seconds, the least
    recently used dropped beyond ``size`` accounts (``size`` or ``ttl`` 0:
    nothing is kept)."""

    def __init__(self, *, ttl: float, size: int, clock: Clock) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def get(self, auth_user_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(auth_user_id)
        if entry is None:
            return None
        if entry[0] <= self._now():
            del self._entries[auth_user_id]
            return None
        self._entries.move_to_end(auth_user_id)
        return entry[1]

    def put(self, auth_user_id: str, properties: dict[str, Any]) -> None:
        if self.ttl <= 0 or self.size <= 0:
            return
        self._entries[auth_user_id] = (self._now() + self.ttl, properties)
        self._entries.move_to_end(auth_user_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Auth0Properties:
    """The configured Auth0 properties of accounts, cached (module docstring).
    Implements :class:`scim_server.auth0_gateway.PropertyProvider`."""

    def __init__(
        self,
        client: Auth0Client,
        settings: Settings,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.names: tuple[str, ...] = tuple(settings.auth0_user_properties)
        self.deadline = settings.auth0_timeout_seconds
        self.cache = PropertyCache(
            ttl=settings.auth0_properties_cache_seconds,
            size=settings.auth0_properties_cache_size,
            clock=clock or SystemClock(),
        )
        self.searches = 0
        """User searches sent so far."""

    async def properties(self, auth_user_ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        """The properties of each account of ``auth_user_ids`` that is known
        (cached, or answered now): ``{}`` for an account Auth0 does not have;
        absent for an account Auth0 could not be asked about."""
        if not self.names:
            return {}
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for auth_id in dict.fromkeys(auth_user_ids):
            cached = self.cache.get(auth_id)
            if cached is None:
                missing.append(auth_id)
            else:
                found[auth_id] = cached
        if not missing:
            return found
        try:
            async with asyncio.timeout(self.deadline):
                for batch in search_batches(missing):
                    self.searches += 1
                    answered = await self.client.properties_of(batch, self.names)
                    for auth_id in batch:
                        values = answered.get(auth_id, {})
                        self.cache.put(auth_id, values)
                        found[auth_id] = values
        except TimeoutError:
            log.warning("auth0 properties: Auth0 did not answer within %ss", self.deadline)
        except AuthServiceError as exc:
            log.warning("auth0 properties: not read (%s)", exc.message)
        return found
