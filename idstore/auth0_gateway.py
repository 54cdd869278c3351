"""The Auth0 services of the HTTP layer (:mod:`scim_server.auth0_gateway`),
backed by the sync's Auth0 client on the tenant's shared request budget:
the server's process opens one client for its user reads' properties
(:class:`identity_sync.auth0_properties.Auth0Properties`) and single
password-change tickets; none when Auth0 is not configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from identity_store.store import Store
from identity_sync import registry
from identity_sync.auth0 import Auth0Client
from identity_sync.auth0_properties import Auth0Properties
from identity_sync.auth_service import AuthServiceError, NotFound, Transient
from identity_sync.auth_service import Permanent as Refused
from identity_sync.clock import Clock, SystemClock
from scim_server.app import Auth0Services
from scim_server.auth0_gateway import AccountMissing, Auth0Refused, Auth0Unavailable


class Tickets:
    """:class:`scim_server.auth0_gateway.TicketIssuer` over the Auth0 client."""

    def __init__(self, client: Auth0Client, clock: Clock) -> None:
        self.client = client
        self.clock = clock

    async def password_change_ticket(self, auth_user_id: str) -> str:
        try:
            return await self.client.password_change_ticket(auth_user_id)
        except NotFound as exc:
            raise AccountMissing(exc.message) from exc
        except Transient as exc:
            wait = None
            if exc.retry_at is not None:
                wait = max(exc.retry_at - self.clock.now().timestamp(), 1.0)
            raise Auth0Unavailable(exc.message, retry_after=wait) from exc
        except (Refused, AuthServiceError) as exc:
            raise Auth0Refused(exc.message) from exc


@asynccontextmanager
async def open_auth0(store: Store, clock: Clock | None = None) -> AsyncIterator[Auth0Services]:
    """The services for ``store``'s settings, closed on exit."""
    clock = clock or SystemClock()
    client = registry.build_auth_service(store, clock)
    if client is None:
        yield Auth0Services()
        return
    properties = Auth0Properties(client, store.settings, clock=clock)
    try:
        yield Auth0Services(
            properties=properties if properties.names else None, tickets=Tickets(client, clock)
        )
    finally:
        await client.aclose()
