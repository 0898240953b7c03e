"""Whose attempts and stages they are: a lab's registry shared by several people.

- ``attempts.owner``, ``stages.owner``: the login name of the user whose ``orch`` committed them
  (``getpass.getuser()``). Each user's ``orch`` syncs, launches and settles only its own, so
  every fact has one writer: the owner's ``orch``, which can read the job's journal and talk to
  the scheduler as the job's user.
- What was recorded before becomes the upgrading user's: the one whose orch first opens the
  registry at this revision (on a personal SQLite registry, its owner).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import getpass
import os

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
    for table in ("attempts", "stages"):
        fill = sa.text(f"UPDATE {table} SET owner = :owner WHERE owner IS NULL")
        op.execute(fill.bindparams(owner=_login_name()))


def _login_name() -> str:
    try:
        return getpass.getuser()
    except OSError:  # no login name in the environment and no passwd entry: a container's uid
        return str(os.getuid())


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("owner")
