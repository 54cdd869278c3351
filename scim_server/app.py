"""The Starlette application: ``create_app(settings)`` builds everything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from identity_store.database import (
    create_engine,
    create_reader_factory,
    create_session_factory,
)
from identity_store.migrate import head_revision
from identity_store.prepared_reads import PreparedReads
from identity_store.settings import Settings

from . import errors
from .discovery import provider
from .health import healthz, readyz
from .middleware import ProviderMiddleware, RequestIdMiddleware, ScimPathMiddleware
from .routes import scim_routes
from .state import AppState, TokenCache


def create_app(settings: Settings) -> Starlette:
    """The whole HTTP application for ``settings``; the engine opens in the lifespan."""
    scim_provider = provider()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(settings)
        fast = None
        if not settings.is_sqlite:
            fast = PreparedReads(settings.database_url, settings.db_read_pool_size)
            await fast.open()
        app.state.idstore = AppState(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            readers=create_reader_factory(engine),
            head_revision=head_revision(settings.database_url),
            tokens=TokenCache(settings.token_cache_seconds),
            fast=fast,
        )
        try:
            yield
        finally:
            if fast is not None:
                await fast.close()
            await engine.dispose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Mount("/scim/v2", routes=scim_routes()),
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
