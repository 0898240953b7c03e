"""Analyses: figures and tables from measured data (never inside the measurement itself).

``analysis(name)`` gives, for each name ``orch analyze --figure`` takes (``RUN_ANALYSES``), a
function of one run (``RunInput``, ``AnalysisOptions``) → ``AnalysisOutput`` and the probe whose
shards it reads unless ``--probe`` names another. Sweep-level views (``SWEEP_VIEWS``: curves and
tables over many runs) are in ``jobs.analyses.groups``; ``jobs.analyses.job`` runs one analysis
as a job. This module imports nothing heavy, so the CLI can list the names at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput


@dataclass(frozen=True)
class Analysis:
    run: Callable[[RunInput, AnalysisOptions], AnalysisOutput]
    probe: str  # whose shards it reads by default
    summary: str


def _catalog() -> dict[str, Analysis]:
    from jobs.analyses.batch_size import batch_size
    from jobs.analyses.lines import representative_lines
    from jobs.analyses.noisy import noisy_directions
    from jobs.analyses.shapes import polyfit, shape_distance
    from jobs.analyses.strategies import strategies
    from jobs.analyses.walk import walk

    return {
        "lines": Analysis(representative_lines, "line", "representative lines: full batch, direction batch, other batches' quartiles, validation (Fig. 2)"),
        "shape-distance": Analysis(shape_distance, "line", "MAE between minimum-shifted lines, all pairs and consecutive (Fig. 3)"),
        "polyfit": Analysis(polyfit, "line", "degree-1 and degree-2 fits: errors, slope and curvature over training (Fig. 4)"),
        "strategies": Analysis(strategies, "line", "s_opt against SGD, PAL, FBPAL, exact steps; s_opt vs ‖g‖ (Fig. 6)"),
        "batch-size": Analysis(batch_size, "line", "emulated batch sizes: slope ratio, SGD and PAL improvement (Fig. 7)"),
        "noisy-directions": Analysis(noisy_directions, "line", "distances between lines of noisy gradient directions (Fig. 8)"),
        "walk": Analysis(walk, "interpolation", "valley floor, height, barriers per epoch, gradient cosine, distance, Hessian norm (Walk with SGD)"),
    }


RUN_ANALYSES = ("lines", "shape-distance", "polyfit", "strategies", "batch-size", "noisy-directions", "walk")
SWEEP_VIEWS = ("curves", "table")


def analysis(name: str) -> Analysis:
    return _catalog()[name]

