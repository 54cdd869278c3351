"""The worker's clock: the time and waiting, behind one small interface so
that tests drive time themselves (:class:`ManualClock`) instead of sleeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns at once for ``seconds <= 0``)."""


class SystemClock:
    """The wall clock and real waiting."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told (or when slept on): a wait returns
    at once, having moved the time forward by its length, and is recorded in
    :attr:`sleeps`."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)
