"""The orchestrator home (``--home`` / ``ORCH_HOME``, default ``./.orch``): registry and defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_ROOT / "configs"
MIGRATIONS_DIR = PROJECT_ROOT / "db"


@dataclass(frozen=True)
class OrchHome:
    root: Path

    @classmethod
    def resolve(cls, given: str | None) -> "OrchHome":
        return cls(Path(given or os.environ.get("ORCH_HOME") or ".orch").absolute())

    @property
    def registry_file(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def image_digest_cache(self) -> Path:
        return self.root / "cache" / "image-sha256.json"

    @property
    def default_results_root(self) -> Path:
        return self.root / "results"
