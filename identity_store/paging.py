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


async def fetch_page(
    session: AsyncSession,
    live: Select[Any],
    resource_type: str,
    where: ColumnElement[bool] | None,
    *,
    keys: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    offset: int,
    limit: int,
    after: tuple[Any, ...] | None,
    count: bool,
) -> Page[Any]:
    """One page of ``live`` (every live row of ``resource_type``) narrowed by
    ``where``, ordered by ``keys`` (:func:`page_of`), and how many rows match
    in all: what the page itself tells when it is a first page with room to
    spare (an Entra look-up), the live total :mod:`identity_store.counts`
    keeps when the list is not filtered, otherwise one ``count(*)``
    (``count=False``: not asked for, 0)."""
    base = live if where is None else live.where(where)
    query = page_of(base, keys, offset, after)
    rows = list((await session.scalars(query.limit(limit))).all()) if limit > 0 else []
    total = total_of_page(len(rows), offset, limit, after) if count else 0
    if total is None:
        if where is None:
            total = await counts.total(session, resource_type)
        else:
            total = int(
                await session.scalar(select(func.count()).select_from(base.subquery())) or 0
            )
    return Page(total=total, rows=rows)


def total_of_page(rows: int, offset: int, limit: int, after: tuple[Any, ...] | None) -> int | None:
    """The total a page tells by itself: a first page with room to spare
    holds every match; ``None`` when it cannot tell."""
    if after is None and offset == 0 and limit > 0 and rows < limit:
        return rows
    return None


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
