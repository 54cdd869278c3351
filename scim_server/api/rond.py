"""Rönd's standalone endpoints, so that tools written for Rönd work
against this store (``admin`` only), and the export of roles and bindings
as Rönd's collections' documents.

Rönd answers grant and revoke with 200 and the bodies below, and refuses
a grant on a resource type without ``resourceId`` ("missing resource id"),
a grant with nothing to bind, and a revoke with neither subjects nor groups
nor (a type and resource ids) with 400; so do these, by the rules of
:func:`identity_store.rbac.grant` and :func:`~identity_store.rbac.revoke`.
Unknown fields are ignored, as Rönd's decoder ignores them.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from identity_store import rbac

from .models import (
    RbacExport,
    RondBinding,
    RondGrant,
    RondGranted,
    RondRevoke,
    RondRevoked,
    RondRole,
)
from .parameters import COMMON, WITH_BODY, ResourceTypePath
from .problems import problem_responses
from .revisions import documented, set_revision
from .routing import AdminRoute, Authorized

router = APIRouter(route_class=AdminRoute, tags=["Rönd"])

GRANTED = problem_responses(*WITH_BODY) | documented(200, "The new binding's id.")
REVOKED = problem_responses(*WITH_BODY) | documented(200, "How many bindings changed.")


async def _grant(
    body: RondGrant, resource_type: str | None, caller: Authorized, response: Response
) -> RondGranted:
    revised = await rbac.grant(
        caller.store,
        rbac.Grant(
            subjects=list(body.subjects),
            groups=list(body.groups),
            roles=list(body.roles),
            permissions=list(body.permissions),
            resource_type=resource_type,
            resource_id=body.resource_id if resource_type is not None else None,
        ),
        caller.actor,
    )
    set_revision(response, revised.revision)
    return RondGranted(binding_id=revised.value)


async def _revoke(
    body: RondRevoke, resource_type: str | None, caller: Authorized, response: Response
) -> RondRevoked:
    revised = await rbac.revoke(
        caller.store,
        rbac.Revoke(
            subjects=list(body.subjects),
            groups=list(body.groups),
            resource_ids=list(body.resource_ids) if resource_type is not None else [],
            resource_type=resource_type,
        ),
        caller.actor,
    )
    set_revision(response, revised.revision)
    return RondRevoked(
        deleted_bindings=revised.value.deleted_bindings,
        modified_bindings=revised.value.modified_bindings,
    )


@router.post(
    "/rond/grant/bindings", responses=GRANTED, summary="Rönd's grant: a binding everywhere"
)
async def grant(body: RondGrant, caller: Authorized, response: Response) -> RondGranted:
    """`resourceId` is ignored here, as Rönd ignores it."""
    return await _grant(body, None, caller, response)


@router.post(
    "/rond/grant/bindings/resource/{resourceType}",
    responses=GRANTED,
    summary="Rönd's grant: a binding on one resource",
)
async def grant_on_resource(
    resource_type: ResourceTypePath, body: RondGrant, caller: Authorized, response: Response
) -> RondGranted:
    """400 "missing resource id" without `resourceId`."""
    return await _grant(body, resource_type, caller, response)


@router.post(
    "/rond/revoke/bindings",
    responses=REVOKED,
    summary="Rönd's revoke: take subjects and groups out of bindings",
)
async def revoke(body: RondRevoke, caller: Authorized, response: Response) -> RondRevoked:
    """A binding left with neither subjects nor groups is deleted.
    `resourceIds` is ignored here, as Rönd ignores it."""
    return await _revoke(body, None, caller, response)


@router.post(
    "/rond/revoke/bindings/resource/{resourceType}",
    responses=REVOKED,
    summary="Rönd's revoke, on resources of one type",
)
async def revoke_on_resource(
    resource_type: ResourceTypePath, body: RondRevoke, caller: Authorized, response: Response
) -> RondRevoked:
    """Only bindings on `resourceIds` of the path's type; with no subjects
    or groups, every binding on those resources is deleted."""
    return await _revoke(body, resource_type, caller, response)


@router.get(
    "/rbac/export",
    responses=problem_responses(*COMMON),
    response_model_exclude_none=True,
    summary="Roles and bindings as Rönd's collections' documents",
)
async def export(caller: Authorized) -> RbacExport:
    """For loading into a Rönd deployment's `roles` and `bindings` collections."""
    roles, bindings = await rbac.export(caller.store)
    return RbacExport(
        roles=[RondRole.model_validate(r) for r in roles],
        bindings=[RondBinding.model_validate(b) for b in bindings],
    )
