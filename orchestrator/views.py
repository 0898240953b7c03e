"""Read-side queries of the registry, shaped for the CLI (tables) and ``--json`` alike."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.errors import shown  # noqa: F401  (also the CLI's, through this module)
from orchestrator.registry.models import Metric, Run, RunState, Shard, Sweep


@dataclass(frozen=True)
class WhereClause:
    """``key=value`` from ``--where``: a dotted run-spec key and a YAML-typed value."""

    key: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> "WhereClause":
        """The clause, or argparse's usage error (exit 2) naming what is wrong and what is accepted."""
        key, separator, value_text = text.partition("=")
        key = key.strip()
        if not separator or not key:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not KEY=VALUE; accepted: a dotted run-spec key, '=' and a YAML value, e.g. optimizer.lr=0.1")
        problem = unknown_key_problem(key)
        if problem:
            raise argparse.ArgumentTypeError(f"{shown(text)}: {problem}")
        return cls(key, where_value(text, value_text))

    def matches(self, config: dict[str, Any]) -> bool:
        return self.key in config and config[self.key] == self.value


WHERE_VALUE_EXAMPLES = "a YAML scalar or list, e.g. 0.1, sgd, true, null, [16, 16]"
INDEXED_KEY = re.compile(r"(?P<list>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d+)\]\.(?P<field>.+)")
MAX_KEY_LIST_CHARS = 640  # of the keys an unknown-key message lists (the whole message stays within 1 000)


def where_value(text: str, value_text: str) -> Any:
    """The value of a ``--where`` clause: plain YAML data (no tags for objects, no sets or dates)."""
    try:
        value = yaml.safe_load(value_text)
        json.dumps(value, allow_nan=True)  # what a run spec can hold; refuses recursive lists (&a [*a])
    except (yaml.YAMLError, RecursionError, TypeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise argparse.ArgumentTypeError(f"{shown(text)}: the value {shown(value_text)} is not plain YAML data ({first_line}); accepted: {WHERE_VALUE_EXAMPLES}") from None
    return value


def unknown_key_problem(key: str) -> Optional[str]:
    """Why ``key`` names no field of a run spec, with the keys accepted instead; None if it does."""
    keys = spec_keys()
    indexed = INDEXED_KEY.fullmatch(key)
    if key in keys.plain or indexed and indexed["list"] in keys.item_fields and indexed["field"] in keys.item_fields[indexed["list"]]:
        return None
    names = keys.all_names()
    section = nearest_section(key, names)
    related = [name for name in names if _unindexed(name) == section or _unindexed(name).startswith(section + ".")] if section else top_level_sections(names)
    return f"unknown key {shown(key)}; accepted: a dotted run-spec key: {bounded_list(related, MAX_KEY_LIST_CHARS)}"


def _unindexed(key: str) -> str:
    return re.sub(r"\[(\d+|N)\]", "", key)


def nearest_section(key: str, names: Sequence[str]) -> str:
    """The longest dotted prefix of ``key`` (list indices left out) under which ``names`` has keys
    ("optimizer.schedule" for "optimizer.schedule.typo", "probes" for "probes[0].typo"); "" if none."""
    parts = _unindexed(key).split(".")
    for length in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:length])
        if any(_unindexed(name).startswith(prefix + ".") for name in names):
            return prefix
    return ""


def top_level_sections(names: Sequence[str]) -> list[str]:
    """The first part of each name, a section as ``model.*``."""
    return list(dict.fromkeys(head + (".*" if dot else "") for head, dot, _ in (name.partition(".") for name in names)))


def bounded_list(items: Sequence[str], limit: int) -> str:
    """``items`` joined by commas, cut at an item so that at most ``limit`` characters are shown."""
    text = ", ".join(items)
    if len(text) <= limit:
        return text
    shown_items: list[str] = []
    for item in items:
        if len(", ".join([*shown_items, item])) > limit - 20:
            break
        shown_items.append(item)
    return f"{', '.join(shown_items)}, and {len(items) - len(shown_items)} more"


@dataclass(frozen=True)
class SpecKeys:
    """The dotted keys of a run spec as :func:`flatten` names them (a list is one value), and the
    fields of the items of lists of mappings (probes), which ``--where`` names ``probes[0].every``."""

    plain: tuple[str, ...]
    item_fields: dict[str, tuple[str, ...]]

    def all_names(self) -> list[str]:
        return [*self.plain, *(f"{name}[N].{field}" for name, fields in self.item_fields.items() for field in fields)]


@functools.lru_cache(maxsize=1)
def spec_keys() -> SpecKeys:
    from jobs.spec import RunSpec  # dataclasses only: no torch

    plain: list[str] = []
    item_fields: dict[str, tuple[str, ...]] = {}
    _collect_keys(RunSpec, "", plain, item_fields)
    return SpecKeys(tuple(plain), item_fields)


def _collect_keys(schema: type, prefix: str, plain: list[str], item_fields: dict[str, tuple[str, ...]]) -> None:
    for name, hint in typing.get_type_hints(schema).items():
        key = f"{prefix}{name}"
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            _collect_keys(hint, f"{key}.", plain, item_fields)
            continue
        plain.append(key)
        if item is not None and dataclasses.is_dataclass(item):
            nested: list[str] = []
            _collect_keys(item, "", nested, {})
            item_fields[key] = tuple(nested)


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


def flat_spec(run: Run) -> dict[str, Any]:
    return flatten(yaml.safe_load(run.spec_yaml))


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
        runs = [member.run for member in sweep.members]
        counts = Counter(run.state for run in runs)
        active = [active_row(run) for run in runs if run.state in RunState.ACTIVE]
        views.append({"sweep": sweep.name, "runs": len(runs), "counts": {s: counts[s] for s in RunState.ALL if counts[s]}, "active": active})
    return views


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
    }


def select_runs(session: Session, sweep: Optional[str], state: Optional[str], where: Sequence[WhereClause]) -> list[Run]:
    query = select(Run).order_by(Run.created_time, Run.id)
    if sweep:
        query = query.join(Run.memberships).join(Sweep).where(Sweep.name == sweep)
    if state:
        query = query.where(Run.state == state.upper())
    runs = session.scalars(query).unique().all()
    if where:
        runs = [run for run in runs if matches_where(run, where)]
    return list(runs)


def matches_where(run: Run, where: Sequence[WhereClause]) -> bool:
    """Whether the run's resolved spec satisfies every ``--where`` clause."""
    config = where_view(yaml.safe_load(run.spec_yaml))
    return all(clause.matches(config) for clause in where)


def swept_values(run: Run) -> str:
    """``key=value`` of each swept key of the run, for titles."""
    return " ".join(f"{key}={value}" for key, value in run_row(run)["swept"].items())


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


def metric_summary(session: Session, run_id: str) -> dict[str, dict[str, float]]:
    query = (
        select(Metric.name, func.count(), func.min(Metric.value), func.max(Metric.value), func.max(Metric.step))
        .where(Metric.run_id == run_id)
        .group_by(Metric.name)
    )
    finals = final_metrics(session, [run_id])[run_id]
    return {
        name: {"count": count, "min": low, "max": high, "last_step": last_step, "last": finals[name]}
        for name, count, low, high, last_step in session.execute(query)
    }


def metric_series(session: Session, run_id: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    query = select(Metric.name, Metric.step, Metric.value).where(Metric.run_id == run_id).order_by(Metric.name, Metric.step)
    for name, step, value in session.execute(query):
        steps, values = series.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)
    return series


def show_view(session: Session, run: Run) -> dict[str, Any]:
    return {
        **run_row(run),
        "run_dir": run.run_dir,
        "spec": yaml.safe_load(run.spec_yaml),
        "attempts": [
            {
                "number": attempt.number,
                "key": attempt.key,
                "executor": attempt.executor,
                "job_id": attempt.job_id,
                "array_task": attempt.array_task,
                "hostname": attempt.hostname,
                "pid": attempt.pid,
                "state": attempt.state,
                "exit_code": attempt.exit_code,
                "reason": attempt.reason,
                "start_step": attempt.start_step,
                "requeues": attempt.requeues,
                "image_sha256": attempt.image_sha256,
                "journal_dir": attempt.journal_dir,
                "submitted_time": attempt.submitted_time,
                "started_time": attempt.started_time,
                "ended_time": attempt.ended_time,
                "provenance": json.loads(attempt.provenance_json) if attempt.provenance_json else None,
            }
            for attempt in run.attempts
        ],
        "checkpoints": [{"step": c.step, "path": c.path, "bytes": c.bytes, "sha256": c.sha256} for c in run.checkpoints],
        "shards": [shard_row(shard) for shard in run.shards],
        "metrics": metric_summary(session, run.id),
    }


def shard_row(shard: Shard) -> dict[str, Any]:
    return {
        "probe": shard.probe,
        "step": shard.step,
        "path": shard.path,
        "bytes": shard.bytes,
        "sha256": shard.sha256,
        "n_points": shard.n_points,
        "is_extrapolation": shard.is_extrapolation,
    }


def export_rows(session: Session, runs: Sequence[Run]) -> list[dict[str, Any]]:
    finals = final_metrics(session, [run.id for run in runs])
    rows = []
    for run in runs:
        row: dict[str, Any] = {"id": run.id, "sweep": ",".join(sweep_names(run)), "state": run.state}
        row.update({f"config.{key}": json.dumps(value) if isinstance(value, list) else value for key, value in flat_spec(run).items()})
        row.update({f"final.{name}": value for name, value in sorted(finals[run.id].items())})
        rows.append(row)
    return rows
