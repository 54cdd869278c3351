"""Operational endpoints over HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from identity_store.settings import Settings
from scim_server.app import create_app


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["database"] == "reachable"


async def test_readyz_is_503_before_migrations(backend: str, fresh_database_url: Any) -> None:
    """An empty database is reachable but not ready: its migration is not at head."""
    app = create_app(Settings(DATABASE_URL=await fresh_database_url(backend)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migration"] is None
