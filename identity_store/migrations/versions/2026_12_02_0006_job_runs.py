"""job_runs: the scheduled jobs' runs, and what the lifecycle jobs read

- ``job_runs``: one row per run of a scheduled job, unique per
  ``(job, scheduled_for)`` so that a tick is claimed once across workers.
- ``users.profile_sync_attempts``: the profile sync's failed look-ups of a
  user (``ERROR`` after the configured number).
- ``ix_users_lifecycle_since`` replaces ``ix_users_lifecycle``: users by state
  and since when (the deletion sync's "suspended before today").
- ``ix_users_expiration_date`` (partial: dated, live users not yet
  suspended): the expiry job's query.
- ``lifecycle_history.request_id`` / ``job_run_id``: what caused a transition.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_EXPIRY_WHERE = (
    "expiration_date IS NOT NULL AND deleted_at IS NULL "
    "AND lifecycle IN ('CREATED', 'ACTIVE', 'ERROR')"
)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", _JSON, nullable=False),
        sa.Column("errors", _JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
        sa.UniqueConstraint("job", "scheduled_for", name="uq_job_runs_tick"),
    )
    op.create_index("ix_job_runs_job_started", "job_runs", ["job", "started_at"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("profile_sync_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.drop_index("ix_users_lifecycle")
        batch_op.create_index(
            "ix_users_lifecycle_since", ["lifecycle", "lifecycle_changed_at"], unique=False
        )
        batch_op.create_index(
            "ix_users_expiration_date",
            ["expiration_date"],
            unique=False,
            sqlite_where=sa.text(_EXPIRY_WHERE),
            postgresql_where=sa.text(_EXPIRY_WHERE),
        )
    with op.batch_alter_table("lifecycle_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("job_run_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_history", schema=None) as batch_op:
        batch_op.drop_column("job_run_id")
        batch_op.drop_column("request_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_users_expiration_date",
            sqlite_where=sa.text(_EXPIRY_WHERE),
            postgresql_where=sa.text(_EXPIRY_WHERE),
        )
        batch_op.drop_index("ix_users_lifecycle_since")
        batch_op.create_index("ix_users_lifecycle", ["lifecycle"], unique=False)
        batch_op.drop_column("profile_sync_attempts")
    op.drop_index("ix_job_runs_job_started", table_name="job_runs")
    op.drop_table("job_runs")
