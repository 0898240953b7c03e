"""Whose attempts and stages they are: a lab's registry shared by several people.

- ``attempts.owner``, ``stages.owner``: the login name of the user whose ``orch`` committed them
  (``getpass.getuser()``). Each user's ``orch`` syncs, launches and settles only its own (and
  those of registries written before owners were recorded: NULL), so every fact has one writer:
  the owner's ``orch``, which can read the job's journal and talk to the scheduler as the job's
  user.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(64), nullable=True))
    with op.batch_alter_table("stages") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("owner")
