"""runs.spec_json: the resolved run spec as JSON (every field, in schema order), the form the
registry filters and exports from in SQL (SQLite ``json_extract``, PostgreSQL ``jsonb``) instead
of parsing each run's YAML in Python. Filled from ``spec_yaml`` for the runs already recorded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import json

import sqlalchemy as sa
import yaml
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH_ROWS = 1000


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("spec_json", sa.Text(), nullable=True))
    connection = op.get_bind()
    runs = sa.table(
        "runs", sa.column("id", sa.String), sa.column("spec_yaml", sa.Text), sa.column("spec_json", sa.Text)
    )
    rows = connection.execute(sa.select(runs.c.id, runs.c.spec_yaml)).all()
    for start in range(0, len(rows), BATCH_ROWS):
        filled = [
            {"run_id": run_id, "spec_json": json.dumps(yaml.safe_load(spec_yaml))}
            for run_id, spec_yaml in rows[start : start + BATCH_ROWS]
        ]
        connection.execute(
            runs.update()
            .where(runs.c.id == sa.bindparam("run_id"))
            .values(spec_json=sa.bindparam("spec_json")),
            filled,
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("spec_json")
