"""attempts: at most one active (PENDING or RUNNING) attempt per run, as a partial unique index;
attempts.submitter, the orch process that is submitting an attempt

Registries written before this revision may hold two active attempts of one run (two submits that
raced): the older ones are ended as LOST, with the reason, so that the index can be created.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTIVE = "state IN ('PENDING', 'RUNNING')"


def upgrade() -> None:
    op.execute(
        "UPDATE attempts SET state = 'LOST', reason = 'superseded by a later active attempt of the "
        "same run (concurrent submits)' "
        f"WHERE {ACTIVE} AND id NOT IN (SELECT MAX(id) FROM attempts WHERE {ACTIVE} GROUP BY run_id)"
    )
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("submitter", sa.String(length=300), nullable=True))
    op.create_index(
        "uq_attempts_one_active_per_run",
        "attempts",
        ["run_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_attempts_one_active_per_run", table_name="attempts")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("submitter")
