"""password_tickets: the ticket URLs of bulk password-change jobs asked for
through the management API, kept until Auth0 lets them expire

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "password_tickets",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_tickets")),
    )
    op.create_index("ix_password_tickets_job_id", "password_tickets", ["job_id", "id"])
    op.create_index("ix_password_tickets_expires_at", "password_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_table("password_tickets")
