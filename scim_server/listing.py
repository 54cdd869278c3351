"""Query parameters and list responses (RFC 7644 §3.4.2, §3.4.3; RFC 9865 cursors)."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from scim2_models import ResponseParameters
from sqlalchemy import ColumnElement
from starlette.datastructures import QueryParams

from identity_store.paging import Page

from .errors import ScimError

LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@dataclass(slots=True)
class ListQuery:
    """A list or search request, from query parameters or a ``/.search`` body."""

    filter: str | None = None
    sort_by: str | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    cursor: str | None = None
    """``None``: index pagination. ``""``: first page of cursor pagination."""
    attributes: list[str] = field(default_factory=list)
    excluded_attributes: list[str] = field(default_factory=list)

    def response_parameters(self) -> ResponseParameters[Any] | None:
        if not self.attributes and not self.excluded_attributes:
            return None
        try:
            return ResponseParameters(
                attributes=self.attributes or None,
                excluded_attributes=self.excluded_attributes or None,
            )
        except ValueError as exc:
            raise ScimError(400, f"invalid attributes: {exc}", "invalidValue") from exc

    def wants(self, attribute: str) -> bool:
        """Whether ``attribute`` (a top-level name) is to be returned, so that
        an excluded one, such as a group's ``members``, is never loaded."""
        lowered = attribute.lower()
        if any(a.lower() == lowered for a in self.excluded_attributes):
            return False
        if self.attributes:
            return any(
                a.lower() == lowered or a.lower().startswith(lowered + ".") for a in self.attributes
            )
        return True


def _integer(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ScimError(400, f"{name} must be an integer", "invalidValue")
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ScimError(400, f"{name} must be an integer, not {raw!r}", "invalidValue") from exc


def _names(raw: Any) -> list[str]:
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def parse_list_query(
    params: QueryParams | dict[str, Any], *, default_count: int, max_count: int
) -> ListQuery:
    """Read RFC 7644 §3.4.2 parameters; names are case-insensitive, as
    Microsoft Entra ID and other clients vary their case."""
    values = {str(k).lower(): v for k, v in params.items()}
    query = ListQuery(count=default_count)
    raw_filter = values.get("filter")
    if raw_filter is not None:
        if not isinstance(raw_filter, str):
            raise ScimError(400, "filter must be a string", "invalidFilter")
        query.filter = raw_filter if raw_filter.strip() else None
    sort_by = values.get("sortby")
    query.sort_by = str(sort_by) if sort_by else None
    order = values.get("sortorder")
    if order is not None:
        if str(order).lower() not in ("ascending", "descending"):
            raise ScimError(400, "sortOrder must be 'ascending' or 'descending'", "invalidValue")
        query.descending = str(order).lower() == "descending"
    if values.get("startindex") is not None:
        query.start_index = max(1, _integer("startIndex", values["startindex"]))
    if values.get("count") is not None:
        query.count = min(max(0, _integer("count", values["count"])), max_count)
    if "cursor" in values:
        query.cursor = str(values["cursor"] or "")
    query.attributes = _names(values.get("attributes"))
    query.excluded_attributes = _names(values.get("excludedattributes"))
    return query


def encode_cursor(values: list[Any]) -> str:
    """An opaque RFC 9865 cursor: the sort key of the last row returned."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: list[type]) -> tuple[Any, ...]:
    """The sort key a cursor carries; ``invalidCursor`` when it is not ours."""
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
        raise ScimError(400, "the cursor is not valid for this query", "invalidCursor") from exc


def list_response(
    resources: list[dict[str, Any]],
    total: int,
    query: ListQuery,
    next_cursor: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "itemsPerPage": len(resources),
    }
    if query.cursor is None:
        body["startIndex"] = query.start_index
    elif next_cursor is not None:
        body["nextCursor"] = next_cursor
    body["Resources"] = resources
    return body


CursorSorts = dict[str, tuple[Any, type]]
"""Sort keys usable with cursors, lower-cased SCIM name → (column or ``None``
for the id alone, Python type of its values). Such a column is never NULL, so
that a keyset ``(key, id) > (last key, last id)`` visits every row once."""

Row = TypeVar("Row")


@dataclass(slots=True)
class PagePlan:
    """How to fetch one page: ordering, then an offset or a keyset."""

    order_by: list[ColumnElement[Any]]
    offset: int
    limit: int
    after: tuple[Any, ...] | None = None
    cursor_key: Any = None
    """The keyset's sort column (cursor pagination), ``None`` for the id alone."""

    def trim(self, rows: Sequence[Row], query: ListQuery) -> tuple[list[Row], str | None]:
        """The page's rows and, with cursors, the cursor of the next page (one
        row more than asked for was fetched to know whether there is one)."""
        if query.cursor is None:
            return list(rows), None
        page = list(rows[: query.count])
        if len(rows) <= query.count or not page:
            return page, None
        last = page[-1]
        values = [getattr(last, self.cursor_key.key)] if self.cursor_key is not None else []
        return page, encode_cursor([*values, getattr(last, "id")])  # noqa: B009


def plan_page(
    query: ListQuery,
    sort_column: Callable[[str], ColumnElement[Any]],
    cursor_sorts: CursorSorts,
) -> PagePlan:
    """Index pagination sorts by any attribute, missing values last when
    ascending and first when descending (RFC 7644 §3.4.2.3); cursor
    pagination sorts ascending by one of ``cursor_sorts``."""
    if query.cursor is None:
        order: list[ColumnElement[Any]] = []
        if query.sort_by:
            column = sort_column(query.sort_by)
            order = [column.desc().nulls_first() if query.descending else column.asc().nulls_last()]
        return PagePlan(order_by=order, offset=query.start_index - 1, limit=query.count)
    key = (query.sort_by or "id").lower()
    if key not in cursor_sorts or query.descending:
        raise ScimError(
            400,
            f"cursor pagination sorts ascending by one of {sorted(cursor_sorts)}, "
            f"not {query.sort_by!r}",
            "invalidValue",
        )
    column, kind = cursor_sorts[key]
    kinds: list[type] = [kind, str] if column is not None else [str]
    after = decode_cursor(query.cursor, kinds) if query.cursor else None
    return PagePlan(
        order_by=[column] if column is not None else [],
        offset=0,
        limit=query.count + 1,
        after=after,
        cursor_key=column,
    )


Fetch = Callable[..., Awaitable[Page[Any]]]
"""The store's list function: ``(session, where, *, order_by, offset, limit,
after)`` → :class:`~identity_store.paging.Page` (``list_user_rows``,
``list_groups``)."""
Render = Callable[[Any, Sequence[Any], ListQuery], Awaitable[list[dict[str, Any]]]]
"""Builds the SCIM documents of rows: ``(session, rows, query)``."""


async def search_resources(
    sessions: Callable[[], Any],
    query: ListQuery,
    *,
    where: ColumnElement[bool] | None,
    sort_column: Callable[[str], ColumnElement[Any]],
    cursor_sorts: CursorSorts,
    fetch: Fetch,
    render: Render,
    dump: Callable[[dict[str, Any], Any, Any], dict[str, Any]],
    response_context: Any,
) -> dict[str, Any]:
    """One list or search request of one resource type (RFC 7644 §3.4.2):
    plan the page, fetch it, render it, trim the attributes."""
    plan = plan_page(query, sort_column, cursor_sorts)
    async with sessions() as session:
        page = await fetch(
            session,
            where,
            order_by=plan.order_by,
            offset=plan.offset,
            limit=plan.limit,
            after=plan.after,
        )
        rows, next_cursor = plan.trim(page.rows, query)
        docs = await render(session, rows, query)
    params = query.response_parameters()
    resources = [dump(doc, params, response_context) for doc in docs]
    return list_response(resources, page.total, query, next_cursor)
