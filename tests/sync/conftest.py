"""Fixtures of the sync tests: the Microsoft Graph emulator on loopback and
a clock the tests move themselves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from identity_sync.clock import ManualClock
from tests.emulators.graph import GraphEmulator

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
