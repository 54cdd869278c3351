"""rbac grants: each (holder, permission) a binding, mapping or user role gives

``rbac_grants`` holds the expansion of bindings (to each subject and group,
each permission of the binding and of its roles), group→role mappings and
user roles into single rows, indexed by holder and permission: a check reads
a dozen index rows instead of expanding every binding of every group of the
user through its roles (docs/authorization.md, "How it is computed"). The
store keeps it in the transaction of every RBAC change; this revision fills
it from the tables (the SQL is a copy of ``identity_store.rbac``'s as of this
revision, as migrations do not import the application).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COLUMNS = "holder_id, permission, source, binding_id, role_id, resource_type, resource_id"
_EXPANSIONS = (
    """
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
""",
    """
SELECT gr.group_id, rp.permission, 'group-role', NULL, gr.role_id, NULL, NULL
  FROM group_role_mappings gr JOIN role_permissions rp ON rp.role_id = gr.role_id
""",
    """
SELECT ur.user_id, rp.permission, 'user-role', NULL, ur.role_id, NULL, NULL
  FROM user_roles ur JOIN role_permissions rp ON rp.role_id = ur.role_id
""",
)


def upgrade() -> None:
    op.create_table(
        "rbac_grants",
        sa.Column("id", _BIGINT, autoincrement=True, nullable=False),
        sa.Column("holder_id", sa.String(length=128), nullable=False),
        sa.Column("permission", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("binding_id", sa.String(length=128), nullable=True),
        sa.Column("role_id", sa.String(length=128), nullable=True),
        sa.Column("resource_type", sa.String(length=128), nullable=True),
        sa.Column("resource_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rbac_grants")),
    )
    op.create_index("ix_rbac_grants_holder", "rbac_grants", ["holder_id", "permission"])
    op.create_index("ix_rbac_grants_binding_id", "rbac_grants", ["binding_id"])
    op.create_index("ix_rbac_grants_role_id", "rbac_grants", ["role_id"])
    for select_sql in _EXPANSIONS:
        op.execute(f"INSERT INTO rbac_grants ({_COLUMNS}) {select_sql}")


def downgrade() -> None:
    op.drop_table("rbac_grants")
