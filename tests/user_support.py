"""What the tests of the one-statement user writes and of the batched
deletes share: a user's input with one work e-mail, the change that
renames it (what a PATCH of ``displayName`` computes), and the live-count
rows around a fold (:mod:`identity_store.counts`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, text

from identity_store import counts, users
from identity_store.models import ResourceCount, User
from identity_store.store import Store
from identity_store.users import UserInput


def user_input(user_name: str, **columns: Any) -> UserInput:
    """A user named ``user_name`` with ``columns``, its one e-mail its name."""
    return UserInput(
        user_name=user_name,
        columns=columns,
        multi_values=[{"attribute": "emails", "value": user_name, "type": "work"}],
    )


def renamed(display_name: str) -> Callable[[Any], UserInput]:
    """The change that sets the current user's ``displayName``."""

    def change(current: Any) -> UserInput:
        data = users.current_input(current.user)
        data.columns["display_name"] = display_name
        return data

    return change


async def count_rows_before_a_fold(store: Store, rows: int) -> None:
    """Move the count rows' id sequence so that the ``rows``-th row written
    next is a :data:`counts.COMPACT_EVERY`-th, which folds (PostgreSQL). The
    fold is the first multiple far enough past the last row that no id
    written is one already taken."""

    async def move(session: Any) -> None:
        last = int(await session.scalar(select(func.max(ResourceCount.id))) or 0)
        fold_at = ((last + rows) // counts.COMPACT_EVERY + 1) * counts.COMPACT_EVERY
        await session.execute(
            text("SELECT setval(pg_get_serial_sequence('resource_counts', 'id'), :n)"),
            {"n": fold_at - rows},
        )

    await store.transaction(move)


async def user_count_rows(store: Store) -> tuple[list[int], int]:
    """The user count rows' deltas, and how many users are live."""
    async with store.reading() as session:
        rows = (
            await session.scalars(
                select(ResourceCount.delta).where(ResourceCount.resource_type == "User")
            )
        ).all()
        live = await session.scalar(
            select(func.count()).select_from(User).where(User.deleted_at.is_(None))
        )
    return list(rows), int(live or 0)
