"""unassigned_booleans: users.active and the entries' primary may be NULL

A SCIM attribute can be unassigned (RFC 7644 §3.5.2.2: PATCH ``remove`` of
``active``) and a boolean sent as ``false`` must come back as sent, so
``NULL`` (unassigned) and ``false`` are told apart. Existing ``primary``
values of ``false`` were never sent back (only ``true`` was), so they become
``NULL``: what clients saw stays what they see.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("users", "active"), ("user_multi_values", "primary"), ("user_addresses", "primary"))


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Boolean(), nullable=True)
    for name in ("user_multi_values", "user_addresses"):
        entries = sa.table(name, sa.column("primary", sa.Boolean))
        op.execute(entries.update().where(entries.c.primary == sa.false()).values(primary=None))


def downgrade() -> None:
    for table, column in _COLUMNS:
        rows = sa.table(table, sa.column(column, sa.Boolean))
        value = column == "active"
        op.execute(rows.update().where(rows.c[column].is_(None)).values({column: value}))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Boolean(), nullable=False)
