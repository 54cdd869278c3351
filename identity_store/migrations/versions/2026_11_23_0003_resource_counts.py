"""resource counts: live users and groups as deltas (identity_store.counts)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 06:23:34.452305
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resource_counts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_counts")),
    )
    with op.batch_alter_table("resource_counts", schema=None) as batch_op:
        batch_op.create_index("ix_resource_counts_resource_type", ["resource_type"], unique=False)
    # The store may already hold users and groups: start from their counts.
    op.execute(
        "INSERT INTO resource_counts (resource_type, delta) "
        "SELECT 'User', count(*) FROM users WHERE deleted_at IS NULL"
    )
    op.execute(
        "INSERT INTO resource_counts (resource_type, delta) SELECT 'Group', count(*) FROM groups"
    )


def downgrade() -> None:
    with op.batch_alter_table("resource_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_counts_resource_type")
    op.drop_table("resource_counts")
