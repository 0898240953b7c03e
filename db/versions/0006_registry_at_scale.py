"""The registry at a lab's scale: each run's spec once, its sections shared, memberships by run.

- ``runs.spec_yaml`` dropped: ``runs.spec_json`` (the same resolved spec, every field) is the
  registry's one copy of a run's spec, NOT NULL. Recording a run no longer renders YAML for the
  registry (the job's spec file is still YAML, written at submission). A run whose spec_json is
  missing (none should be: 0005 filled every row) gets it from its YAML first.
- ``spec_sections``: each distinct value of a top-level spec field (model, data, optimizer, ...),
  keyed by the sha256 of ``"<name>": <json>``; ``runs.section_ids`` names a run's, ``{"model": 3,
  ...}`` in schema order. ``--where`` and export read the few distinct sections instead of every
  run's whole spec. Filled here from each run's spec_json. ``ix_runs_section_ids`` (section_ids,
  id) lets ``--where`` scan the section ids of every run without reading the runs' rows.
- ``ix_sweep_runs_run_id``: the sweeps of given runs are looked up by run id.

SQLite recreates the runs table (orch turns foreign keys off around the upgrade's transaction
and checks them before it commits). The downgrade writes the YAML back from the JSON.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import hashlib
import json

import sqlalchemy as sa
import yaml
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH_ROWS = 1000

runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("spec_yaml", sa.Text),
    sa.column("spec_json", sa.Text),
    sa.column("section_ids", sa.Text),
)


def upgrade() -> None:
    connection = op.get_bind()
    missing = connection.execute(
        sa.select(runs.c.id, runs.c.spec_yaml).where(runs.c.spec_json.is_(None))
    ).all()
    _fill(
        connection,
        "spec_json",
        [(run_id, json.dumps(yaml.safe_load(spec_yaml))) for run_id, spec_yaml in missing],
    )
    sections = op.create_table(
        "spec_sections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("section_ids", sa.Text(), nullable=True))
    _fill_section_ids(connection, sections)
    with op.batch_alter_table("runs") as batch_op:
        batch_op.alter_column("spec_json", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("section_ids", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("spec_yaml")
    op.create_index("ix_runs_section_ids", "runs", ["section_ids", "id"])
    op.create_index("ix_sweep_runs_run_id", "sweep_runs", ["run_id"])


def _fill_section_ids(connection: sa.Connection, sections: sa.Table) -> None:
    """Each run's sections recorded (one row per distinct one) and named in its section_ids."""
    ids: dict[str, int] = {}
    filled = []
    for run_id, spec_json in connection.execute(sa.select(runs.c.id, runs.c.spec_json)).all():
        named = []
        for name, value in json.loads(spec_json).items():
            text = json.dumps(value, allow_nan=False)
            digest = hashlib.sha256(f"{json.dumps(name)}: {text}".encode()).hexdigest()
            if digest not in ids:
                ids[digest] = len(ids) + 1
                connection.execute(
                    sections.insert(), {"id": ids[digest], "name": name, "json": text, "digest": digest}
                )
            named.append(f"{json.dumps(name)}: {ids[digest]}")
        filled.append((run_id, "{" + ", ".join(named) + "}"))
    _fill(connection, "section_ids", filled)


def downgrade() -> None:
    from omegaconf import OmegaConf

    op.drop_index("ix_sweep_runs_run_id", table_name="sweep_runs")
    op.drop_index("ix_runs_section_ids", table_name="runs")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("spec_yaml", sa.Text(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.select(runs.c.id, runs.c.spec_json)).all()
    _fill(
        connection,
        "spec_yaml",
        [(run_id, OmegaConf.to_yaml(OmegaConf.create(json.loads(spec_json)))) for run_id, spec_json in rows],
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.alter_column("spec_yaml", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("spec_json", existing_type=sa.Text(), nullable=True)
        batch_op.drop_column("section_ids")
    op.drop_table("spec_sections")


def _fill(connection: sa.Connection, column: str, values: list[tuple[str, str]]) -> None:
    statement = (
        runs.update().where(runs.c.id == sa.bindparam("run_id")).values({column: sa.bindparam("text")})
    )
    for start in range(0, len(values), BATCH_ROWS):
        connection.execute(
            statement,
            [{"run_id": run_id, "text": text} for run_id, text in values[start : start + BATCH_ROWS]],
        )
