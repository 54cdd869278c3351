"""The Starlette application: ``create_app(settings)`` builds everything."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from identity_store.settings import Settings
from identity_store.store import Store

from . import api as management_api
from . import errors
from .access_tokens import AccessTokenVerifier, KeySource
from .auth0_gateway import PropertyProvider, TicketIssuer
from .discovery import provider
from .health import healthz, readyz
from .middleware import ProviderMiddleware, RequestIdMiddleware, ScimPathMiddleware
from .routes import RouteGroup, scim_routes
from .state import AppState, TokenCache

Background = Callable[[Store], AbstractAsyncContextManager[None]]
"""Something that runs beside the server while it serves, given the open
store: the composition root passes the in-process worker (SQLite default)."""

KeySourceFactory = Callable[[Settings], KeySource]
"""Makes the Auth0 tenant's signing keys (the composition root passes the
JWKS client of :mod:`identity_sync`); closed at shutdown."""


@dataclass(frozen=True, slots=True)
class Auth0Services:
    """What the HTTP layer asks of Auth0 (:mod:`scim_server.auth0_gateway`)."""

    properties: PropertyProvider | None = None
    tickets: TicketIssuer | None = None


Auth0Opener = Callable[[Store], AbstractAsyncContextManager[Auth0Services]]
"""Opens the Auth0 services for the open store, closes them at shutdown: the
composition root passes one backed by the sync's Auth0 client."""


def _verifier(settings: Settings, keys: KeySource | None) -> AccessTokenVerifier | None:
    if keys is None or not settings.userinfo_audience or not settings.auth0_base_url:
        return None
    return AccessTokenVerifier(
        keys,
        issuer=f"{settings.auth0_base_url}/",
        audience=settings.userinfo_audience,
        leeway=settings.userinfo_leeway_seconds,
    )


def create_app(
    settings: Settings,
    *,
    background: Background | None = None,
    auth0: Auth0Opener | None = None,
    key_source: KeySourceFactory | None = None,
) -> Starlette:
    """The whole HTTP application for ``settings``; the store opens in the
    lifespan, ``auth0`` (when given) opens what the API asks of Auth0, and
    ``background`` runs from startup to shutdown. With ``key_source`` and
    ``IDSTORE_USERINFO_AUDIENCE``, ``/userinfo`` accepts end users' Auth0
    access tokens, verified with the keys it gives."""
    scim_provider = provider()
    api = management_api.create_api(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await Store.open(settings)
        keys = None
        if key_source is not None and settings.userinfo_audience is not None:
            keys = key_source(settings)
        try:
            async with auth0(store) if auth0 else nullcontext(Auth0Services()) as services:
                app.state.idstore = AppState(
                    settings=settings,
                    store=store,
                    tokens=TokenCache(settings.token_cache_seconds),
                    auth0_properties=services.properties,
                    tickets=services.tickets,
                    access_tokens=_verifier(settings, keys),
                )
                api.state.idstore = app.state.idstore
                async with background(store) if background else nullcontext():
                    yield
        finally:
            if keys is not None:
                await keys.aclose()
            await store.close()

    routes = [
        # The SCIM routes first: nearly every request is one of them.
        RouteGroup("/scim/v2/", scim_routes("/scim/v2")),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *management_api.routes(api),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(ScimPathMiddleware),
            Middleware(ProviderMiddleware, provider=scim_provider),
        ],
        exception_handlers=errors.handlers(),
    )
    app.state.scim_provider = scim_provider
    return app
