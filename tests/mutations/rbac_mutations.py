"""Hand mutation check of identity_store/rbac.py's grant rows (issue 13):
every RBAC change must leave ``rbac_grants`` equal to a rebuild, since the
checks read nothing else.

Each mutation is one small, plausible mistake in keeping the grants; the
RBAC tests (tests/test_rbac_store.py, tests/test_resolver.py,
tests/test_deprovisioning.py) must fail for every one of them.

    .venv/bin/python tests/mutations/rbac_mutations.py        # all
    .venv/bin/python tests/mutations/rbac_mutations.py -k revoke

Same machinery as lifecycle_mutations.py; not part of the normal suite run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle_mutations
from lifecycle_mutations import Mutation, m

TARGET = Path("identity_store/rbac.py")
TESTS = ["tests/test_rbac_store.py", "tests/test_resolver.py", "tests/test_deprovisioning.py"]

MUTATIONS = [
    m(
        "role-change-not-regranted",
        "a role's new permissions do not reach its holders' grants",
        ("            await _regrant_role(session, role_id)\n", "            pass\n"),
    ),
    m(
        "new-binding-not-granted",
        "a new binding grants nothing",
        (
            "    await _write_binding_lists(session, binding_id, clean)\n"
            '    await _regrant(session, "binding", [binding_id])\n',
            "    await _write_binding_lists(session, binding_id, clean)\n",
        ),
    ),
    m(
        "replaced-binding-not-regranted",
        "a replaced binding keeps its old grants",
        (
            "        await _write_binding_lists(session, binding_id, clean)\n"
            '        await _regrant(session, "binding", [binding_id])\n',
            "        await _write_binding_lists(session, binding_id, clean)\n",
        ),
    ),
    m(
        "deleted-binding-keeps-grants",
        "a deleted binding still grants",
        (
            "        await session.execute(delete(_GRANTS)"
            ".where(_GRANTS.c.binding_id == binding_id))\n",
            "",
        ),
    ),
    m(
        "group-roles-not-regranted",
        "a group's new roles do not reach its grants",
        (
            '            await _regrant(session, "group-role", [group_id])\n',
            "            pass\n",
        ),
    ),
    m(
        "user-roles-not-regranted",
        "a user's new roles do not reach its grants",
        ('            await _regrant(session, "user-role", [user_id])\n', "            pass\n"),
    ),
    m(
        "revoke-keeps-modified-grants",
        "a subject revoked from a binding that stays keeps its grants",
        (
            '        await _regrant(\n            session, "binding",',
            '        await _regrant(\n            session, "nothing",',
        ),
    ),
    m(
        "forgotten-user-keeps-grants",
        "a deprovisioned user keeps its grants",
        (
            "        await session.execute(delete(_GRANTS)"
            ".where(_GRANTS.c.holder_id.in_(chunk)))\n",
            "        pass\n",
        ),
    ),
    m(
        "deleted-group-keeps-grants",
        "a deleted group keeps its grants",
        (
            "    await session.execute(delete(_GRANTS).where(_GRANTS.c.holder_id == group_id))\n",
            "",
        ),
    ),
    m(
        "binding-groups-not-expanded",
        "a binding's groups get no grants",
        (
            "        UNION ALL SELECT binding_id, group_id FROM binding_groups) h",
            "        UNION ALL SELECT binding_id, group_id FROM binding_groups WHERE 1 = 0) h",
        ),
    ),
    m(
        "binding-roles-not-expanded",
        "a binding's roles grant nothing",
        (
            "          FROM binding_roles br JOIN role_permissions rp"
            " ON rp.role_id = br.role_id) p",
            "          FROM binding_roles br JOIN role_permissions rp ON 1 = 0) p",
        ),
    ),
    m(
        "binding-resource-dropped",
        "a binding's grants lose their resource",
        (
            "       b.resource_type, b.resource_id\n  FROM bindings b",
            "       NULL, NULL\n  FROM bindings b",
        ),
    ),
]


def check(mutation: Mutation | None) -> tuple[str, str]:
    return lifecycle_mutations.check(mutation, TESTS, TARGET, "identity_store.rbac")


def main() -> int:
    return lifecycle_mutations.run_mutations(__doc__.split("\n\n")[0], MUTATIONS, TARGET, check)


if __name__ == "__main__":
    sys.exit(main())
