"""Columns wide enough on PostgreSQL, which enforces what SQLite only declares.

- ``attempts.submission_id``: the array's name is the sweep's (up to 64 characters) with a time
  stamp and a number: VARCHAR(200).
- ``sweeps.name``, ``notices.sweep``: a smoke sweep is ``<sweep>.smoke``: VARCHAR(80).
- ``checkpoints.bytes``, ``shards.bytes``: files over 2 GiB: BIGINT.

SQLite stores any length in a VARCHAR and 64-bit numbers in an INTEGER, so there nothing changes
(and no table is rebuilt).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WIDER = [  # table, column, before, after
    ("attempts", "submission_id", sa.String(64), sa.String(200)),
    ("sweeps", "name", sa.String(64), sa.String(80)),
    ("notices", "sweep", sa.String(64), sa.String(80)),
    ("checkpoints", "bytes", sa.Integer(), sa.BigInteger()),
    ("shards", "bytes", sa.Integer(), sa.BigInteger()),
]


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        return
    for table, column, before, after in WIDER:
        op.alter_column(table, column, type_=after, existing_type=before, existing_nullable=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        return
    for table, column, before, after in WIDER:
        op.alter_column(table, column, type_=before, existing_type=after, existing_nullable=False)
