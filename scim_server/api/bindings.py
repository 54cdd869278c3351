"""``/bindings``: Rönd's bindings, which grant roles and permissions to
users and groups, everywhere or on one resource (``admin`` only)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from starlette.responses import Response

from identity_store import rbac

from . import cursors
from .models import (
    NO_CONTROL_NOR_SLASH,
    Binding,
    BindingBody,
    BindingPage,
    BindingResource,
    NewBinding,
)
from .parameters import (
    COMMON,
    WITH_BODY,
    BindingIdPath,
    Count,
    CursorQuery,
    ResourceIdQuery,
    ResourceTypeQuery,
)
from .problems import FieldError, ProblemError, problem_responses
from .revisions import documented, set_revision
from .routing import MOUNT, AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["bindings"])


def _filter_id(alias: str, what: str) -> object:
    return Query(
        alias=alias, min_length=1, max_length=128, pattern=NO_CONTROL_NOR_SLASH, description=what
    )


SubjectQuery = Annotated[str | None, _filter_id("subject", "Bindings naming this user.")]
GroupQuery = Annotated[str | None, _filter_id("group", "Bindings naming this group.")]
RoleQuery = Annotated[str | None, _filter_id("role", "Bindings granting this role.")]


def binding(record: rbac.BindingRecord) -> Binding:
    return Binding(
        binding_id=record.binding_id,
        subjects=record.subjects,
        groups=record.groups,
        roles=record.roles,
        permissions=record.permissions,
        resource=None
        if record.resource is None
        else BindingResource(resource_type=record.resource.type, resource_id=record.resource.id),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def resource_filter(resource_type: str | None, resource_id: str | None) -> rbac.Resource | None:
    """The resource both query parameters name; 400 when only one is given."""
    if resource_type is None and resource_id is None:
        return None
    if resource_type is None or resource_id is None:
        missing = "resourceType" if resource_type is None else "resourceId"
        raise ProblemError(
            400,
            "invalid-request",
            "resourceType and resourceId go together",
            errors=[
                FieldError(
                    location=["query", missing],
                    detail="Field required with the other resource parameter",
                    type="missing",
                )
            ],
        )
    return rbac.Resource(type=resource_type, id=resource_id)


def _input(body: BindingBody) -> rbac.BindingInput:
    return rbac.BindingInput(
        subjects=list(body.subjects),
        groups=list(body.groups),
        roles=list(body.roles),
        permissions=list(body.permissions),
        resource=None
        if body.resource is None
        else rbac.Resource(type=body.resource.resource_type, id=body.resource.resource_id),
    )


@router.get("/bindings", responses=problem_responses(*COMMON), summary="List bindings, by id")
async def list_bindings(
    caller: Authorized,
    subject: SubjectQuery = None,
    group: GroupQuery = None,
    role: RoleQuery = None,
    resource_type: ResourceTypeQuery = None,
    resource_id: ResourceIdQuery = None,
    count: Count = 100,
    cursor: CursorQuery = None,
) -> BindingPage:
    """Every filter given must hold (`subject`, `group`, `role`, and the
    resource: `resourceType` with `resourceId`)."""
    where = rbac.BindingFilter(
        subject=subject,
        group=group,
        role=role,
        resource=resource_filter(resource_type, resource_id),
    )
    listing = await rbac.list_bindings(
        caller.store, where, after=cursors.decode("bindings", cursor), limit=count
    )
    return BindingPage(
        items=[binding(b) for b in listing.items],
        next_cursor=cursors.encode("bindings", listing.next_after),
    )


@router.post(
    "/bindings",
    status_code=201,
    responses=problem_responses(*WITH_BODY, 409)
    | documented(
        201,
        "The binding, created.",
        headers={"Location": {"description": "The binding's URL.", "schema": {"type": "string"}}},
    ),
    summary="Create a binding",
)
async def create_binding(body: NewBinding, caller: Authorized, response: Response) -> Binding:
    """A binding needs a subject or a group, and a role or a permission;
    unknown users, groups or roles are a 400 naming them; a taken
    `bindingId` is 409 `conflict`."""
    revised = await rbac.create_binding(
        caller.store, _input(body), caller.actor, binding_id=body.binding_id
    )
    set_revision(response, revised.revision)
    response.headers["Location"] = f"{MOUNT}/bindings/{quote(revised.value.binding_id, safe='')}"
    return binding(revised.value)


@router.get(
    "/bindings/{bindingId}", responses=problem_responses(*COMMON, 404), summary="Read a binding"
)
async def read_binding(binding_id: BindingIdPath, caller: Authorized) -> Binding:
    return binding(await rbac.get_binding(caller.store, binding_id))


@router.put(
    "/bindings/{bindingId}",
    responses=problem_responses(*WITH_BODY, 404, 409) | documented(200, "The binding, replaced."),
    summary="Replace a binding's lists and resource at once",
)
async def replace_binding(
    binding_id: BindingIdPath, body: BindingBody, caller: Authorized, response: Response
) -> Binding:
    revised = await rbac.replace_binding(caller.store, binding_id, _input(body), caller.actor)
    set_revision(response, revised.revision)
    return binding(revised.value)


@router.delete(
    "/bindings/{bindingId}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON, 404, 409) | documented(204, "The binding, deleted."),
    summary="Delete a binding",
)
async def delete_binding(binding_id: BindingIdPath, caller: Authorized) -> Response:
    revision = await rbac.delete_binding(caller.store, binding_id, caller.actor)
    response = Response(status_code=204)
    set_revision(response, revision)
    return response
