"""``/Users`` (RFC 7644 §3.3-§3.6) and ``/Me`` (§3.11)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scim2_models import Context, PatchOp, ResponseParameters
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from identity_store import users as store
from identity_store import views
from identity_store.errors import NotFoundError
from identity_store.fastreads import LOOKUP_COLUMNS, PostgresReads
from identity_store.filtering import column_equality, user_order, user_where
from identity_store.models import IdpSource, User
from identity_store.paging import total_of_page
from identity_store.views import UserRecord, UserView

from . import entra, filters, patching
from .errors import ScimError
from .listing import (
    CursorSorts,
    ListQuery,
    list_response,
    parse_list_query,
    plan_page,
    search_resources,
)
from .mapping import etag, user_document, user_input
from .request import Call, begin, if_match_version, if_none_match, in_transaction, read_json
from .responses import NoContent, NotModified, ScimResponse
from .schemas import PATCH_POLICY, ScimUser

CURSOR_SORTS: CursorSorts = {
    "id": (None, str),
    "meta.created": (User.created_at, datetime),
    "meta.lastmodified": (User.updated_at, datetime),
    "username": (User.user_name_normalized, str),
}


WITHOUT_GROUPS = ListQuery(excluded_attributes=["groups"])
"""Rendering for a state that is patched or replaced: ``groups`` is read-only."""


def dump(
    doc: dict[str, Any], params: ResponseParameters[Any] | None, ctx: Context
) -> dict[str, Any]:
    """Trim a document to the requested attributes with scim2-models
    (``returned`` characteristics, RFC 7644 §3.9). Without parameters the
    document is already the full default representation."""
    if params is None:
        return doc
    model = ScimUser.model_validate(doc)
    return model.model_dump(scim_ctx=ctx, response_parameters=params)


def documents(records: Sequence[UserRecord], call: Call) -> list[dict[str, Any]]:
    """SCIM documents of users as read."""
    return [
        user_document(r.user, call.base_url, groups=r.groups, manager_display=r.manager_display)
        for r in records
    ]


async def render(
    session: AsyncSession,
    users: Sequence[User | UserView],
    call: Call,
    query: ListQuery | None = None,
    *,
    groups: bool | None = None,
) -> list[dict[str, Any]]:
    """SCIM documents of ``users``, loading ``groups`` only when they are to
    be returned (``groups=False``: the caller knows there are none, as for a
    new user)."""
    wants_groups = (query or ListQuery()).wants("groups") if groups is None else groups
    return documents(await views.user_records(session, users, groups=wants_groups), call)


async def read_users(call: Call, ids: Sequence[str], *, groups: bool) -> list[UserRecord]:
    """Live users by id: one prepared statement on PostgreSQL
    (:mod:`identity_store.fastreads`), SQLAlchemy elsewhere."""
    if call.state.fast is not None:
        return await call.state.fast.users(ids, groups=groups)
    async with call.state.readers() as session:
        return await views.user_records(
            session, await views.user_views(session, ids), groups=groups
        )


def _resource_response(
    doc: dict[str, Any],
    status: int = 200,
    query: ListQuery | None = None,
    ctx: Context = Context.RESOURCE_QUERY_RESPONSE,
) -> Response:
    params = query.response_parameters() if query else None
    headers = {"ETag": doc["meta"]["version"], "Location": doc["meta"]["location"]}
    return ScimResponse(dump(doc, params, ctx), status_code=status, headers=headers)


def _query(call: Call) -> ListQuery:
    settings = call.state.settings
    return parse_list_query(
        call.request.query_params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )


def validate_user(body: dict[str, Any], ctx: Context) -> ScimUser:
    """A User resource from a request body, validated by scim2-models under the
    server's policy; errors surface as 400 with the right ``scimType``."""
    with_schemas = body
    if "schemas" not in body:
        raise ScimError(400, "the request body has no 'schemas'", "invalidSyntax")
    return ScimUser.model_validate(with_schemas, scim_ctx=ctx)


async def create(request: Request) -> Response:
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    resource = validate_user(entra.normalise_resource(body), Context.RESOURCE_CREATION_REQUEST)
    data = user_input(resource)

    async def work(session: AsyncSession) -> dict[str, Any]:
        user = await store.create_user(
            session,
            data,
            call.actor,
            required_attributes=call.state.settings.required_idp_attributes,
            default_idp_source=call.principal.idp_source or IdpSource.SCIM.value,
        )
        return (await render(session, [user], call, groups=False))[0]

    doc = await in_transaction(call, work)
    return _resource_response(doc, 201, ctx=Context.RESOURCE_CREATION_RESPONSE)


async def _target_id(call: Call) -> str:
    """The id in the path, or the caller's own user for ``/Me``."""
    user_id = call.request.path_params.get("id")
    if user_id is not None:
        return str(user_id)
    if call.principal.user_id is None:
        raise ScimError(
            501, "/Me needs a token bound to a user; this token is not (RFC 7644 §3.11)"
        )
    return call.principal.user_id


async def read(request: Request) -> Response:
    call = await begin(request, "scim:read")
    query = _query(call)
    user_id = await _target_id(call)
    found = await read_users(call, [user_id], groups=query.wants("groups"))
    if not found:
        raise NotFoundError("User", user_id)
    if if_none_match(request, found[0].user.version):
        return NotModified(etag(found[0].user.version))
    return _resource_response(documents(found, call)[0], query=query)


async def replace(request: Request) -> Response:
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    resource = validate_user(entra.normalise_resource(body), Context.RESOURCE_REPLACEMENT_REQUEST)
    expected = if_match_version(request)
    user_id = await _target_id(call)

    async def work(session: AsyncSession) -> dict[str, Any]:
        user = await store.get_user(session, user_id, for_update=True)
        store.check_version(user.version, expected)
        current = ScimUser.model_validate((await render(session, [user], call, WITHOUT_GROUPS))[0])
        resource.replace(current)  # immutable attributes (RFC 7644 §3.5.1)
        user = await store.replace_user(
            session,
            user,
            user_input(resource),
            call.actor,
            required_attributes=call.state.settings.required_idp_attributes,
        )
        return (await render(session, [user], call))[0]

    doc = await in_transaction(call, work)
    return _resource_response(doc, ctx=Context.RESOURCE_REPLACEMENT_RESPONSE)


async def patch(request: Request) -> Response:
    call = await begin(request, "scim:write")
    body = await read_json(request, call.state.settings.max_payload_size)
    operations = PatchOp[ScimUser].model_validate(
        entra.normalise_patch(body),
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )
    expected = if_match_version(request)
    user_id = await _target_id(call)

    async def work(session: AsyncSession) -> dict[str, Any]:
        user = await store.get_user(session, user_id, for_update=True)
        store.check_version(user.version, expected)
        # groups are read-only: the state to patch does not need them.
        document = (await render(session, [user], call, WITHOUT_GROUPS))[0]
        simple = patching.apply_simple(operations, document)
        if simple is not None:
            resource, changed = simple
        else:
            resource = ScimUser.model_validate(document)
            changed = operations.patch(resource, scim_policy=PATCH_POLICY)
        if not changed:
            return (await render(session, [user], call))[0]
        user = await store.replace_user(
            session,
            user,
            user_input(resource),
            call.actor,
            required_attributes=call.state.settings.required_idp_attributes,
            action="user.patch",
        )
        return (await render(session, [user], call))[0]

    doc = await in_transaction(call, work)
    return _resource_response(doc, ctx=Context.RESOURCE_PATCH_RESPONSE)


async def delete(request: Request) -> Response:
    call = await begin(request, "scim:write")
    expected = if_match_version(request)
    user_id = await _target_id(call)

    async def work(session: AsyncSession) -> None:
        user = await store.get_user(session, user_id, for_update=True)
        await store.delete_user(session, user, call.actor, expected_version=expected)

    await in_transaction(call, work)
    return NoContent()


async def _fast_search(
    call: Call, fast: PostgresReads, query: ListQuery, where: ColumnElement[bool] | None
) -> dict[str, Any] | None:
    """The lists most clients send, as one prepared statement on PostgreSQL:
    pages by id (index or cursor) and first pages of a one-column look-up
    (``userName eq``, ``externalId eq``). ``None``: take the general path."""
    if query.sort_by is not None or query.count == 0:
        return None
    plan = plan_page(query, lambda a: user_order(filters.user_sort_key(a)), CURSOR_SORTS)  # by id
    after = plan.after[0] if plan.after else None
    groups = query.wants("groups")
    if where is None:
        rows = await fast.users_after(after, offset=plan.offset, limit=plan.limit, groups=groups)
    else:
        equality = column_equality(where)
        if equality is None or equality[0] not in LOOKUP_COLUMNS:
            return None
        if plan.after is not None or plan.offset != 0:
            return None
        rows = await fast.users_where(*equality, limit=plan.limit, groups=groups)
    total = total_of_page(len(rows), plan.offset, plan.limit, plan.after)
    if total is None:
        if where is not None:
            return None  # a full page of a look-up: the general path counts the matches
        total = await fast.total("User")
    page, next_cursor = plan.trim([r.user for r in rows], query)
    rows = rows[: len(page)]
    params = query.response_parameters()
    resources = [dump(doc, params, Context.SEARCH_RESPONSE) for doc in documents(rows, call)]
    return list_response(resources, total, query, next_cursor)


async def search(call: Call, query: ListQuery) -> dict[str, Any]:
    """Run a list query; shared by ``GET /Users`` and ``POST /Users/.search``."""
    max_length = call.state.settings.max_filter_length
    where = (
        user_where(filters.user_filter(query.filter, max_length=max_length))
        if query.filter
        else None
    )
    if call.state.fast is not None:
        body = await _fast_search(call, call.state.fast, query, where)
        if body is not None:
            return body

    async def render_page(
        session: AsyncSession, rows: Sequence[Any], query: ListQuery
    ) -> list[dict[str, Any]]:
        return await render(session, rows, call, query)

    return await search_resources(
        call.state.readers,
        query,
        where=where,
        sort_column=lambda attribute: user_order(filters.user_sort_key(attribute)),
        cursor_sorts=CURSOR_SORTS,
        fetch=views.list_user_views,
        render=render_page,
        dump=dump,
        response_context=Context.SEARCH_RESPONSE,
    )


async def list_(request: Request) -> Response:
    call = await begin(request, "scim:read")
    return ScimResponse(await search(call, _query(call)))
