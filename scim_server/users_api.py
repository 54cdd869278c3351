"""``/Users`` (RFC 7644 §3.3-§3.6) and ``/Me`` (§3.11).

Each handler authorizes, parses, calls one use case of
:mod:`identity_store.users` and serializes what it returns.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from scim2_models import Context, Mutability, PatchOp, ResponseParameters
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from identity_store import users
from identity_store.users import UserInput, UserRecord

from . import entra, filters, request_limits, user_patch
from .errors import ScimError
from .listing import ListQuery, list_response, request_query
from .mapping import etag, user_document, user_input
from .request import (
    AuthorizedRequest,
    authorize,
    if_match_version,
    if_none_match,
    path_id,
    read_json,
)
from .responses import NoContent, NotModified, ScimResponse
from .schemas import PATCH_POLICY, PRODUCT_USER_SCHEMA, ScimUser, UserPatchOp


def dump(
    doc: dict[str, Any], params: ResponseParameters[Any] | None, ctx: Context
) -> dict[str, Any]:
    """Trim a document to the requested attributes with scim2-models
    (``returned`` characteristics, RFC 7644 §3.9). Without parameters the
    document is already the full default representation.

    ``customData`` is opaque to trimming: it is held out while scim2-models
    trims and put back if its attribute stays, so that its depth (pydantic's
    serialiser refuses a few hundred levels) never makes a read fail."""
    if params is None:
        return doc
    product = doc.get(PRODUCT_USER_SCHEMA)
    custom = product.get("customData") if isinstance(product, dict) else None
    if isinstance(product, dict) and custom is not None:
        doc = {**doc, PRODUCT_USER_SCHEMA: {**product, "customData": {"held": "out"}}}
    model = ScimUser.model_validate(doc)
    trimmed = model.model_dump(scim_ctx=ctx, response_parameters=params)
    kept = trimmed.get(PRODUCT_USER_SCHEMA)
    if custom is not None and isinstance(kept, dict) and "customData" in kept:
        kept["customData"] = custom
    return trimmed


def _resource_response(
    doc: dict[str, Any],
    status: int = 200,
    query: ListQuery | None = None,
    ctx: Context = Context.RESOURCE_QUERY_RESPONSE,
) -> Response:
    params = query.response_parameters() if query else None
    headers = {"ETag": doc["meta"]["version"], "Location": doc["meta"]["location"]}
    return ScimResponse(dump(doc, params, ctx), status_code=status, headers=headers)


def validate_user(body: dict[str, Any], ctx: Context) -> ScimUser:
    """A User resource from a request body, validated by scim2-models under the
    server's policy; errors surface as 400 with the right ``scimType``."""
    if "schemas" not in body:
        raise ScimError(400, "the request body has no 'schemas'", "invalidSyntax")
    return ScimUser.model_validate(body, scim_ctx=ctx)


def validate_patch(body: dict[str, Any]) -> PatchOp[ScimUser] | user_patch.KnownSimple:
    """A user ``PatchOp`` from a request body, validated by scim2-models; for
    a simple request of a shape it accepted before, the operations without
    validating the message again (:func:`user_patch.known_simple`)."""
    normalised = entra.normalise_patch(body)
    known = user_patch.known_simple(normalised)
    if known is not None:
        return known
    operations = _patch_message(normalised)
    user_patch.remember(normalised, operations)
    return operations


def validate_patch_message(body: dict[str, Any]) -> PatchOp[ScimUser]:
    """A user ``PatchOp`` from a request body, always validated as a message
    by scim2-models (no shape remembered or used)."""
    return _patch_message(entra.normalise_patch(body))


def _patch_message(normalised: dict[str, Any]) -> PatchOp[ScimUser]:
    return UserPatchOp.model_validate(
        normalised,
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )


def _holds_immutable(model: Any) -> bool:
    """Whether an attribute of ``model`` (a scim2-models class), or one of
    its sub-attributes, is ``immutable``."""
    for name in model.model_fields:
        if model.get_field_annotation(name, Mutability) == Mutability.immutable:
            return True
        root = model.get_field_root_type(name)
        nested = root is not model and isinstance(root, type) and issubclass(root, BaseModel)
        if nested and _holds_immutable(root):
            return True
    return False


def immutable_fields(model: Any) -> dict[str, str]:
    """The fields of a resource class (extensions included) whose attribute
    is ``immutable`` or holds an immutable sub-attribute, with their names
    in a SCIM document."""
    found = {}
    for name, info in model.model_fields.items():
        root = model.get_field_root_type(name)
        complex_root = isinstance(root, type) and issubclass(root, BaseModel)
        if model.get_field_annotation(name, Mutability) == Mutability.immutable or (
            complex_root and _holds_immutable(root)
        ):
            found[name] = info.serialization_alias or name
    return found


IMMUTABLE_FIELDS = immutable_fields(ScimUser)
"""What a PUT's immutability check reads of the stored user: none in this
server's schemas today, so a PUT validates its body only."""


def replace_immutable(resource: Any, stored: dict[str, Any], fields: dict[str, str]) -> None:
    """RFC 7644 §3.5.1 for a PUT: scim2-models' ``Resource.replace`` of the
    stored document ``stored`` into ``resource``, on ``fields`` only
    (:func:`immutable_fields`): the attributes whose stored value it
    compares (``MutabilityException``) or keeps when left out. The stored
    user is validated for those attributes, not as a whole a second time;
    what else ``replace`` does (copy ``readOnly`` values, keep an omitted
    ``writeOnly`` password) never reaches
    :func:`~scim_server.mapping.user_input`, which reads the writable
    attributes and a password the request set."""
    narrowed = {"schemas": stored["schemas"]}
    narrowed.update({key: stored[key] for key in fields.values() if key in stored})
    resource.replace(type(resource).model_validate(narrowed))


def _target_id(call: AuthorizedRequest) -> str:
    """The id in the path, or the caller's own user for ``/Me``."""
    if "id" in call.request.path_params:
        return path_id(call.request)
    if call.principal.user_id is None:
        raise ScimError(
            501, "/Me needs a token bound to a user; this token is not (RFC 7644 §3.11)"
        )
    return call.principal.user_id


async def create(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    request_limits.check_user_values(body, call.state.settings)
    resource = validate_user(entra.normalise_resource(body), Context.RESOURCE_CREATION_REQUEST)
    record = await users.create_user(
        call.store, user_input(resource), call.actor, idp_source=call.principal.idp_source
    )
    doc = user_document(record, call.base_url)
    return _resource_response(doc, 201, ctx=Context.RESOURCE_CREATION_RESPONSE)


async def read(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    query = request_query(call)
    record = await users.get_user(call.store, _target_id(call), groups=query.wants("groups"))
    if if_none_match(request, record.user.version):
        return NotModified(etag(record.user.version))
    return _resource_response(user_document(record, call.base_url), query=query)


async def replace(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    request_limits.check_user_values(body, call.state.settings)
    resource = validate_user(entra.normalise_resource(body), Context.RESOURCE_REPLACEMENT_REQUEST)

    def change(current: UserRecord) -> UserInput:
        if IMMUTABLE_FIELDS:  # immutable attributes (RFC 7644 §3.5.1)
            replace_immutable(resource, user_document(current, call.base_url), IMMUTABLE_FIELDS)
        return user_input(resource)

    record = await users.update_user(
        call.store,
        _target_id(call),
        change,
        call.actor,
        expected_version=if_match_version(request),
        action="user.replace",
    )
    doc = user_document(record, call.base_url)
    return _resource_response(doc, ctx=Context.RESOURCE_REPLACEMENT_RESPONSE)


async def patch(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    body = await read_json(request, call.state.settings)
    weight = request_limits.check_user_patch(body, call.state.settings)
    # Validating and applying up to IDSTORE_MAX_PATCH_OPERATIONS operations of
    # IDSTORE_MAX_MULTI_VALUES values each takes tens of milliseconds: a heavy
    # PATCH does both in a worker thread, so the event loop keeps serving.
    heavy = weight > request_limits.OFFLOAD_WEIGHT
    operations = await run_in_threadpool(validate_patch, body) if heavy else validate_patch(body)

    def change(current: UserRecord) -> UserInput | None:
        return user_patch.changed_input(operations, current, call.base_url)

    record = await users.update_user(
        call.store,
        _target_id(call),
        change,
        call.actor,
        expected_version=if_match_version(request),
        offload=heavy,
    )
    doc = user_document(record, call.base_url)
    return _resource_response(doc, ctx=Context.RESOURCE_PATCH_RESPONSE)


async def delete(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    await users.delete_user(
        call.store, _target_id(call), call.actor, expected_version=if_match_version(request)
    )
    return NoContent()


async def find(call: AuthorizedRequest, query: ListQuery) -> dict[str, Any]:
    """A ``ListResponse`` of users; ``GET /Users`` and ``POST /Users/.search``."""
    max_length = call.state.settings.max_filter_length
    request = query.page_request(
        filter=filters.user_filter(query.filter, max_length=max_length) if query.filter else None,
        sort=filters.user_sort_key(query.sort_by) if query.sort_by else None,
    )
    page = await users.find_users(call.store, request, groups=query.wants("groups"))
    params = query.response_parameters()
    resources = [
        dump(user_document(record, call.base_url), params, Context.SEARCH_RESPONSE)
        for record in page.rows
    ]
    return list_response(resources, page.total, query, page.next_cursor)


async def list_(request: Request) -> Response:
    call = await authorize(request, "scim:read")
    return ScimResponse(await find(call, request_query(call)))
