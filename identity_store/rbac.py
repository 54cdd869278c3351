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

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, row_inserts
from .actor import Actor
from .errors import ConflictError, NotFoundError, StateError, ValidationError
from .models import (
    Binding,
    BindingGroup,
    BindingPermission,
    BindingRole,
    BindingSubject,
    Group,
    GroupRoleMapping,
    RbacGrant,
    RbacRevision,
    Role,
    RolePermission,
    User,
    UserRole,
    new_id,
    utcnow,
)
from .models.rbac import (
    PERMISSION_LENGTH,
    RESOURCE_ID_LENGTH,
    RESOURCE_TYPE_LENGTH,
    ROLE_ID_LENGTH,
)
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


ROND = "rond"
"""The outbox target of a Rönd deployment (``IDSTORE_ROND_BASE_URL``)."""

CHUNK = 500
"""Ids per ``IN (...)`` list: well under SQLite's bound-parameter limit."""

NAME_LENGTH = 255
DESCRIPTION_LENGTH = 4096
BINDING_ID_LENGTH = 128

_ROLES = cast(Table, Role.__table__)
_ROLE_PERMISSIONS = cast(Table, RolePermission.__table__)
_BINDINGS = cast(Table, Binding.__table__)
_BINDING_ROLES = cast(Table, BindingRole.__table__)
_BINDING_PERMISSIONS = cast(Table, BindingPermission.__table__)
_SUBJECTS = cast(Table, BindingSubject.__table__)
_BINDING_GROUPS = cast(Table, BindingGroup.__table__)
_MAPPINGS = cast(Table, GroupRoleMapping.__table__)
_USER_ROLES = cast(Table, UserRole.__table__)
_REVISIONS = cast(Table, RbacRevision.__table__)
_GRANTS = cast(Table, RbacGrant.__table__)
_USERS = cast(Table, User.__table__)
_GROUPS = cast(Table, Group.__table__)


# -- Validation (the store's own: the CLI and jobs call it too) ---------------


def check_text(what: str, value: str, limit: int) -> str:
    """``value`` unless it is empty, longer than ``limit``, or holds a
    control character (NUL included) or a lone surrogate, which PostgreSQL's
    text cannot hold; :class:`ValidationError` naming ``what`` otherwise."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise ValidationError(f"{what} is {len(value)} characters long; at most {limit}")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValidationError(f"{what} holds a control character or a lone surrogate")
    return value


def _check_list(what: str, values: Iterable[str], limit: int, length: int) -> list[str]:
    items = list(values)
    if len(items) > limit:
        raise ValidationError(f"{what} has {len(items)} entries; at most {limit}")
    return sorted({check_text(f"an entry of {what}", v, length) for v in items})


def _resource(resource: Resource | None) -> Resource | None:
    if resource is None:
        return None
    return Resource(
        _resource_type(resource.type), check_text("resource id", resource.id, RESOURCE_ID_LENGTH)
    )


def _resource_type(value: str) -> str:
    """A resource type; no ``/``, since Rönd takes it in a URL path segment
    (``/grant/bindings/resource/{resourceType}``)."""
    check_text("resource type", value, RESOURCE_TYPE_LENGTH)
    if "/" in value:
        raise ValidationError("resource type holds a '/', which Rönd's URL paths cannot carry")
    return value


@dataclass(frozen=True, slots=True)
class _CleanBinding:
    subjects: list[str]
    groups: list[str]
    roles: list[str]
    permissions: list[str]
    resource: Resource | None


def _clean_binding(binding: BindingInput, limit: int) -> _CleanBinding:
    clean = _CleanBinding(
        subjects=_check_list("subjects", binding.subjects, limit, 26),
        groups=_check_list("groups", binding.groups, limit, 26),
        roles=_check_list("roles", binding.roles, limit, ROLE_ID_LENGTH),
        permissions=_check_list("permissions", binding.permissions, limit, PERMISSION_LENGTH),
        resource=_resource(binding.resource),
    )
    if not clean.subjects and not clean.groups:
        raise ValidationError("a binding needs at least one subject or group")
    if not clean.roles and not clean.permissions:
        raise ValidationError("a binding needs at least one role or permission")
    return clean


def _clean_role(role: RoleInput, limit: int) -> RoleInput:
    description = role.description
    if description is not None and len(description) > DESCRIPTION_LENGTH:
        raise ValidationError(f"description is longer than {DESCRIPTION_LENGTH} characters")
    if description:
        for char in description:
            if unicodedata.category(char) == "Cs" or char == "\x00":
                raise ValidationError("description holds a NUL or a lone surrogate")
    return RoleInput(
        name=check_text("name", role.name, NAME_LENGTH),
        description=description,
        permissions=_check_list("permissions", role.permissions, limit, PERMISSION_LENGTH),
    )


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


async def _missing(
    session: AsyncSession, column: Any, values: Sequence[str], where: Any = None
) -> list[str]:
    found: set[str] = set()
    for chunk in _chunks(values):
        query = select(column).where(column.in_(chunk))
        if where is not None:
            query = query.where(where)
        found.update(await session.scalars(query))
    return [v for v in values if v not in found]


async def _require(
    session: AsyncSession,
    *,
    roles: Sequence[str] = (),
    users: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> None:
    """:class:`ValidationError` naming every unknown role, user and group."""
    problems = []
    if missing := await _missing(session, _ROLES.c.role_id, roles):
        problems.append(f"unknown role id(s): {', '.join(missing)}")
    if missing := await _missing(session, _USERS.c.id, users, _USERS.c.deleted_at.is_(None)):
        problems.append(f"unknown user id(s): {', '.join(missing)}")
    if missing := await _missing(session, _GROUPS.c.id, groups):
        problems.append(f"unknown group id(s): {', '.join(missing)}")
    if problems:
        raise ValidationError("; ".join(problems))


# -- The revision and the push ---------------------------------------------


async def _bump(session: AsyncSession) -> int:
    """Add one to the RBAC revision (taking its row's lock until commit, so
    RBAC changes are totally ordered) and return it."""
    result = await session.execute(
        update(_REVISIONS)
        .where(_REVISIONS.c.id == 1)
        .values(revision=_REVISIONS.c.revision + 1)
        .returning(_REVISIONS.c.revision)
    )
    return int(result.scalar_one())


@dataclass(slots=True)
class _Touched:
    """Users and groups whose bindings in Rönd a change alters."""

    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)

    def add_binding(self, subjects: Iterable[str], groups: Iterable[str]) -> None:
        self.users.update(subjects)
        self.groups.update(groups)


async def _push(session: AsyncSession, store: Store, actor: Actor, touched: _Touched) -> None:
    """One ``rond`` outbox row per touched user and group, when a Rönd
    deployment is configured."""
    if not store.settings.rond_base_url:
        return
    await push_rows(session, actor, touched.users, touched.groups)


async def push_rows(
    session: AsyncSession, actor: Actor, users: Iterable[str], groups: Iterable[str]
) -> None:
    """The ``rond`` outbox rows of ``users`` and ``groups`` (internal: the
    deletion sync calls it for the users it deprovisions)."""
    at = utcnow()
    rows = [
        audit.outbox_row(ROND, "sync", kind, aggregate_id, {}, at, actor.request_id)
        for kind, ids in (("User", sorted(set(users))), ("Group", sorted(set(groups))))
        for aggregate_id in ids
    ]
    if rows:
        await row_inserts.insert_rows(session, audit.OUTBOX, rows)


async def _holders_of_role(session: AsyncSession, role_id: str) -> _Touched:
    """Users and groups holding ``role_id`` by any binding, mapping or assignment."""
    touched = _Touched()
    with_role = select(_BINDING_ROLES.c.binding_id).where(_BINDING_ROLES.c.role_id == role_id)
    touched.users.update(
        await session.scalars(
            select(_SUBJECTS.c.user_id).where(_SUBJECTS.c.binding_id.in_(with_role))
        )
    )
    touched.groups.update(
        await session.scalars(
            select(_BINDING_GROUPS.c.group_id).where(_BINDING_GROUPS.c.binding_id.in_(with_role))
        )
    )
    touched.groups.update(
        await session.scalars(select(_MAPPINGS.c.group_id).where(_MAPPINGS.c.role_id == role_id))
    )
    touched.users.update(
        await session.scalars(select(_USER_ROLES.c.user_id).where(_USER_ROLES.c.role_id == role_id))
    )
    return touched


# -- The grants (``rbac_grants``) ----------------------------------------------
#
# Each change below rewrites the grant rows it affects, in its transaction.
# The expansions are plain INSERT ... SELECT on both databases; ``WHERE``
# fragments come from this module, values are bound parameters.

GRANT_COLUMNS = "holder_id, permission, source, binding_id, role_id, resource_type, resource_id"

_BINDING_GRANTS = """
SELECT h.holder_id, p.permission, 'binding', b.binding_id, p.role_id,
       b.resource_type, b.resource_id
  FROM bindings b
  JOIN (SELECT binding_id, user_id AS holder_id FROM binding_subjects
        UNION ALL SELECT binding_id, group_id FROM binding_groups) h
    ON h.binding_id = b.binding_id
  JOIN (SELECT binding_id, permission, NULL AS role_id FROM binding_permissions
        UNION ALL
        SELECT br.binding_id, rp.permission, br.role_id
          FROM binding_roles br JOIN role_permissions rp ON rp.role_id = br.role_id) p
    ON p.binding_id = b.binding_id
"""
_GROUP_ROLE_GRANTS = """
SELECT gr.group_id, rp.permission, 'group-role', NULL, gr.role_id, NULL, NULL
  FROM group_role_mappings gr JOIN role_permissions rp ON rp.role_id = gr.role_id
"""
_USER_ROLE_GRANTS = """
SELECT ur.user_id, rp.permission, 'user-role', NULL, ur.role_id, NULL, NULL
  FROM user_roles ur JOIN role_permissions rp ON rp.role_id = ur.role_id
"""
_EXPANSIONS = {
    "binding": (_BINDING_GRANTS, "b.binding_id", "p.role_id"),
    "group-role": (_GROUP_ROLE_GRANTS, "gr.group_id", "gr.role_id"),
    "user-role": (_USER_ROLE_GRANTS, "ur.user_id", "ur.role_id"),
}
"""Per source: the SELECT of its grant rows, the column naming what a
rewrite is keyed by (binding, group, user), and its role column."""


async def _insert_grants(session: AsyncSession, source: str, where: str, values: list[str]) -> None:
    select_sql = _EXPANSIONS[source][0]
    for chunk in _chunks(values):
        names = ", ".join(f":v{i}" for i in range(len(chunk)))
        sql = f"INSERT INTO rbac_grants ({GRANT_COLUMNS}) {select_sql} WHERE {where} IN ({names})"
        await session.execute(text(sql), {f"v{i}": v for i, v in enumerate(chunk)})


async def _regrant(session: AsyncSession, source: str, keys: Iterable[str]) -> None:
    """Rewrite the grant rows of ``source`` for these bindings (``binding``),
    groups (``group-role``) or users (``user-role``)."""
    values = sorted(set(keys))
    if not values:
        return
    column = _GRANTS.c.binding_id if source == "binding" else _GRANTS.c.holder_id
    for chunk in _chunks(values):
        await session.execute(delete(_GRANTS).where(_GRANTS.c.source == source, column.in_(chunk)))
    await _insert_grants(session, source, _EXPANSIONS[source][1], values)


async def _regrant_role(session: AsyncSession, role_id: str) -> None:
    """Rewrite every grant row that comes through ``role_id``."""
    await session.execute(delete(_GRANTS).where(_GRANTS.c.role_id == role_id))
    for source, (_, _, role_column) in _EXPANSIONS.items():
        await _insert_grants(session, source, role_column, [role_id])


async def rebuild_grants(session: AsyncSession) -> None:
    """Every grant row again from the RBAC tables (migration 0009; tests
    compare it with the rows the changes kept)."""
    await session.execute(delete(_GRANTS))
    for select_sql, _, _ in _EXPANSIONS.values():
        await session.execute(text(f"INSERT INTO rbac_grants ({GRANT_COLUMNS}) {select_sql}"))


# -- Reads ------------------------------------------------------------------


async def revision(store: Store) -> int:
    """The current RBAC revision."""
    async with store.reading() as session:
        return await _revision(session)


async def _revision(session: AsyncSession) -> int:
    value = await session.scalar(select(_REVISIONS.c.revision).where(_REVISIONS.c.id == 1))
    return int(value or 0)


async def _permissions_of(session: AsyncSession, role_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {r: [] for r in role_ids}
    for chunk in _chunks(role_ids):
        rows = await session.execute(
            select(_ROLE_PERMISSIONS.c.role_id, _ROLE_PERMISSIONS.c.permission)
            .where(_ROLE_PERMISSIONS.c.role_id.in_(chunk))
            .order_by(_ROLE_PERMISSIONS.c.role_id, _ROLE_PERMISSIONS.c.permission)
        )
        for role_id, permission in rows:
            found[role_id].append(permission)
    return found


async def _roles(session: AsyncSession, rows: Sequence[Any]) -> list[RoleRecord]:
    permissions = await _permissions_of(session, [r.role_id for r in rows])
    return [
        RoleRecord(
            r.role_id, r.name, r.description, permissions[r.role_id], r.created_at, r.updated_at
        )
        for r in rows
    ]


async def _load_role(session: AsyncSession, role_id: str) -> RoleRecord:
    row = (await session.execute(select(_ROLES).where(_ROLES.c.role_id == role_id))).first()
    if row is None:
        raise NotFoundError("Role", role_id)
    return (await _roles(session, [row]))[0]


async def get_role(store: Store, role_id: str) -> RoleRecord:
    """The role, or :class:`NotFoundError`."""
    async with store.reading() as session:
        return await _load_role(session, role_id)


async def list_roles(
    store: Store, *, after: str | None = None, limit: int = 100
) -> Listing[RoleRecord]:
    """Roles ordered by id, those after ``after``."""
    query = select(_ROLES).order_by(_ROLES.c.role_id).limit(limit + 1)
    if after is not None:
        query = query.where(_ROLES.c.role_id > after)
    async with store.reading() as session:
        rows = (await session.execute(query)).all()
        records = await _roles(session, rows[:limit])
    return Listing(records, records[-1].role_id if len(rows) > limit else None)


async def _lists_of(
    session: AsyncSession, table: Table, column: str, binding_ids: Sequence[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {b: [] for b in binding_ids}
    for chunk in _chunks(binding_ids):
        rows = await session.execute(
            select(table.c.binding_id, table.c[column])
            .where(table.c.binding_id.in_(chunk))
            .order_by(table.c.binding_id, table.c[column])
        )
        for binding_id, value in rows:
            found[binding_id].append(value)
    return found


async def _bindings(session: AsyncSession, rows: Sequence[Any]) -> list[BindingRecord]:
    ids = [r.binding_id for r in rows]
    subjects = await _lists_of(session, _SUBJECTS, "user_id", ids)
    groups = await _lists_of(session, _BINDING_GROUPS, "group_id", ids)
    roles = await _lists_of(session, _BINDING_ROLES, "role_id", ids)
    permissions = await _lists_of(session, _BINDING_PERMISSIONS, "permission", ids)
    return [
        BindingRecord(
            r.binding_id,
            subjects[r.binding_id],
            groups[r.binding_id],
            roles[r.binding_id],
            permissions[r.binding_id],
            Resource(r.resource_type, r.resource_id) if r.resource_type is not None else None,
            r.created_at,
            r.updated_at,
        )
        for r in rows
    ]


async def _load_binding(session: AsyncSession, binding_id: str) -> BindingRecord:
    row = (
        await session.execute(select(_BINDINGS).where(_BINDINGS.c.binding_id == binding_id))
    ).first()
    if row is None:
        raise NotFoundError("Binding", binding_id)
    return (await _bindings(session, [row]))[0]


async def get_binding(store: Store, binding_id: str) -> BindingRecord:
    """The binding, or :class:`NotFoundError`."""
    async with store.reading() as session:
        return await _load_binding(session, binding_id)


def _binding_filter(where: BindingFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    b = _BINDINGS.c.binding_id
    if where.subject is not None:
        clauses.append(
            exists().where(_SUBJECTS.c.binding_id == b, _SUBJECTS.c.user_id == where.subject)
        )
    if where.group is not None:
        clauses.append(
            exists().where(
                _BINDING_GROUPS.c.binding_id == b, _BINDING_GROUPS.c.group_id == where.group
            )
        )
    if where.role is not None:
        clauses.append(
            exists().where(_BINDING_ROLES.c.binding_id == b, _BINDING_ROLES.c.role_id == where.role)
        )
    if where.resource is not None:
        clauses.append(_BINDINGS.c.resource_type == where.resource.type)
        clauses.append(_BINDINGS.c.resource_id == where.resource.id)
    return clauses


async def list_bindings(
    store: Store,
    where: BindingFilter = BindingFilter(),
    *,
    after: str | None = None,
    limit: int = 100,
) -> Listing[BindingRecord]:
    """Bindings matching ``where``, ordered by id, those after ``after``."""
    query = select(_BINDINGS).where(*_binding_filter(where))
    if after is not None:
        query = query.where(_BINDINGS.c.binding_id > after)
    query = query.order_by(_BINDINGS.c.binding_id).limit(limit + 1)
    async with store.reading() as session:
        rows = (await session.execute(query)).all()
        records = await _bindings(session, rows[:limit])
    return Listing(records, records[-1].binding_id if len(rows) > limit else None)


async def _group_exists(session: AsyncSession, group_id: str) -> None:
    if await session.scalar(select(_GROUPS.c.id).where(_GROUPS.c.id == group_id)) is None:
        raise NotFoundError("Group", group_id)


async def _user_exists(session: AsyncSession, user_id: str) -> None:
    found = await session.scalar(
        select(_USERS.c.id).where(_USERS.c.id == user_id, _USERS.c.deleted_at.is_(None))
    )
    if found is None:
        raise NotFoundError("User", user_id)


async def group_roles(store: Store, group_id: str) -> list[str]:
    """The role ids mapped to the group (sorted); :class:`NotFoundError` for an unknown group."""
    async with store.reading() as session:
        await _group_exists(session, group_id)
        return list(
            await session.scalars(
                select(_MAPPINGS.c.role_id)
                .where(_MAPPINGS.c.group_id == group_id)
                .order_by(_MAPPINGS.c.role_id)
            )
        )


async def user_roles(store: Store, user_id: str) -> list[str]:
    """The role ids assigned to the user directly (sorted); :class:`NotFoundError`
    for an unknown (or SCIM-deleted) user."""
    async with store.reading() as session:
        await _user_exists(session, user_id)
        return list(
            await session.scalars(
                select(_USER_ROLES.c.role_id)
                .where(_USER_ROLES.c.user_id == user_id)
                .order_by(_USER_ROLES.c.role_id)
            )
        )


def role_document(role: RoleRecord) -> dict[str, Any]:
    """A role as a document of Rönd's ``roles`` collection."""
    return {
        "roleId": role.role_id,
        "name": role.name,
        "description": role.description or "",
        "permissions": role.permissions,
    }


def binding_document(binding: BindingRecord) -> dict[str, Any]:
    """A binding as a document of Rönd's ``bindings`` collection."""
    document: dict[str, Any] = {
        "bindingId": binding.binding_id,
        "subjects": binding.subjects,
        "groups": binding.groups,
        "roles": binding.roles,
        "permissions": binding.permissions,
    }
    if binding.resource is not None:
        document["resource"] = {
            "resourceType": binding.resource.type,
            "resourceId": binding.resource.id,
        }
    return document


async def export(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Roles and bindings as documents of Rönd's ``roles`` and ``bindings``
    collections: ``{roleId, name, description, permissions}`` and
    ``{bindingId, subjects, groups, roles, permissions, resource?}``, read in
    pages of :data:`CHUNK`."""
    roles: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await list_roles(store, after=after, limit=CHUNK)
        roles.extend(role_document(r) for r in page.items)
        if (after := page.next_after) is None:
            break
    while True:
        listing = await list_bindings(store, after=after, limit=CHUNK)
        bindings.extend(binding_document(b) for b in listing.items)
        if (after := listing.next_after) is None:
            break
    return roles, bindings


async def rond_state(store: Store, aggregate_type: str, aggregate_id: str) -> list[RondBinding]:
    """What Rönd should hold for the user (``User``) or group (``Group``):
    one :class:`RondBinding` per binding naming it and one for its directly
    assigned (user) or mapped (group) roles; empty for one that is gone.

    Roles' permissions are expanded into each binding's ``permissions``,
    so that Rönd decides without a copy of the roles; ``roles`` keeps their
    ids for policies that test roles."""
    if aggregate_type not in ("User", "Group"):
        raise ValueError(f"no Rönd state for {aggregate_type!r}")
    is_user = aggregate_type == "User"
    names = _SUBJECTS if is_user else _BINDING_GROUPS
    column = names.c.user_id if is_user else names.c.group_id
    async with store.reading() as session:
        if is_user:
            alive = await session.scalar(
                select(_USERS.c.id).where(
                    _USERS.c.id == aggregate_id, _USERS.c.deleted_at.is_(None)
                )
            )
            direct = _USER_ROLES.c.role_id, _USER_ROLES.c.user_id
        else:
            alive = await session.scalar(select(_GROUPS.c.id).where(_GROUPS.c.id == aggregate_id))
            direct = _MAPPINGS.c.role_id, _MAPPINGS.c.group_id
        if alive is None:
            return []
        rows = (
            await session.execute(
                select(_BINDINGS)
                .where(
                    _BINDINGS.c.binding_id.in_(
                        select(names.c.binding_id).where(column == aggregate_id)
                    )
                )
                .order_by(_BINDINGS.c.binding_id)
            )
        ).all()
        bindings = await _bindings(session, rows)
        assigned = list(
            await session.scalars(
                select(direct[0]).where(direct[1] == aggregate_id).order_by(direct[0])
            )
        )
        role_ids = sorted({r for b in bindings for r in b.roles} | set(assigned))
        permissions = await _permissions_of(session, role_ids)

    def expanded(roles: list[str], own: list[str]) -> list[str]:
        return sorted(set(own).union(*(permissions[r] for r in roles)))

    subjects = [aggregate_id] if is_user else []
    groups = [] if is_user else [aggregate_id]
    state = [
        RondBinding(subjects, groups, b.roles, expanded(b.roles, b.permissions), b.resource)
        for b in bindings
    ]
    if assigned:
        state.append(RondBinding(subjects, groups, assigned, expanded(assigned, []), None))
    return state


# -- Changes ------------------------------------------------------------------


async def _write_role_permissions(
    session: AsyncSession, role_id: str, permissions: Sequence[str]
) -> None:
    await session.execute(delete(_ROLE_PERMISSIONS).where(_ROLE_PERMISSIONS.c.role_id == role_id))
    if permissions:
        await session.execute(
            _ROLE_PERMISSIONS.insert(),
            [{"role_id": role_id, "permission": p} for p in permissions],
        )


async def create_role(
    store: Store, role_id: str, role: RoleInput, actor: Actor
) -> Revised[RoleRecord]:
    """A new role; :class:`ConflictError` (``roleId``) when the id is taken."""
    role_id = check_text("roleId", role_id, ROLE_ID_LENGTH)
    clean = _clean_role(role, store.settings.rbac_max_list)

    async def work(session: AsyncSession) -> Revised[RoleRecord]:
        taken = await session.scalar(select(_ROLES.c.role_id).where(_ROLES.c.role_id == role_id))
        if taken is not None:
            raise ConflictError("roleId", f"role {role_id!r} exists already")
        now = utcnow()
        await session.execute(
            _ROLES.insert().values(
                role_id=role_id,
                name=clean.name,
                description=clean.description,
                created_at=now,
                updated_at=now,
            )
        )
        await _write_role_permissions(session, role_id, clean.permissions)
        number = await _bump(session)
        audit.record(
            session, actor, "role.create", "Role", role_id, {"permissions": clean.permissions}
        )
        return Revised(await _load_role(session, role_id), number)

    return await store.transaction(work)


async def replace_role(
    store: Store, role_id: str, role: RoleInput, actor: Actor
) -> Revised[RoleRecord]:
    """The role's name, description and whole permission set, at once."""
    clean = _clean_role(role, store.settings.rbac_max_list)

    async def work(session: AsyncSession) -> Revised[RoleRecord]:
        before = await _load_role(session, role_id)
        await session.execute(
            update(_ROLES)
            .where(_ROLES.c.role_id == role_id)
            .values(name=clean.name, description=clean.description, updated_at=utcnow())
        )
        await _write_role_permissions(session, role_id, clean.permissions)
        if set(clean.permissions) != set(before.permissions):
            await _regrant_role(session, role_id)
        number = await _bump(session)
        audit.record(
            session,
            actor,
            "role.replace",
            "Role",
            role_id,
            {
                "added": sorted(set(clean.permissions) - set(before.permissions)),
                "removed": sorted(set(before.permissions) - set(clean.permissions)),
            },
        )
        if set(clean.permissions) != set(before.permissions):
            await _push(session, store, actor, await _holders_of_role(session, role_id))
        return Revised(await _load_role(session, role_id), number)

    return await store.transaction(work)


async def delete_role(store: Store, role_id: str, actor: Actor) -> int:
    """Delete an unused role; :class:`StateError` naming what still uses it
    (bindings, groups, users). Returns the revision."""

    async def work(session: AsyncSession) -> int:
        await _load_role(session, role_id)
        uses = []
        for what, table in (
            ("binding", _BINDING_ROLES),
            ("group", _MAPPINGS),
            ("user", _USER_ROLES),
        ):
            count = await session.scalar(
                select(func.count()).select_from(table).where(table.c.role_id == role_id)
            )
            if count:
                uses.append(f"{count} {what}{'s' if count != 1 else ''}")
        if uses:
            raise StateError(f"role {role_id!r} is still used by {', '.join(uses)}")
        await session.execute(delete(_ROLES).where(_ROLES.c.role_id == role_id))
        number = await _bump(session)
        audit.record(session, actor, "role.delete", "Role", role_id)
        return number

    return await store.transaction(work)


async def _write_binding_lists(
    session: AsyncSession, binding_id: str, binding: _CleanBinding
) -> None:
    for table, column, values in (
        (_SUBJECTS, "user_id", binding.subjects),
        (_BINDING_GROUPS, "group_id", binding.groups),
        (_BINDING_ROLES, "role_id", binding.roles),
        (_BINDING_PERMISSIONS, "permission", binding.permissions),
    ):
        await session.execute(delete(table).where(table.c.binding_id == binding_id))
        if values:
            await session.execute(
                table.insert(), [{"binding_id": binding_id, column: v} for v in values]
            )


def _binding_details(binding: _CleanBinding | BindingRecord) -> dict[str, Any]:
    return {
        "subjects": binding.subjects,
        "groups": binding.groups,
        "roles": binding.roles,
        "permissions": binding.permissions,
        "resource": None
        if binding.resource is None
        else {"type": binding.resource.type, "id": binding.resource.id},
    }


async def _insert_binding(session: AsyncSession, binding_id: str, clean: _CleanBinding) -> None:
    taken = await session.scalar(
        select(_BINDINGS.c.binding_id).where(_BINDINGS.c.binding_id == binding_id)
    )
    if taken is not None:
        raise ConflictError("bindingId", f"binding {binding_id!r} exists already")
    await _require(session, roles=clean.roles, users=clean.subjects, groups=clean.groups)
    now = utcnow()
    await session.execute(
        _BINDINGS.insert().values(
            binding_id=binding_id,
            resource_type=clean.resource.type if clean.resource else None,
            resource_id=clean.resource.id if clean.resource else None,
            created_at=now,
            updated_at=now,
        )
    )
    await _write_binding_lists(session, binding_id, clean)
    await _regrant(session, "binding", [binding_id])


async def create_binding(
    store: Store, binding: BindingInput, actor: Actor, *, binding_id: str | None = None
) -> Revised[BindingRecord]:
    """A new binding (a new ULID id unless ``binding_id``; :class:`ConflictError`
    ``bindingId`` when taken). A binding needs a subject or a group, and a
    role or a permission (:class:`ValidationError`)."""
    new = check_text("bindingId", binding_id, BINDING_ID_LENGTH) if binding_id else new_id()
    clean = _clean_binding(binding, store.settings.rbac_max_list)

    async def work(session: AsyncSession) -> Revised[BindingRecord]:
        await _insert_binding(session, new, clean)
        number = await _bump(session)
        audit.record(session, actor, "binding.create", "Binding", new, _binding_details(clean))
        touched = _Touched()
        touched.add_binding(clean.subjects, clean.groups)
        await _push(session, store, actor, touched)
        return Revised(await _load_binding(session, new), number)

    return await store.transaction(work)


async def replace_binding(
    store: Store, binding_id: str, binding: BindingInput, actor: Actor
) -> Revised[BindingRecord]:
    """The binding's subjects, groups, roles, permissions and resource, at once."""
    clean = _clean_binding(binding, store.settings.rbac_max_list)

    async def work(session: AsyncSession) -> Revised[BindingRecord]:
        before = await _load_binding(session, binding_id)
        await _require(session, roles=clean.roles, users=clean.subjects, groups=clean.groups)
        await session.execute(
            update(_BINDINGS)
            .where(_BINDINGS.c.binding_id == binding_id)
            .values(
                resource_type=clean.resource.type if clean.resource else None,
                resource_id=clean.resource.id if clean.resource else None,
                updated_at=utcnow(),
            )
        )
        await _write_binding_lists(session, binding_id, clean)
        await _regrant(session, "binding", [binding_id])
        number = await _bump(session)
        audit.record(
            session,
            actor,
            "binding.replace",
            "Binding",
            binding_id,
            {"before": _binding_details(before), "after": _binding_details(clean)},
        )
        touched = _Touched()
        touched.add_binding(before.subjects, before.groups)
        touched.add_binding(clean.subjects, clean.groups)
        await _push(session, store, actor, touched)
        return Revised(await _load_binding(session, binding_id), number)

    return await store.transaction(work)


async def delete_binding(store: Store, binding_id: str, actor: Actor) -> int:
    """Delete the binding; the revision."""

    async def work(session: AsyncSession) -> int:
        before = await _load_binding(session, binding_id)
        await session.execute(delete(_BINDINGS).where(_BINDINGS.c.binding_id == binding_id))
        await session.execute(delete(_GRANTS).where(_GRANTS.c.binding_id == binding_id))
        number = await _bump(session)
        audit.record(
            session, actor, "binding.delete", "Binding", binding_id, _binding_details(before)
        )
        touched = _Touched()
        touched.add_binding(before.subjects, before.groups)
        await _push(session, store, actor, touched)
        return number

    return await store.transaction(work)


async def _replace_assignment(
    session: AsyncSession, table: Table, owner: str, owner_id: str, role_ids: list[str]
) -> tuple[list[str], list[str]]:
    """Swap the roles of ``owner_id`` in ``table`` for ``role_ids``; (added, removed)."""
    before = set(await session.scalars(select(table.c.role_id).where(table.c[owner] == owner_id)))
    removed = sorted(before - set(role_ids))
    added = sorted(set(role_ids) - before)
    if removed:
        await session.execute(
            delete(table).where(table.c[owner] == owner_id, table.c.role_id.in_(removed))
        )
    if added:
        await session.execute(table.insert(), [{owner: owner_id, "role_id": r} for r in added])
    return added, removed


async def replace_group_roles(
    store: Store, group_id: str, role_ids: list[str], actor: Actor
) -> Revised[list[str]]:
    """The group's whole role mapping, at once."""
    roles = _check_list("roles", role_ids, store.settings.rbac_max_list, ROLE_ID_LENGTH)

    async def work(session: AsyncSession) -> Revised[list[str]]:
        await _group_exists(session, group_id)
        await _require(session, roles=roles)
        added, removed = await _replace_assignment(session, _MAPPINGS, "group_id", group_id, roles)
        if added or removed:
            await _regrant(session, "group-role", [group_id])
        number = await _bump(session)
        audit.record(
            session, actor, "group.roles", "Group", group_id, {"added": added, "removed": removed}
        )
        if added or removed:
            await _push(session, store, actor, _Touched(groups={group_id}))
        return Revised(roles, number)

    return await store.transaction(work)


async def replace_user_roles(
    store: Store, user_id: str, role_ids: list[str], actor: Actor
) -> Revised[list[str]]:
    """The user's whole set of directly assigned roles, at once."""
    roles = _check_list("roles", role_ids, store.settings.rbac_max_list, ROLE_ID_LENGTH)

    async def work(session: AsyncSession) -> Revised[list[str]]:
        await _user_exists(session, user_id)
        number = await write_user_roles(session, store, user_id, roles, actor)
        if number is None:  # the same roles: still a change, recorded as one
            number = await _bump(session)
            audit.record(
                session, actor, "user.roles", "User", user_id, {"added": [], "removed": []}
            )
        return Revised(roles, number)

    return await store.transaction(work)


def check_role_ids(store: Store, role_ids: Iterable[str]) -> list[str]:
    """``role_ids`` sorted without repeats, or :class:`ValidationError` for a
    list longer than ``IDSTORE_RBAC_MAX_LIST`` or an id no role could have
    (before any transaction; :func:`write_user_roles` checks they exist)."""
    return _check_list("roles", role_ids, store.settings.rbac_max_list, ROLE_ID_LENGTH)


async def write_user_roles(
    session: AsyncSession, store: Store, user_id: str, roles: list[str], actor: Actor
) -> int | None:
    """Replace the roles of a user the caller's transaction holds (internal:
    :mod:`identity_store.users` assigns a new or changed user's roles in its
    own transaction). ``roles`` come from :func:`check_role_ids`; unknown
    ones are a :class:`ValidationError` naming them. The RBAC revision the
    change made, with its audit row (``user.roles``) and Rönd push; ``None``
    when the roles were those already, and nothing is written."""
    await _require(session, roles=roles)
    added, removed = await _replace_assignment(session, _USER_ROLES, "user_id", user_id, roles)
    if not added and not removed:
        return None
    await _regrant(session, "user-role", [user_id])
    number = await _bump(session)
    audit.record(
        session, actor, "user.roles", "User", user_id, {"added": added, "removed": removed}
    )
    await _push(session, store, actor, _Touched(users={user_id}))
    return number


async def roles_of_users(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, list[str]]:
    """The roles assigned to each of ``user_ids`` directly, sorted (internal:
    the management API's user documents)."""
    found: dict[str, list[str]] = {uid: [] for uid in user_ids}
    for chunk in _chunks(list(dict.fromkeys(user_ids))):
        rows = await session.execute(
            select(_USER_ROLES.c.user_id, _USER_ROLES.c.role_id)
            .where(_USER_ROLES.c.user_id.in_(chunk))
            .order_by(_USER_ROLES.c.user_id, _USER_ROLES.c.role_id)
        )
        for user_id, role_id in rows:
            found[user_id].append(role_id)
    return found


async def grant(store: Store, request: Grant, actor: Actor) -> Revised[str]:
    """Rönd's grant: a new binding; its id. A resource type needs a resource
    id; a resource id without a type is ignored, as Rönd does."""
    resource = None
    if request.resource_type is not None:
        if not request.resource_id:
            raise ValidationError("missing resource id")
        resource = Resource(request.resource_type, request.resource_id)
    binding = BindingInput(
        request.subjects, request.groups, request.roles, request.permissions, resource
    )
    created = await create_binding(store, binding, actor)
    return Revised(created.value.binding_id, created.revision)


async def revoke(store: Store, request: Revoke, actor: Actor) -> Revised[RevokeOutcome]:
    """Rönd's revoke (see :class:`Revoke`)."""
    limit = store.settings.rbac_max_list
    subjects = _check_list("subjects", request.subjects, limit, 26)
    groups = _check_list("groups", request.groups, limit, 26)
    resource_ids = _check_list("resourceIds", request.resource_ids, limit, RESOURCE_ID_LENGTH)
    resource_type = (
        _resource_type(request.resource_type) if request.resource_type is not None else None
    )
    by_resource = resource_type is not None and bool(resource_ids)
    if not by_resource and not subjects and not groups:
        raise ValidationError("empty subjects and groups lists or resource ids")

    async def work(session: AsyncSession) -> Revised[RevokeOutcome]:
        naming: list[ColumnElement[bool]] = []
        if subjects:
            naming.append(
                _BINDINGS.c.binding_id.in_(
                    select(_SUBJECTS.c.binding_id).where(_SUBJECTS.c.user_id.in_(subjects))
                )
            )
        if groups:
            naming.append(
                _BINDINGS.c.binding_id.in_(
                    select(_BINDING_GROUPS.c.binding_id).where(
                        _BINDING_GROUPS.c.group_id.in_(groups)
                    )
                )
            )
        clauses: list[ColumnElement[bool]] = []
        if naming:
            clauses.append(or_(*naming))
        if resource_type is not None:
            clauses.append(
                and_(
                    _BINDINGS.c.resource_type == resource_type,
                    _BINDINGS.c.resource_id.in_(resource_ids),
                )
            )
        rows = (
            await session.execute(
                select(_BINDINGS).where(*clauses).order_by(_BINDINGS.c.binding_id)
            )
        ).all()
        matched = await _bindings(session, rows)
        touched = _Touched()
        deleted: list[str] = []
        modified = 0
        for binding in matched:
            touched.add_binding(binding.subjects, binding.groups)
            left_subjects = [s for s in binding.subjects if s not in subjects]
            left_groups = [g for g in binding.groups if g not in groups]
            if (not subjects and not groups) or (not left_subjects and not left_groups):
                deleted.append(binding.binding_id)
                continue
            if subjects:
                await session.execute(
                    delete(_SUBJECTS).where(
                        _SUBJECTS.c.binding_id == binding.binding_id,
                        _SUBJECTS.c.user_id.in_(subjects),
                    )
                )
            if groups:
                await session.execute(
                    delete(_BINDING_GROUPS).where(
                        _BINDING_GROUPS.c.binding_id == binding.binding_id,
                        _BINDING_GROUPS.c.group_id.in_(groups),
                    )
                )
            await session.execute(
                update(_BINDINGS)
                .where(_BINDINGS.c.binding_id == binding.binding_id)
                .values(updated_at=utcnow())
            )
            modified += 1
        for chunk in _chunks(deleted):
            await session.execute(delete(_BINDINGS).where(_BINDINGS.c.binding_id.in_(chunk)))
            await session.execute(delete(_GRANTS).where(_GRANTS.c.binding_id.in_(chunk)))
        gone = set(deleted)
        await _regrant(
            session, "binding", [b.binding_id for b in matched if b.binding_id not in gone]
        )
        number = await _bump(session)
        audit.record(
            session,
            actor,
            "binding.revoke",
            "Binding",
            None,
            {
                "subjects": subjects,
                "groups": groups,
                "resourceType": resource_type,
                "resourceIds": resource_ids,
                "deleted": deleted,
                "modified": modified,
            },
        )
        await _push(session, store, actor, touched)
        return Revised(RevokeOutcome(len(deleted), modified), number)

    return await store.transaction(work)


# -- Deprovisioning (internal: the deletion sync and group deletion) -----------


@dataclass(slots=True)
class Forgotten:
    """What :func:`forget_users` removed."""

    bindings_of: dict[str, list[str]]
    """User id → the bindings that named it."""
    roles_of: dict[str, list[str]]
    """User id → the roles assigned to it directly."""
    deleted_bindings: list[str]
    """Bindings left with no subject and no group, deleted."""


async def _delete_emptied(session: AsyncSession, binding_ids: Iterable[str]) -> list[str]:
    """Delete the bindings among ``binding_ids`` left with no subject and no group."""
    deleted: list[str] = []
    for chunk in _chunks(sorted(set(binding_ids))):
        empty = list(
            await session.scalars(
                select(_BINDINGS.c.binding_id).where(
                    _BINDINGS.c.binding_id.in_(chunk),
                    ~exists().where(_SUBJECTS.c.binding_id == _BINDINGS.c.binding_id),
                    ~exists().where(_BINDING_GROUPS.c.binding_id == _BINDINGS.c.binding_id),
                )
            )
        )
        if empty:
            await session.execute(delete(_BINDINGS).where(_BINDINGS.c.binding_id.in_(empty)))
            await session.execute(delete(_GRANTS).where(_GRANTS.c.binding_id.in_(empty)))
            deleted.extend(empty)
    return deleted


async def forget_users(
    session: AsyncSession, user_ids: Sequence[str], actor: Actor, *, push: bool
) -> Forgotten:
    """Take the users out of every binding and drop their directly assigned
    roles, in the caller's transaction; bindings left with no subject and no
    group are deleted; one revision when anything changed, and with
    ``push`` one ``rond`` row per user that lost something."""
    bindings_of: dict[str, list[str]] = defaultdict(list)
    roles_of: dict[str, list[str]] = defaultdict(list)
    for chunk in _chunks(list(user_ids)):
        named = await session.execute(
            delete(_SUBJECTS)
            .where(_SUBJECTS.c.user_id.in_(chunk))
            .returning(_SUBJECTS.c.binding_id, _SUBJECTS.c.user_id)
        )
        for binding_id, user_id in named:
            bindings_of[user_id].append(binding_id)
        assigned = await session.execute(
            delete(_USER_ROLES)
            .where(_USER_ROLES.c.user_id.in_(chunk))
            .returning(_USER_ROLES.c.role_id, _USER_ROLES.c.user_id)
        )
        for role_id, user_id in assigned:
            roles_of[user_id].append(role_id)
    for chunk in _chunks(list(user_ids)):
        await session.execute(delete(_GRANTS).where(_GRANTS.c.holder_id.in_(chunk)))
    changed = sorted({b for names in bindings_of.values() for b in names})
    deleted = await _delete_emptied(session, changed)
    gone = set(deleted)
    kept = [b for b in changed if b not in gone]
    for chunk in _chunks(kept):
        await session.execute(
            update(_BINDINGS).where(_BINDINGS.c.binding_id.in_(chunk)).values(updated_at=utcnow())
        )
    if bindings_of or roles_of:
        await _bump(session)
        if push:
            await push_rows(session, actor, set(bindings_of) | set(roles_of), ())
    for names in (*bindings_of.values(), *roles_of.values()):
        names.sort()
    return Forgotten(dict(bindings_of), dict(roles_of), deleted)


async def forget_group(
    session: AsyncSession, group_id: str, actor: Actor, *, push: bool
) -> list[str]:
    """Take a deleted group out of every binding (its role mappings go with
    its row), in the caller's transaction; bindings left with no subject
    and no group are deleted (their ids returned)."""
    named = list(
        await session.scalars(
            delete(_BINDING_GROUPS)
            .where(_BINDING_GROUPS.c.group_id == group_id)
            .returning(_BINDING_GROUPS.c.binding_id)
        )
    )
    mapped = await session.scalar(
        select(func.count()).select_from(_MAPPINGS).where(_MAPPINGS.c.group_id == group_id)
    )
    await session.execute(delete(_GRANTS).where(_GRANTS.c.holder_id == group_id))
    deleted = await _delete_emptied(session, named)
    if named or mapped:
        await _bump(session)
        if push:
            await push_rows(session, actor, (), (group_id,))
    return deleted
