"""The registry's Core tables: the ORM is mapped onto them as declared, and the read paths that
need only counts (``orch status``, sync with no open attempt) run on them without the ORM."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

from sqlalchemy import update

from jobs.spec import RunSpec
from orchestrator.fingerprint import spec_json
from orchestrator.home import OrchHome
from orchestrator.registry import models, tables
from orchestrator.registry.engine import open_registry

LOGIN_NODE_HEAVY = (
    "sqlalchemy.orm",
    "orchestrator.registry.models",
    "orchestrator.ingest",
    "jobs.journal",
    "orchestrator.executors",
)


def test_each_mapped_attribute_is_typed_as_its_column() -> None:
    """Every column of every table is an attribute of its ORM class, annotated Optional exactly
    where the column is nullable."""
    for mapper in models.Base.registry.mappers:
        hints = typing.get_type_hints(mapper.class_, globalns=vars(models))
        for column in mapper.local_table.columns:
            hint = hints[column.key]
            assert typing.get_origin(hint) is models.Mapped, (mapper.class_.__name__, column.key)
            (inner,) = typing.get_args(hint)
            assert (type(None) in typing.get_args(inner)) == column.nullable, (
                mapper.class_.__name__,
                column.key,
            )


def _one_run_registry(home: Path, attempt_state: str) -> None:
    engine = open_registry(OrchHome(home))
    with engine.begin() as connection:
        connection.execute(
            tables.sweeps.insert(),
            {
                "id": 1,
                "name": "s",
                "source_path": "s.yaml",
                "source_text": "",
                "created_time": 0.0,
                "updated_time": 0.0,
            },
        )
        connection.execute(
            tables.runs.insert(),
            {
                "id": "r1",
                "canonical_json": "{}",
                "spec_json": spec_json(RunSpec()),
                "section_ids": "{}",
                "state": attempt_state,
                "total_steps": 4,
                "created_time": 0.0,
            },
        )
        connection.execute(
            tables.sweep_runs.insert(), {"sweep_id": 1, "run_id": "r1", "position": 0, "swept_json": "{}"}
        )
        connection.execute(
            tables.attempts.insert(),
            {
                "run_id": "r1",
                "number": 1,
                "key": "r1-1",
                "executor": "local",
                "submission_id": "x",
                "state": attempt_state,
                "submitted_time": 0.0,
                "journal_dir": str(home / "no-journal"),
                "pid": 2**22 + 1,
                "hostname": "elsewhere",
            },
        )
    engine.dispose()


def _status_in_a_fresh_interpreter(home: Path) -> tuple[list[dict[str, typing.Any]], list[str]]:
    program = (
        "import sys, io, contextlib; from orchestrator.cli import main; out = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out): code = main(['--home', {str(home)!r}, 'status', '--json'])\n"
        f"print(code, out.getvalue().replace(chr(10), ' '), sorted(m for m in {LOGIN_NODE_HEAVY!r} if "
        "m in sys.modules), sep=chr(10))"
    )
    code, shown, loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert code == "0"
    return json.loads(shown), eval(loaded)  # a list of module names, printed by repr


def test_status_of_ended_attempts_loads_neither_the_orm_nor_the_ingestion(tmp_path: Path) -> None:
    _one_run_registry(tmp_path, "COMPLETED")
    views, loaded = _status_in_a_fresh_interpreter(tmp_path)
    assert views == [
        {
            "sweep": "s",
            "runs": 1,
            "counts": {"COMPLETED": 1},
            "waiting_for_slot": 0,
            "active": [],
            "stages": [],
            "smoke_failures": [],
        }
    ]
    assert loaded == []


def test_an_open_attempt_is_synced_before_status_counts_it(tmp_path: Path) -> None:
    """A RUNNING attempt whose process is gone and whose journal is empty becomes LOST on the
    sync status runs first: the cheap check lets the ingestion through."""
    _one_run_registry(tmp_path, "RUNNING")
    engine = open_registry(OrchHome(tmp_path))
    with engine.begin() as connection:
        connection.execute(update(tables.attempts).values(hostname=__import__("socket").gethostname()))
    engine.dispose()
    views, loaded = _status_in_a_fresh_interpreter(tmp_path)
    assert views[0]["counts"] == {"LOST": 1} and "orchestrator.ingest" in loaded
