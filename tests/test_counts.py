"""Live totals kept as deltas (identity_store.counts) always equal the live rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from identity_store import counts, migrate
from identity_store.database import create_engine, create_session_factory
from identity_store.models import Group, ResourceCount, User
from identity_store.settings import Settings
from tests.scim.helpers import create_group, create_user, user_body


async def _live(session: AsyncSession) -> tuple[int, int]:
    users = await session.scalar(
        select(func.count()).select_from(User).where(User.deleted_at.is_(None))
    )
    groups = await session.scalar(select(func.count()).select_from(Group))
    return int(users or 0), int(groups or 0)


async def _kept(session: AsyncSession) -> tuple[int, int]:
    return await counts.total(session, "User"), await counts.total(session, "Group")


async def test_totals_follow_every_create_and_delete(
    scim: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Creates, deletes and refused writes through SCIM leave the kept totals
    equal to the live rows, and an unfiltered list reports them."""
    ids = [(await create_user(scim, f"count{i}@example.com"))["id"] for i in range(5)]
    groups = [(await create_group(scim, f"count-group-{i}", ids[:2]))["id"] for i in range(3)]
    assert (await scim.post("/Users", json=user_body("COUNT0@example.com"))).status_code == 409
    assert (await scim.delete(f"/Users/{ids[0]}")).status_code == 204
    assert (await scim.delete(f"/Users/{ids[0]}")).status_code == 404
    assert (await scim.delete(f"/Groups/{groups[0]}")).status_code == 204
    bulk = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": user_body("bulk@x.org")},
            {"method": "DELETE", "path": f"/Users/{ids[1]}"},
        ],
    }
    assert (await scim.post("/Bulk", json=bulk)).status_code == 200

    async with create_session_factory(engine)() as session:
        assert await _kept(session) == await _live(session) == (4, 2)

    # A full first page is what makes the list ask for the total.
    page = (await scim.get("/Users", params={"count": 2})).json()
    assert page["totalResults"] == 4
    assert len(page["Resources"]) == 2
    page = (await scim.get("/Groups", params={"count": 1})).json()
    assert page["totalResults"] == 2
    cursor_page = (await scim.get("/Users", params={"count": 1, "cursor": ""})).json()
    assert cursor_page["totalResults"] == 4
    # A filtered list still counts the rows that match.
    filtered = (
        await scim.get("/Users", params={"count": 1, "filter": 'userName sw "count"'})
    ).json()
    assert filtered["totalResults"] == 3


async def test_a_rolled_back_create_leaves_no_delta(
    engine: AsyncEngine, scim: httpx.AsyncClient
) -> None:
    """A create that fails after its delta was written (duplicate group name)
    rolls the delta back with it."""
    await create_group(scim, "taken")
    response = await scim.post(
        "/Groups",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "TAKEN"},
    )
    assert response.status_code == 409
    async with create_session_factory(engine)() as session:
        assert await counts.total(session, "Group") == 1
        rows = await session.scalar(select(func.count()).select_from(ResourceCount))
        assert rows == 1


async def test_compaction_folds_deltas_into_one_row(engine: AsyncEngine) -> None:
    """Every COMPACT_EVERY-th delta folds the type's rows; totals do not move."""
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        for _ in range(counts.COMPACT_EVERY - 1):
            counts.change(session, "User", +1)
        counts.change(session, "Group", +1)
    async with sessions() as session:
        assert await counts.total(session, "User") == counts.COMPACT_EVERY - 1
        by_type = dict(
            (
                await session.execute(
                    select(ResourceCount.resource_type, func.count()).group_by(
                        ResourceCount.resource_type
                    )
                )
            ).all()
        )
        # Row COMPACT_EVERY was the Group delta: it folded the Group rows only.
        assert by_type == {"User": counts.COMPACT_EVERY - 1, "Group": 1}
    async with sessions() as session, session.begin():
        counts.change(session, "User", -3)
        await counts.compact(session, "User")
    async with sessions() as session:
        rows = await session.scalars(
            select(ResourceCount.delta).where(ResourceCount.resource_type == "User")
        )
        assert list(rows) == [counts.COMPACT_EVERY - 4]
        assert await counts.total(session, "Group") == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_fold_does_not_lose_a_concurrent_delta(engine: AsyncEngine) -> None:
    """A delta committed by another transaction while a fold runs is counted
    once: the fold does not see it, so it stays as its own row. (PostgreSQL
    only: SQLite runs one write transaction at a time, so no fold can overlap
    another writer there.)"""
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        for _ in range(5):
            counts.change(session, "User", +1)
    async with sessions() as folding, sessions() as other:
        await folding.begin()
        await other.begin()
        counts.change(other, "User", +1)
        await counts.compact(folding, "User")
        await other.commit()
        await folding.commit()
    async with sessions() as session:
        assert await counts.total(session, "User") == 6


async def test_recount_restores_the_totals_after_a_bulk_load(engine: AsyncEngine) -> None:
    """Rows written around the store (a bulk load) are counted by ``recount``."""
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        for i in range(3):
            session.add(User(user_name=f"raw{i}", user_name_normalized=f"raw{i}", lifecycle="X"))
        counts.change(session, "User", +10)  # a wrong total to be replaced
    async with sessions() as session, session.begin():
        assert await counts.recount(session) == {"User": 3, "Group": 0}
    async with sessions() as session:
        assert await _kept(session) == await _live(session) == (3, 0)


async def test_the_migration_starts_from_the_existing_rows(
    backend: str, fresh_database_url: Any
) -> None:
    """Upgrading a store that already holds users and groups starts the
    totals from them (deleted users excluded)."""
    settings = Settings(DATABASE_URL=await fresh_database_url(backend))
    config = migrate.alembic_config(settings.database_url)
    await asyncio.to_thread(command.upgrade, config, "0002")
    engine = create_engine(settings, null_pool=True)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            for i, deleted in enumerate([None, None, moment, None]):
                await connection.execute(
                    text(
                        "INSERT INTO users (id, user_name, user_name_normalized, tags, active, "
                        "lifecycle, lifecycle_changed_at, status, role_ids, providers, "
                        "created_at, updated_at, deleted_at, version) VALUES (:id, :n, :n, "
                        "'[]', true, 'ACTIVE', :t, '[]', '[]', '[]', :t, :t, :d, 1)"
                    ),
                    {"id": f"u{i}", "n": f"user{i}", "t": moment, "d": deleted},
                )
            await connection.execute(
                text(
                    "INSERT INTO groups (id, display_name, display_name_normalized, created_at, "
                    "updated_at, version) VALUES ('g1', 'G', 'g', :t, :t, 1)"
                ),
                {"t": moment},
            )
        await migrate.upgrade_async(settings)
        async with create_session_factory(engine)() as session:
            assert await _kept(session) == (3, 1)
    finally:
        await engine.dispose()
