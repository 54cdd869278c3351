"""Operational endpoints over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from identity_store import migrate
from identity_store.database import create_engine
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


async def _readyz(url: str) -> httpx.Response:
    app = create_app(Settings(DATABASE_URL=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/readyz")


async def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :v"), {"v": revision}
            )
    finally:
        await engine.dispose()


async def test_readyz_accepts_a_database_ahead_of_the_code(
    backend: str, fresh_database_url: Any
) -> None:
    """During a rolling upgrade the database is migrated first: a revision this
    code does not know comes from a newer release, whose history holds ours,
    so the old replicas stay ready."""
    url = await fresh_database_url(backend)
    await migrate.upgrade_async(Settings(DATABASE_URL=url))
    await _set_revision(url, "0099_from_a_newer_release")
    response = await _readyz(url)
    assert response.status_code == 200, response.text
    assert response.json()["migration"] == "0099_from_a_newer_release"
    assert response.json()["schema"] == "ahead"


async def test_readyz_is_503_on_a_database_behind_the_code(
    backend: str, fresh_database_url: Any
) -> None:
    """A database migrated to an older revision of our history is not ready."""
    url = await fresh_database_url(backend)
    settings = Settings(DATABASE_URL=url)
    await migrate.upgrade_async(settings, "0003")
    response = await _readyz(url)
    assert response.status_code == 503
    assert response.json()["migration"] == "0003"
    assert response.json()["expected"] == migrate.head_revision(url)
    assert response.json()["schema"] == "behind"


async def test_readyz_says_the_database_is_at_head_after_migrating(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["migration"] == migrate.head_revision(settings.database_url)
    assert response.json()["schema"] == "at head"
