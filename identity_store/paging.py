"""Pages of lists: what a caller asks for (:class:`PageRequest`), how a page
is planned (index pagination, RFC 7644 §3.4.2.4, or keyset cursors, RFC
9865), fetched and counted, and the opaque cursors of the next page."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from . import counts
from .errors import InvalidCursorError, InvalidSortError

if TYPE_CHECKING:
    from .filtering.terms import Filter, SortKey

Row = TypeVar("Row")


@dataclass(slots=True)
class Page(Generic[Row]):
    """One page of a list: its rows, how many rows match in all, and the
    cursor of the next page (cursor pagination, when there is one)."""

    total: int
    rows: list[Row]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a list a caller asks for."""

    filter: Filter | None = None
    """What the rows must match (:mod:`identity_store.filtering`), or ``None``."""
    sort: SortKey | None = None
    """The sort key (:mod:`identity_store.filtering`), or ``None``: by id."""
    descending: bool = False
    start_index: int = 1
    """1-based index of the first row (index pagination)."""
    count: int = 100
    """Rows wanted; 0 asks only for the total."""
    cursor: str | None = None
    """``None``: index pagination; ``""``: the first page of cursor pagination;
    otherwise the ``next_cursor`` of the previous page."""


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque RFC 9865 cursor: the sort key of the last row returned."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> tuple[Any, ...]:
    """The sort key a cursor carries; :class:`InvalidCursorError` when it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for value, kind in zip(values, kinds, strict=True):
            if kind is datetime:
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    raise ValueError("no time zone")  # ours always carry one
                out.append(moment)
            elif not isinstance(value, kind):
                raise ValueError("wrong type")
            else:
                if isinstance(value, str):
                    value.encode()  # a lone surrogate: UnicodeEncodeError, a ValueError
                out.append(value)
        return tuple(out)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidCursorError("the cursor is not valid for this query") from exc


CursorSorts = dict[str, tuple[Any, type]]
"""Sort keys usable with cursors, lower-cased SCIM name → (column or ``None``
for the id alone, Python type of its values). Such a column is never NULL, so
that a keyset ``(key, id) > (last key, last id)`` visits every row once."""


@dataclass(slots=True)
class PagePlan:
    """How to fetch one page: ordering, then an offset or a keyset."""

    order_by: list[ColumnElement[Any]] = field(default_factory=list)
    offset: int = 0
    limit: int = 100
    after: tuple[Any, ...] | None = None
    cursor_key: Any = None
    """The keyset's sort column (cursor pagination), ``None`` for the id alone."""

    def trim(self, rows: Sequence[Row], request: PageRequest) -> tuple[list[Row], str | None]:
        """The page's rows and, with cursors, the cursor of the next page (one
        row more than asked for was fetched to know whether there is one)."""
        if request.cursor is None:
            return list(rows), None
        page = list(rows[: request.count])
        if len(rows) <= request.count or not page:
            return page, None
        last = page[-1]
        values = [getattr(last, self.cursor_key.key)] if self.cursor_key is not None else []
        return page, encode_cursor([*values, getattr(last, "id")])  # noqa: B009


def plan_page(
    request: PageRequest,
    order: Callable[[SortKey], ColumnElement[Any]],
    cursor_sorts: CursorSorts,
) -> PagePlan:
    """Index pagination sorts by any attribute (``order`` of the request's
    sort key), missing values last when ascending and first when descending
    (RFC 7644 §3.4.2.3); cursor pagination sorts ascending by one of
    ``cursor_sorts`` (keyed by the sort attribute's name within its schema)."""
    if request.cursor is None:
        order_by: list[ColumnElement[Any]] = []
        if request.sort is not None:
            column = order(request.sort)
            order_by = [
                column.desc().nulls_first() if request.descending else column.asc().nulls_last()
            ]
        return PagePlan(order_by=order_by, offset=request.start_index - 1, limit=request.count)
    sort_name = request.sort.attribute.rpartition(":")[2] if request.sort else None
    key = (sort_name or "id").lower()
    if key not in cursor_sorts or request.descending:
        raise InvalidSortError(
            f"cursor pagination sorts ascending by one of {sorted(cursor_sorts)}, not {sort_name!r}"
        )
    column, kind = cursor_sorts[key]
    kinds: list[type] = [kind, str] if column is not None else [str]
    after = decode_cursor(request.cursor, kinds) if request.cursor else None
    return PagePlan(
        order_by=[column] if column is not None else [],
        offset=0,
        limit=request.count + 1,
        after=after,
        cursor_key=column,
    )


async def fetch_page(
    session: AsyncSession,
    live: Select[Any],
    resource_type: str,
    where: ColumnElement[bool] | None,
    plan: PagePlan,
    id_key: ColumnElement[Any] | InstrumentedAttribute[Any],
) -> Page[Any]:
    """The page ``plan`` asks for of ``live`` (every live row of
    ``resource_type``) narrowed by ``where``, ordered by the plan's keys then
    ``id_key`` (:func:`page_of`), and how many rows match in all: what the
    page itself tells when it is a first page with room to spare (an Entra
    look-up), the live total :mod:`identity_store.counts` keeps when the list
    is not filtered, otherwise one ``count(*)``."""
    base = live if where is None else live.where(where)
    query = page_of(base, [*plan.order_by, id_key], plan.offset, plan.after)
    limit = plan.limit
    rows = list((await session.scalars(query.limit(limit))).all()) if limit > 0 else []
    total = total_of_page(len(rows), plan.offset, limit, plan.after)
    if total is None:
        if where is None:
            total = await counts.total(session, resource_type)
        else:
            total = await count_matching(session, live, where)
    return Page(total=total, rows=rows)


async def count_matching(
    session: AsyncSession, live: Select[Any], where: ColumnElement[bool]
) -> int:
    """How many rows of ``live`` match ``where``: one ``count(*)``."""
    matching = live.where(where).subquery()
    return int(await session.scalar(select(func.count()).select_from(matching)) or 0)


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
