"""job inputs and reports: an import job's uploaded file and its per-row report

- ``job_inputs``: the file a CSV import job reads, in pieces of up to a
  mebibyte, kept in the database (not on one server's disk) so that any
  worker of any process runs or resumes the job; deleted when it ends.
- ``job_reports``: the outcome of every row, one row per committed batch,
  written in the batch's own transaction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_inputs_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_job_inputs")),
    )
    op.create_table(
        "job_reports",
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("first_row", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_row", sa.Integer(), nullable=False),
        sa.Column("entries", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_reports_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "first_row", name=op.f("pk_job_reports")),
    )


def downgrade() -> None:
    op.drop_table("job_reports")
    op.drop_table("job_inputs")
