"""runs.spec_yaml dropped: runs.spec_json (the same resolved spec, every field) is the registry's
one copy of a run's spec, NOT NULL. Each run's row shrinks by the YAML (about as long as the
JSON), so a scan of the runs (``--where``, export) reads half the bytes, and recording a run no
longer renders YAML for the registry (the job's spec file is still YAML, written at submission).
A run whose spec_json is missing (none should be: 0005 filled every row) gets it from its YAML
first; the downgrade writes the YAML back from the JSON. SQLite recreates the table (orch turns
foreign keys off around the upgrade's transaction and checks them before it commits).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import json

import sqlalchemy as sa
import yaml
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH_ROWS = 1000


def upgrade() -> None:
    connection = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("spec_yaml", sa.Text), sa.column("spec_json", sa.Text))
    missing = connection.execute(sa.select(runs.c.id, runs.c.spec_yaml).where(runs.c.spec_json.is_(None))).all()
    _fill(connection, runs, "spec_json", [(run_id, json.dumps(yaml.safe_load(spec_yaml))) for run_id, spec_yaml in missing])
    with op.batch_alter_table("runs") as batch_op:
        batch_op.alter_column("spec_json", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("spec_yaml")


def downgrade() -> None:
    from omegaconf import OmegaConf

    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("spec_yaml", sa.Text(), nullable=True))
    connection = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("spec_yaml", sa.Text), sa.column("spec_json", sa.Text))
    rows = connection.execute(sa.select(runs.c.id, runs.c.spec_json)).all()
    _fill(connection, runs, "spec_yaml", [(run_id, OmegaConf.to_yaml(OmegaConf.create(json.loads(spec_json)))) for run_id, spec_json in rows])
    with op.batch_alter_table("runs") as batch_op:
        batch_op.alter_column("spec_yaml", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("spec_json", existing_type=sa.Text(), nullable=True)


def _fill(connection: sa.Connection, runs: sa.TableClause, column: str, values: list[tuple[str, str]]) -> None:
    statement = runs.update().where(runs.c.id == sa.bindparam("run_id")).values({column: sa.bindparam("text")})
    for start in range(0, len(values), BATCH_ROWS):
        connection.execute(statement, [{"run_id": run_id, "text": text} for run_id, text in values[start : start + BATCH_ROWS]])
