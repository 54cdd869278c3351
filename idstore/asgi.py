"""Entry point for ``uvicorn --factory idstore.asgi:app_factory``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.clock import SystemClock
from identity_sync.jwks import JwksClient, JwksUnavailable
from idstore.auth0_gateway import open_auth0
from scim_server.access_tokens import KeySource, KeysUnavailable
from scim_server.app import Background, create_app

log = logging.getLogger("idstore.worker")


@asynccontextmanager
async def in_process_worker(store: Store) -> AsyncIterator[None]:
    """The worker of ``idstore worker`` (scheduled jobs and outbox
    dispatchers), run by the server itself (the SQLite default: ``make run``
    is the whole product). At shutdown the runs in progress stop at their
    next checkpoint and are handed back."""
    worker = registry.build_worker(store, SystemClock())
    task = asyncio.create_task(worker.run_forever())
    try:
        yield
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=store.settings.job_lease_seconds)
        except TimeoutError:
            log.error("the in-process worker did not stop in time; its runs' leases will expire")
        await worker.close()


class TenantKeys:
    """The Auth0 tenant's JWKS client (:mod:`identity_sync.jwks`) as the
    server's key source (:class:`scim_server.access_tokens.KeySource`): the
    two layers do not import each other, so their vocabularies meet here."""

    def __init__(self, client: JwksClient) -> None:
        self.client = client

    async def signing_key(self, kid: str) -> Mapping[str, Any] | None:
        try:
            return await self.client.signing_key(kid)
        except JwksUnavailable as exc:
            raise KeysUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def tenant_keys(settings: Settings) -> KeySource:
    return TenantKeys(JwksClient(settings))


def server_app(settings: Settings, *, background: Background | None = None) -> Starlette:
    """The application with everything the server is wired to: what the API
    asks of Auth0 (properties, tickets), the Auth0 tenant's signing keys for
    ``/userinfo`` (when ``IDSTORE_USERINFO_AUDIENCE`` is set), and ``background``."""
    return create_app(settings, background=background, auth0=open_auth0, key_source=tenant_keys)


def app_factory() -> Starlette:
    """Build the application from the environment (read now, not at import).
    On the embedded SQLite default the server also runs the worker, unless
    ``IDSTORE_WORKER_IN_PROCESS=false``."""
    settings = Settings()
    in_process = settings.is_sqlite and settings.worker_in_process
    app = server_app(settings, background=in_process_worker if in_process else None)
    # Everything imported and built so far lives as long as the process:
    # out of the collector's sight (gc.freeze), a full collection no longer
    # walks the few hundred thousand objects of the libraries' modules and
    # models, which paused every request in flight for 50-100 ms every
    # few large requests (a batch of 1,000 checks, docs/benchmarks.md).
    gc.freeze()
    return app
