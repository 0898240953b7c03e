"""What runs write gets the modes the cluster profile chooses: private by default, or group-readable."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from orchestrator import profile_files
from tests.conftest import SWEEPS_DIR, Orch

TINY = SWEEPS_DIR / "tiny.yaml"


def modes_under(root: Path) -> tuple[set[int], set[int]]:
    """The permission bits of every file and of every folder under ``root``."""
    files = {stat.S_IMODE(path.stat().st_mode) for path in root.rglob("*") if path.is_file()}
    folders = {stat.S_IMODE(path.stat().st_mode) for path in [root, *root.rglob("*")] if path.is_dir()}
    return files, folders


@pytest.fixture
def profiles_with_local_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of configs/cluster/ whose ``local`` profile sets ``results_access``."""

    def make(access: str) -> Path:
        folder = tmp_path / "cluster"
        shutil.copytree(profile_files.PROFILES_DIR, folder, dirs_exist_ok=True)
        local = folder / "local.yaml"
        local.write_text(local.read_text().replace("results_access: private", f"results_access: {access}"))
        monkeypatch.setattr(profile_files, "PROFILES_DIR", folder)
        return local

    return make


@pytest.mark.parametrize("executor", ["debug", "local"])
def test_results_are_private_by_default(orch: Orch, executor: str) -> None:
    orch.ok("submit", TINY, "--executor", executor, "--wait")
    orch.ok("curves", "tiny")  # figures drawn on the login node follow the profile too
    orch.ok("analyze", "tiny", "--figure", "curves")

    files, folders = modes_under(orch.home / "results")
    # spec, checkpoints, events, logs
    assert sum(1 for path in (orch.home / "results").rglob("*") if path.is_file()) > 10
    assert files == {0o600}, sorted(map(oct, files))
    assert folders == {0o700}, sorted(map(oct, folders))
    assert stat.S_IMODE(orch.registry.stat().st_mode) == 0o600


def test_a_lab_profile_makes_results_group_readable(orch: Orch, profiles_with_local_access) -> None:
    profiles_with_local_access("group")

    orch.ok("submit", TINY, "--executor", "local", "--wait")
    orch.ok("curves", "tiny")

    files, folders = modes_under(orch.home / "results")
    assert any((orch.home / "results" / "runs").rglob("curves.png"))
    assert files == {0o640}, sorted(map(oct, files))
    assert folders == {0o750}, sorted(map(oct, folders))
    assert stat.S_IMODE(orch.registry.stat().st_mode) == 0o600  # the registry stays the owner's


def test_an_unknown_access_mode_is_bad_input(orch: Orch, profiles_with_local_access) -> None:
    local = profiles_with_local_access("world")

    result = orch("plan", TINY)

    assert result.exit_code == 2
    assert (
        f"{local}: results_access: unknown access mode; found 'world'; accepted: private or group"
        in result.stderr
    )
