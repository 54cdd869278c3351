"""The data set of the authorization benchmark (issue 13, "Speed"), described
by four sizes so that every process can recompute any row, and an oracle
that decides a check from the same description, to tell what the mix of
checks exercises and whether the store's answers are right.

With the issue's sizes: 1,000,000 users, 10,000 groups, 1,000 roles and
100,000 bindings.

- **Users** ``0 .. users-1``: ids, userNames and externalIds of
  :class:`bench.dataset.Dataset` (a fixed ``base_ms``, so a cached database
  keeps matching); ``ACTIVE``, except every 50th (``i % 50 == 7``)
  ``SUSPENDED`` and every 100th (``i % 100 == 13``) ``ACTIVE`` but
  ``blocked``. Every 25th user has one role of its own (``user_roles``).
- **Groups**, four levels, each group a member of the level above
  (``group_members`` rows of ``member_type`` ``Group``): 1 % top, 4 %
  second, 15 % third, 80 % leaves; every 10th leaf is also in a second
  third-level group, and the first top group is a member of the first leaf
  (a cycle, which the resolver must tolerate). A user is in three leaves
  (``i % L``, ``(7i + 1) % L``, ``(13i + 5) % L``, merged when equal), so
  it reaches its groups three levels of nesting up.
- **Roles**: eight permissions each from 1,000 services x 6 verbs
  (``svc0042.write``); the last role is the probe of the role-change step,
  holding only :data:`PROBE_PERMISSION`.
- **Bindings**: half name one or two users, half one or two groups (of any
  level); one or two roles; every 4th also a permission of its own; 20 % are
  scoped to a resource (``project``/``prj-0123``, 1,000 projects). The last
  binding gives the probe role to :data:`PROBE_USER`.
- **Group -> role mappings**: every top group, and every 20th group, maps to
  one role.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .dataset import Dataset, group_id

BASE_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: the time part of every seeded id (fixed, for the cache)."""
SERVICES = 1_000
VERBS = ("read", "list", "write", "delete", "approve", "admin")
PERMISSIONS_PER_ROLE = 8
PROJECTS = 1_000
RESOURCE_TYPE = "project"
PROBE_ROLE = "role-probe"
PROBE_PERMISSION = "bench.probe"
PROBE_USER = 1
SEED_VERSION = 1
"""Changes whenever the rows generated for the same sizes change (the cache's key)."""

SUSPENDED_EVERY, SUSPENDED_AT = 50, 7
BLOCKED_EVERY, BLOCKED_AT = 100, 13
USER_ROLE_EVERY = 25
MAPPED_GROUP_EVERY = 20


@dataclass(frozen=True, slots=True)
class Sizes:
    users: int = 1_000_000
    groups: int = 10_000
    roles: int = 1_000
    bindings: int = 100_000

    def check(self) -> None:
        if self.users < 200 or self.groups < 4 or self.roles < 2 or self.bindings < 2:
            raise ValueError("at least 200 users, 4 groups, 2 roles and 2 bindings")

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    index: int
    subjects: tuple[int, ...]
    groups: tuple[int, ...]
    roles: tuple[int, ...]
    permissions: tuple[str, ...]
    resource: tuple[str, str] | None


def permission(service: int, verb: int) -> str:
    return f"svc{service % SERVICES:04d}.{VERBS[verb % len(VERBS)]}"


ALL_PERMISSIONS = tuple(permission(s, v) for s in range(SERVICES) for v in range(len(VERBS)))


def project(k: int) -> str:
    return f"prj-{k % PROJECTS:04d}"


class AuthzData:
    """Ids, states and every RBAC list of the data set, computed from the sizes."""

    def __init__(self, sizes: Sizes) -> None:
        sizes.check()
        self.sizes = sizes
        self.users = Dataset(users=sizes.users, base_ms=BASE_MS, spares=0)
        g = sizes.groups
        top = max(1, g // 100)
        second = max(1, g * 4 // 100)
        third = max(1, g * 15 // 100)
        self.levels = (top, second, third, g - top - second - third)
        self.level_start = (0, top, top + second, top + second + third)
        self.regular_roles = sizes.roles - 1
        self.regular_bindings = sizes.bindings - 1

    # Users ------------------------------------------------------------------

    def user_id(self, i: int) -> str:
        return self.users.user_id(i)

    @staticmethod
    def suspended(i: int) -> bool:
        return i % SUSPENDED_EVERY == SUSPENDED_AT

    @staticmethod
    def blocked(i: int) -> bool:
        return i % BLOCKED_EVERY == BLOCKED_AT

    def active(self, i: int) -> bool:
        return not (self.suspended(i) or self.blocked(i))

    def user_leaves(self, i: int) -> list[int]:
        """The leaf groups (group indexes) user ``i`` is a direct member of."""
        leaves, first = self.levels[3], self.level_start[3]
        picks = {i % leaves, (7 * i + 1) % leaves, (13 * i + 5) % leaves}
        return [first + j for j in sorted(picks)]

    def user_roles(self, i: int) -> list[int]:
        return [(3 * i) % self.regular_roles] if i % USER_ROLE_EVERY == 0 else []

    # Groups -----------------------------------------------------------------

    def group_id(self, k: int) -> str:
        return group_id(BASE_MS, k)

    def level(self, k: int) -> int:
        return max(n for n in range(4) if self.level_start[n] <= k)

    def parents(self, k: int) -> list[int]:
        """The groups group ``k`` is a member of."""
        lvl = self.level(k)
        j = k - self.level_start[lvl]
        if lvl == 0:
            return [self.level_start[3]] if j == 0 else []  # the cycle
        above = self.levels[lvl - 1]
        found = [self.level_start[lvl - 1] + j % above]
        if lvl == 3 and j % 10 == 0:
            second = self.level_start[2] + (7 * j + 3) % above
            if second not in found:
                found.append(second)
        return found

    def group_roles(self, k: int) -> list[int]:
        if k < self.levels[0] or k % MAPPED_GROUP_EVERY == 0:
            return [(3 * k + 1) % self.regular_roles]
        return []

    # Roles ------------------------------------------------------------------

    def role_id(self, r: int) -> str:
        return PROBE_ROLE if r == self.regular_roles else f"role-{r:05d}"

    def role_permissions(self, r: int) -> tuple[str, ...]:
        if r == self.regular_roles:
            return (PROBE_PERMISSION,)
        found = dict.fromkeys(
            permission(r + 37 * k, r // SERVICES + k) for k in range(PERMISSIONS_PER_ROLE)
        )
        return tuple(found)

    # Bindings ---------------------------------------------------------------

    def binding_id(self, b: int) -> str:
        return f"binding-{b:07d}"

    def binding(self, b: int) -> BindingSpec:
        if b == self.regular_bindings:
            return BindingSpec(b, (PROBE_USER,), (), (self.regular_roles,), (), None)
        u, g, r = self.sizes.users, self.sizes.groups, self.regular_roles
        resource = (RESOURCE_TYPE, project(31 * b)) if b % 5 == 4 else None
        subjects: list[int] = []
        groups: list[int] = []
        if b % 10 < 5:
            subjects.append((9973 * b + 17) % u)
            if b % 2 == 0:
                subjects.append((7919 * b + 3) % u)
        else:
            groups.append((13 * b + 1) % g)
            if b % 3 == 0:
                groups.append((29 * b + 7) % g)
        roles = [(7 * b) % r]
        if b % 3 == 0:
            roles.append((11 * b + 3) % r)
        permissions = (permission(b, b),) if b % 4 == 1 else ()
        return BindingSpec(
            b,
            tuple(dict.fromkeys(subjects)),
            tuple(dict.fromkeys(groups)),
            tuple(dict.fromkeys(roles)),
            permissions,
            resource,
        )

    def bindings(self) -> Iterator[BindingSpec]:
        for b in range(self.sizes.bindings):
            yield self.binding(b)


# Rows for COPY -----------------------------------------------------------------

USER_COLUMNS = (
    "id", "user_name", "user_name_normalized", "external_id", "idp_reference_id",
    "idp_username", "idp_cloud_username", "idp_source", "display_name", "user_type", "tags",
    "active", "blocked", "lifecycle", "lifecycle_changed_at", "status", "providers",
    "created_at", "updated_at", "version",
)  # fmt: skip
MEMBER_COLUMNS = ("group_id", "member_id", "member_type", "created_at")


def created_at(i: int) -> datetime:
    return datetime.fromtimestamp(BASE_MS / 1000, UTC) + timedelta(milliseconds=i)


def user_rows(data: AuthzData, start: int, stop: int) -> tuple[list[Any], list[Any]]:
    """Rows of ``users`` (:data:`USER_COLUMNS`) and of the users' leaf
    memberships (:data:`MEMBER_COLUMNS`) for users ``start .. stop-1``."""
    users: list[Any] = []
    members: list[Any] = []
    ds = data.users
    for i in range(start, stop):
        uid, name, xid = ds.user_id(i), ds.user_name(i), ds.external_id(i)
        at = created_at(i)
        suspended = data.suspended(i)
        users.append((
            uid, name, name, xid, xid, name.split("@")[0], name, "AAD", f"User {i}", "PERSON",
            "[]", not suspended, data.blocked(i) or None, "SUSPENDED" if suspended else "ACTIVE",
            at, "[]", "[]", at, at, 1,
        ))  # fmt: skip
        members.extend((data.group_id(k), uid, "User", at) for k in data.user_leaves(i))
    return users, members


# The oracle ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One check of the mix: the user's index, the permission, the resource,
    the category it was drawn for, and what the oracle expects."""

    category: str
    user: int
    permission: str
    resource: tuple[str, str] | None
    allowed: bool

    def body(self, data: AuthzData) -> dict[str, Any]:
        found: dict[str, Any] = {"userId": data.user_id(self.user), "permission": self.permission}
        if self.resource is not None:
            found["resource"] = {"type": self.resource[0], "id": self.resource[1]}
        return found


class Oracle:
    """Decides a check from the description alone (the bench's reference for
    the store's answers), with the indexes from users and groups to bindings."""

    def __init__(self, data: AuthzData) -> None:
        self.data = data
        self.by_subject: dict[int, list[int]] = {}
        self.by_group: dict[int, list[int]] = {}
        self.children: dict[int, list[int]] = {}
        for spec in data.bindings():
            for s in spec.subjects:
                self.by_subject.setdefault(s, []).append(spec.index)
            for g in spec.groups:
                self.by_group.setdefault(g, []).append(spec.index)
        for k in range(data.sizes.groups):
            for p in data.parents(k):
                self.children.setdefault(p, []).append(k)
        self._role_perms = {r: set(data.role_permissions(r)) for r in range(data.sizes.roles)}

    def groups_of(self, i: int) -> set[int]:
        """Every group user ``i`` belongs to, directly or through nesting."""
        seen = set(self.data.user_leaves(i))
        todo = deque(seen)
        while todo:
            for p in self.data.parents(todo.popleft()):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    def grants(self, i: int, perm: str, resource: tuple[str, str] | None) -> list[str]:
        """The paths granting ``perm`` to user ``i``, whatever its lifecycle."""
        data = self.data
        groups = self.groups_of(i)
        paths = []
        bindings = dict.fromkeys(self.by_subject.get(i, ()))
        for g in groups:
            bindings.update(dict.fromkeys(self.by_group.get(g, ())))
        for b in bindings:
            spec = data.binding(b)
            if spec.resource is not None and spec.resource != resource:
                continue
            if perm in spec.permissions:
                paths.append(f"binding {b}")
            paths.extend(f"binding {b} role {r}" for r in spec.roles if perm in self._role_perms[r])
        for g in groups:
            paths.extend(
                f"group {g} role {r}" for r in data.group_roles(g) if perm in self._role_perms[r]
            )
        paths.extend(f"user role {r}" for r in data.user_roles(i) if perm in self._role_perms[r])
        return paths

    def decide(self, i: int, perm: str, resource: tuple[str, str] | None) -> bool:
        return self.data.active(i) and bool(self.grants(i, perm, resource))

    def user_under(self, k: int, rng: random.Random) -> int | None:
        """An active user reaching group ``k`` through a leaf below it."""
        data = self.data
        while data.level(k) < 3:
            below = self.children.get(k)
            if not below:
                return None
            k = rng.choice(below)
        j = k - data.level_start[3]
        leaves = data.levels[3]
        span = (data.sizes.users - 1 - j) // leaves + 1
        for _ in range(20):
            i = j + leaves * rng.randrange(span)
            if data.active(i):
                return i
        return None


MIX = (
    ("direct binding", 20),
    ("nested group", 20),
    ("group-role mapping", 10),
    ("resource-scoped", 15),
    ("other resource", 5),
    ("random", 20),
    ("not active", 10),
)
"""Categories of the mix and their weights (percent)."""


def _grant_of(data: AuthzData, spec: BindingSpec, rng: random.Random) -> str:
    held = [p for r in spec.roles for p in data.role_permissions(r)] + list(spec.permissions)
    return rng.choice(held)


def _draw(oracle: Oracle, category: str, rng: random.Random) -> Check | None:
    data = oracle.data
    nb = data.regular_bindings
    perm: str
    resource: tuple[str, str] | None = None
    user: int | None
    if category in ("direct binding", "nested group", "resource-scoped", "other resource"):
        spec = data.binding(rng.randrange(nb))
        wants_resource = category in ("resource-scoped", "other resource")
        if (spec.resource is not None) != wants_resource:
            return None
        if category == "direct binding":
            if not spec.subjects:
                return None
            user = spec.subjects[0]
        elif category == "nested group":
            if not spec.groups or data.level(spec.groups[0]) >= 2:
                return None
            user = oracle.user_under(spec.groups[0], rng)
        else:
            user = spec.subjects[0] if spec.subjects else oracle.user_under(spec.groups[0], rng)
        perm = _grant_of(data, spec, rng)
        resource = spec.resource
        if category == "other resource" and resource is not None:
            resource = (resource[0], project(int(resource[1][4:]) + 1 + rng.randrange(50)))
    elif category == "group-role mapping":
        k = rng.randrange(data.levels[0])
        roles = data.group_roles(k)
        user = oracle.user_under(k, rng)
        perm = rng.choice(data.role_permissions(roles[0]))
    elif category == "random":
        user = rng.randrange(data.sizes.users)
        perm = rng.choice(ALL_PERMISSIONS)
    else:  # not active
        if rng.random() < 0.67:
            user = rng.randrange(data.sizes.users // SUSPENDED_EVERY) * SUSPENDED_EVERY
            user += SUSPENDED_AT
        else:
            user = rng.randrange(data.sizes.users // BLOCKED_EVERY) * BLOCKED_EVERY + BLOCKED_AT
        if user >= data.sizes.users:
            return None
        leaf = data.user_leaves(user)[0]
        held = [b for b in oracle.by_group.get(leaf, ()) if data.binding(b).resource is None]
        perm = _grant_of(data, data.binding(held[0]), rng) if held else rng.choice(ALL_PERMISSIONS)
    if user is None or (category != "not active" and not data.active(user)):
        return None
    return Check(category, user, perm, resource, oracle.decide(user, perm, resource))


def mix(oracle: Oracle, count: int, seed: int = 13) -> list[Check]:
    """``count`` checks drawn by the weights of :data:`MIX`, shuffled."""
    rng = random.Random(seed)
    found: list[Check] = []
    for category, weight in MIX:
        wanted = max(1, count * weight // 100)
        drawn = 0
        for _ in range(wanted * 200):
            if drawn == wanted:
                break
            check = _draw(oracle, category, rng)
            if check is not None:
                found.append(check)
                drawn += 1
    rng.shuffle(found)
    return found


def probe_check(data: AuthzData) -> Check:
    """The role-change step's check: the probe user and the probe role's permission."""
    return Check("probe", PROBE_USER, PROBE_PERMISSION, None, True)
