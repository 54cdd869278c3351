"""Concurrent deletes of users, written together (PostgreSQL; issue 15).

A user's delete (:func:`user_changes.delete_at_once`) also ends its group
memberships and moves those groups' versions on, which locks each group's
row until it commits. Microsoft Entra ID and the benchmark delete the users
of one group one after the other, 16 at a time: each delete waited for the
one before it to commit (its WAL flush) to update the same group's row
(``pg_stat_activity``: ``Lock:transactionid``, ``Lock:tuple``).

Here the deletes of a process wait in one queue (per store;
:mod:`identity_store.batches`), and one task
writes what has queued up in one autocommit statement per batch
(:func:`delete_batch_at_once`, at most :data:`BATCH_LIMIT` users; a delete
alone as before, :func:`user_changes.delete_at_once`): one round trip, one
commit. Each user is deleted at the version it was read at,
as alone; each group's version moves on once, by the number of its members
that left (two updates of one row in one statement would apply once).
Each request keeps its own outcome: its own rows (history, audit with the
groups it left, outbox, count), ``False`` when its user is no longer at the
version read (the caller reads it again, as after a stale version alone),
and it is answered once the batch is committed. When the statement fails
(a deadlock with a writer of another process, a lost connection), nothing
of the batch is written and each delete is written again alone, so that
each request gets its own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from . import batches, counts, lifecycle, row_inserts, user_changes
from .actor import Actor
from .models import User, utcnow
from .read_models import UserRow

BATCH_LIMIT = 64
"""Deletes written in one statement at most."""

_PG_DELETE_BATCH = """
WITH x AS (
    SELECT * FROM unnest($2::int[], $3::varchar[], $4::int[], $5::varchar[], $6::varchar[],
                         $7::bool[], $8::text[], $9::varchar[], $10::varchar[], $11::varchar[],
                         $12::bigint[])
        AS x(k, id, version, from_state, to_state, moved, user_name, token_id, actor,
             request_id, job_run_id)
), u AS (
    UPDATE users SET deleted_at = $1, active = false, updated_at = $1, lifecycle = x.to_state,
           lifecycle_changed_at = CASE WHEN x.moved THEN $1 ELSE users.lifecycle_changed_at END,
           version = users.version + 1
      FROM x
     WHERE users.id = x.id AND users.version = x.version AND users.deleted_at IS NULL
    RETURNING x.k, users.id, users.version
), m AS (
    DELETE FROM group_members WHERE member_id IN (SELECT id FROM u)
    RETURNING group_id, member_id
), g AS (
    UPDATE groups SET version = groups.version + n.gone, updated_at = $1
      FROM (SELECT group_id, count(*) AS gone FROM m GROUP BY group_id) AS n
     WHERE groups.id = n.group_id
), h AS (
    INSERT INTO lifecycle_history
           (user_id, from_state, to_state, cause, actor, occurred_at, request_id, job_run_id)
    SELECT u.id, x.from_state, x.to_state, 'deleted', x.actor, $1, x.request_id, x.job_run_id
      FROM u JOIN x ON x.k = u.k
     WHERE x.moved
     ORDER BY u.k
), ad AS (
    INSERT INTO audit_log
           (occurred_at, token_id, actor, action, resource_type, resource_id, request_id, details)
    SELECT $1, x.token_id, x.actor, 'user.delete', 'User', u.id, x.request_id,
           jsonb_build_object('userName', x.user_name, 'groups',
               coalesce((SELECT jsonb_agg(m.group_id ORDER BY m.group_id)
                           FROM m WHERE m.member_id = u.id), '[]'::jsonb))
      FROM u JOIN x ON x.k = u.k
     ORDER BY u.k
), o AS (
    INSERT INTO outbox
           (target, operation, aggregate_type, aggregate_id, payload, status, attempts,
            next_attempt_at, created_at, request_id)
    SELECT 'auth0', 'delete', 'User', u.id, jsonb_build_object('version', u.version),
           'PENDING', 0, $1, $1, x.request_id
      FROM u JOIN x ON x.k = u.k
     ORDER BY u.k
), c AS (
    INSERT INTO resource_counts (resource_type, delta) SELECT 'User', -1 FROM u ORDER BY u.k
    RETURNING id
)
SELECT ARRAY(SELECT k FROM u) AS written, ARRAY(SELECT id FROM c) AS count_ids
"""
"""A batch of deletes (:func:`delete_batch_at_once`) in one statement: each
entry ``x`` is one user as read (``k`` its place in the batch), deleted
when still live at that version, with what
:func:`user_changes.delete_at_once` writes for it; each group's version
moved on by the number of its members deleted."""


async def delete_batch_at_once(
    engine: AsyncEngine,
    batch: Sequence[tuple[UserRow | User, Actor]],
    *,
    when: datetime | None = None,
) -> list[bool]:
    """:func:`user_changes.delete_at_once` of each user (a live user as
    read, with the actor deleting it) in one autocommit statement
    (PostgreSQL): the same rows, each group's version moved on by the
    number of its members deleted. Whether each was written (``False``: no
    longer at the version read, nothing written for it); a user named twice
    at one version is written for the first only, as one after the other."""
    now = when or utcnow()
    ks: list[int] = []
    seen: set[tuple[str, int]] = set()
    for k, (user, _) in enumerate(batch):
        if (user.id, user.version) not in seen:
            seen.add((user.id, user.version))
            ks.append(k)
    users = [batch[k][0] for k in ks]
    actors = [batch[k][1] for k in ks]
    to_states = [lifecycle.after_delete(u).value for u in users]  # type: ignore[arg-type]
    params = (
        now,
        ks,
        [u.id for u in users],
        [u.version for u in users],
        [u.lifecycle or None for u in users],
        to_states,
        [u.lifecycle != to for u, to in zip(users, to_states, strict=True)],
        [u.user_name for u in users],
        [a.token_id for a in actors],
        [a.name for a in actors],
        [a.request_id for a in actors],
        [a.job_run_id for a in actors],
    )
    async with row_inserts.autocommit(engine) as connection:
        with row_inserts.as_sqlalchemy_errors(_PG_DELETE_BATCH, params):
            row = await connection.fetchrow(_PG_DELETE_BATCH, *params)
            if any(i % counts.COMPACT_EVERY == 0 for i in row["count_ids"]):
                await connection.execute(user_changes._FOLD, "User")  # as delete_at_once folds
    written = set(row["written"])
    return [k in written for k in range(len(batch))]


_Queued = batches.Queued[tuple[UserRow | User, Actor], bool]
_batches: batches.Batches[tuple[UserRow | User, Actor], bool] = batches.Batches(BATCH_LIMIT)
"""The deletes waiting, per store engine."""


async def delete(engine: AsyncEngine, user: UserRow | User, actor: Actor) -> bool:
    """Delete ``user`` (a live user as read) with the deletes queued at the
    same time (:func:`delete_batch_at_once`), once they are committed;
    ``False``: the user is no longer at the version read, nothing was
    written."""

    async def apply(batch: list[_Queued]) -> None:
        await _apply_batch(engine, batch)

    return await _batches.submit(id(engine), (user, actor), apply)


async def _apply_batch(engine: AsyncEngine, batch: Sequence[_Queued]) -> None:
    try:
        if len(batch) == 1:  # alone, as before
            written = [await user_changes.delete_at_once(engine, *batch[0].item)]
        else:
            written = await delete_batch_at_once(engine, [q.item for q in batch])
    except Exception as exc:
        if len(batch) == 1:
            batch[0].settle(exc)
            return
        # Nothing was written: each alone, so that each gets its own outcome.
        for queued in batch:
            await _apply_batch(engine, [queued])
        return
    for queued, outcome in zip(batch, written, strict=True):
        queued.settle(outcome)
