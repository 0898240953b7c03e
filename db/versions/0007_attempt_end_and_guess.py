"""Attempts: the step they ended at, and whether a guess ended them.

- ``attempts.end_step``: the step an attempt finished or failed at (its final or failure event's),
  so that a run that diverged at step 39 of 300 says so, not 0.
- ``attempts.closed_by_guess``: ended by the scheduler's word or by silence, without a final
  journal event. Sync reads such an attempt's journal again for a while, and a final event there
  wins over the guess (a job that survived its node's failure finishes after all). Indexed with
  ``ended_time`` for sync's query of the recent ones.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("end_step", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("closed_by_guess", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_index("ix_attempts_closed_by_guess", "attempts", ["closed_by_guess", "ended_time"])


def downgrade() -> None:
    op.drop_index("ix_attempts_closed_by_guess", table_name="attempts")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("closed_by_guess")
        batch_op.drop_column("end_step")
