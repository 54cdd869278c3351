"""Effective permissions, computed in SQL (SPEC §3 "RBAC", §6): who holds
what, and an authorization check that explains its answer.

A user holds a permission, everywhere or on one resource, through any of:

- a binding naming the user among its ``subjects``;
- a binding naming one of the user's groups, or a group containing one of
  them (nested groups, followed transitively; a cycle ends the walk);
- a role mapped to one of those groups (``group_role_mappings``);
- a role assigned to the user directly (``user_roles``);

where a binding grants its roles' permissions and its own, everywhere when it
has no resource and only on its resource otherwise; mapped and directly
assigned roles hold everywhere. A user not ``ACTIVE``, or ``blocked``, holds
nothing, whatever its grants.

Each answer carries the RBAC revision it was computed at
(:func:`identity_store.rbac.revision`), read in the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .rbac import Resource
from .store import Store

GrantSource = Literal["binding", "group-role", "user-role"]
ReasonCode = Literal[
    "granted", "user-not-found", "not-active", "blocked", "no-grant", "other-resource"
]


@dataclass(frozen=True, slots=True)
class CheckRequest:
    user_id: str
    permission: str
    resource: Resource | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """One path that grants the permission (``granted``), or why none does.

    ``binding_id`` / ``role_id`` / ``group_id`` name the path's parts
    (``group_id``: the group the binding or mapping names; ``via_group_id``:
    the user's own group through which it holds ``group_id``, when the
    membership is nested). ``resource``: the binding's resource, for
    ``granted`` and ``other-resource``."""

    code: ReasonCode
    message: str
    source: GrantSource | None = None
    binding_id: str | None = None
    role_id: str | None = None
    group_id: str | None = None
    via_group_id: str | None = None
    resource: Resource | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    request: CheckRequest
    allowed: bool
    revision: int
    reasons: list[Reason]


@dataclass(frozen=True, slots=True)
class HeldPermission:
    permission: str
    resource: Resource | None
    """``None``: everywhere."""


@dataclass(frozen=True, slots=True)
class EffectivePermissions:
    user_id: str
    lifecycle: str
    blocked: bool
    revision: int
    roles: list[str]
    """Every role the user holds (through bindings in scope, groups, or directly), sorted."""
    permissions: list[HeldPermission]
    """Sorted by permission, then resource; empty when the user is not ``ACTIVE`` or blocked."""


@dataclass(frozen=True, slots=True)
class Holders:
    """One page of the users holding a permission, ordered by id."""

    permission: str
    resource: Resource | None
    revision: int
    user_ids: list[str]
    next_after: str | None


async def check(store: Store, request: CheckRequest) -> Decision:
    """Whether the user holds the permission (on ``request.resource``, or
    everywhere when it names none: a binding on some resource does not
    grant it everywhere), with every granting path, or why it is denied. An
    unknown user is denied (``user-not-found``)."""
    raise NotImplementedError


async def check_many(store: Store, requests: list[CheckRequest]) -> list[Decision]:
    """:func:`check` of each request, in order, all read at one revision."""
    raise NotImplementedError


async def permissions(
    store: Store, user_id: str, resource: Resource | None = None
) -> EffectivePermissions:
    """What the user holds: everywhere, plus on ``resource`` when given (with
    no resource: everywhere and on every resource). :class:`NotFoundError`
    for an unknown or SCIM-deleted user."""
    raise NotImplementedError


async def holders(
    store: Store,
    permission: str,
    resource: Resource | None = None,
    *,
    after: str | None = None,
    limit: int = 100,
) -> Holders:
    """Active, unblocked users holding ``permission`` (everywhere, or on
    ``resource`` when given), by id after ``after``."""
    raise NotImplementedError
