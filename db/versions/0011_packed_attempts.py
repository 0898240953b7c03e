"""Attempts: packed several to one array task (one GPU), and their measured peak GPU memory.

- ``attempts.pack_slot``: the attempt's place among the runs that share its array task (one GPU,
  one process each); NULL when it has the task to itself. ``orch cancel`` of one packed run asks
  its task to stop that process alone instead of cancelling the task.
- ``attempts.peak_gpu_bytes``: ``torch.cuda.max_memory_allocated`` of the attempt's process, from
  its heartbeats and final event (NULL on a CPU). ``orch plan`` offers a pack size from it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("pack_slot", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("peak_gpu_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("peak_gpu_bytes")
        batch_op.drop_column("pack_slot")
