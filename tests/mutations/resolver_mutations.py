"""Hand mutation check of identity_store/resolver.py (issue 13): who holds
what, and why (bindings, nested groups, group roles, user roles, resources,
the lifecycle rule, the check's explanations, the holders' query).

Each mutation is one small, plausible mistake in one rule; the resolver's
table tests (tests/test_resolver.py) must fail for every one of them.

    .venv/bin/python tests/mutations/resolver_mutations.py        # all
    .venv/bin/python tests/mutations/resolver_mutations.py -k holders

Same machinery as lifecycle_mutations.py: each mutation is applied to a
copy of the repository in a temporary directory; exit 1 when one survives
or no longer applies. Not part of the normal suite run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle_mutations
from lifecycle_mutations import Mutation, m

TARGET = Path("identity_store/resolver.py")
TESTS = ["tests/test_resolver.py"]

MUTATIONS = [
    m(
        "check-memberships-not-nested",
        "only the user's own groups count, not the groups containing them",
        (
            "      FROM group_members gm JOIN memberships m ON gm.member_id = m.group_id\n"
            "),\nholders",
            "      FROM group_members gm JOIN memberships m ON 1 = 0\n),\nholders",
        ),
    ),
    m(
        "check-user-holds-nothing-itself",
        "what the user is granted itself (subject of a binding, user roles) is ignored",
        (
            "    SELECT a.user_id, a.user_id, NULL FROM asked a\n",
            "    SELECT a.user_id, a.user_id, NULL FROM asked a WHERE 1 = 0\n",
        ),
    ),
    m(
        "check-groups-hold-nothing",
        "what the user's groups are granted is ignored",
        (
            "    SELECT m.user_id, m.group_id, m.via FROM memberships m\n",
            "    SELECT m.user_id, m.group_id, m.via FROM memberships m WHERE 1 = 0\n",
        ),
    ),
    m(
        "check-any-permission-sqlite",
        "any grant of the holder allows (SQLite's statement)",
        (
            "JOIN rbac_grants g ON g.holder_id = h.holder_id AND g.permission = r.permission",
            "JOIN rbac_grants g ON g.holder_id = h.holder_id",
        ),
    ),
    m(
        "check-any-permission-postgresql",
        "any grant of the holder allows (PostgreSQL's statement)",
        (
            " WHERE x.holder_id = h.holder_id AND x.permission = r.permission OFFSET 0",
            " WHERE x.holder_id = h.holder_id OFFSET 0",
        ),
    ),
    m(
        "check-group-named-for-subject",
        "a grant to the user itself is reported as through a group",
        (
            "CASE WHEN h.via IS NULL THEN NULL ELSE h.holder_id END",
            "h.holder_id",
        ),
    ),
    m(
        "check-deleted-user-found",
        "a user deleted over SCIM is still checked",
        (
            "LEFT JOIN users u ON u.id = r.user_id AND u.deleted_at IS NULL",
            "LEFT JOIN users u ON u.id = r.user_id",
        ),
    ),
    m(
        "check-paths-of-other-requests",
        "a batch answers a check with the paths of another",
        (
            "LEFT JOIN paths p ON p.n = r.n AND u.id IS NOT NULL",
            "LEFT JOIN paths p ON u.id IS NOT NULL",
        ),
    ),
    m(
        "scope-resource-everywhere",
        "a binding on one resource grants everywhere",
        ("    if path_type is None:\n        return True", "    if True:\n        return True"),
    ),
    m(
        "scope-resource-any-id",
        "a binding on one resource grants on every resource of its type",
        (
            "(path_type, path_id) == (resource.type, resource.id)",
            "path_type == resource.type",
        ),
    ),
    m(
        "lifecycle-ignored",
        "a user not ACTIVE holds its grants",
        ("    if lifecycle != Lifecycle.ACTIVE.value:", "    if lifecycle == 'nothing':"),
    ),
    m(
        "blocked-ignored",
        "a blocked user holds its grants",
        ("    if blocked:\n        message", "    if False:\n        message"),
    ),
    m(
        "via-always-named",
        "a direct membership is reported as nested",
        (
            "        via_group = via if via is not None and via != group_id else None",
            "        via_group = via",
        ),
    ),
    m(
        "other-resource-as-no-grant",
        "a grant on another resource is not explained",
        ("    if elsewhere:\n", "    if False:\n"),
    ),
    m(
        "held-other-resources-hidden",
        "with no resource asked, grants on resources are not listed",
        ("        OR :all_resources = 1\n", ""),
    ),
    m(
        "held-memberships-not-nested",
        "the permissions list leaves out groups containing the user's groups",
        (
            "    SELECT gm.group_id, m.via FROM group_members gm JOIN memberships m"
            " ON gm.member_id = m.group_id",
            "    SELECT gm.group_id, m.via FROM group_members gm JOIN memberships m ON 1 = 0",
        ),
    ),
    m(
        "held-group-roles-ignored",
        "the permissions list leaves out roles mapped to groups",
        (
            "    SELECT gr.role_id, NULL, NULL\n"
            "      FROM memberships m JOIN group_role_mappings gr ON gr.group_id = m.group_id\n",
            "    SELECT gr.role_id, NULL, NULL\n"
            "      FROM memberships m JOIN group_role_mappings gr ON 1 = 0\n",
        ),
    ),
    m(
        "held-binding-permissions-ignored",
        "the permissions list leaves out bindings' own permissions",
        (
            "  FROM scoped s JOIN binding_permissions bp ON bp.binding_id = s.binding_id\n",
            "  FROM scoped s JOIN binding_permissions bp ON 1 = 0\n",
        ),
    ),
    m(
        "held-inactive-entitled",
        "a user not ACTIVE is listed with permissions",
        (
            "    entitled = lifecycle == Lifecycle.ACTIVE.value and not blocked",
            "    entitled = not blocked",
        ),
    ),
    m(
        "holders-inactive-included",
        "users not ACTIVE are listed as holders",
        (" WHERE u.deleted_at IS NULL AND u.lifecycle = 'ACTIVE'", " WHERE u.deleted_at IS NULL"),
    ),
    m(
        "holders-nested-groups-ignored",
        "members of groups inside a holding group are left out",
        ("     WHERE gm.member_type = 'Group'", "     WHERE 1 = 0"),
    ),
    m(
        "holders-resource-ignored",
        "holders on a resource leave out the resource's bindings",
        (
            "        OR (b.resource_type = :resource_type AND b.resource_id = :resource_id)\n),\n"
            "holding_groups",
            "\n),\nholding_groups",
        ),
    ),
    m(
        "holders-page-overlaps",
        "the next page starts at its cursor again",
        ("   AND u.id > :after", "   AND u.id >= :after"),
    ),
]


def check(mutation: Mutation | None) -> tuple[str, str]:
    return lifecycle_mutations.check(mutation, TESTS, TARGET, "identity_store.resolver")


def main() -> int:
    return lifecycle_mutations.run_mutations(__doc__.split("\n\n")[0], MUTATIONS, TARGET, check)


if __name__ == "__main__":
    sys.exit(main())
