"""Every path of a run in one object (submitit's JobPaths idea)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AttemptPaths:
    """One execution try's journal: ``<run>/attempts/<key>/``."""

    root: Path

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def heartbeat_file(self) -> Path:
        return self.root / "heartbeat.json"

    @property
    def cancel_request(self) -> Path:
        """Written by ``orch cancel`` for a run packed with others: its task stops this one alone."""
        return self.root / "cancel-requested"

    @property
    def stdout_file(self) -> Path:
        """A packed run's own output (the task's log holds its pack's supervisor)."""
        return self.root / "stdout.log"

    @property
    def stderr_file(self) -> Path:
        return self.root / "stderr.log"


@dataclass(frozen=True)
class RunPaths:
    """``<results_root>/runs/<run_id>/``: spec, attempts' journals, checkpoints, shards, figures."""

    run_dir: Path

    @classmethod
    def under(cls, results_root: Path, run_id: str) -> "RunPaths":
        return cls(results_root / "runs" / run_id)

    @property
    def spec_file(self) -> Path:
        return self.run_dir / "spec.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def shards_dir(self) -> Path:
        return self.run_dir / "shards"

    @property
    def compile_cache_dir(self) -> Path:
        """torch.compile's kernels for the run's probes (``compile_mode``), kept across requeues."""
        return self.run_dir / "compile-cache"

    @property
    def data_indices_file(self) -> Path:
        """The source-data-set indices of the training and validation samples (npz, no pickle)."""
        return self.run_dir / "data" / "indices.npz"

    @property
    def curves_png(self) -> Path:
        return self.run_dir / "curves.png"

    def checkpoint_file(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:09d}.safetensors"

    def checkpoint_manifest(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:09d}.json"

    def attempt(self, attempt_key: str) -> AttemptPaths:
        return AttemptPaths(self.run_dir / "attempts" / attempt_key)
