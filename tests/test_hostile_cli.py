"""Every ``orch`` command, given hostile arguments, exits 0, 1 or 2 and never shows a traceback.

The commands and their arguments are read from the parser, so a new command or option is covered
without editing this file: each positional and each option that takes a value gets every hostile
value in turn while the other arguments stay plausible, and each flag is tried once. The home
holds a small completed sweep. Read-only commands leave its registry byte-identical; an exit 2
leaves the home as it was and no temporary file behind. A few cases run as real processes to see
what only shows there: a closed pipe, and job processes holding ``orch``'s stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from orchestrator import cli
from orchestrator.cli import build_parser, main
from orchestrator.executors.processes import process_alive
from tests.conftest import SWEEPS_DIR, OrchResult, write_sweep
from tests.disks import tmpfs

TINY = SWEEPS_DIR / "tiny.yaml"
ORCH = Path(sys.executable).parent / "orch"
INTERNAL_ERROR = "internal error"

# Placeholders {arena} (this case's scratch folder) and {home} are filled in when a case runs.
HOSTILE = {
    "empty": "",
    "dash": "-",
    "double-dash": "--",
    "space": " ",
    "zero": "0",
    "negative": "-1",
    "huge-negative": "-" + "9" * 40,
    "huge": "9" * 40,
    "float-overflow": "1e999",
    "nan": "nan",
    "control-characters": "\x01\x07\x1b[2J\t\r\x7f",
    "unicode": "\u202eüñí©ødé\u4e2d\U0001f680",
    "very-long": "x" * 5000,
    "like-percent": "%",
    "like-underscore": "_",
    "sql": "'; DROP TABLE runs; --",
    "where-equals": "=",
    "where-percent": "=%",
    "where-open-list": "optimizer.lr=[0.1",
    "where-yaml-tag": "a=!!python/object:os.system x",
    "where-unknown-key": "nope.key=1",
    "where-deep-nesting": "model.hidden=" + "[" * 3000,
    "where-alias-loop": "model.hidden=&a [*a]",
    "directory": "{arena}/directory",
    "fifo": "{arena}/fifo",
    "null-device": "{arena}/null",
    "full-device": "{arena}/full",
    "zero-device": "{arena}/zero",
    "symlink-loop": "{arena}/loop",
    "symlink-to-file": "{arena}/link",
    "missing-parent": "{arena}/missing/deeper/out.csv",
    "dot-dot": "../../../escaped.csv",
    "unknown-user-home": "~nosuchuser/x",
    "home": "{home}",
    "registry": "{home}/registry.sqlite",
    "registry-journal": "{home}/registry.sqlite-journal",
    "home-cache": "{home}/cache/image-sha256.json",
    "home-results": "{home}/results/export.csv",
}

# may change the registry when they succeed
WRITING_COMMANDS = {
    ("submit",),
    ("resume",),
    ("cancel",),
    ("sweep", "prune"),
}
HOME_COMMANDS = (("status",), ("export",))  # run against a hostile --home
DEVICES = {"null": (1, 3), "full": (1, 7), "zero": (1, 5)}  # copies of /dev/null, /dev/full, /dev/zero


def subcommands(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf command of ``parser`` (``data fetch`` is ``("data", "fetch")``) with its parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommands(sub)
                found.update(
                    {(name, *path): leaf for path, leaf in nested.items()} if nested else {(name,): sub}
                )
    return found


def plausible_value(action: argparse.Action) -> str:
    """A value the command accepts for ``action`` (against the tiny sweep), so hostile values elsewhere are
    reached."""
    if action.choices:
        return "table" if action.dest == "figure" else str(next(iter(action.choices)))
    by_name = {"file": str(TINY), "run": "{run}", "root": "{arena}/missing/data"}
    return by_name.get(action.dest, "tiny")


def plausible_arguments(parser: argparse.ArgumentParser) -> list[tuple[argparse.Action, list[str]]]:
    """Each argument a command needs (positionals, required options) with a plausible value."""
    needed = []
    for action in parser._actions:
        if action.option_strings and action.required:
            needed.append((action, [action.option_strings[-1], plausible_value(action)]))
        elif not action.option_strings and action.nargs != 0:
            needed.append((action, [plausible_value(action)]))
    return needed


@dataclass(frozen=True)
class Case:
    name: str
    arguments: tuple[str, ...]  # after ``--home HOME`` unless they start with --home
    read_only: bool


def command_cases(path: tuple[str, ...], parser: argparse.ArgumentParser) -> Iterator[Case]:
    needed = plausible_arguments(parser)
    read_only = path not in WRITING_COMMANDS
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        others = [value for other, values in needed if other is not action for value in values]
        label = (
            "-".join(path)
            + "-"
            + (action.option_strings[-1].lstrip("-") if action.option_strings else action.dest)
        )
        if action.nargs == 0:
            yield Case(label, (*path, *others, action.option_strings[-1]), read_only)
            continue
        for hostile_name, hostile in HOSTILE.items():
            given = [action.option_strings[-1], hostile] if action.option_strings else [hostile]
            # "--" ends the options: a positional after it is taken as it is
            arguments = (*path, *others, *given) if action.option_strings else (*path, *others, "--", *given)
            yield Case(f"{label}-{hostile_name}", arguments, read_only)


# A server runs until it is stopped: orch serve's hostile hosts, ports and homes are tested
# against the running command in tests/test_serve.py.
SERVING_COMMANDS = {("serve",)}


def all_cases() -> list[Case]:
    parser = build_parser()
    cases = [
        case
        for path, sub in subcommands(parser).items()
        if path not in SERVING_COMMANDS
        for case in command_cases(path, sub)
    ]
    for command in HOME_COMMANDS:
        cases += [
            Case(f"home-{'-'.join(command)}-{name}", ("--home", value, *command), True)
            for name, value in HOSTILE.items()
        ]
    return cases


CASES = all_cases()


def run_in_process(argv: Sequence[str]) -> OrchResult:
    """``orch ARGV`` in this process; an exception escaping ``main`` shows as a traceback on stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            exit_code = main(list(argv))
        except SystemExit as exit:  # argparse's usage errors and --help
            exit_code = exit.code if isinstance(exit.code, int) else 2
        except BaseException:  # noqa: BLE001 - a traceback is what this test looks for
            traceback.print_exc()
            exit_code = -1
    return OrchResult(exit_code, stdout.getvalue(), stderr.getvalue())


@dataclass(frozen=True)
class Home:
    root: Path
    pristine: Path  # a copy of the home as the fixture made it
    fingerprint: dict[str, str]  # of the pristine home
    run_id: str

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite"

    def restore(self) -> None:
        """Undo what a case did to the home, so that cases do not depend on one another."""
        if tree_fingerprint(self.root) != self.fingerprint:
            shutil.rmtree(self.root)
            shutil.copytree(self.pristine, self.root, symlinks=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch)
        folder = tmp_path_factory.mktemp("hostile")
        root = folder / "home"
        submitted = run_in_process(
            ["--home", str(root), "submit", str(TINY), "--executor", "debug", "--json"]
        )
        assert submitted.exit_code == 0, submitted.stderr
        run_id = json.loads(run_in_process(["--home", str(root), "runs", "--json"]).stdout)[0]["id"]
        shutil.copytree(root, folder / "pristine", symlinks=True)
        yield Home(root, folder / "pristine", tree_fingerprint(root), run_id)


def isolate_environment(patch: pytest.MonkeyPatch) -> None:
    for variable in ("ORCH_DB_URL", "ORCH_HOME", "no_proxy", "NO_PROXY"):
        patch.delenv(variable, raising=False)
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        # orch data fetch must not reach the internet from a test
        patch.setenv(variable, "http://127.0.0.1:9")


@dataclass(frozen=True)
class Arena:
    """A scratch folder of things a command must not damage: a FIFO, device nodes, links, a folder."""

    root: Path

    @classmethod
    def build(cls, root: Path) -> "Arena":
        (root / "directory").mkdir()
        (root / "victim.txt").write_text("keep me\n")
        (root / "link").symlink_to(root / "victim.txt")
        (root / "loop").symlink_to(root / "loop")
        os.mkfifo(root / "fifo")
        for name, (major, minor) in DEVICES.items():
            with contextlib.suppress(PermissionError):  # not root: those cases test a missing file instead
                os.mknod(root / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        return cls(root)

    def require_devices(self) -> None:
        if not all((self.root / name).exists() for name in DEVICES):
            pytest.skip("creating device nodes needs root")

    def damage(self) -> list[str]:
        """What is no longer as built."""
        problems = []
        kinds = {
            "directory": stat.S_ISDIR,
            "fifo": stat.S_ISFIFO,
            "link": stat.S_ISLNK,
            "loop": stat.S_ISLNK,
            "victim.txt": stat.S_ISREG,
        }
        kinds.update({name: stat.S_ISCHR for name in DEVICES if (self.root / name).exists()})
        for name, is_kind in kinds.items():
            if not is_kind(os.lstat(self.root / name).st_mode):
                problems.append(f"{name} changed kind")
        if (self.root / "victim.txt").read_text() != "keep me\n":
            problems.append("victim.txt was overwritten")
        problems += [f"temporary file left: {path}" for path in self.root.rglob("*tmp*")]
        if (self.root / "missing").exists():
            problems.append("a missing folder was created")
        return problems


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Each entry under ``root``: the sha256 of a regular file's bytes, else its kind."""
    return {str(path.relative_to(root)): entry_fingerprint(path) for path in sorted(root.rglob("*"))}


def entry_fingerprint(path: Path) -> str:
    mode = os.lstat(path).st_mode
    return hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else stat.filemode(mode)


def fill(argument: str, home: Home, arena: Arena) -> str:
    return (
        argument.replace("{arena}", str(arena.root))
        .replace("{home}", str(home.root))
        .replace("{run}", home.run_id[:10])
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_arguments(case: Case, home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_environment(monkeypatch)
    arena = Arena.build(tmp_path)
    working_dir = tmp_path / "cwd" / "a" / "b"  # relative paths (../../..) stay in this case's folder
    working_dir.mkdir(parents=True)
    monkeypatch.chdir(working_dir)
    arguments = [fill(argument, home, arena) for argument in case.arguments]
    argv = arguments if arguments[0] == "--home" else ["--home", str(home.root), *arguments]
    try:
        result = run_in_process(argv)

        assert result.exit_code in (0, 1, 2), f"exit {result.exit_code}: {result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert INTERNAL_ERROR not in result.stderr, result.stderr
        if result.exit_code == 2:
            assert result.stderr.startswith(("orch: error: ", "usage: ")), result.stderr
            assert tree_fingerprint(home.root) == home.fingerprint, "bad input changed the home"
        if case.read_only:
            assert entry_fingerprint(home.registry) == entry_fingerprint(home.pristine / "registry.sqlite"), (
                "a read-only command changed the registry"
            )
        assert not os.path.lexists(f"{home.registry}-journal"), (
            "something is where the registry's journal goes"
        )
        assert arena.damage() == []
    finally:
        home.restore()


def test_every_command_of_the_parser_is_covered() -> None:
    covered = {case.arguments[0] for case in CASES} | {" ".join(case.arguments[:2]) for case in CASES}
    expected = {
        "plan",
        "submit",
        "status",
        "runs",
        "show",
        "shards",
        "logs",
        "resume",
        "cancel",
        "sync",
        "export",
        "data fetch",
        "container check",
        "sweep prune",
        "curves",
        "analyze",
    }
    assert expected <= covered


# -- what the matrix cannot say: the messages, and what ends up on disk ------------------------------


@pytest.fixture
def orch_in(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[OrchIn]:
    isolate_environment(monkeypatch)
    yield OrchIn(home)
    home.restore()


@dataclass(frozen=True)
class OrchIn:
    """``orch --home HOME ...`` in this process, on the module's home with its completed sweep."""

    home: Home

    def __call__(self, *arguments: str | Path) -> OrchResult:
        result = run_in_process(["--home", str(self.home.root), *map(str, arguments)])
        assert INTERNAL_ERROR not in result.stderr and "Traceback" not in result.stderr, result.stderr
        return result


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("{arena}/directory", "a directory is there, not a regular file"),
        ("{arena}/full", "a character device is there"),
        ("{arena}/fifo", "a FIFO is there"),
        ("{arena}/link", "a symbolic link is there"),
        ("{arena}/missing/out.csv", "folder {arena}/missing does not exist"),
        ("{home}/registry.sqlite", "inside {home}, which orch owns"),
        ("{home}/registry.sqlite-journal", "inside {home}, which orch owns"),
        ("{home}/cache/image-sha256.json", "inside {home}, which orch owns"),
        ("{home}/results/runs/export.csv", "inside {home}, which orch owns"),
    ],
    ids=[
        "directory",
        "device",
        "fifo",
        "symlink",
        "missing-folder",
        "registry",
        "journal",
        "cache",
        "results",
    ],
)
def test_export_refuses_what_it_must_not_replace(
    orch_in: OrchIn, tmp_path: Path, target: str, fragment: str
) -> None:
    arena = Arena.build(tmp_path)
    arena.require_devices()
    before = tree_fingerprint(orch_in.home.root)

    result = orch_in("export", "--out", fill(target, orch_in.home, arena))

    assert result.exit_code == 2
    assert (
        result.stderr.startswith("orch: error: --out ")
        and fill(fragment, orch_in.home, arena) in result.stderr
    ), result.stderr
    assert "accepted: " in result.stderr
    assert tree_fingerprint(orch_in.home.root) == before
    assert arena.damage() == [] and not (arena.root / "missing").exists()


def test_export_replaces_a_regular_file_atomically(orch_in: OrchIn, tmp_path: Path) -> None:
    target = tmp_path / "runs.csv"
    target.write_text("old contents\n")

    orch_in("export", "--out", target)

    assert target.read_text().startswith("id,sweep,state,")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs.csv"]  # no temporary file left
    assert orch_in("export", "--out", "-").stdout == target.read_text()  # - is stdout


def test_where_unknown_key_is_an_error_naming_the_known_keys(orch_in: OrchIn) -> None:
    result = orch_in("runs", "--where", "optimizer.learning_rate=0.1")

    assert result.exit_code == 2
    assert "unknown key 'optimizer.learning_rate'" in result.stderr
    assert "optimizer.lr, " in result.stderr and "optimizer.schedule.gamma" in result.stderr


@pytest.mark.parametrize(
    "clause, fragment",
    [
        ("=", "'=' is not a clause; accepted: KEY=VALUE, KEY!=VALUE, KEY>NUMBER"),
        ("=%", "'=%' is not a clause; accepted: KEY=VALUE"),
        ("optimizer.lr>", "> compares numbers; found ''; accepted: a number, e.g. optimizer.lr>0.01"),
        ("optimizer.lr<=true", "<= compares numbers; found 'true'"),
        ("optimizer.name in ()", "an empty set"),
        ("optimizer.name in (sgd", "is not a clause"),
        ("optimizer.lr=[0.1", "the value '[0.1' is not plain YAML data"),
        ("optimizer.name=!!python/object:os.system x", "is not plain YAML data"),
        ("model.hidden=&a [*a]", "is not plain YAML data"),
        (
            "probes[0].nope=1",
            "unknown key 'probes[0].nope'; accepted: a dotted run-spec key: probes, probes[N].type",
        ),
    ],
)
def test_bad_where_is_a_usage_error(orch_in: OrchIn, clause: str, fragment: str) -> None:
    result = orch_in("runs", "--where", clause)

    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "orch runs: error: argument --where: " in result.stderr and fragment in result.stderr, (
        result.stderr
    )


def test_where_names_a_probe_by_its_index(orch_in: OrchIn) -> None:
    from orchestrator.views import WhereClause, where_view

    # the tiny runs have no probe
    assert orch_in("runs", "--where", "probes[0].type=line", "--json").json() == []
    spec = {
        "optimizer": {"lr": 0.1},
        "probes": [{"type": "line", "every": 5}, {"type": "interpolation", "every": 2}],
    }
    config = where_view(spec)
    assert WhereClause.parse("probes[1].every=2").matches(config) and not WhereClause.parse(
        "probes[0].every=2"
    ).matches(config)
    assert WhereClause.parse("probes=[]").matches(where_view({"probes": []}))


def test_known_where_keys_are_the_keys_flatten_gives_a_real_spec(orch_in: OrchIn) -> None:
    from orchestrator.views import flatten, spec_keys

    shown_spec = orch_in("show", orch_in.home.run_id, "--json").json()["spec"]

    assert set(flatten(shown_spec)) <= set(spec_keys().plain)
    assert {"optimizer.lr", "optimizer.schedule.gamma", "probes", "cluster"} <= set(spec_keys().plain)
    assert "every" in spec_keys().item_fields["probes"]


def test_curves_refuses_a_run_whose_folder_is_gone(orch_in: OrchIn) -> None:
    run_dir = orch_in("show", orch_in.home.run_id, "--json").json()["run_dir"]
    shutil.rmtree(run_dir)

    result = orch_in("curves", "tiny")

    assert result.exit_code == 2 and "does not exist (moved or deleted?)" in result.stderr, result.stderr
    assert not Path(run_dir).exists()  # not re-created by the figure


def test_logs_negative_tail_is_bad_input(orch_in: OrchIn) -> None:
    result = orch_in("logs", orch_in.home.run_id, "--tail", "-2")

    assert (
        result.exit_code == 2
        and "--tail -2" in result.stderr
        and "accepted: an integer >= 0" in result.stderr
    )


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (("analyze", "tiny", "--figure", "table", "--out", "{home}"), "inside {home}, which orch owns"),
        (
            ("analyze", "tiny", "--figure", "table", "--out", "{arena}/victim.txt"),
            "a regular file is there, not a folder",
        ),
        (
            ("analyze", "tiny", "--figure", "table", "--out", "{arena}/missing/figures"),
            "folder {arena}/missing does not exist",
        ),
        (("analyze", "tiny", "--figure", "lines", "--window", "nan"), "accepted: finite numbers > 0"),
        (
            ("data", "fetch", "mnist", "--root", "{arena}/missing/data"),
            "folder {arena}/missing does not exist",
        ),
        (("data", "fetch", "mnist", "--root", "{arena}/full"), "a character device is there, not a folder"),
        (("data", "fetch", "mnist", "--root", "{home}/data"), "inside {home}, which orch owns"),
        (("container", "check", "--cluster", "../sweeps/tiny"), "no such cluster profile; accepted: local, "),
        (("plan", "{arena}/fifo"), "not a regular file; found 'a FIFO'"),
    ],
    ids=[
        "analyze-home",
        "analyze-file",
        "analyze-missing",
        "analyze-nan",
        "fetch-missing",
        "fetch-device",
        "fetch-home",
        "cluster-path",
        "plan-fifo",
    ],
)
def test_other_user_paths_are_checked_before_anything_is_written(
    orch_in: OrchIn, tmp_path: Path, arguments: tuple[str, ...], fragment: str
) -> None:
    arena = Arena.build(tmp_path)
    arena.require_devices()
    before = tree_fingerprint(orch_in.home.root)

    result = orch_in(*(fill(argument, orch_in.home, arena) for argument in arguments))

    assert result.exit_code == 2 and result.stderr.startswith("orch: error: "), result.stderr
    assert fill(fragment, orch_in.home, arena) in result.stderr, result.stderr
    assert tree_fingerprint(orch_in.home.root) == before
    assert arena.damage() == [] and not (arena.root / "missing").exists()


# -- the registry's environment: read-only and full file systems, a home that is a file --------------


def test_home_that_is_a_file_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_environment(monkeypatch)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")

    result = run_in_process(["--home", str(a_file), "submit", str(TINY), "--executor", "debug"])

    assert result.exit_code == 2 and result.stderr.startswith("orch: error: "), result.stderr
    assert str(a_file) in result.stderr and a_file.read_text() == "x"


def test_registry_on_a_read_only_file_system_is_named(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_environment(monkeypatch)
    another_sweep = write_sweep(tmp_path, "another", TINY.read_text().replace("name: tiny", "name: another"))
    with tmpfs(tmp_path / "ro", "4m") as folder:
        shutil.copyfile(home.pristine / "registry.sqlite", folder / "registry.sqlite")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

        result = run_in_process(["--home", str(folder), "submit", str(another_sweep), "--executor", "debug"])

    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("orch: error: ") and "Traceback" not in result.stderr
    assert str(folder) in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_registry_on_a_full_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_environment(monkeypatch)
    with tmpfs(tmp_path / "full", "8k") as folder:
        result = run_in_process(["--home", str(folder), "submit", str(TINY), "--executor", "debug"])

    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("orch: error: ") and "Traceback" not in result.stderr
    assert str(folder) in result.stderr and "full" in result.stderr.lower(), result.stderr


def test_a_genuine_bug_is_reported_as_an_internal_error(
    orch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last-resort message: type, message, where to report; the hostile cases above never see it."""

    def broken(arguments: argparse.Namespace, home: object) -> int:
        raise ZeroDivisionError("division by zero in a test")

    monkeypatch.setattr(cli, "cmd_sync", broken)

    result = run_in_process(["--home", str(orch_home), "sync"])

    assert result.exit_code == 1
    assert result.stderr.startswith(f"orch: {INTERNAL_ERROR}: ZeroDivisionError: division by zero in a test")
    assert "report" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def orch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_environment(monkeypatch)
    return tmp_path / "home"


# -- real processes: closed pipes, jobs holding orch's stdout -------------------------------------------


def run_with_closed_pipe(argv: Sequence[str], stream: str) -> tuple[int, str]:
    """Exit status and the other stream's text of ``orch ARGV`` whose ``stream`` is a pipe nobody reads."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before orch writes anything: its first write fails
    other = subprocess.PIPE
    try:
        if stream == "stdout":
            completed = subprocess.run(
                [str(ORCH), *argv], stdout=write_end, stderr=other, timeout=120, env=process_environment()
            )
            return completed.returncode, completed.stderr.decode()
        completed = subprocess.run(
            [str(ORCH), *argv], stdout=other, stderr=write_end, timeout=120, env=process_environment()
        )
        return completed.returncode, completed.stdout.decode()
    finally:
        os.close(write_end)


def process_environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in ("ORCH_DB_URL", "ORCH_HOME")}
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's orchestrator
    return environment


@pytest.mark.parametrize(
    "command",
    [
        ("runs", "--json"),
        ("shards", "{run}", "--json"),
        ("export",),
        ("status",),
        ("show", "{run}"),
        ("--help",),
    ],
)
def test_closed_stdout_is_a_quiet_exit_0(home: Home, command: tuple[str, ...]) -> None:
    argv = ["--home", str(home.root), *(argument.replace("{run}", home.run_id) for argument in command)]

    exit_code, stderr = run_with_closed_pipe(argv, "stdout")

    assert exit_code == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "BrokenPipe" not in stderr, (
        stderr
    )
    assert INTERNAL_ERROR not in stderr


def test_closed_stderr_keeps_the_exit_status_of_bad_input(home: Home) -> None:
    exit_code, stdout = run_with_closed_pipe(["--home", str(home.root), "show", "zzzz"], "stderr")

    assert exit_code == 2 and stdout == ""


def test_reader_that_stops_after_ten_bytes(tmp_path: Path) -> None:
    """``orch plan BIG | head -c 10``: more output than a pipe holds, the reader leaves early."""
    # 30 runs, ~130 kB of JSON
    widths = ", ".join("[" + ", ".join(["16"] * 300 + [str(run + 1)]) + "]" for run in range(30))
    text = (
        TINY.read_text()
        .replace("name: tiny", "name: big")
        .replace("optimizer.lr: [0.1, 0.05]", f"model.hidden: [{widths}]")
    )
    sweep = write_sweep(tmp_path, "big", text)
    process = subprocess.Popen(
        [str(ORCH), "--home", str(tmp_path / "home"), "plan", str(sweep), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_environment(),
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.read(10)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    exit_code = process.wait(timeout=120)

    assert first.startswith(b"{")
    assert exit_code == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and INTERNAL_ERROR not in stderr, (
        stderr
    )


@pytest.mark.subprocess
def test_local_jobs_do_not_hold_orchs_stdout(tmp_path: Path) -> None:
    """``orch submit F | cat`` ends when orch does, not when the jobs it started end."""
    home = tmp_path / "home"
    sweep = write_sweep(
        tmp_path,
        "long",
        "name: long\ninclude: [problems/digits_mlp.yaml]\nbase: {training: {steps: 10000000, "
        "checkpoint_every: 1000, heartbeat_seconds: 0.2}}\n",
    )
    process = subprocess.Popen(
        [str(ORCH), "--home", str(home), "submit", str(sweep), "--executor", "local", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_environment(),
    )
    try:
        _, stderr = process.communicate(timeout=60)  # before the fix: until the job ends (never)
        assert process.returncode == 0, stderr.decode()
        run = json.loads(orch_process(home, "runs", "--json").stdout)[0]
        assert run["state"] in ("PENDING", "RUNNING")  # the job outlives orch's stdout
    finally:
        if process.poll() is None:
            process.kill()
        orch_process(home, "cancel", "long")
        for run in json.loads(orch_process(home, "runs", "--json").stdout or "[]"):
            for attempt in json.loads(orch_process(home, "show", run["id"], "--json").stdout)["attempts"]:
                wait_until_ended(attempt["pid"])


def orch_process(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ORCH), "--home", str(home), *arguments],
        capture_output=True,
        text=True,
        env=process_environment(),
        timeout=120,
    )


def wait_until_ended(pid: int | None, timeout_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while process_alive(pid, "submitit") and time.monotonic() < deadline:
        time.sleep(0.2)
