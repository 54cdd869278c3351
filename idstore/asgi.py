"""Entry point for ``uvicorn --factory idstore.asgi:app_factory``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync import registry
from identity_sync.clock import SystemClock
from idstore.auth0_gateway import open_auth0
from scim_server.app import create_app

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


def app_factory() -> Starlette:
    """Build the application from the environment (read now, not at import).
    On the embedded SQLite default the server also runs the worker, unless
    ``IDSTORE_WORKER_IN_PROCESS=false``."""
    settings = Settings()
    in_process = settings.is_sqlite and settings.worker_in_process
    app = create_app(
        settings, background=in_process_worker if in_process else None, auth0=open_auth0
    )
    # Everything imported and built so far lives as long as the process:
    # out of the collector's sight (gc.freeze), a full collection no longer
    # walks the few hundred thousand objects of the libraries' modules and
    # models, which paused every request in flight for 50-100 ms every
    # few large requests (a batch of 1,000 checks, docs/benchmarks.md).
    gc.freeze()
    return app
