"""Authorization checks (``authz:check`` or ``admin``): whether a user holds
a permission, with every path that grants it or why none does; a user's
effective permissions; who holds a permission. Computed by
:mod:`identity_store.resolver`; each answer names the RBAC revision it
was read at."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from identity_store import rbac, resolver

from . import cursors
from .bindings import resource_filter
from .models import (
    NO_CONTROL,
    BatchDecision,
    Check,
    CheckBatch,
    CheckResource,
    Decision,
    EffectivePermissions,
    HeldPermission,
    Reason,
    Subjects,
)
from .parameters import (
    COMMON,
    WITH_BODY,
    Count,
    CursorQuery,
    ResourceIdQuery,
    ResourceTypeQuery,
    UserIdPath,
)
from .problems import FieldError, ProblemError, problem_responses
from .routing import Authorized, CheckRoute

router = APIRouter(route_class=CheckRoute, tags=["authorization"])

PermissionQuery = Annotated[
    str,
    Query(min_length=1, max_length=255, pattern=NO_CONTROL, description="The permission."),
]


def _resource(resource: rbac.Resource | None) -> CheckResource | None:
    return None if resource is None else CheckResource(type=resource.type, id=resource.id)


def _reason(reason: resolver.Reason) -> Reason:
    return Reason(
        code=reason.code,
        message=reason.message,
        source=reason.source,
        binding_id=reason.binding_id,
        role_id=reason.role_id,
        group_id=reason.group_id,
        via_group_id=reason.via_group_id,
        resource=_resource(reason.resource),
    )


def _reason_json(reason: resolver.Reason) -> dict[str, Any]:
    """A reason as :class:`Reason` serializes it (camelCase, no nulls), built
    directly: the checks are the hottest answers, and a model per reason
    plus FastAPI's validation of the response cost more than the check's
    own query (a batch of 1,000 decisions)."""
    found: dict[str, Any] = {"code": reason.code, "message": reason.message}
    for key, value in (
        ("source", reason.source),
        ("bindingId", reason.binding_id),
        ("roleId", reason.role_id),
        ("groupId", reason.group_id),
        ("viaGroupId", reason.via_group_id),
    ):
        if value is not None:
            found[key] = value
    if reason.resource is not None:
        found["resource"] = {"type": reason.resource.type, "id": reason.resource.id}
    return found


def _json(content: dict[str, Any]) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _request(check: Check) -> resolver.CheckRequest:
    return resolver.CheckRequest(
        user_id=check.user_id,
        permission=check.permission,
        resource=None
        if check.resource is None
        else rbac.Resource(type=check.resource.type, id=check.resource.id),
    )


@router.post(
    "/authz/check",
    responses=problem_responses(*WITH_BODY),
    response_model=Decision,
    response_model_exclude_none=True,
    summary="Does a user hold a permission?",
)
async def check(body: Check, caller: Authorized) -> Response:
    """Without `resource`, whether the user holds it everywhere (a binding on
    one resource does not grant it everywhere). Allowed: one `granted` reason
    per path that grants it. Denied: why (`user-not-found`, `not-active`,
    `blocked`, `no-grant`, `other-resource`)."""
    decision = await resolver.check(caller.store, _request(body))
    return _json(
        {
            "allowed": decision.allowed,
            "revision": decision.revision,
            "reasons": [_reason_json(r) for r in decision.reasons],
        }
    )


@router.post(
    "/authz/check-batch",
    responses=problem_responses(*WITH_BODY),
    response_model=BatchDecision,
    response_model_exclude_none=True,
    summary="Many checks, read at one revision",
)
async def check_batch(body: CheckBatch, caller: Authorized) -> Response:
    """Up to `IDSTORE_AUTHZ_MAX_BATCH` (1,000) checks; results in their order."""
    limit = caller.settings.authz_max_batch
    if len(body.checks) > limit:
        detail = f"List should have at most {limit} items, not {len(body.checks)}"
        raise ProblemError(
            400,
            "invalid-request",
            f"body.checks: {detail}",
            errors=[FieldError(location=["body", "checks"], detail=detail, type="too_long")],
        )
    decisions = await resolver.check_many(caller.store, [_request(c) for c in body.checks])
    revision = decisions[0].revision if decisions else await rbac.revision(caller.store)
    return _json(
        {
            "revision": revision,
            "results": [
                {"allowed": d.allowed, "reasons": [_reason_json(r) for r in d.reasons]}
                for d in decisions
            ],
        }
    )


@router.get(
    "/users/{id}/permissions",
    responses=problem_responses(*COMMON, 404),
    response_model_exclude_none=True,
    summary="A user's effective permissions",
)
async def user_permissions(
    user_id: UserIdPath,
    caller: Authorized,
    resource_type: ResourceTypeQuery = None,
    resource_id: ResourceIdQuery = None,
) -> EffectivePermissions:
    """Everywhere, plus on the resource when one is given (without one:
    everywhere and on every resource). Empty when the user is not `ACTIVE`
    or is blocked."""
    held = await resolver.permissions(
        caller.store, user_id, resource_filter(resource_type, resource_id)
    )
    return EffectivePermissions(
        user_id=held.user_id,
        lifecycle=held.lifecycle,
        blocked=held.blocked,
        revision=held.revision,
        roles=held.roles,
        permissions=[
            HeldPermission(permission=p.permission, resource=_resource(p.resource))
            for p in held.permissions
        ],
    )


@router.get(
    "/authz/subjects",
    responses=problem_responses(*COMMON),
    summary="Who holds a permission",
)
async def subjects(
    permission: PermissionQuery,
    caller: Authorized,
    resource_type: ResourceTypeQuery = None,
    resource_id: ResourceIdQuery = None,
    count: Count = 100,
    cursor: CursorQuery = None,
) -> Subjects:
    """Active, unblocked users holding the permission (everywhere, or on the
    resource when one is given), by id, a page at a time."""
    holders = await resolver.holders(
        caller.store,
        permission,
        resource_filter(resource_type, resource_id),
        after=cursors.decode("subjects", cursor),
        limit=count,
    )
    return Subjects(
        permission=holders.permission,
        resource=_resource(holders.resource),
        revision=holders.revision,
        subjects=holders.user_ids,
        next_cursor=cursors.encode("subjects", holders.next_after),
    )
