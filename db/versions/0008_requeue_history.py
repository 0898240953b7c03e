"""Requeues: each time the scheduler put an attempt's job back in the queue.

- ``requeues``: one row per (attempt, time, cause). From the journal when the job itself asked
  (its checkpoint at the time-limit warning: cause SIGUSR2, with the step), from Slurm's
  accounting when the node failed, the job was preempted or requeued by hand (NODE_FAIL,
  PREEMPTED, REQUEUED, with the node). ``attempts.requeues`` stays their count. Attempts of
  registries before this revision keep their count, without rows for the requeues already counted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requeues",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("attempt_id", sa.Integer(), sa.ForeignKey("attempts.id"), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("node", sa.String(255), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.UniqueConstraint("attempt_id", "time", "cause"),
    )


def downgrade() -> None:
    op.drop_table("requeues")
