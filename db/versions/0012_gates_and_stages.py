"""Attempts behind a smoke test, and the stages that run after a sweep.

- ``attempts.gate``: the smoke sweep (``<sweep>.smoke``) whose runs must complete before this
  attempt may start (``orch submit --smoke``); NULL for an attempt that waits on nothing.
- ``attempts.after_jobs``: the Slurm dependency its job went out with (``afterok:123``); "" once
  released without one; NULL while its gate holds it back.
- ``stages``: an analysis submitted after a sweep (``orch submit --then`` or the sweep's
  ``then:``), as a job array that Slurm starts when the sweep's jobs have ended
  (``afterany``). Its state, job ids and reason are kept like an attempt's; ``orch resume`` of
  the sweep submits a failed stage again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("gate", sa.String(80), nullable=True))
        batch_op.add_column(sa.Column("after_jobs", sa.Text(), nullable=True))
    op.create_index("ix_attempts_gate", "attempts", ["gate", "state"])
    op.create_table(
        "stages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("job_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("after_jobs", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_time", sa.Float(), nullable=False),
        sa.Column("submitted_time", sa.Float(), nullable=True),
        sa.Column("ended_time", sa.Float(), nullable=True),
    )
    op.create_index("ix_stages_state", "stages", ["state"])


def downgrade() -> None:
    op.drop_index("ix_stages_state", table_name="stages")
    op.drop_table("stages")
    op.drop_index("ix_attempts_gate", table_name="attempts")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("after_jobs")
        batch_op.drop_column("gate")
