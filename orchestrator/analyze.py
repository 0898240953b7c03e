"""``orch analyze``: the papers' figures and tables for runs, sweeps or a ``--where`` selection.

Run analyses (``jobs.analyses.ANALYSES``) read each run's shards one file at a time and write
their figures and CSVs into the run's ``figures/`` folder (or ``--out``). Sweep views
(``curves``, ``table``) read metric series from the registry and write one figure/table for the
whole selection into ``--out`` (default ``<home>/analyses``), grouped by ``--group-by`` keys
(default: the keys the sweeps vary, without the seed).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy.orm import Session

from jobs.analyses import RUN_ANALYSES, SWEEP_VIEWS, analysis
from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput
from jobs.paths import RunPaths
from orchestrator.errors import UserError
from orchestrator.home import OrchHome
from orchestrator.registry.models import Run
from orchestrator.submit import resolve_targets
from orchestrator.views import WhereClause, flat_spec, metric_series, run_row, select_runs, swept_values

SEED_KEY = "training.seed"
FIGURES = RUN_ANALYSES + SWEEP_VIEWS


@dataclass(frozen=True)
class AnalysisReport:
    target: str  # a run id, or the selection of a sweep view
    analysis: str
    output: AnalysisOutput

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "analysis": self.analysis,
            "summary": self.output.summary,
            "figures": [str(path) for path in self.output.figures],
            "tables": [str(path) for path in self.output.tables],
        }


def add_arguments(parser: argparse.ArgumentParser, step_range: Any) -> None:
    parser.add_argument("targets", nargs="*", metavar="SWEEP|RUN", help="sweeps and runs (id prefixes); none: every run --where selects")
    parser.add_argument("--figure", choices=FIGURES, required=True)
    parser.add_argument("--where", action="append", default=[], type=WhereClause.parse, metavar="KEY=VALUE", help="only runs whose dotted spec key equals a YAML value (repeatable)")
    parser.add_argument("--probe", help="the probe's name (default: line; walk: interpolation)")
    parser.add_argument("--steps", type=step_range, metavar="A:B", help="only shards with A <= step < B")
    parser.add_argument("--out", type=Path, help="folder for figures and tables (default: each run's figures/; sweep views: <home>/analyses)")
    parser.add_argument("--format", choices=("png", "pdf"), default="png")
    parser.add_argument("--window", type=float, default=0.2, help="|s| <= WINDOW for shape distances and fits (Fig. 3: 0.2 SGD, 0.5 momentum)")
    parser.add_argument("--stride", type=int, default=1, help="shape distance on every STRIDE-th line")
    parser.add_argument("--block", type=int, default=256, help="shape distance: lines per block of the pairwise matrix (memory: block² × points × 4 bytes)")
    parser.add_argument("--kernel", type=int, default=25, help="moving average over lines (strategies)")
    parser.add_argument("--sgd-lr", type=float, nargs="+", default=[0.1, 0.05], help="SGD strategies' learning rates")
    parser.add_argument("--pal-mu", type=float, default=0.1, help="PAL/FBPAL strategies' measuring step")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--steps-per-epoch", type=int, help="walk: epoch length (default: from the run's split and batch size)")
    parser.add_argument("--group-by", nargs="+", metavar="KEY", help="sweep views: dotted config keys to group runs by")


def options_of(arguments: argparse.Namespace, probe: str) -> AnalysisOptions:
    for name in ("stride", "block", "kernel", "steps_per_epoch"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} {value} is not allowed; accepted: an integer >= 1")
    if arguments.window <= 0 or arguments.pal_mu <= 0:
        raise UserError("--window and --pal-mu must be positive; accepted: numbers > 0")
    return AnalysisOptions(
        probe=arguments.probe or probe, steps=arguments.steps, image_format=arguments.format, window=arguments.window,
        stride=arguments.stride, block=arguments.block, kernel=arguments.kernel, sgd_learning_rates=tuple(arguments.sgd_lr), pal_measuring_step=arguments.pal_mu,
        batch_sizes=tuple(arguments.batch_sizes), steps_per_epoch=arguments.steps_per_epoch,
    )  # fmt: skip


def selected_runs(session: Session, targets: Sequence[str], where: Sequence[WhereClause]) -> list[Run]:
    if not targets and not where:
        raise UserError("orch analyze needs a target; accepted: sweep names, run ids (prefixes), or --where KEY=VALUE")
    runs = resolve_targets(session, targets) if targets else select_runs(session, None, None, where)
    if targets and where:
        runs = [run for run in runs if all(clause.matches(flat_spec(run)) for clause in where)]
    return [run for run in runs if run.run_dir is not None]


def analyze_runs(runs: Sequence[Run], arguments: argparse.Namespace) -> list[AnalysisReport]:
    chosen = analysis(arguments.figure)
    options = options_of(arguments, chosen.probe)
    reports = []
    for run in runs:
        paths = RunPaths(Path(run.run_dir))  # type: ignore[arg-type]
        title = f"run {run.id}: {swept_values(run)}"
        run_input = RunInput(run.id, paths, title, arguments.out or paths.run_dir / "figures")
        reports.append(AnalysisReport(run.id, arguments.figure, chosen.run(run_input, options)))
    return reports


def analyze_sweep(session: Session, runs: Sequence[Run], arguments: argparse.Namespace, home: OrchHome) -> AnalysisReport:
    from jobs.analyses.groups import RunCurves, curves, result_table

    keys = arguments.group_by or default_group_keys(runs)
    selection = "+".join(arguments.targets) or "where"
    out_dir = arguments.out or home.root / "analyses"
    collected = [RunCurves(run.id, flat_spec(run), metric_series(session, run.id)) for run in runs]
    title = f"{selection}: {len(runs)} runs grouped by {', '.join(keys) or '(nothing)'}"
    if arguments.figure == "curves":
        output = curves(collected, keys, out_dir, selection, arguments.format, title)
    else:
        output = result_table(collected, keys, out_dir, selection)
    return AnalysisReport(selection, arguments.figure, output)


def default_group_keys(runs: Sequence[Run]) -> list[str]:
    """The keys the runs' sweeps vary, without the seed (their runs are averaged)."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update((key, None) for key in run_row(run)["swept"] if key != SEED_KEY)
    return list(keys)


def print_reports(reports: Sequence[AnalysisReport]) -> None:
    for report in reports:
        written = ", ".join(str(path) for path in report.output.figures) or "no figure"
        numbers = ", ".join(f"{key}={_short(value)}" for key, value in report.output.summary.items() if not isinstance(value, (dict, list)))
        print(f"{report.target} {report.analysis}: {written}")
        if numbers:
            print(f"  {numbers}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
