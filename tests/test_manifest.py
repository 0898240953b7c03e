"""The login node's manifest of the catalogs (jobs/manifest.py) agrees with the catalogs the jobs
register, and planning a sweep loads no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs.catalog import known_names
from jobs.manifest import DATA_FILES, catalog_names
from orchestrator.home import CONFIGS_DIR


def test_the_manifest_lists_exactly_the_registered_names() -> None:
    assert {kind: list(names) for kind, names in catalog_names().items()} == known_names()


def test_the_manifest_lists_the_files_of_every_staged_data_set() -> None:
    from jobs.data.vision import SOURCES

    assert set(DATA_FILES) == set(SOURCES)


def test_planning_and_its_checks_load_no_torch(tmp_path: Path) -> None:
    """The largest shipped sweep (CIFAR-10: split hashes, staged files, memory of a line) is
    planned on a login node without importing torch or torchvision."""
    for name in ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"):
        (tmp_path / "datasets" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "datasets" / name).write_bytes(b"staged")
    program = (
        "import sys; from pathlib import Path; from orchestrator.sweep import load_sweep; "
        f"plan = load_sweep(Path({str(CONFIGS_DIR / 'sweeps' / 'dissertation_ch6_grid.yaml')!r})); "
        "print(len(plan.runs), sorted(name for name in sys.modules if name.split('.')[0] in ('torch', "
        "'torchvision')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert result.stdout.split() == ["642", "[]"]


def test_the_manifest_reads_each_literal_registration_of_a_package(tmp_path: Path) -> None:
    """The names come from the source, decorator or call, whatever else the module does; a name
    computed at run time is not a registration the manifest can see (and the test above would fail)."""
    from jobs.manifest import _registered

    (tmp_path / "linear.py").write_text(
        "from jobs.models.registry import MODELS\n\n@MODELS.register('linear')\ndef linear(spec, "
        "shape, classes): ...\n"
        "MODELS.register('wide')(linear)\nOTHER.register('not-a-model')(linear)\nMODELS.register(f'computed{1}')(linear)\n"
    )

    assert _registered(tmp_path, "MODELS") == {"linear", "wide"}
