"""Roles, bindings and role assignments in the model of Rönd (SPEC §3 "RBAC",
§6): the use cases that change them, their reads, Rönd's grant and revoke,
and the export to Rönd's collections.

Every change is one transaction (:meth:`~identity_store.store.Store.transaction`)
that also writes its audit row, adds one to the RBAC revision
(``rbac_revisions``; the value is returned with the change, and
:mod:`identity_store.resolver` answers with the revision it read) and, when a
Rönd deployment is configured (``IDSTORE_ROND_BASE_URL``), one outbox row
(target ``rond``, operation ``sync``) per user and group whose bindings in
Rönd change. Replacing a role's permissions, a binding, or a user's or
group's roles swaps the whole set in that one transaction: a concurrent
check reads either the old set or the new one, never a moment with neither.

Ids named by a change are checked: unknown role ids, users or groups are a
:class:`~identity_store.errors.ValidationError` that names them, and nothing
is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from .actor import Actor
from .store import Store

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resource:
    """What a binding is scoped to (Rönd's ``resource {resourceType, resourceId}``)."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class RoleInput:
    """A role as a caller gives it; ``permissions`` replace the stored ones."""

    name: str
    description: str | None
    permissions: list[str]


@dataclass(frozen=True, slots=True)
class RoleRecord:
    role_id: str
    name: str
    description: str | None
    permissions: list[str]
    """Sorted."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class BindingInput:
    """A binding as a caller gives it; every list replaces the stored one."""

    subjects: list[str]
    """User ids."""
    groups: list[str]
    """Group ids."""
    roles: list[str]
    permissions: list[str]
    resource: Resource | None = None


@dataclass(frozen=True, slots=True)
class BindingRecord:
    binding_id: str
    subjects: list[str]
    groups: list[str]
    roles: list[str]
    permissions: list[str]
    """Every list sorted."""
    resource: Resource | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Revised(Generic[T]):
    """What a change stored, and the RBAC revision it made."""

    value: T
    revision: int


@dataclass(frozen=True, slots=True)
class Grant:
    """Rönd's ``POST /grant/bindings[/resource/{resourceType}]`` body: a new
    binding (``resource_type`` from the path, ``resource_id`` from the body)."""

    subjects: list[str]
    groups: list[str]
    roles: list[str]
    permissions: list[str]
    resource_type: str | None = None
    resource_id: str | None = None


@dataclass(frozen=True, slots=True)
class Revoke:
    """Rönd's ``POST /revoke/bindings[/resource/{resourceType}]`` body: take
    ``subjects`` and ``groups`` out of the bindings that name any of them
    (on ``resource_ids`` of ``resource_type`` when a type is given); a
    binding left with neither subjects nor groups is deleted. With a type,
    ids and no subjects or groups, every binding on those resources is
    deleted."""

    subjects: list[str]
    groups: list[str]
    resource_ids: list[str]
    resource_type: str | None = None


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    deleted_bindings: int
    modified_bindings: int


@dataclass(frozen=True, slots=True)
class BindingFilter:
    """Which bindings a list returns (all when empty)."""

    subject: str | None = None
    group: str | None = None
    role: str | None = None
    resource: Resource | None = None


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page of a list ordered by id: ``after`` of the next page, or ``None``."""

    items: list[T]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class RondBinding:
    """One binding as Rönd should hold it for a user or group (the push
    target's state, :func:`rond_state`): one subject or one group, the roles
    and the permissions they give (role permissions expanded, so Rönd needs
    no copy of the roles to decide)."""

    subjects: list[str]
    groups: list[str]
    roles: list[str]
    permissions: list[str]
    resource: Resource | None


# -- Reads ------------------------------------------------------------------


async def revision(store: Store) -> int:
    """The current RBAC revision."""
    raise NotImplementedError


async def get_role(store: Store, role_id: str) -> RoleRecord:
    """The role, or :class:`NotFoundError`."""
    raise NotImplementedError


async def list_roles(
    store: Store, *, after: str | None = None, limit: int = 100
) -> Listing[RoleRecord]:
    """Roles ordered by id, those after ``after``."""
    raise NotImplementedError


async def get_binding(store: Store, binding_id: str) -> BindingRecord:
    raise NotImplementedError


async def list_bindings(
    store: Store,
    where: BindingFilter = BindingFilter(),
    *,
    after: str | None = None,
    limit: int = 100,
) -> Listing[BindingRecord]:
    raise NotImplementedError


async def group_roles(store: Store, group_id: str) -> list[str]:
    """The role ids mapped to the group (sorted); :class:`NotFoundError` for an unknown group."""
    raise NotImplementedError


async def user_roles(store: Store, user_id: str) -> list[str]:
    """The role ids assigned to the user directly (sorted); :class:`NotFoundError`
    for an unknown (or SCIM-deleted) user."""
    raise NotImplementedError


async def export(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Roles and bindings as documents of Rönd's ``roles`` and ``bindings``
    collections: ``{roleId, name, description, permissions}`` and
    ``{bindingId, subjects, groups, roles, permissions, resource?}``."""
    raise NotImplementedError


async def rond_state(store: Store, aggregate_type: str, aggregate_id: str) -> list[RondBinding]:
    """What Rönd should hold for the user (``User``) or group (``Group``):
    one :class:`RondBinding` per binding naming it and one for its directly
    assigned (user) or mapped (group) roles; empty for one that is gone."""
    raise NotImplementedError


# -- Changes ------------------------------------------------------------------


async def create_role(
    store: Store, role_id: str, role: RoleInput, actor: Actor
) -> Revised[RoleRecord]:
    """A new role; :class:`ConflictError` (``roleId``) when the id is taken."""
    raise NotImplementedError


async def replace_role(
    store: Store, role_id: str, role: RoleInput, actor: Actor
) -> Revised[RoleRecord]:
    """The role's name, description and whole permission set, at once."""
    raise NotImplementedError


async def delete_role(store: Store, role_id: str, actor: Actor) -> int:
    """Delete an unused role; :class:`StateError` naming what still uses it
    (bindings, groups, users). Returns the revision."""
    raise NotImplementedError


async def create_binding(
    store: Store, binding: BindingInput, actor: Actor, *, binding_id: str | None = None
) -> Revised[BindingRecord]:
    """A new binding (a new ULID id unless ``binding_id``; :class:`ConflictError`
    ``bindingId`` when taken). A binding needs a subject or a group, and a
    role or a permission (:class:`ValidationError`)."""
    raise NotImplementedError


async def replace_binding(
    store: Store, binding_id: str, binding: BindingInput, actor: Actor
) -> Revised[BindingRecord]:
    raise NotImplementedError


async def delete_binding(store: Store, binding_id: str, actor: Actor) -> int:
    raise NotImplementedError


async def replace_group_roles(
    store: Store, group_id: str, role_ids: list[str], actor: Actor
) -> Revised[list[str]]:
    """The group's whole role mapping, at once."""
    raise NotImplementedError


async def replace_user_roles(
    store: Store, user_id: str, role_ids: list[str], actor: Actor
) -> Revised[list[str]]:
    """The user's whole set of directly assigned roles, at once."""
    raise NotImplementedError


async def grant(store: Store, request: Grant, actor: Actor) -> Revised[str]:
    """Rönd's grant: a new binding; its id."""
    raise NotImplementedError


async def revoke(store: Store, request: Revoke, actor: Actor) -> Revised[RevokeOutcome]:
    """Rönd's revoke (see :class:`Revoke`)."""
    raise NotImplementedError
