"""``/groups/{id}/roles`` and ``/users/{id}/roles``: the roles a group's
members hold (the Entra group → role mapping, nested groups included) and
the roles assigned to a user directly (the User Manager Service's ``roles``),
each replaced as a whole in one transaction (``admin`` only)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from identity_store import rbac

from .models import RoleAssignment
from .parameters import COMMON, WITH_BODY, GroupIdPath, UserIdPath
from .problems import problem_responses
from .revisions import documented, set_revision
from .routing import AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["role assignments"])


@router.get(
    "/groups/{id}/roles",
    responses=problem_responses(*COMMON, 404),
    summary="The roles mapped to a group",
)
async def read_group_roles(group_id: GroupIdPath, caller: Authorized) -> RoleAssignment:
    return RoleAssignment(roles=await rbac.group_roles(caller.store, group_id))


@router.put(
    "/groups/{id}/roles",
    responses=problem_responses(*WITH_BODY, 404, 409)
    | documented(200, "The group's roles, replaced."),
    summary="Replace the roles mapped to a group, at once",
)
async def replace_group_roles(
    group_id: GroupIdPath, body: RoleAssignment, caller: Authorized, response: Response
) -> RoleAssignment:
    """Every member of the group, and of the groups it contains, holds these
    roles everywhere. Unknown role ids are a 400 naming them."""
    revised = await rbac.replace_group_roles(caller.store, group_id, list(body.roles), caller.actor)
    set_revision(response, revised.revision)
    return RoleAssignment(roles=revised.value)


@router.get(
    "/users/{id}/roles",
    responses=problem_responses(*COMMON, 404),
    summary="The roles assigned to a user directly",
)
async def read_user_roles(user_id: UserIdPath, caller: Authorized) -> RoleAssignment:
    return RoleAssignment(roles=await rbac.user_roles(caller.store, user_id))


@router.put(
    "/users/{id}/roles",
    responses=problem_responses(*WITH_BODY, 404, 409)
    | documented(200, "The user's roles, replaced."),
    summary="Replace the roles assigned to a user directly, at once",
)
async def replace_user_roles(
    user_id: UserIdPath, body: RoleAssignment, caller: Authorized, response: Response
) -> RoleAssignment:
    """The old set is never revoked before the new one is granted: one
    transaction. Unknown role ids are a 400 naming them."""
    revised = await rbac.replace_user_roles(caller.store, user_id, list(body.roles), caller.actor)
    set_revision(response, revised.revision)
    return RoleAssignment(roles=revised.value)
