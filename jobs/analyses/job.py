"""One run analysis as a job (``orch analyze --executor``): the job writes its figures, tables and
a JSON report next to them, which is what the login node reads back (never a pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.analyses import analysis
from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput, output_path
from jobs.atomic import publish_bytes


@dataclass(frozen=True)
class AnalysisJob:
    name: str
    run: RunInput
    options: AnalysisOptions

    @property
    def report_file(self) -> Path:
        return output_path(self.run, self.name, "json")

    def __call__(self) -> str:
        output = analysis(self.name).run(self.run, self.options)
        publish_bytes(self.report_file, json.dumps(report_document(output), indent=2, default=str).encode())
        return str(self.report_file)


def report_document(output: AnalysisOutput) -> dict[str, Any]:
    return {
        "summary": output.summary,
        "figures": [str(path) for path in output.figures],
        "tables": [str(path) for path in output.tables],
    }


def read_report(path: Path) -> AnalysisOutput:
    document = json.loads(path.read_text())
    return AnalysisOutput(
        document["summary"],
        [Path(item) for item in document["figures"]],
        [Path(item) for item in document["tables"]],
    )
