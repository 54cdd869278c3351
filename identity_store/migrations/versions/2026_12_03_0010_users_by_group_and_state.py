"""users by group and by state, by id: the management API's pages

``ix_users_user_group`` (``user_group``) becomes ``ix_users_user_group_id``
(``user_group, id`` of live users, with ``lifecycle`` included on
PostgreSQL), and ``ix_users_lifecycle_id`` (``lifecycle, id`` of live users)
is new. A page of a group's or a state's users after a cursor
(``WHERE deleted_at IS NULL AND user_group = :g AND id > :after ORDER BY id
LIMIT n``) is then one index-only range, whatever the group's size and
wherever its users sit in id order. With the single-column index,
PostgreSQL walked the live ids and filtered: 280,000 rows read for the
first page of a group imported last (150 ms at 300,000 users); now 0.1 ms.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            "ix_users_user_group_id",
            ["user_group", "id"],
            unique=False,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
            postgresql_include=["lifecycle"],
        )
        batch_op.create_index(
            "ix_users_lifecycle_id",
            ["lifecycle", "id"],
            unique=False,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        )
        batch_op.drop_index("ix_users_user_group")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("ix_users_user_group", ["user_group"], unique=False)
        batch_op.drop_index("ix_users_lifecycle_id", sqlite_where=_LIVE, postgresql_where=_LIVE)
        batch_op.drop_index("ix_users_user_group_id", sqlite_where=_LIVE, postgresql_where=_LIVE)
