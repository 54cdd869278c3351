"""outbox dispatch: leases per user, a shared rate budget, what was synced

- ``outbox.request_id``: the change's request id, for the downstream log lines.
- ``outbox.outcome``: what delivering the row did.
- ``ix_outbox_pending`` (partial, pending rows by target and due time) and
  ``ix_outbox_target_status`` replace ``ix_outbox_due``.
- ``ix_outbox_aggregate_id`` (aggregate id, target) replaces
  ``ix_outbox_aggregate`` (type, id): every look-up of a user's rows names
  the id and the target, not the type; led by the type, the index was read
  whole for each user (a claim of 100,000 pending rows took 44 s).
- ``outbox_leases``: one worker's hold on one user of one target.
- ``rate_budgets``: a target's request budget shared by every worker.
- ``sync_states``: per target and user, the remote id and the fields last
  delivered (an update sends only what changed).
- ``jobs.locked_by`` / ``locked_until``: the worker running a job.
- ``ix_users_auth_user_id``: a user by its Auth0 id (adoption, ``/userinfo``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.Text(), nullable=True))
        batch_op.drop_index("ix_outbox_due")
        batch_op.create_index(
            "ix_outbox_pending",
            ["target", "next_attempt_at"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )
        batch_op.create_index("ix_outbox_target_status", ["target", "status"], unique=False)
        batch_op.drop_index("ix_outbox_aggregate")
        batch_op.create_index("ix_outbox_aggregate_id", ["aggregate_id", "target"], unique=False)
    op.create_table(
        "outbox_leases",
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("locked_by", sa.String(length=255), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "aggregate_id", name=op.f("pk_outbox_leases")),
    )
    op.create_table(
        "rate_budgets",
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_rate_budgets")),
    )
    op.create_table(
        "sync_states",
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.String(length=128), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("synced", _JSON, nullable=False),
        sa.Column("outbox_id", _BIGINT, nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "aggregate_id", name=op.f("pk_sync_states")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locked_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_users_auth_user_id", "users", ["auth_user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_users_auth_user_id", table_name="users")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("locked_until")
        batch_op.drop_column("locked_by")
    op.drop_table("sync_states")
    op.drop_table("rate_budgets")
    op.drop_table("outbox_leases")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_aggregate_id")
        batch_op.create_index(
            "ix_outbox_aggregate", ["aggregate_type", "aggregate_id"], unique=False
        )
        batch_op.drop_index("ix_outbox_target_status")
        batch_op.drop_index("ix_outbox_pending", postgresql_where=_PENDING, sqlite_where=_PENDING)
        batch_op.create_index("ix_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.drop_column("outcome")
        batch_op.drop_column("request_id")
