"""Concurrent requests of one process combined into batches.

Membership changes of one group (:mod:`identity_store.groups`) and deletes
of users (:mod:`identity_store.user_deletes`) are written a batch at a
time: a request joins the queue of its key, the first one of a key starts
a task that hands what has queued up, at most ``limit`` at a time, to the
caller's ``apply`` until the queue is empty. ``apply`` settles each
request of its batch (:meth:`Queued.settle`); a request is answered only
then, so after its batch committed. Written once here for both: the queue
per key, the task, the bound, and what happens to the requests left when
the task itself fails (cancelled, never left waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Queued(Generic[T, R]):
    """One request waiting in a queue: what it asks for, and its answer."""

    item: T
    answer: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: R | Exception) -> None:
        """Answer the request (raise ``outcome`` in it when an exception),
        unless it was cancelled meanwhile (the client went away)."""
        if self.answer.done():
            return
        if isinstance(outcome, Exception):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(outcome)


Apply = Callable[[list[Queued[T, R]]], Awaitable[None]]


class Batches(Generic[T, R]):
    """The queues of one kind of request, one per key; a key is present
    while its task runs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queues: dict[Hashable, list[Queued[T, R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: T, apply: Apply[T, R]) -> R:
        """Queue ``item`` under ``key`` and wait for its answer; the first
        request of a key starts the task that applies its queue."""
        queued: Queued[T, R] = Queued(item)
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(queued)
        else:
            self._queues[key] = [queued]
            task = asyncio.get_running_loop().create_task(self._drain(key, apply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await queued.answer

    async def _drain(self, key: Hashable, apply: Apply[T, R]) -> None:
        """Apply the queue of ``key``, a batch at a time, until it is empty."""
        queue = self._queues[key]
        batch: list[Queued[T, R]] = []
        try:
            while queue:
                batch = [q for q in queue[: self.limit] if not q.answer.done()]
                del queue[: self.limit]
                if batch:
                    await apply(batch)
        finally:
            del self._queues[key]
            for queued in (*batch, *queue):  # only when this task itself failed
                if not queued.answer.done():
                    queued.answer.cancel()
