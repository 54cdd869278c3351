"""Pagination helpers shared by the list use cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from . import counts

Row = TypeVar("Row")


@dataclass(slots=True)
class Page(Generic[Row]):
    """One page of a list: its rows and how many rows match in all."""

    total: int
    rows: list[Row]


async def total_rows(
    session: AsyncSession,
    base: Select[Any],
    rows: Sequence[object],
    offset: int,
    limit: int,
    after: tuple[Any, ...] | None,
    count: bool,
    *,
    every: str | None = None,
) -> int:
    """How many rows match: the page itself tells when it is the first page and
    not full (an Entra look-up by userName); ``every`` names the resource type
    when the list is not filtered, whose live total is kept by
    :mod:`identity_store.counts`; otherwise one ``count(*)``."""
    if not count:
        return 0
    if after is None and offset == 0 and limit > 0 and len(rows) < limit:
        return len(rows)
    if every is not None:
        return await counts.total(session, every)
    return int(await session.scalar(select(func.count()).select_from(base.subquery())) or 0)


def page_of(
    query: Select[Any],
    keys: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    offset: int,
    after: tuple[Any, ...] | None,
) -> Select[Any]:
    """``query`` ordered by ``keys``, from ``offset`` (index pagination) or
    after the keyset ``after`` (RFC 9865 cursors: the keys of the last row of
    the previous page)."""
    query = query.order_by(*keys)
    if after is not None:
        return query.where(tuple_(*keys) > tuple_(*after))
    return query.offset(offset)
