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

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text

from .errors import NotFoundError
from .models import Lifecycle
from .rbac import Resource
from .store import Store, database_errors

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


# -- The statements ------------------------------------------------------------
#
# Plain SQL that both databases run as written (recursive CTEs, UNION,
# LEFT JOIN), with named parameters; on PostgreSQL the check runs as a
# prepared asyncpg statement (:meth:`~identity_store.prepared_reads.PreparedReads.rows`).
# ``memberships`` walks from the user's own groups up to the groups that
# contain them; ``UNION`` (not ``UNION ALL``) drops a row already found, so a
# cycle of groups ends the walk. ``via`` is the user's own group the walk
# started from, for the explanation.

_MEMBERSHIPS = """
memberships(group_id, via) AS (
    SELECT gm.group_id, gm.group_id FROM group_members gm WHERE gm.member_id = :user_id
  UNION
    SELECT gm.group_id, m.via FROM group_members gm JOIN memberships m ON gm.member_id = m.group_id
)"""

_REQUESTS = {
    "postgresql": "SELECT * FROM unnest(CAST(:ns AS int[]), CAST(:users AS varchar[]),"
    " CAST(:permissions AS varchar[])) AS r(n, user_id, permission)",
    "sqlite": "SELECT CAST(j.key AS INTEGER), json_extract(j.value, '$[0]'),"
    " json_extract(j.value, '$[1]') FROM json_each(:requests) AS j",
}
"""The checks asked, numbered: arrays on PostgreSQL, a JSON array of
``[user, permission]`` pairs on SQLite (the only part of the statements
that differs between the two)."""

_CHECK = """
WITH RECURSIVE
requests(n, user_id, permission) AS ({requests}),
asked(user_id) AS (SELECT DISTINCT user_id FROM requests),
memberships(user_id, group_id, via) AS (
    SELECT a.user_id, gm.group_id, gm.group_id
      FROM asked a JOIN group_members gm ON gm.member_id = a.user_id
  UNION
    SELECT m.user_id, gm.group_id, m.via
      FROM group_members gm JOIN memberships m ON gm.member_id = m.group_id
),
holders(user_id, holder_id, via) AS (
    SELECT a.user_id, a.user_id, NULL FROM asked a
  UNION ALL
    SELECT m.user_id, m.group_id, m.via FROM memberships m
),
paths(n, source, binding_id, role_id, group_id, via, resource_type, resource_id) AS (
    SELECT r.n, g.source, g.binding_id, g.role_id,
           CASE WHEN h.via IS NULL THEN NULL ELSE h.holder_id END, h.via,
           g.resource_type, g.resource_id
      FROM requests r
      JOIN holders h ON h.user_id = r.user_id
      {grants}
)
SELECT r.n, v.revision, u.lifecycle, u.blocked, p.source, p.binding_id, p.role_id, p.group_id,
       p.via, p.resource_type, p.resource_id
  FROM requests r
  JOIN rbac_revisions v ON v.id = 1
  LEFT JOIN users u ON u.id = r.user_id AND u.deleted_at IS NULL
  LEFT JOIN paths p ON p.n = r.n AND u.id IS NOT NULL
 ORDER BY r.n
"""
"""Each user's groups are walked once however many of its checks a batch
holds. For each numbered check, one row per grant (``rbac_grants``) of its
permission held by its user or by one of its groups, on any resource
(Python keeps those in scope), or one row of NULL paths; every row carries
the revision and the user's state (NULL: no such user). One statement,
hence one snapshot, for a whole batch."""

_GRANTS = {
    # A subquery PostgreSQL may not flatten (OFFSET 0): each (holder,
    # permission) is looked up in ix_rbac_grants_holder. Flattened, the
    # generic plan of the prepared statement (which cannot know that a user
    # has a dozen groups) would hash the whole table.
    "postgresql": "CROSS JOIN LATERAL (SELECT * FROM rbac_grants x"
    " WHERE x.holder_id = h.holder_id AND x.permission = r.permission OFFSET 0) g",
    # Many permissions of a few users: every grant of their holders, read
    # once by holder (a few thousand rows), joined to the checks by
    # permission, instead of one look-up per check and holder.
    "postgresql-by-holder": "JOIN (SELECT * FROM rbac_grants x"
    " WHERE x.holder_id = ANY (ARRAY(SELECT holder_id FROM holders))) g"
    " ON g.holder_id = h.holder_id AND g.permission = r.permission",
    "sqlite": "JOIN rbac_grants g ON g.holder_id = h.holder_id AND g.permission = r.permission",
}

_CHECKS = {
    dialect: _CHECK.format(requests=sql, grants=_GRANTS[dialect])
    for dialect, sql in _REQUESTS.items()
}
_BY_HOLDER = _CHECK.format(requests=_REQUESTS["postgresql"], grants=_GRANTS["postgresql-by-holder"])

CHECKS_PER_USER_BY_HOLDER = 20
"""A batch asking at least this many checks per distinct user reads its
holders' grants by holder (:data:`_GRANTS` ``postgresql-by-holder``)."""

SPLIT_AT = 200
"""The fewest checks a batch must hold to be split in parts run at once
(``IDSTORE_AUTHZ_BATCH_PARALLELISM``): below it, the exported snapshot's
extra round trips cost more than the second core saves."""

_HELD = f"""
WITH RECURSIVE {_MEMBERSHIPS},
bound(binding_id) AS (
    SELECT bs.binding_id FROM binding_subjects bs WHERE bs.user_id = :user_id
  UNION
    SELECT bg.binding_id FROM binding_groups bg JOIN memberships m ON bg.group_id = m.group_id
),
scoped(binding_id, resource_type, resource_id) AS (
    SELECT b.binding_id, b.resource_type, b.resource_id
      FROM bound bd JOIN bindings b ON b.binding_id = bd.binding_id
     WHERE b.resource_type IS NULL
        OR :all_resources = 1
        OR (b.resource_type = :resource_type AND b.resource_id = :resource_id)
),
held(role_id, resource_type, resource_id) AS (
    SELECT br.role_id, s.resource_type, s.resource_id
      FROM scoped s JOIN binding_roles br ON br.binding_id = s.binding_id
  UNION
    SELECT gr.role_id, NULL, NULL
      FROM memberships m JOIN group_role_mappings gr ON gr.group_id = m.group_id
  UNION
    SELECT ur.role_id, NULL, NULL FROM user_roles ur WHERE ur.user_id = :user_id
)
SELECT h.role_id, rp.permission, h.resource_type, h.resource_id
  FROM held h LEFT JOIN role_permissions rp ON rp.role_id = h.role_id
UNION
SELECT NULL, bp.permission, s.resource_type, s.resource_id
  FROM scoped s JOIN binding_permissions bp ON bp.binding_id = s.binding_id
"""  # noqa: S608 (constant fragments; every value is a bound parameter)
"""Roles and permissions the user holds, with the resource of the binding
that gives them (NULL: everywhere); bindings on other resources are left
out unless ``:all_resources``."""

_HOLDERS = """
WITH RECURSIVE
granting_roles(role_id) AS (
    SELECT rp.role_id FROM role_permissions rp WHERE rp.permission = :permission
),
granting(binding_id) AS (
    SELECT br.binding_id FROM binding_roles br JOIN granting_roles g ON g.role_id = br.role_id
  UNION
    SELECT bp.binding_id FROM binding_permissions bp WHERE bp.permission = :permission
),
in_scope(binding_id) AS (
    SELECT b.binding_id FROM granting g JOIN bindings b ON b.binding_id = g.binding_id
     WHERE b.resource_type IS NULL
        OR (b.resource_type = :resource_type AND b.resource_id = :resource_id)
),
holding_groups(group_id) AS (
    SELECT bg.group_id FROM binding_groups bg JOIN in_scope s ON s.binding_id = bg.binding_id
  UNION
    SELECT gr.group_id FROM group_role_mappings gr JOIN granting_roles g ON g.role_id = gr.role_id
  UNION
    SELECT gm.member_id FROM group_members gm JOIN holding_groups h ON gm.group_id = h.group_id
     WHERE gm.member_type = 'Group'
),
holders(user_id) AS (
    SELECT bs.user_id FROM binding_subjects bs JOIN in_scope s ON s.binding_id = bs.binding_id
  UNION
    SELECT gm.member_id FROM group_members gm JOIN holding_groups h ON gm.group_id = h.group_id
     WHERE gm.member_type = 'User'
  UNION
    SELECT ur.user_id FROM user_roles ur JOIN granting_roles g ON g.role_id = ur.role_id
)
SELECT u.id FROM holders h JOIN users u ON u.id = h.user_id
 WHERE u.deleted_at IS NULL AND u.lifecycle = 'ACTIVE' AND (u.blocked IS NULL OR NOT u.blocked)
   AND u.id > :after
 ORDER BY u.id
 LIMIT :limit
"""
"""Active, unblocked users holding ``:permission`` everywhere or on the
given resource (NULL type: everywhere only), by id after ``:after``."""

_REVISION = "SELECT revision FROM rbac_revisions WHERE id = 1"
_USER = "SELECT lifecycle, blocked FROM users WHERE id = :user_id AND deleted_at IS NULL"

_PARAMETER = re.compile(r":([a-z_]+)")


def _positional(sql: str) -> tuple[str, list[str]]:
    """``sql`` with ``:name`` parameters as asyncpg's ``$n``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAMETER.sub(number, sql), names


_CHECK_PG, _CHECK_NAMES = _positional(_CHECKS["postgresql"])
_BY_HOLDER_PG, _ = _positional(_BY_HOLDER)


def _parts(requests: Sequence[CheckRequest], parts: int) -> list[list[int]]:
    """The positions of ``requests`` in up to ``parts`` groups of about the
    same size, every check of a user in the same group (its groups are walked
    once), users dealt to the group with the fewest checks so far."""
    by_user: dict[str, list[int]] = {}
    for n, request in enumerate(requests):
        by_user.setdefault(request.user_id, []).append(n)
    groups: list[list[int]] = [[] for _ in range(min(parts, len(by_user)))]
    for positions in sorted(by_user.values(), key=len, reverse=True):
        min(groups, key=len).extend(positions)
    return groups


async def _check_rows(
    store: Store, requests: Sequence[CheckRequest], *, parts: int = 1
) -> list[Sequence[Any]]:
    """The rows of :data:`_CHECK` for ``requests``: a prepared asyncpg
    statement on PostgreSQL (a batch of at least :data:`SPLIT_AT` checks
    of several users split in up to ``parts`` statements run at once on as
    many connections, in one snapshot), SQLAlchemy on SQLite."""
    if store.prepared is not None:
        users = len({r.user_id for r in requests})
        by_holder = len(requests) >= CHECKS_PER_USER_BY_HOLDER * users
        sql = _BY_HOLDER_PG if by_holder else _CHECK_PG
        groups = (
            _parts(requests, parts)
            if parts > 1 and not by_holder and len(requests) >= SPLIT_AT
            else [list(range(len(requests)))]
        )
        arguments = [
            (
                group,
                [requests[n].user_id for n in group],
                [requests[n].permission for n in group],
            )
            for group in groups
        ]
        with database_errors():
            return list(await store.prepared.rows_in_snapshot(sql, arguments))
    pairs = json.dumps([[r.user_id, r.permission] for r in requests])
    async with store.reading() as session:
        return list((await session.execute(text(_CHECKS["sqlite"]), {"requests": pairs})).all())


# -- Explaining -------------------------------------------------------------------


def _in_scope(path_type: str | None, path_id: str | None, resource: Resource | None) -> bool:
    """A path applies everywhere (no resource) or only on its own resource."""
    if path_type is None:
        return True
    return resource is not None and (path_type, path_id) == (resource.type, resource.id)


def _describe(
    source: GrantSource,
    binding_id: str | None,
    role_id: str | None,
    group_id: str | None,
    via: str | None,
    permission: str,
) -> str:
    parts = []
    if binding_id is not None:
        parts.append(f"binding {binding_id}")
    if role_id is not None:
        parts.append(
            f"role {role_id}" + (" (assigned to the user)" if source == "user-role" else "")
        )
    parts.append(f"permission {permission}")
    text_ = " → ".join(parts)
    if group_id is not None:
        text_ += f", via group {group_id}"
        if via is not None and via != group_id:
            text_ += f" (the user is a member of it through group {via})"
    elif binding_id is not None:
        text_ += ", the user is a subject of the binding"
    return text_


def _decide(request: CheckRequest, rows: Sequence[Sequence[Any]]) -> Decision:
    revision = int(rows[0][1])
    lifecycle, blocked = rows[0][2], rows[0][3]
    permission = request.permission
    if lifecycle is None:
        reason = Reason("user-not-found", f"no user {request.user_id}")
        return Decision(request, False, revision, [reason])
    if lifecycle != Lifecycle.ACTIVE.value:
        message = f"the user is {lifecycle}: only ACTIVE users hold permissions"
        return Decision(request, False, revision, [Reason("not-active", message)])
    if blocked:
        message = "the user is blocked: blocked users hold no permissions"
        return Decision(request, False, revision, [Reason("blocked", message)])
    granted: list[Reason] = []
    elsewhere: list[Reason] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        source, binding_id, role_id, group_id, via, rtype, rid = row[4:11]
        if source is None:
            continue
        key = (source, binding_id, role_id, group_id, via)
        if key in seen:
            continue
        seen.add(key)
        where = Resource(rtype, rid) if rtype is not None else None
        via_group = via if via is not None and via != group_id else None
        description = _describe(source, binding_id, role_id, group_id, via, permission)
        if _in_scope(rtype, rid, request.resource):
            granted.append(
                Reason(
                    "granted", description, source, binding_id, role_id, group_id, via_group, where
                )
            )
        else:
            assert where is not None
            message = f"{description}, but only on {where.type} {where.id}"
            elsewhere.append(
                Reason(
                    "other-resource",
                    message,
                    source,
                    binding_id,
                    role_id,
                    group_id,
                    via_group,
                    where,
                )
            )
    if granted:
        return Decision(request, True, revision, _ordered(granted))
    if elsewhere:
        return Decision(request, False, revision, _ordered(elsewhere))
    target = (
        f" on {request.resource.type} {request.resource.id}" if request.resource else " everywhere"
    )
    message = f"no binding, group role or user role grants {permission}{target}"
    return Decision(request, False, revision, [Reason("no-grant", message)])


def _ordered(reasons: list[Reason]) -> list[Reason]:
    order = {"binding": 0, "group-role": 1, "user-role": 2}
    return sorted(
        reasons,
        key=lambda r: (
            order[r.source or "binding"],
            r.binding_id or "",
            r.role_id or "",
            r.group_id or "",
            r.via_group_id or "",
        ),
    )


# -- The use cases --------------------------------------------------------------


async def check(store: Store, request: CheckRequest) -> Decision:
    """Whether the user holds the permission (on ``request.resource``, or
    everywhere when it names none: a binding on some resource does not
    grant it everywhere), with every granting path, or why it is denied. An
    unknown user is denied (``user-not-found``). One statement."""
    return (await check_many(store, [request]))[0]


async def check_many(store: Store, requests: list[CheckRequest]) -> list[Decision]:
    """:func:`check` of each request, in order, all answered by one
    statement (one snapshot, so one revision)."""
    if not requests:
        return []
    grouped: list[list[Sequence[Any]]] = [[] for _ in requests]
    parts = store.settings.authz_batch_parallelism
    for row in await _check_rows(store, requests, parts=parts):
        grouped[int(row[0])].append(row)
    return [_decide(request, rows) for request, rows in zip(requests, grouped, strict=True)]


async def permissions(
    store: Store, user_id: str, resource: Resource | None = None
) -> EffectivePermissions:
    """What the user holds: everywhere, plus on ``resource`` when given (with
    no resource: everywhere and on every resource). :class:`NotFoundError`
    for an unknown or SCIM-deleted user."""
    params = {
        "user_id": user_id,
        "all_resources": 1 if resource is None else 0,
        "resource_type": resource.type if resource else None,
        "resource_id": resource.id if resource else None,
    }
    async with store.reading() as session:
        user = (await session.execute(text(_USER), {"user_id": user_id})).first()
        if user is None:
            raise NotFoundError("User", user_id)
        number = int(await session.scalar(text(_REVISION)) or 0)
        rows = (await session.execute(text(_HELD), params)).all()
    lifecycle, blocked = user[0], bool(user[1])
    roles = sorted({r[0] for r in rows if r[0] is not None})
    held: set[tuple[str, str | None, str | None]] = {
        (r[1], r[2], r[3]) for r in rows if r[1] is not None
    }
    entitled = lifecycle == Lifecycle.ACTIVE.value and not blocked
    found = [
        HeldPermission(p, Resource(t, i) if t is not None and i is not None else None)
        for p, t, i in sorted(held, key=lambda h: (h[0], h[1] or "", h[2] or ""))
    ]
    return EffectivePermissions(
        user_id, lifecycle, blocked, number, roles if entitled else [], found if entitled else []
    )


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
    params = {
        "permission": permission,
        "resource_type": resource.type if resource else None,
        "resource_id": resource.id if resource else None,
        "after": after or "",
        "limit": limit + 1,
    }
    async with store.reading() as session:
        if not store.settings.is_sqlite:
            await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        number = int(await session.scalar(text(_REVISION)) or 0)
        ids = list((await session.scalars(text(_HOLDERS), params)).all())
    page = ids[:limit]
    return Holders(permission, resource, number, page, page[-1] if len(ids) > limit else None)
