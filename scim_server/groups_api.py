"""``/Groups`` (RFC 7644 §3.3-§3.6), with membership changes that touch only
the members a request names.

Each handler authorizes, parses, calls one use case of
:mod:`identity_store.groups` and serializes what it returns. A PATCH is read
here into the store's :class:`~identity_store.groups.GroupChanges` (which
paths and values RFC 7644 and Microsoft Entra ID send); applying it is the
store's.
"""

from __future__ import annotations

from typing import Any

from scim2_models import Context, Group, ResponseParameters
from starlette.requests import Request
from starlette.responses import Response

from identity_store import groups
from identity_store.groups import GroupChanges

from . import filters, group_patch
from .errors import ScimError
from .listing import ListQuery, list_response, request_query
from .mapping import etag, group_document
from .request import (
    AuthorizedRequest,
    authorize,
    if_match_version,
    if_none_match,
    path_id,
    read_json,
)
from .responses import NoContent, NotModified, ScimResponse
from .schemas import ScimGroup


def dump(
    doc: dict[str, Any], params: ResponseParameters[Any] | None, ctx: Context
) -> dict[str, Any]:
    if params is None:
        return doc
    return ScimGroup.model_validate(doc).model_dump(scim_ctx=ctx, response_parameters=params)


def _response(doc: dict[str, Any], status: int, query: ListQuery | None, ctx: Context) -> Response:
    params = query.response_parameters() if query else None
    headers = {"ETag": doc["meta"]["version"], "Location": doc["meta"]["location"]}
    return ScimResponse(dump(doc, params, ctx), status_code=status, headers=headers)


def _member_ids(group: Group) -> list[str]:
    ids = []
    for member in group.members or []:
        if not member.value:
            raise ScimError(400, "every member needs a 'value'", "invalidValue")
        ids.append(member.value)
    return ids


def validate_group(body: dict[str, Any], ctx: Context) -> Group:
    if "schemas" not in body:
        raise ScimError(400, "the request body has no 'schemas'", "invalidSyntax")
    return ScimGroup.model_validate(body, scim_ctx=ctx)


async def create(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    resource = validate_group(body, Context.RESOURCE_CREATION_REQUEST)
    record = await groups.create_group(
        call.store,
        resource.display_name or "",
        call.actor,
        external_id=resource.external_id,
        member_ids=_member_ids(resource),
    )
    doc = group_document(record, call.base_url)
    return _response(doc, 201, None, Context.RESOURCE_CREATION_RESPONSE)


async def read(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    query = request_query(call)
    record = await groups.get_group(call.store, path_id(request), members=query.wants("members"))
    if if_none_match(request, record.group.version):
        return NotModified(etag(record.group.version))
    doc = group_document(record, call.base_url)
    return _response(doc, 200, query, Context.RESOURCE_QUERY_RESPONSE)


async def replace(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    resource = validate_group(body, Context.RESOURCE_REPLACEMENT_REQUEST)
    changes = GroupChanges(
        display_name=resource.display_name or "", external_id=resource.external_id
    )
    changes.set_members(_member_ids(resource))
    record = await groups.change_group(
        call.store,
        path_id(request),
        changes,
        call.actor,
        expected_version=if_match_version(request),
        action="group.replace",
        members=True,
    )
    doc = group_document(record, call.base_url)
    return _response(doc, 200, None, Context.RESOURCE_REPLACEMENT_RESPONSE)


async def patch(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    changes = group_patch.changes(group_patch.validate(body))
    record = await groups.change_group(
        call.store,
        path_id(request),
        changes,
        call.actor,
        expected_version=if_match_version(request),
    )
    # Microsoft Entra ID expects 204 for a group PATCH (RFC 7644 §3.5.2 allows it).
    return NoContent(headers={"ETag": etag(record.group.version)})


async def delete(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    await groups.delete_group(
        call.store,
        path_id(request),
        call.actor,
        expected_version=if_match_version(request),
    )
    return NoContent()


async def find(call: AuthorizedRequest, query: ListQuery) -> dict[str, Any]:
    """A ``ListResponse`` of groups; ``GET /Groups`` and ``POST /Groups/.search``."""
    max_length = call.state.settings.max_filter_length
    request = query.page_request(
        filter=filters.group_filter(query.filter, max_length=max_length) if query.filter else None,
        sort=filters.group_sort_key(query.sort_by) if query.sort_by else None,
    )
    page = await groups.find_groups(call.store, request, members=query.wants("members"))
    params = query.response_parameters()
    resources = [
        dump(group_document(record, call.base_url), params, Context.SEARCH_RESPONSE)
        for record in page.rows
    ]
    return list_response(resources, page.total, query, page.next_cursor)


async def list_(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    return ScimResponse(await find(call, request_query(call)))
