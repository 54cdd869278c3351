"""Fixtures of the sync tests: the Microsoft Graph and Rönd emulators on
loopback, the store and clients pointed at the Auth0 emulator (``auth0``, in
tests/conftest.py), and a clock the tests move themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.settings import Settings
from identity_store.store import Store
from identity_sync.auth0 import Auth0Client
from identity_sync.clock import Clock, ManualClock
from tests.emulators.auth0 import Auth0Emulator
from tests.emulators.graph import GraphEmulator
from tests.emulators.rond import RondEmulator

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def graph_server() -> Iterator[GraphEmulator]:
    """One emulator for the session (a real uvicorn on 127.0.0.1)."""
    with GraphEmulator() as emulator:
        yield emulator


@pytest.fixture
def graph(graph_server: GraphEmulator) -> Iterator[GraphEmulator]:
    """The emulator, empty: no users, no limit, no fault."""
    graph_server.reset()
    yield graph_server
    graph_server.reset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def auth0_store(
    settings: Settings, engine: AsyncEngine, auth0: Auth0Emulator
) -> AsyncIterator[OpenStore]:
    """Opens the store of this backend's database with the Auth0 emulator
    configured (and any other settings given); each is closed after the test."""
    opened: list[Store] = []

    async def open_(**overrides: Any) -> Store:
        fields: dict[str, Any] = {
            "DATABASE_URL": settings.database_url,
            **auth0.settings_fields(),
            **overrides,
        }
        store = await Store.open(Settings(**fields))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


NewClient = Callable[..., Auth0Client]


@pytest.fixture
async def auth0_clients(auth0: Auth0Emulator) -> AsyncIterator[NewClient]:
    """Makes Auth0 clients of a store's settings (``new(store, clock,
    **options)``); each is closed after the test."""
    made: list[Auth0Client] = []

    def new(store: Store, clock: Clock, **options: Any) -> Auth0Client:
        made.append(Auth0Client(store.settings, clock=clock, **options))
        return made[-1]

    yield new
    for service in made:
        await service.aclose()


@pytest.fixture(scope="session")
def rond_server() -> Iterator[RondEmulator]:
    """One Rönd emulator for the session (a real uvicorn on 127.0.0.1)."""
    with RondEmulator() as emulator:
        yield emulator


@pytest.fixture
def rond(rond_server: RondEmulator) -> Iterator[RondEmulator]:
    """The Rönd emulator, empty: no bindings, no fault."""
    rond_server.reset()
    yield rond_server
    rond_server.reset()
