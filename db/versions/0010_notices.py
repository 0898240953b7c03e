"""Notices: what was sent about a sweep (finished, first failure, a run stuck pending, a digest).

One row per (sweep name, "" for a digest; event; subject): the row is written before the notice
is sent and removed if sending fails, so several syncs (of several people) send each notice once,
and a failed one is tried again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sweep", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("sent_time", sa.Float(), nullable=False),
        sa.UniqueConstraint("sweep", "event", "subject"),
    )


def downgrade() -> None:
    op.drop_table("notices")
