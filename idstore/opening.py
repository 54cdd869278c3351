"""Open the store for one command, run one piece of work, close it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from identity_store.settings import Settings
from identity_store.store import Store

T = TypeVar("T")


async def with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """``work(store)`` on a store opened for it, closed afterwards whatever happens."""
    store = await Store.open(settings)
    try:
        return await work(store)
    finally:
        await store.close()
