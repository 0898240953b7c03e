"""A frozen copy of the registry's read side as it was before it became set-based (issue 14):
``status_view``, ``select_runs`` with ``matches_where``, ``run_row`` and ``export_rows`` from
orchestrator/views.py, and the encoding of export from orchestrator/cli.py, verbatim. The
equivalence test (tests/test_views_equivalence.py) compares what ``orch`` prints today with what
these produce on the same registry. Do not "improve" this file: it is the definition of "before".
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from typing import Any, Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.registry.models import Metric, Run, RunState, Stage, Sweep
from orchestrator.smoke import gate_state


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


def where_view(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`flatten` of a spec plus ``list[i].field`` for each mapping in a list (``probes[0].every``)."""
    flat = flatten(spec)
    for key, value in list(flat.items()):
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    flat.update(flatten(item, f"{key}[{index}]."))
    return flat


def matches(key: str, value: Any, config: dict[str, Any]) -> bool:
    """``WhereClause.matches`` of a clause ``key=value``."""
    return key in config and config[key] == value


def flat_spec(run: Run) -> dict[str, Any]:
    return flatten(json.loads(run.spec_json))  # spec_yaml until migration 0006: the same spec


def flat_spec_of(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`flat_spec` of a spec already parsed."""
    return flatten(spec)


def sweep_names(run: Run) -> list[str]:
    return sorted(member.sweep.name for member in run.memberships)


def eta_seconds(run: Run) -> Optional[float]:
    attempt = run.attempts[-1] if run.attempts else None
    if attempt is None or not attempt.steps_per_second:
        return None
    return max(run.total_steps - run.current_step, 0) / attempt.steps_per_second


def status_view(session: Session, sweep_name: Optional[str]) -> list[dict[str, Any]]:
    query = select(Sweep).order_by(Sweep.name)
    if sweep_name:
        query = query.where(Sweep.name == sweep_name)
    views = []
    for sweep in session.scalars(query):
        # ties of position (a sweep recorded again from an edited file) by run id, as SQLite's
        # primary-key index returns them; PostgreSQL returns ties in no particular order
        runs = [
            member.run
            for member in sorted(sweep.members, key=lambda member: (member.position, member.run_id))
        ]
        counts = Counter(run.state for run in runs)
        active = [active_row(run) for run in runs if run.state in RunState.ACTIVE]
        views.append(
            {
                "sweep": sweep.name,
                "runs": len(runs),
                "counts": {s: counts[s] for s in RunState.ALL if counts[s]},
                "waiting_for_slot": sum(row["waiting_for_slot"] for row in active),
                "active": active,
                "stages": [
                    stage_row(stage)
                    for stage in session.scalars(
                        select(Stage).where(Stage.sweep_id == sweep.id).order_by(Stage.id)
                    )
                ],
                "smoke_failures": [
                    dataclasses.asdict(failure)
                    for failure in (
                        gate_state(session, sweep.name).failures if sweep.name.endswith(".smoke") else []
                    )
                ],
            }
        )
    return views


def stage_row(stage: Stage) -> dict[str, Any]:
    return {
        "id": stage.id,
        "command": stage.command,
        "state": stage.state,
        "job_ids": json.loads(stage.job_ids),
        "after_jobs": stage.after_jobs,
        "reason": stage.reason,
    }


def active_row(run: Run) -> dict[str, Any]:
    attempt = run.attempts[-1]
    return {
        "run": run.id,
        "state": run.state,
        "step": run.current_step,
        "total_steps": run.total_steps,
        "eta_seconds": eta_seconds(run),
        "executor": attempt.executor,
        "job_id": attempt.job_id,
        "node": attempt.hostname,
        "reason": attempt.reason,
        "waiting_for_slot": attempt.held_back,
    }


def select_runs(
    session: Session, sweep: Optional[str], state: Optional[str], where: Sequence[tuple[str, Any]]
) -> list[Run]:
    """``where``: (dotted key, YAML-typed value) of each ``--where`` clause."""
    query = select(Run).order_by(Run.created_time, Run.id)
    if sweep:
        query = query.join(Run.memberships).join(Sweep).where(Sweep.name == sweep)
    if state:
        query = query.where(Run.state == state.upper())
    runs = session.scalars(query).unique().all()
    if where:
        runs = [run for run in runs if matches_where(run, where)]
    return list(runs)


def matches_where(run: Run, where: Sequence[tuple[str, Any]]) -> bool:
    """Whether the run's resolved spec satisfies every ``--where`` clause."""
    config = where_view(json.loads(run.spec_json))  # spec_yaml until migration 0006: the same spec
    return all(matches(key, value, config) for key, value in where)


def run_row(run: Run) -> dict[str, Any]:
    swept: dict[str, Any] = {}
    for member in run.memberships:
        swept.update(json.loads(member.swept_json))
    return {
        "id": run.id,
        "sweeps": sweep_names(run),
        "state": run.state,
        "step": run.current_step,
        "total_steps": run.total_steps,
        "attempts": len(run.attempts),
        "swept": swept,
    }


def final_metrics(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """The value of each metric at its last recorded step, per run."""
    last = (
        select(Metric.run_id, Metric.name, func.max(Metric.step).label("step"))
        .where(Metric.run_id.in_(run_ids))
        .group_by(Metric.run_id, Metric.name)
        .subquery()
    )
    query = select(Metric.run_id, Metric.name, Metric.value).join(
        last, (Metric.run_id == last.c.run_id) & (Metric.name == last.c.name) & (Metric.step == last.c.step)
    )
    finals: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    for run_id, name, value in session.execute(query):
        finals[run_id][name] = value
    return finals


def export_rows(session: Session, runs: Sequence[Run]) -> list[dict[str, Any]]:
    finals = final_metrics(session, [run.id for run in runs])
    rows = []
    for run in runs:
        row: dict[str, Any] = {"id": run.id, "sweep": ",".join(sweep_names(run)), "state": run.state}
        row.update(
            {
                f"config.{key}": json.dumps(value) if isinstance(value, list) else value
                for key, value in flat_spec(run).items()
            }
        )
        row.update({f"final.{name}": value for name, value in sorted(finals[run.id].items())})
        rows.append(row)
    return rows


def print_json_text(payload: Any) -> str:
    """What ``output.print_json`` wrote."""
    return json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"


def encode_rows(rows: list[dict[str, Any]], export_format: str) -> bytes:
    """``cli.encode_rows``: the bytes of ``orch export``."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    if export_format == "json":
        return (json.dumps(rows, indent=2, default=str) + "\n").encode()
    if export_format == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return text.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(
        pa.Table.from_pylist([{column: row.get(column) for column in columns} for row in rows]), buffer
    )
    return buffer.getvalue()
