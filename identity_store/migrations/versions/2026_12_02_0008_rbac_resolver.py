"""rbac resolver: the lists of roles and bindings as tables, a revision

Rönd keeps a role's permissions and a binding's roles and permissions as
arrays in one document; the resolver joins them in SQL, so each list gets a
table of its own, indexed both ways:

- ``role_permissions`` (role, permission) replaces ``roles.permissions``;
- ``binding_roles`` and ``binding_permissions`` replace ``bindings.roles``
  and ``bindings.permissions``;
- ``user_roles`` (user, role) replaces ``users.role_ids``;
- ``ix_group_role_mappings_role_id``: who holds a role through a group;
- ``rbac_revisions``: one row, the number of RBAC changes so far.

Values in the old arrays are copied; a user's role id naming no role is
dropped (nothing wrote these columns before this revision).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ULID = sa.String(length=26)


def _lists(table: str, key: str, column: str) -> list[tuple[str, str]]:
    """(key, value) for each value of the JSON array ``column`` of ``table``."""
    t = sa.table(table, sa.column(key, sa.String()), sa.column(column, _JSON))
    pairs: dict[tuple[str, str], None] = {}
    for row_key, values in op.get_bind().execute(sa.select(t.c[key], t.c[column])):
        for value in values or ():
            if isinstance(value, str):
                pairs[(row_key, value)] = None
    return list(pairs)


def upgrade() -> None:
    op.create_table(
        "role_permissions",
        sa.Column("role_id", sa.String(length=128), nullable=False),
        sa.Column("permission", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["roles.role_id"],
            name=op.f("fk_role_permissions_role_id_roles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "permission", name=op.f("pk_role_permissions")),
    )
    op.create_index("ix_role_permissions_permission", "role_permissions", ["permission", "role_id"])
    op.create_table(
        "binding_roles",
        sa.Column("binding_id", sa.String(length=128), nullable=False),
        sa.Column("role_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["binding_id"],
            ["bindings.binding_id"],
            name=op.f("fk_binding_roles_binding_id_bindings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["roles.role_id"],
            name=op.f("fk_binding_roles_role_id_roles"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("binding_id", "role_id", name=op.f("pk_binding_roles")),
    )
    op.create_index("ix_binding_roles_role_id", "binding_roles", ["role_id", "binding_id"])
    op.create_table(
        "binding_permissions",
        sa.Column("binding_id", sa.String(length=128), nullable=False),
        sa.Column("permission", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["binding_id"],
            ["bindings.binding_id"],
            name=op.f("fk_binding_permissions_binding_id_bindings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("binding_id", "permission", name=op.f("pk_binding_permissions")),
    )
    op.create_index(
        "ix_binding_permissions_permission", "binding_permissions", ["permission", "binding_id"]
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", _ULID, nullable=False),
        sa.Column("role_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["roles.role_id"],
            name=op.f("fk_user_roles_role_id_roles"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name=op.f("pk_user_roles")),
    )
    op.create_index("ix_user_roles_role_id", "user_roles", ["role_id", "user_id"])
    op.create_index(
        "ix_group_role_mappings_role_id", "group_role_mappings", ["role_id", "group_id"]
    )
    revisions = op.create_table(
        "rbac_revisions",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", _BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rbac_revisions")),
    )
    op.bulk_insert(revisions, [{"id": 1, "revision": 0}])

    bind = op.get_bind()
    roles = {r for (r,) in bind.execute(sa.text("SELECT role_id FROM roles"))}
    copies = {
        "role_permissions": (
            ("role_id", "permission"),
            _lists("roles", "role_id", "permissions"),
        ),
        "binding_roles": (
            ("binding_id", "role_id"),
            [p for p in _lists("bindings", "binding_id", "roles") if p[1] in roles],
        ),
        "binding_permissions": (
            ("binding_id", "permission"),
            _lists("bindings", "binding_id", "permissions"),
        ),
        "user_roles": (
            ("user_id", "role_id"),
            [p for p in _lists("users", "id", "role_ids") if p[1] in roles],
        ),
    }
    for table, (columns, pairs) in copies.items():
        if pairs:
            target = sa.table(table, *(sa.column(c, sa.String()) for c in columns))
            op.bulk_insert(target, [dict(zip(columns, pair, strict=True)) for pair in pairs])
    # Plain ALTER TABLE ... DROP COLUMN on both databases (SQLite >= 3.35):
    # a batch copy of `users` would rewrite the whole table and, with foreign
    # keys on, cascade its drop into the user's entries.
    op.execute("ALTER TABLE roles DROP COLUMN permissions")
    op.execute("ALTER TABLE bindings DROP COLUMN roles")
    op.execute("ALTER TABLE bindings DROP COLUMN permissions")
    op.execute("ALTER TABLE users DROP COLUMN role_ids")


def _gather(table: str, key: str, column: str) -> dict[str, list[str]]:
    gathered: dict[str, list[str]] = {}
    t = sa.table(table, sa.column(key, sa.String()), sa.column(column, sa.String()))
    rows = op.get_bind().execute(sa.select(t.c[key], t.c[column]).order_by(t.c[key], t.c[column]))
    for row_key, value in rows:
        gathered.setdefault(row_key, []).append(value)
    return gathered


def downgrade() -> None:
    empty = sa.text("'[]'")
    op.add_column("users", sa.Column("role_ids", _JSON, nullable=False, server_default=empty))
    op.add_column("bindings", sa.Column("roles", _JSON, nullable=False, server_default=empty))
    op.add_column("bindings", sa.Column("permissions", _JSON, nullable=False, server_default=empty))
    op.add_column("roles", sa.Column("permissions", _JSON, nullable=False, server_default=empty))
    back = (
        ("users", "id", "role_ids", _gather("user_roles", "user_id", "role_id")),
        ("bindings", "binding_id", "roles", _gather("binding_roles", "binding_id", "role_id")),
        (
            "bindings",
            "binding_id",
            "permissions",
            _gather("binding_permissions", "binding_id", "permission"),
        ),
        ("roles", "role_id", "permissions", _gather("role_permissions", "role_id", "permission")),
    )
    for table, key, column, values in back:
        t = sa.table(table, sa.column(key, sa.String()), sa.column(column, _JSON))
        for row_key, listed in values.items():
            op.execute(t.update().where(t.c[key] == row_key).values({column: listed}))
    op.drop_table("rbac_revisions")
    op.drop_index("ix_group_role_mappings_role_id", table_name="group_role_mappings")
    op.drop_table("user_roles")
    op.drop_table("binding_permissions")
    op.drop_table("binding_roles")
    op.drop_table("role_permissions")
