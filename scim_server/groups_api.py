"""``/Groups`` (RFC 7644 §3.3-§3.6), with membership changes that touch only
the members a request names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scim2_models import Context, Group, PatchOp, ResponseParameters
from scim2_models.path.expressions import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    ValuePath,
)
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from identity_store import groups as store
from identity_store.filtering import group_order, group_where
from identity_store.models import Group as GroupRow

from . import entra, filters
from .errors import ScimError
from .listing import CursorSorts, ListQuery, parse_list_query, search_resources
from .mapping import etag, group_document
from .request import Call, begin, if_match_version, if_none_match, in_transaction, read_json
from .responses import NoContent, NotModified, ScimResponse
from .schemas import PATCH_POLICY, ScimGroup

CURSOR_SORTS: CursorSorts = {
    "id": (None, str),
    "meta.created": (GroupRow.created_at, datetime),
    "meta.lastmodified": (GroupRow.updated_at, datetime),
    "displayname": (GroupRow.display_name_normalized, str),
}


def dump(
    doc: dict[str, Any], params: ResponseParameters[Any] | None, ctx: Context
) -> dict[str, Any]:
    if params is None:
        return doc
    return ScimGroup.model_validate(doc).model_dump(scim_ctx=ctx, response_parameters=params)


def _query(call: Call) -> ListQuery:
    settings = call.state.settings
    return parse_list_query(
        call.request.query_params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )


async def render(
    session: AsyncSession, groups: Sequence[GroupRow], call: Call, query: ListQuery | None = None
) -> list[dict[str, Any]]:
    """Documents of ``groups``; members are not even queried when excluded."""
    query = query or ListQuery()
    members = (
        await store.members_of(session, [g.id for g in groups]) if query.wants("members") else {}
    )
    return [
        group_document(g, call.base_url, members.get(g.id) if query.wants("members") else None)
        for g in groups
    ]


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
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    resource = validate_group(body, Context.RESOURCE_CREATION_REQUEST)

    async def work(session: AsyncSession) -> dict[str, Any]:
        group = await store.create_group(
            session,
            resource.display_name or "",
            call.actor,
            external_id=resource.external_id,
            member_ids=_member_ids(resource),
        )
        return (await render(session, [group], call))[0]

    doc = await in_transaction(call, work)
    return _response(doc, 201, None, Context.RESOURCE_CREATION_RESPONSE)


async def read(request: Request) -> Response:
    call = await begin(request, "scim:read")
    query = _query(call)
    async with call.state.readers() as session:
        group = await store.get_group(session, str(request.path_params["id"]))
        if if_none_match(request, group.version):
            return NotModified(etag(group.version))
        doc = (await render(session, [group], call, query))[0]
    return _response(doc, 200, query, Context.RESOURCE_QUERY_RESPONSE)


async def replace(request: Request) -> Response:
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    resource = validate_group(body, Context.RESOURCE_REPLACEMENT_REQUEST)
    expected = if_match_version(request)
    group_id = str(request.path_params["id"])

    async def work(session: AsyncSession) -> dict[str, Any]:
        group = await store.get_group(session, group_id)
        group = await store.update_group(
            session,
            group,
            call.actor,
            display_name=resource.display_name or "",
            external_id=resource.external_id,
            replace_members=_member_ids(resource),
            expected_version=expected,
            action="group.replace",
        )
        return (await render(session, [group], call))[0]

    doc = await in_transaction(call, work)
    return _response(doc, 200, None, Context.RESOURCE_REPLACEMENT_RESPONSE)


class _Changes:
    """What a PATCH request does to a group, gathered before touching the store."""

    def __init__(self) -> None:
        self.display_name: str | None = None
        self.external_id: Any = ...
        self.add: list[str] = []
        self.remove: list[str] = []
        self.replace_members: list[str] | None = None
        self.remove_all = False

    def add_members(self, ids: list[str]) -> None:
        if self.replace_members is not None:
            self.replace_members.extend(ids)
        else:
            self.add.extend(ids)
            self.remove = [i for i in self.remove if i not in set(ids)]

    def remove_members(self, ids: list[str]) -> None:
        if self.replace_members is not None:
            drop = set(ids)
            self.replace_members = [i for i in self.replace_members if i not in drop]
        else:
            self.remove.extend(ids)
            self.add = [i for i in self.add if i not in set(ids)]


def _values(value: Any) -> list[str]:
    """Member ids from a PATCH value: a list of ``{"value": id}`` objects, one
    such object, or a bare id string (Microsoft's SCIM test collection sends
    that)."""
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        if isinstance(item, str) and item:
            ids.append(item)
        elif isinstance(item, dict) and isinstance(item.get("value"), str) and item["value"]:
            ids.append(item["value"])
        else:
            raise ScimError(400, f"a member needs a 'value', got {item!r}", "invalidValue")
    return ids


def _ids_from_filter(node: FilterNode) -> list[str]:
    """Member ids named by ``value eq "id"`` terms joined with ``or``."""
    if isinstance(node, Comparison):
        if (
            node.attr_path.attr.lower() == "value"
            and node.op == CompareOperator.eq
            and isinstance(node.value, str)
            and node.attr_path.sub_attr is None
        ):
            return [node.value]
    elif isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        return [i for term in node.terms for i in _ids_from_filter(term)]
    raise ScimError(
        400,
        f'member filters may only name members by value (value eq "id"), not {node}',
        "invalidFilter",
    )


def _is(path: AttrPath, name: str) -> bool:
    return path.attr.lower() == name.lower() and path.uri in (None, str(Group.__schema__))


def _apply_operation(changes: _Changes, op: str, path: Any, value: Any) -> None:
    node = path.ast if path is not None else None
    if node is None:
        if op == "remove":
            raise ScimError(400, "remove needs a path", "noTarget")
        if not isinstance(value, dict):
            raise ScimError(400, "a PATCH without path needs an object value", "invalidValue")
        for key, item in value.items():
            _apply_operation(changes, op, _Attr(key), item)
        return
    if isinstance(node, ValuePath):
        if not _is(node.attr_path, "members") or node.sub_attr is not None:
            raise ScimError(400, f"unsupported path {path}", "invalidPath")
        ids = _ids_from_filter(node.val_filter)
        if op == "remove":
            changes.remove_members(ids)
            return
        raise ScimError(
            400, f"{op} on {path} is not supported; add or remove members", "invalidPath"
        )
    if not isinstance(node, AttrPath):
        raise ScimError(400, f"unsupported path {path}", "invalidPath")
    if _is(node, "members") and node.sub_attr is None:
        if op == "add":
            changes.add_members(_values(value))
        elif op == "remove":
            if value is None:
                changes.replace_members = []
                changes.add, changes.remove = [], []
            else:  # Microsoft Entra ID: remove with a value list removes those members
                changes.remove_members(_values(value))
        else:
            changes.replace_members = _values(value) if value is not None else []
            changes.add, changes.remove = [], []
    elif _is(node, "displayName") and node.sub_attr is None:
        if op == "remove" or not isinstance(value, str):
            raise ScimError(400, "displayName is required and must be a string", "invalidValue")
        changes.display_name = value
    elif _is(node, "externalId") and node.sub_attr is None:
        if op == "remove":
            changes.external_id = None
        elif value is None or isinstance(value, str):
            changes.external_id = value
        else:
            raise ScimError(400, "externalId must be a string", "invalidValue")
    elif node.attr.lower() in ("id", "meta"):
        raise ScimError(400, f"{node} is read-only", "mutability")
    else:
        raise ScimError(400, f"no attribute {node} on Group", "invalidPath")


class _Attr:
    """A path-less PATCH value key seen as a path."""

    def __init__(self, key: str) -> None:
        uri, _, attr = key.rpartition(":") if key.lower().startswith("urn:") else ("", "", key)
        name, _, sub = attr.partition(".")
        self.ast = AttrPath(attr=name, sub_attr=sub or None, uri=uri or None)

    def __str__(self) -> str:
        return str(self.ast)


async def patch(request: Request) -> Response:
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    operations = PatchOp[ScimGroup].model_validate(
        entra.normalise_patch(body),
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )
    changes = _Changes()
    for operation in operations.operations or []:
        _apply_operation(changes, operation.op.value.lower(), operation.path, operation.value)
    expected = if_match_version(request)
    group_id = str(request.path_params["id"])

    async def work(session: AsyncSession) -> int:
        group = await store.get_group(session, group_id)
        group = await store.update_group(
            session,
            group,
            call.actor,
            display_name=changes.display_name,
            external_id=changes.external_id,
            add=changes.add,
            remove=changes.remove,
            replace_members=changes.replace_members,
            expected_version=expected,
        )
        return group.version

    version = await in_transaction(call, work)
    # Microsoft Entra ID expects 204 for a group PATCH (RFC 7644 §3.5.2 allows it).
    return NoContent(headers={"ETag": etag(version)})


async def delete(request: Request) -> Response:
    call = await begin(request, "scim:write")
    expected = if_match_version(request)
    group_id = str(request.path_params["id"])

    async def work(session: AsyncSession) -> None:
        group = await store.get_group(session, group_id)
        await store.delete_group(session, group, call.actor, expected_version=expected)

    await in_transaction(call, work)
    return NoContent()


async def search(call: Call, query: ListQuery) -> dict[str, Any]:
    """Run a list query; shared by ``GET /Groups`` and ``POST /Groups/.search``."""
    max_length = call.state.settings.max_filter_length
    where = (
        group_where(filters.group_filter(query.filter, max_length=max_length))
        if query.filter
        else None
    )

    async def render_page(
        session: AsyncSession, rows: Sequence[Any], query: ListQuery
    ) -> list[dict[str, Any]]:
        return await render(session, rows, call, query)

    return await search_resources(
        call.state.readers,
        query,
        where=where,
        sort_column=lambda attribute: group_order(filters.group_sort_key(attribute)),
        cursor_sorts=CURSOR_SORTS,
        fetch=store.list_groups,
        render=render_page,
        dump=dump,
        response_context=Context.SEARCH_RESPONSE,
    )


async def list_(request: Request) -> Response:
    call = await begin(request, "scim:read")
    return ScimResponse(await search(call, _query(call)))
