"""Attempts: held back until the scheduler has a submit slot for them.

- ``attempts.held_back``: committed (PENDING, the run's spec file written) but not handed to the
  scheduler yet, because the user's submit limits (``MaxSubmitJobs``, ``GrpSubmitJobs``,
  ``MaxJobCount``, a QOS's) are reached or sbatch refused it. Every command that syncs submits
  held-back attempts as slots free, in the order they were planned. Indexed for that lookup.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("held_back", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index("ix_attempts_held_back", "attempts", ["held_back", "executor"])


def downgrade() -> None:
    op.drop_index("ix_attempts_held_back", table_name="attempts")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("held_back")
