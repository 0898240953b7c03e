"""Malformed sweeps are rejected before anything is written: exit 2, a message naming file and key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import SWEEPS_DIR, Orch

MALFORMED = sorted((SWEEPS_DIR / "malformed").glob("*.yaml"))
EXPECT_PREFIX = "# expect: "


def expected_fragment(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(EXPECT_PREFIX), f"{path} must start with '{EXPECT_PREFIX}<message fragment>'"
    return first_line[len(EXPECT_PREFIX):]


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def populated_orch(tmp_path_factory: pytest.TempPathFactory) -> Orch:
    """A home whose registry already holds a completed sweep."""
    orch = Orch(tmp_path_factory.mktemp("validation") / "home")
    orch.ok("submit", SWEEPS_DIR / "tiny.yaml", "--executor", "debug")
    return orch


def test_at_least_twenty_malformed_sweeps_ship() -> None:
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("sweep_file", MALFORMED, ids=[path.stem for path in MALFORMED])
@pytest.mark.parametrize("command", ["submit", "plan"])
def test_malformed_sweep_is_rejected_without_writing(populated_orch: Orch, sweep_file: Path, command: str) -> None:
    before = tree_fingerprint(populated_orch.home)

    result = populated_orch(command, sweep_file)

    assert result.exit_code == 2
    assert expected_fragment(sweep_file) in result.stderr
    assert result.stderr.startswith("orch: error: ")
    assert "accepted: " in result.stderr
    assert result.stdout == ""
    assert tree_fingerprint(populated_orch.home) == before


def test_malformed_sweep_on_fresh_home_creates_no_registry(orch: Orch) -> None:
    result = orch("submit", MALFORMED[0])

    assert result.exit_code == 2
    assert not orch.home.exists()


def test_error_names_the_included_file_where_the_bad_value_lives(orch: Orch, tmp_path: Path) -> None:
    (tmp_path / "problem.yaml").write_text("training:\n  batch_size: 0\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\ninclude: [problem.yaml]\n")

    result = orch("plan", sweep)

    assert result.exit_code == 2
    assert f"{tmp_path / 'problem.yaml'}: training.batch_size: value not accepted; found 0" in result.stderr
