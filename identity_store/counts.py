"""How many live users and groups there are, without counting them.

An unfiltered list answers ``totalResults`` (RFC 7644 §3.4.2) on every page;
``count(*)`` over a million users costs a full scan each time (about 0.5 s of
database CPU at 1,000,000 users). Instead every creation and deletion of a
user or group writes a ``+1`` or ``-1`` row to ``resource_counts`` in its own
transaction, so the total commits or rolls back with the change, and the
total is the sum of a type's rows. (The deltas are written when the
transaction commits, with its other side rows: :mod:`identity_store.side_rows`.)

Deltas, not one counter row per type: concurrent writers would queue on the
lock of a single row for the length of their transactions. Every
:data:`COMPACT_EVERY`-th delta folds its type's rows into one, inside the
same transaction: a ``DELETE ... RETURNING`` of the rows it sees and one
``INSERT`` of their sum. Rows another transaction adds meanwhile are not
seen by the ``DELETE`` and stay; two folds at once cannot both delete the
same row, so each delta is counted exactly once.

Every path that creates or deletes users or groups goes through
:func:`change`; the invariant (the sum equals the live rows) is checked by
the tests after each kind of change and can be restored with
:func:`recount`.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from . import side_rows
from .models import Group, ResourceCount, User

COMPACT_EVERY = 256
"""A fold every this many deltas (by row id) keeps a type's rows few."""

_TABLE = cast(Table, ResourceCount.__table__)
_TOTAL = select(func.coalesce(func.sum(_TABLE.c.delta), 0)).where(
    _TABLE.c.resource_type == bindparam("resource_type")
)
_TAKE = (
    delete(_TABLE)
    .where(_TABLE.c.resource_type == bindparam("resource_type"))
    .returning(_TABLE.c.delta)
)

FOLD_STATEMENT = (
    "WITH d AS (DELETE FROM resource_counts WHERE resource_type = $1 RETURNING delta)"
    " INSERT INTO resource_counts (resource_type, delta) SELECT $1, sum(delta) FROM d"
    " HAVING count(*) > 0"
)
"""The fold of :func:`_fold` as one PostgreSQL statement (``$1``: the
resource type), for the writes that run on an asyncpg connection without a
session (:mod:`identity_store.user_changes`' statements,
:mod:`identity_store.user_deletes`): run after a write whose delta's row id
is a multiple of :data:`COMPACT_EVERY`, as its own autocommit statement."""

_LIVE = {
    "User": select(func.count()).select_from(User).where(User.deleted_at.is_(None)),
    "Group": select(func.count()).select_from(Group),
}


def change(session: AsyncSession, resource_type: str, delta: int) -> None:
    """Record that ``delta`` live resources of ``resource_type`` were created
    (positive) or deleted (negative) in the session's transaction."""

    def written(sync: Session, row_id: int) -> None:
        if row_id % COMPACT_EVERY == 0:
            _fold(sync, resource_type)

    side_rows.add(session, _TABLE, {"resource_type": resource_type, "delta": delta}, written)


def _fold(session: Session, resource_type: str) -> None:
    deltas = session.execute(_TAKE, {"resource_type": resource_type}).scalars().all()
    if deltas:
        session.execute(insert(_TABLE), {"resource_type": resource_type, "delta": sum(deltas)})


async def compact(session: AsyncSession, resource_type: str) -> None:
    """Fold the deltas of ``resource_type`` this transaction sees (its own
    pending ones included) into one row."""

    def fold(sync: Session) -> None:
        side_rows.write_pending(sync)
        _fold(sync, resource_type)

    await session.run_sync(fold)


async def total(session: AsyncSession, resource_type: str) -> int:
    """How many live resources of ``resource_type`` there are."""
    return int(await session.scalar(_TOTAL, {"resource_type": resource_type}) or 0)


async def recount(session: AsyncSession) -> dict[str, int]:
    """Replace the deltas of every type by one row of the real count (after a
    bulk load that bypassed :func:`change`); returns the counts."""
    counts: dict[str, int] = {}
    for resource_type, query in _LIVE.items():
        counts[resource_type] = int(await session.scalar(query) or 0)
        await session.execute(_TAKE, {"resource_type": resource_type})
        await session.execute(
            insert(_TABLE), {"resource_type": resource_type, "delta": counts[resource_type]}
        )
    return counts
