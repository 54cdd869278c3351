"""Query parameters and list responses (RFC 7644 §3.4.2, §3.4.3; RFC 9865 cursors).

Planning, fetching and counting a page is the store's business
(:mod:`identity_store.paging`); this module reads the request and writes the
``ListResponse``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scim2_models import ResponseParameters
from starlette.datastructures import QueryParams

from identity_store.paging import PageRequest

from .errors import ScimError

if TYPE_CHECKING:
    from .request import AuthorizedRequest

LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
MAX_START_INDEX = 2**53
"""Largest ``startIndex`` passed on: any larger one asks for the same empty
page, and the database's 64-bit ``OFFSET`` would overflow on some."""


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

    def page_request(self, filter: Any = None, sort: Any = None) -> PageRequest:
        """The store's page request for this query, with its filter and sort
        key as :mod:`scim_server.filters` read them."""
        return PageRequest(
            filter=filter,
            sort=sort,
            descending=self.descending,
            start_index=self.start_index,
            count=self.count,
            cursor=self.cursor,
        )

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
        query.start_index = min(
            max(1, _integer("startIndex", values["startindex"])), MAX_START_INDEX
        )
    if values.get("count") is not None:
        query.count = min(max(0, _integer("count", values["count"])), max_count)
    if "cursor" in values:
        query.cursor = str(values["cursor"] or "")
    query.attributes = _names(values.get("attributes"))
    query.excluded_attributes = _names(values.get("excludedattributes"))
    return query


def request_query(call: AuthorizedRequest) -> ListQuery:
    """The list query of a ``GET`` request's parameters, paged as the
    server's settings say."""
    settings = call.state.settings
    if not call.request.scope.get("query_string"):
        # No parameters (GET /Users/{id}): what parse_list_query would make of none.
        return ListQuery(count=settings.default_page_size)
    return parse_list_query(
        call.request.query_params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )


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
