"""Analyses: figures and tables from measured data (never inside the measurement itself).

``analysis(name)`` gives, for each name ``orch analyze --figure`` takes (``RUN_ANALYSES``), a
function of one run (``RunInput``, ``AnalysisOptions``) → ``AnalysisOutput`` and the probe whose
shards it reads unless ``--probe`` names another. Sweep-level views (``SWEEP_VIEWS``: curves and
tables over many runs) are in ``jobs.analyses.groups``; ``jobs.analyses.job`` runs one analysis
as a job. This module imports nothing heavy, so the CLI can list the names at start-up.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput


@dataclass(frozen=True)
class Analysis:
    function: str  # "module:function", imported when the analysis runs (numpy, matplotlib)
    probe: str  # whose shards it reads by default
    summary: str

    @property
    def run(self) -> Callable[[RunInput, AnalysisOptions], AnalysisOutput]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


# The one list of run analyses: adding one is a module with its function and one entry here.
ANALYSES = {
    "lines": Analysis(
        "jobs.analyses.lines:representative_lines",
        "line",
        "representative lines: full batch, direction batch, other batches' quartiles, validation (Fig. 2)",
    ),
    "shape-distance": Analysis(
        "jobs.analyses.shapes:shape_distance",
        "line",
        "MAE between minimum-shifted lines, all pairs and consecutive (Fig. 3)",
    ),
    "polyfit": Analysis(
        "jobs.analyses.shapes:polyfit",
        "line",
        "degree-1 and degree-2 fits: errors, slope and curvature over training (Fig. 4)",
    ),
    "strategies": Analysis(
        "jobs.analyses.strategies:strategies",
        "line",
        "s_opt against SGD, PAL, FBPAL, exact steps; s_opt vs ‖g‖ (Fig. 6)",
    ),
    "batch-size": Analysis(
        "jobs.analyses.batch_size:batch_size",
        "line",
        "emulated batch sizes: slope ratio, SGD and PAL improvement (Fig. 7)",
    ),
    "noisy-directions": Analysis(
        "jobs.analyses.noisy:noisy_directions",
        "line",
        "distances between lines of noisy gradient directions (Fig. 8)",
    ),
    "precision": Analysis(
        "jobs.analyses.precision:precision",
        "line",
        "reduced-precision lines against float32 twins: loss, minimum, curvature (precision_check_every)",
    ),
    "walk": Analysis(
        "jobs.analyses.walk:walk",
        "interpolation",
        "valley floor, height, barriers per epoch, gradient cosine, distance, Hessian norm (Walk with SGD)",
    ),
}
RUN_ANALYSES = tuple(ANALYSES)
SWEEP_VIEWS = ("curves", "table")


def analysis(name: str) -> Analysis:
    return ANALYSES[name]
