"""Deletes of users on PostgreSQL: each one statement that reads as it
writes, concurrent ones written together (issue 15).

A user's delete also ends its group memberships and moves those groups'
versions on, which locks each group's row until it commits. Microsoft
Entra ID and the benchmark delete the users of one group one after the
other, 16 at a time: each delete waited for the one before it to commit
(its WAL flush) to update the same group's row (``pg_stat_activity``:
``Lock:transactionid``, ``Lock:tuple``).

Here the deletes of a process wait in one queue (per store;
:mod:`identity_store.batches`), and one task writes what has queued up in
one autocommit statement per batch (:func:`delete_batch_at_once`, at most
:data:`BATCH_LIMIT` users; a delete alone is a batch of one): one round
trip, one commit. The statement reads nothing beforehand: it locks the
live rows of the batch's ids (in id order), and writes each whose version
is the one its request's ``If-Match`` names (or any, without one). What
the session path (:func:`user_changes.mark_deleted`, SQLite) decides in
Python it decides in SQL: the state a deleted user goes to
(:func:`lifecycle.after_delete_clause`, the twin of
:func:`lifecycle.after_delete`), whether that is a transition (a history
row), the user name its audit entry names. Each group's version moves on
once, by the number of its members that left (two updates of one row in
one statement would apply once).

Each request keeps its own outcome: its own rows (history, audit with the
groups it left, outbox, count), :class:`NotFoundError` when no live user
has its id, :class:`VersionMismatchError` when its ``If-Match`` names
another version; it is answered once the batch is committed. A second
delete of one id in a batch is written after the first, as one after the
other (it is then a 404, or a delete when the first was a 412). When the
statement fails (a deadlock with a writer of another process, a lost
connection), nothing of the batch is written and each delete is written
again alone, so that each request gets its own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from . import batches, counts, lifecycle, row_inserts
from .actor import Actor
from .errors import NotFoundError
from .models import utcnow
from .versions import version_mismatch

BATCH_LIMIT = 64
"""Deletes written in one statement at most."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """One request's delete: the user's id, who deletes it, and the version
    its ``If-Match`` names (``None``: any)."""

    user_id: str
    actor: Actor
    expected_version: int | None = None


_TO_STATE = str(
    lifecycle.after_delete_clause().compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
)

_PG_DELETE_BATCH = f"""WITH x AS (
    SELECT * FROM unnest($2::int[], $3::varchar[], $4::int[], $5::varchar[], $6::varchar[],
                         $7::varchar[], $8::bigint[])
        AS x(k, id, expected, token_id, actor, request_id, job_run_id)
), l AS (
    SELECT x.k, users.id, users.version, users.lifecycle AS from_state, users.user_name,
           {_TO_STATE} AS to_state
      FROM x JOIN users ON users.id = x.id
     WHERE users.deleted_at IS NULL
     ORDER BY users.id
       FOR UPDATE OF users
), u AS (
    UPDATE users SET deleted_at = $1, active = false, updated_at = $1, lifecycle = l.to_state,
           lifecycle_changed_at = CASE WHEN l.from_state IS DISTINCT FROM l.to_state
                                       THEN $1 ELSE users.lifecycle_changed_at END,
           version = users.version + 1
      FROM l JOIN x ON x.k = l.k
     WHERE users.id = l.id AND (x.expected IS NULL OR x.expected = l.version)
    RETURNING l.k, users.id, users.version, l.from_state, l.to_state, l.user_name
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
    SELECT u.id, nullif(u.from_state, ''), u.to_state, 'deleted', x.actor, $1, x.request_id,
           x.job_run_id
      FROM u JOIN x ON x.k = u.k
     WHERE u.from_state IS DISTINCT FROM u.to_state
     ORDER BY u.k
), ad AS (
    INSERT INTO audit_log
           (occurred_at, token_id, actor, action, resource_type, resource_id, request_id, details)
    SELECT $1, x.token_id, x.actor, 'user.delete', 'User', u.id, x.request_id,
           jsonb_build_object('userName', u.user_name, 'groups',
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
SELECT ARRAY(SELECT k FROM u) AS written, ARRAY(SELECT k FROM l) AS live,
       ARRAY(SELECT version FROM l) AS versions, ARRAY(SELECT id FROM c) AS count_ids
"""  # noqa: S608 (the only interpolation is a constant of lifecycle's)
"""A batch of deletes (:func:`delete_batch_at_once`) in one statement: each
entry ``x`` one request (``k`` its place in the batch); ``l`` the live rows
of their ids, locked, with the state each goes to; ``u`` those at the
version asked for, deleted, with what :func:`user_changes.mark_deleted`
writes for each; each group's version moved on by the number of its
members deleted. ``written`` the requests done, ``live`` (and
``versions``) those whose user was live, at that version."""


async def delete_batch_at_once(
    engine: AsyncEngine, batch: Sequence[Deletion], *, when: datetime | None = None
) -> list[Exception | None]:
    """:func:`user_changes.mark_deleted` of each request's user in one
    autocommit statement (PostgreSQL), in queue order: the same rows, each
    group's version moved on by the number of its members deleted. Each
    request's outcome: ``None`` (deleted), :class:`NotFoundError` (no live
    user has its id) or :class:`VersionMismatchError` (another version
    than its ``If-Match``); nothing is written for a refused one. The
    second delete of an id is written after the first's statement, in a
    statement of its own, as one after the other; when that one fails,
    its error is the outcome of its deletes (the first is committed).
    When the first fails, nothing is written and its error is raised."""
    now = when or utcnow()
    first: dict[str, int] = {}
    later: list[int] = []
    for k, deletion in enumerate(batch):
        if deletion.user_id in first:
            later.append(k)
        else:
            first[deletion.user_id] = k
    ks = list(first.values())
    params = (
        now,
        ks,
        [batch[k].user_id for k in ks],
        [batch[k].expected_version for k in ks],
        [batch[k].actor.token_id for k in ks],
        [batch[k].actor.name for k in ks],
        [batch[k].actor.request_id for k in ks],
        [batch[k].actor.job_run_id for k in ks],
    )
    async with row_inserts.autocommit(engine) as connection:
        with row_inserts.as_sqlalchemy_errors(_PG_DELETE_BATCH, params):
            row = await connection.fetchrow(_PG_DELETE_BATCH, *params)
            if any(i % counts.COMPACT_EVERY == 0 for i in row["count_ids"]):
                await connection.execute(counts.FOLD_STATEMENT, "User")  # as a delete alone folds
    written = set(row["written"])
    current = dict(zip(row["live"], row["versions"], strict=True))
    outcomes: list[Exception | None] = [None] * len(batch)
    for k in ks:
        if k in written:
            continue
        deletion = batch[k]
        if k not in current:
            outcomes[k] = NotFoundError("User", deletion.user_id)
        else:  # live, at another version than its If-Match
            assert deletion.expected_version is not None
            outcomes[k] = version_mismatch(current[k], deletion.expected_version)
    if later:
        try:
            again = await delete_batch_at_once(engine, [batch[k] for k in later], when=now)
        except Exception as exc:  # the first statement is committed: only these failed
            again = [exc] * len(later)
        for k, outcome in zip(later, again, strict=True):
            outcomes[k] = outcome
    return outcomes


_Queued = batches.Queued[Deletion, None]
_batches: batches.Batches[Deletion, None] = batches.Batches(BATCH_LIMIT)
"""The deletes waiting, per store engine."""


async def delete(engine: AsyncEngine, deletion: Deletion) -> None:
    """Delete a user with the deletes queued at the same time
    (:func:`delete_batch_at_once`), once they are committed.

    :raises NotFoundError: No live user has this id.
    :raises VersionMismatchError: The user is not at the version asked for.
    """

    async def apply(batch: list[_Queued]) -> None:
        await _apply_batch(engine, batch)

    await _batches.submit(id(engine), deletion, apply)


async def _apply_batch(engine: AsyncEngine, batch: Sequence[_Queued]) -> None:
    try:
        outcomes = await delete_batch_at_once(engine, [q.item for q in batch])
    except Exception as exc:
        if len(batch) == 1:
            batch[0].settle(exc)
            return
        # Nothing was written: each alone, so that each gets its own outcome.
        for queued in batch:
            await _apply_batch(engine, [queued])
        return
    for queued, outcome in zip(batch, outcomes, strict=True):
        queued.settle(outcome)
