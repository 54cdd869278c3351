"""``POST /.search`` at the root and per resource type (RFC 7644 §3.4.3)."""

from __future__ import annotations

from typing import Any

from scim2_models import InvalidFilterException
from starlette.requests import Request
from starlette.responses import Response

from identity_store.errors import InvalidFilterError

from . import groups_api, users_api
from .errors import ScimError
from .listing import SEARCH_REQUEST_SCHEMA, ListQuery, list_response, parse_list_query
from .request import AuthorizedRequest, authorize, read_json
from .responses import ScimResponse


async def _search_query(request: Request, call: AuthorizedRequest) -> ListQuery:
    body = await read_json(request, call.state.settings)
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or SEARCH_REQUEST_SCHEMA not in schemas:
        raise ScimError(
            400, f"a search request needs the schema {SEARCH_REQUEST_SCHEMA}", "invalidSyntax"
        )
    settings = call.state.settings
    params = {k: v for k, v in body.items() if k != "schemas"}
    return parse_list_query(
        params, default_count=settings.default_page_size, max_count=settings.max_page_size
    )


async def users(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    return ScimResponse(await users_api.find(call, await _search_query(request, call)))


async def groups(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    return ScimResponse(await groups_api.find(call, await _search_query(request, call)))


async def root(request: Request) -> Response:
    """Search every resource type: Users first, then Groups. A filter naming an
    attribute one type lacks matches nothing of that type (RFC 7644 §3.4.2.1);
    it is an error only when no type knows it."""
    call = await authorize(request, "scim:read")
    query = await _search_query(request, call)
    if query.cursor is not None:
        raise ScimError(
            400, "cursor pagination is per resource type; search /Users or /Groups", "invalidValue"
        )
    if query.sort_by:
        raise ScimError(
            400, "sortBy is per resource type; search /Users or /Groups", "invalidValue"
        )
    searches = [users_api.find, groups_api.find]
    counting = ListQuery(filter=query.filter, count=0)
    totals: list[int | None] = []
    errors: list[InvalidFilterException | InvalidFilterError] = []
    for search in searches:
        try:
            totals.append(int((await search(call, counting))["totalResults"]))
        except (InvalidFilterException, InvalidFilterError) as exc:
            # The SCIM layer's refusal (an unknown attribute) or the store's
            # (one it cannot filter on): either way, this type matches nothing.
            totals.append(None)
            errors.append(exc)
    if len(errors) == len(searches):
        raise errors[0]

    resources: list[dict[str, Any]] = []
    skip = query.start_index - 1
    wanted = query.count
    for search, total in zip(searches, totals, strict=True):
        if total is None or wanted <= 0:
            continue
        if skip >= total:
            skip -= total
            continue
        page_query = ListQuery(
            filter=query.filter,
            start_index=skip + 1,
            count=wanted,
            attributes=query.attributes,
            excluded_attributes=query.excluded_attributes,
        )
        page = await search(call, page_query)
        resources.extend(page["Resources"])
        wanted -= len(page["Resources"])
        skip = 0
    return ScimResponse(list_response(resources, sum(t or 0 for t in totals), query))
