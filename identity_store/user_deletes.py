"""Concurrent deletes of users, committed together (PostgreSQL; issue 15).

A user's delete is one statement (:func:`user_changes.delete_at_once`) that
also ends its group memberships and moves those groups' versions on, which
locks each group's row until the statement commits. Microsoft Entra ID and
the benchmark delete the users of one group one after the other, 16 at a
time: each delete waited for the one before it to commit (its WAL flush)
to update the same group's row, and held that row through its own commit.
In the Entra mix most of a delete's time went to that wait
(``pg_stat_activity``: ``Lock:transactionid`` and ``Lock:tuple``).

Here the deletes a process is asked for while one is being written wait in
one queue (per store), and one task writes what has queued up: alone, in
autocommit, when it is one; else all their statements in one transaction,
one after the other, and one commit, so that they never wait for each
other's locks nor commits. Each request keeps its own outcome: its own
statement (its own audit, outbox and history rows, its groups' versions
moved on), its own ``False`` when its user changed since it was read (the
caller reads it again), and it is answered once the transaction is
committed. When a statement fails (a deadlock with a writer of another
process, a database error), nothing of the batch is written and each
delete is written again alone, so that each request gets its own error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import row_inserts, user_changes
from .actor import Actor
from .models import User
from .read_models import UserRow
from .store import Store

BATCH_LIMIT = 64
"""Deletes written in one transaction at most."""


@dataclass(slots=True)
class _Queued:
    user: UserRow | User
    actor: Actor
    answer: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_queues: dict[int, list[_Queued]] = {}
"""The deletes waiting, per store; a key is here while its task runs."""
_tasks: set[asyncio.Task[None]] = set()


async def delete(store: Store, user: UserRow | User, actor: Actor) -> bool:
    """:func:`user_changes.delete_at_once` of ``user`` (a live user as read),
    written with the deletes queued at the same time; ``False``: the user
    is no longer at the version read, nothing was written."""
    queued = _Queued(user, actor)
    key = id(store)
    queue = _queues.get(key)
    if queue is not None:
        queue.append(queued)
    else:
        _queues[key] = [queued]
        task = asyncio.get_running_loop().create_task(_apply_queue(store, key))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    return await queued.answer


async def _apply_queue(store: Store, key: int) -> None:
    queue = _queues[key]
    batch: list[_Queued] = []
    try:
        while queue:
            batch = queue[:BATCH_LIMIT]
            del queue[:BATCH_LIMIT]
            await _apply_batch(store, batch)
    finally:
        del _queues[key]
        for queued in (*batch, *queue):  # only when this task itself failed
            if not queued.answer.done():
                queued.answer.cancel()


async def _alone(store: Store, queued: _Queued) -> None:
    try:
        written = await user_changes.delete_at_once(store.engine, queued.user, queued.actor)
    except Exception as exc:
        _answer(queued, exc)
    else:
        _answer(queued, written)


async def _apply_batch(store: Store, batch: Sequence[_Queued]) -> None:
    if len(batch) == 1:
        await _alone(store, batch[0])
        return
    written: list[bool] = []
    committing = False
    try:
        async with row_inserts.autocommit(store.engine) as connection:
            transaction = connection.transaction()
            with row_inserts.as_sqlalchemy_errors("BEGIN", ()):
                await transaction.start()
            try:
                for queued in batch:
                    written.append(
                        await user_changes.delete_at_once(
                            store.engine, queued.user, queued.actor, connection=connection
                        )
                    )
            except BaseException:
                with row_inserts.as_sqlalchemy_errors("ROLLBACK", ()):
                    await transaction.rollback()
                raise
            committing = True
            with row_inserts.as_sqlalchemy_errors("COMMIT", ()):
                await transaction.commit()
    except Exception as exc:
        if committing:
            # The commit itself failed: whether it was written is not
            # known, so each request gets that error, none is written again.
            for queued in batch:
                _answer(queued, exc)
            return
        # A statement failed and nothing was written: each alone, for its
        # own outcome.
        for queued in batch:
            await _alone(store, queued)
        return
    for queued, outcome in zip(batch, written, strict=True):
        _answer(queued, outcome)


def _answer(queued: _Queued, outcome: bool | Exception) -> None:
    if queued.answer.done():  # its request was cancelled (the client went away)
        return
    if isinstance(outcome, Exception):
        queued.answer.set_exception(outcome)
    else:
        queued.answer.set_result(outcome)
