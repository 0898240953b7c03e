"""Malformed sweeps are rejected before anything is written: exit 2, a message naming file and key."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from orchestrator.home import PROJECT_ROOT
from tests.conftest import SWEEPS_DIR, Orch, OrchResult

MALFORMED = sorted((SWEEPS_DIR / "malformed").glob("*.yaml"))
EXPECT_PREFIX = "# expect: "
MAX_MESSAGE_CHARS = 1000
PASSWD_LINES = (
    [line for line in Path("/etc/passwd").read_text().splitlines() if line.strip()]
    if Path("/etc/passwd").is_file()
    else []
)


def expected_fragment(path: Path) -> str:
    """The first line's fragment; the cases about encodings are not UTF-8 after their first line
    (or at all: a UTF-16 file starts with its byte order mark)."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        first_line = raw.decode("utf-16").splitlines()[0]
    else:
        first_line = raw.split(b"\n", 1)[0].decode("utf-8")
    assert first_line.startswith(EXPECT_PREFIX), f"{path} must start with '{EXPECT_PREFIX}<message fragment>'"
    return first_line[len(EXPECT_PREFIX) :]


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_one_bounded_paragraph(stderr: str) -> None:
    """One line of at most MAX_MESSAGE_CHARS characters that echoes no line of /etc/passwd."""
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one paragraph: {stderr!r}"
    assert len(stderr) <= MAX_MESSAGE_CHARS, f"{len(stderr)} characters: {stderr[:300]!r}..."
    assert not any(line in stderr for line in PASSWD_LINES), f"echoes /etc/passwd: {stderr[:300]!r}"


@pytest.fixture(scope="module")
def populated_orch(tmp_path_factory: pytest.TempPathFactory) -> Orch:
    """A home whose registry already holds a completed sweep."""
    orch = Orch(tmp_path_factory.mktemp("validation") / "home")
    orch.ok("submit", SWEEPS_DIR / "tiny.yaml", "--executor", "debug")
    return orch


def test_at_least_seventy_malformed_sweeps_ship() -> None:
    assert len(MALFORMED) >= 70


@pytest.mark.parametrize("sweep_file", MALFORMED, ids=[path.stem for path in MALFORMED])
@pytest.mark.parametrize("command", ["submit", "plan"])
def test_malformed_sweep_is_rejected_without_writing(
    populated_orch: Orch, sweep_file: Path, command: str
) -> None:
    before = tree_fingerprint(populated_orch.home)

    result = populated_orch(command, sweep_file)

    assert result.exit_code == 2
    assert expected_fragment(sweep_file) in result.stderr
    assert result.stderr.startswith("orch: error: ")
    assert "accepted: " in result.stderr
    assert result.stdout == ""
    assert_one_bounded_paragraph(result.stderr)
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


# -- sweep files that cannot ship as a file in tests/sweeps/malformed -------------------------------

Runner = Callable[[Orch, str, Path], OrchResult]


def in_process(orch: Orch, command: str, sweep: Path) -> OrchResult:
    """``orch`` in this process, failing instead of hanging if reading the file blocks."""

    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError(f"orch {command} {sweep} blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(20)
    try:
        return orch(command, sweep)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def without_read_privilege(orch: Orch, command: str, sweep: Path) -> OrchResult:
    """``orch`` in a child process that file permissions apply to: root keeps them only through
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, which ``setpriv`` drops."""
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    argv = [*drop, sys.executable, "-m", "orchestrator.cli", "--home", str(orch.home), command, str(sweep)]
    child = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    return OrchResult(child.returncode, child.stdout, child.stderr)


def a_directory(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.mkdir()
    return path


def a_fifo(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    os.mkfifo(path)
    return path


def an_unreadable_file(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.write_text("name: s\ninclude: [problems/digits_mlp.yaml]\n")
    path.chmod(0)
    return path


def an_include_that_is_a_fifo(folder: Path) -> Path:
    os.mkfifo(folder / "fragment.yaml")
    path = folder / "sweep.yaml"
    path.write_text("name: s\ninclude: [problems/digits_mlp.yaml, fragment.yaml]\n")
    return path


def an_unreadable_include(folder: Path) -> Path:
    (folder / "fragment.yaml").write_text("training: {steps: 5}\n")
    (folder / "fragment.yaml").chmod(0)
    path = folder / "sweep.yaml"
    path.write_text("name: s\ninclude: [fragment.yaml]\n")
    return path


def a_file_too_large(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.write_text("name: s\ndescription: '" + "x" * (1 << 21) + "'\n")
    return path


# (make the file, run orch, the file and key the message names, what it says is wrong)
NOT_A_SWEEP_FILE: dict[str, tuple[Callable[[Path], Path], Runner, str, str]] = {
    "directory": (a_directory, in_process, "sweep.yaml: (file)", "not a regular file; found 'a directory'"),
    "dev_zero": (
        lambda folder: Path("/dev/zero"),
        in_process,
        "/dev/zero: (file)",
        "not a regular file; found 'a character device'",
    ),
    "fifo": (a_fifo, in_process, "sweep.yaml: (file)", "not a regular file; found 'a FIFO'"),
    "unreadable": (an_unreadable_file, without_read_privilege, "sweep.yaml: (file)", "permission denied"),
    "include_fifo": (
        an_include_that_is_a_fifo,
        in_process,
        "sweep.yaml: include[1]",
        "not a regular file; found 'a FIFO'",
    ),
    "unreadable_include": (
        an_unreadable_include,
        without_read_privilege,
        "sweep.yaml: include[0]",
        "permission denied",
    ),
    "too_large": (a_file_too_large, in_process, "sweep.yaml: (file)", "file too large"),
}


@pytest.fixture
def sweep_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sweeps"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("case", sorted(NOT_A_SWEEP_FILE))
@pytest.mark.parametrize("command", ["submit", "plan"])
def test_what_is_not_a_readable_sweep_file_is_refused_without_writing(
    populated_orch: Orch, sweep_folder: Path, case: str, command: str
) -> None:
    make, run, names, problem = NOT_A_SWEEP_FILE[case]
    sweep = make(sweep_folder)
    before = tree_fingerprint(populated_orch.home)

    result = run(populated_orch, command, sweep)

    assert result.exit_code == 2, result.stderr
    assert f"{names}: {problem}" in result.stderr
    assert result.stderr.startswith("orch: error: ")
    assert "accepted: " in result.stderr
    assert "not valid YAML" not in result.stderr
    assert result.stdout == ""
    assert_one_bounded_paragraph(result.stderr)
    assert tree_fingerprint(populated_orch.home) == before


def test_every_part_of_a_message_is_bounded_and_escaped() -> None:
    from orchestrator.errors import MAX_MESSAGE_CHARS, SpecError, UserError

    hostile = "line one\nline two\x1b[2J\r\u2028" + "x" * 5000
    spec_error = SpecError(hostile, hostile, hostile, hostile, hostile)
    user_error = UserError(hostile)

    for message in (str(spec_error), str(user_error)):
        assert len(message) <= MAX_MESSAGE_CHARS
        assert message.isprintable(), message[:200]
        assert "line one\\nline two\\x1b[2J\\r\\u2028" in message
    assert "; found " in str(spec_error) and "; accepted: " in str(spec_error)
    assert spec_error.found == hostile  # the exception keeps the value; only the message is cut


@pytest.mark.parametrize(
    "key",
    ["nope.key", "optimizer.learning_rate", "probes[0].nope", "x" * 5000 + ".y", "optimizer.schedule.typo"],
)
def test_an_unknown_where_key_names_the_keys_of_its_nearest_section_in_a_bounded_message(
    populated_orch: Orch, key: str
) -> None:
    from orchestrator.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["--home", str(populated_orch.home), "runs", "--where", f"{key}=1"])

    assert exited.value.code == 2
    message = stderr.getvalue().splitlines()[-1] + "\n"  # after the usage line
    assert "unknown key " in message and "accepted: a dotted run-spec key: " in message
    assert_one_bounded_paragraph(message)
    listed = message.rstrip("\n").split("accepted: a dotted run-spec key: ", 1)[1]
    section = key.split("[")[0].rsplit(".", 1)[0]
    if section in ("optimizer", "probes", "optimizer.schedule"):
        assert all(name.startswith(section) for name in listed.split(", ")[:-1]), listed
    else:
        assert listed.startswith("model.*, data.*, optimizer.*"), listed


def test_values_are_quoted_by_one_helper_for_sweep_errors_and_command_line_messages() -> None:
    from orchestrator import errors, views

    assert views.shown is errors.shown
    assert errors.shown("a\x1b[2J" + "b" * 500) == errors.one_paragraph(repr("a\x1b[2J" + "b" * 500), 80)


SECRET_URL = "postgresql://user:hunter2@db.example/registry"


@pytest.mark.parametrize("where", ["base", "include"])
def test_a_resolver_in_a_sweep_or_its_include_is_refused_without_reading_the_environment(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setenv("LEAKED_SECRET", SECRET_URL)
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "part.yaml").write_text(
        'data: {root: "${oc.env:LEAKED_SECRET}"}\n' if where == "include" else "training: {steps: 10}\n"
    )
    base = '{data: {root: "${oc.env:LEAKED_SECRET}"}}' if where == "base" else "{}"
    sweep = folder / "sweep.yaml"
    sweep.write_text(f"name: leak\ninclude: [problems/digits_mlp.yaml, part.yaml]\nbase: {base}\n")

    result = orch("plan", sweep)

    assert result.exit_code == 2
    assert SECRET_URL not in result.stderr and "hunter2" not in result.stderr
    named = f"{folder / 'part.yaml'}: data.root" if where == "include" else f"{sweep}: base.data.root"
    assert f"{named}: resolvers are not allowed" in result.stderr
    assert "accepted: ${dotted.key} of another field" in result.stderr


def test_plain_interpolations_of_other_fields_still_resolve(tmp_path: Path) -> None:
    from jobs.catalog import known_names
    from orchestrator.sweep import load_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "name: plain\ninclude: [problems/digits_mlp.yaml]\nbase: {training: {steps: 40, eval_every: "
        "'${.steps}', checkpoint_every: '${training.steps}'}}\n"
    )

    plan = load_sweep(sweep, known_names())

    assert (plan.runs[0].spec.training.eval_every, plan.runs[0].spec.training.checkpoint_every) == (40, 40)
