"""``/roles``: Rönd's roles, a named set of permissions (``admin`` only)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from starlette.responses import Response

from identity_store import rbac

from . import cursors
from .models import NewRole, Role, RoleBody, RolePage
from .parameters import COMMON, WITH_BODY, Count, CursorQuery, RoleIdPath
from .problems import problem_responses
from .revisions import documented, set_revision
from .routing import MOUNT, AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["roles"])


def role(record: rbac.RoleRecord) -> Role:
    return Role(
        role_id=record.role_id,
        name=record.name,
        description=record.description,
        permissions=record.permissions,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _input(body: RoleBody) -> rbac.RoleInput:
    return rbac.RoleInput(
        name=body.name, description=body.description, permissions=list(body.permissions)
    )


@router.get("/roles", responses=problem_responses(*COMMON), summary="List roles, by id")
async def list_roles(
    caller: Authorized, count: Count = 100, cursor: CursorQuery = None
) -> RolePage:
    listing = await rbac.list_roles(
        caller.store, after=cursors.decode("roles", cursor), limit=count
    )
    return RolePage(
        items=[role(r) for r in listing.items],
        next_cursor=cursors.encode("roles", listing.next_after),
    )


@router.post(
    "/roles",
    status_code=201,
    responses=problem_responses(*WITH_BODY, 409)
    | documented(
        201,
        "The role, created.",
        headers={"Location": {"description": "The role's URL.", "schema": {"type": "string"}}},
    ),
    summary="Create a role",
)
async def create_role(body: NewRole, caller: Authorized, response: Response) -> Role:
    """409 `conflict` when the id is taken."""
    revised = await rbac.create_role(caller.store, body.role_id, _input(body), caller.actor)
    set_revision(response, revised.revision)
    response.headers["Location"] = f"{MOUNT}/roles/{quote(revised.value.role_id, safe='')}"
    return role(revised.value)


@router.get("/roles/{roleId}", responses=problem_responses(*COMMON, 404), summary="Read a role")
async def read_role(role_id: RoleIdPath, caller: Authorized) -> Role:
    return role(await rbac.get_role(caller.store, role_id))


@router.put(
    "/roles/{roleId}",
    responses=problem_responses(*WITH_BODY, 404, 409) | documented(200, "The role, replaced."),
    summary="Replace a role's name, description and permissions at once",
)
async def replace_role(
    role_id: RoleIdPath, body: RoleBody, caller: Authorized, response: Response
) -> Role:
    """The whole permission set is swapped in one transaction: a concurrent
    check sees the old set or the new one, never neither."""
    revised = await rbac.replace_role(caller.store, role_id, _input(body), caller.actor)
    set_revision(response, revised.revision)
    return role(revised.value)


@router.delete(
    "/roles/{roleId}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON, 404, 409) | documented(204, "The role, deleted."),
    summary="Delete an unused role",
)
async def delete_role(role_id: RoleIdPath, caller: Authorized) -> Response:
    """409 `state-conflict` naming what still uses the role (bindings, groups, users)."""
    revision = await rbac.delete_role(caller.store, role_id, caller.actor)
    response = Response(status_code=204)
    set_revision(response, revision)
    return response
