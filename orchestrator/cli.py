"""``orch``: plan, submit, watch, query and resume sweeps from the login node.

Every command that reports something takes ``--json``. Exit status:

- 0: done (also when the reader of orch's output went away early, ``orch runs | head``: orch stops
  writing and exits quietly; a command that was reporting bad input keeps its 2);
- 1: a run did not complete (``--wait``), a check failed (``container check``), or an internal
  error, a bug in orch, reported in one paragraph with the exception and where to report it;
- 2: bad input, or an environment problem (permission denied, disk full, read-only file system,
  a registry that is locked or not a registry): one line ``orch: error: …`` naming what was wrong,
  where, and what would be accepted. Bad input is detected before anything is written.

Ctrl-C stops a command with 130, as shells expect.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Optional, Sequence

from orchestrator.bulk import collector_paused, in_chunks
from orchestrator.errors import BAD_INPUT_EXIT, MAX_MESSAGE_CHARS, SpecError, UserError, one_paragraph, shown
from orchestrator.home import OrchHome
from orchestrator.safe_output import check_output_file, check_output_folder, describe_kind, replace_file

if TYPE_CHECKING:  # the modules below are imported by the commands that use them (start-up: orch --help)
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

    from orchestrator import submit as submission
    from orchestrator.estimates import Scheduled
    from orchestrator.feed import SlotBudget
    from orchestrator.launch import SubmitChoices
    from orchestrator.registry.models import Attempt, Run
    from orchestrator.status import SweepStatus
    from orchestrator.sweep import SweepPlan
    from orchestrator.sync import FeedReport, SyncReport
    from orchestrator.views import RunRow

EXPORT_FORMATS = ("csv", "json", "parquet")
STDOUT_PATH = Path("-")  # --out -: standard output
SOME_RUNS_FAILED_EXIT = 1
CHECK_FAILED_EXIT = 1
INTERNAL_ERROR_EXIT = 1
READER_GONE_EXIT = 0
INTERRUPTED_EXIT = 130
TRACEBACK_VARIABLE = "ORCH_TRACEBACK"  # set: an internal error shows its full traceback
MAX_NAMES_CHARS = 400  # of the sweep names an error lists

Handler = Callable[[argparse.Namespace, OrchHome], int]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one ``orch`` command; returns its exit status (see the module's docstring)."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, not in the interpreter's exit, so that a closed pipe is caught
    except BrokenPipeError:
        _stop_writing()
        return READER_GONE_EXIT
    return status


def _run(argv: Optional[Sequence[str]]) -> int:
    try:
        arguments = build_parser(lazy=True).parse_args(argv)
    except SystemExit:  # --help (0) or a usage error (2), as argparse does it
        sys.stdout.flush()  # --help's text: a closed pipe shows here, not in the interpreter's exit
        raise
    home = OrchHome.resolve(arguments.home)
    try:
        return arguments.handler(arguments, home)
    except UserError as error:
        return _fail(f"orch: error: {error}", BAD_INPUT_EXIT)
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        raise  # the reader went away: main's business
    except Exception as error:  # noqa: BLE001 - turned into one message; a bug stays visible as one
        problem = environment_problem(error, home)
        if problem is not None:
            return _fail(f"orch: error: {problem}", BAD_INPUT_EXIT)
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        return _fail(internal_error_message(error), INTERNAL_ERROR_EXIT)


def _fail(message: str, status: int) -> int:
    try:
        print(message, file=sys.stderr)
    except BrokenPipeError:  # nobody reads stderr either; the status still says what happened
        _stop_writing()
    return status


def _stop_writing() -> None:
    """Point stdout and stderr at /dev/null: their reader has gone, and the interpreter's last flush
    of what is still buffered must not fail a second time (Python's documented SIGPIPE recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, OSError, ValueError):  # not a file (captured in a test), or closed
                continue
    finally:
        os.close(devnull)


# What to do about an operating-system error that comes from the machine, not from orch's code.
ENVIRONMENT_ERRNOS = {
    errno.EACCES: "a path you may write (check its permissions), or another --home/--out",
    errno.EPERM: "a path you may write (check its permissions), or another --home/--out",
    errno.ENOSPC: "free space on that file system, or another --home/--out",
    errno.EDQUOT: "free space within your disk quota, or another --home/--out",
    errno.EROFS: "a writable file system for --home/--out",
    errno.EIO: "a working file system (an I/O error: check the disk or the network mount)",
    errno.ENAMETOOLONG: "a shorter path",
    errno.ELOOP: "a path without a loop of symbolic links",
    errno.ENOENT: "a path that exists (a file or folder orch needs was removed or moved)",
    errno.ENOTDIR: "a path whose folders are folders (a file stands where a folder belongs: move it away)",
    errno.EISDIR: "a path to a file (a folder stands where a file belongs: move it away)",
    errno.EEXIST: "a path that is free (something else stands where orch writes: move it away)",
}


def environment_problem(error: Exception, home: OrchHome) -> Optional[str]:
    """One line for an error of the environment (file system, registry), or None for anything else."""
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        where = (
            " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
            or "a file"
        )
        return f"{where}: {error.strerror}; accepted: {ENVIRONMENT_ERRNOS[error.errno]}"
    if "sqlalchemy" not in sys.modules:  # a command that never opened the registry: no registry error
        return None
    from alembic.util.exc import CommandError as MigrationError
    from sqlalchemy.exc import DatabaseError, OperationalError

    from orchestrator.registry.engine import registry_problem

    if isinstance(error, OperationalError) or type(error) is DatabaseError:
        return registry_problem(error, _registry_location(home))
    if isinstance(error, MigrationError):
        return (
            f"registry {_registry_location(home)}: {error}; accepted: a registry of this orch's schema "
            "(one a newer orch upgraded needs that orch), or another --home"
        )
    return None


def _registry_location(home: OrchHome) -> str:
    from orchestrator.registry.engine import DB_URL_VARIABLE, registry_location, registry_url

    try:
        return registry_location(registry_url(home))
    except UserError:  # a malformed $ORCH_DB_URL
        return f"${DB_URL_VARIABLE}"


def internal_error_message(error: Exception) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    message = " ".join(str(error).split())
    return (
        f"orch: internal error: {type(error).__name__}: {message}{where}. This is a bug in orch, not "
        "in what you typed: "
        f"please report it to the maintainers of this repository with the command you ran and this message "
        f"(set {TRACEBACK_VARIABLE}=1 to print the full traceback)."
    )


class BoundedParser(argparse.ArgumentParser):
    """argparse whose usage errors are one bounded paragraph: a 50 kB argument is not echoed whole."""

    def error(self, message: str) -> NoReturn:
        super().error(one_paragraph(message, MAX_MESSAGE_CHARS - len(self.prog) - 10))


Options = Callable[[argparse.ArgumentParser], None]


class CommandParser(BoundedParser):
    """A command's parser that may add its options when it is first used (to parse its arguments,
    or to show its help or usage), so that ``orch --help`` and each command import only what they
    need: the options of ``runs`` name the run states, which live with the registry's tables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: Optional[Options] = None

    def add_options_later(self, options: Options) -> None:
        self._pending = options

    def _add_pending_options(self) -> None:
        options, self._pending = self._pending, None
        if options is not None:
            options(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._add_pending_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_pending_options()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_pending_options()
        return super().format_help()


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """``orch``'s parser. ``lazy``: each command's options are added when that command is parsed
    (``main``); otherwise at once, for whoever inspects the parser."""
    parser = BoundedParser(prog="orch", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", help="orchestrator home: registry and default results (default: $ORCH_HOME or ./.orch)"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )

    def command(
        name: str, handler: Handler, help_text: str, options: Optional[Options] = None, reports: bool = True
    ) -> None:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if reports:
            sub.add_argument("--json", action="store_true", help="print JSON instead of tables")
        if options is not None and lazy:
            sub.add_options_later(options)
        elif options is not None:
            options(sub)

    command("plan", cmd_plan, "expand a sweep file into runs and show them; writes nothing", _file_options)
    command(
        "submit",
        cmd_submit,
        "record a sweep and submit its runs that are not completed or active",
        _submit_options,
    )
    command("status", cmd_status, "runs per state per sweep; step and ETA of active runs", _status_options)
    command("runs", cmd_runs, "list runs", _selection_options)
    command(
        "usage",
        cmd_usage,
        "GPU- and CPU-hours of attempts (sacct's AllocTRES x Elapsed), per group; failed and requeued shares",
        _usage_options,
    )
    command(
        "show", cmd_show, "one run: resolved config, attempts, checkpoints, shards, metrics", _run_options
    )
    command(
        "shards", cmd_shards, "a run's landscape shards (probe, step, file, size, sha256)", _shards_options
    )
    command("logs", cmd_logs, "an attempt's stdout (or stderr)", _logs_options)
    command(
        "resume",
        cmd_resume,
        "re-submit runs whose last attempt failed, timed out, was cancelled or is lost",
        _resume_options,
    )
    command("cancel", cmd_cancel, "cancel the active attempts of runs", _targets_options)
    command(
        "sync", cmd_sync, "ingest the journals of active attempts into the registry; submit held-back runs"
    )
    command(
        "feed",
        cmd_feed,
        "submit runs held back for a submit slot as slots free (for cron, or as a Slurm job that repeats)",
        _feed_options,
    )
    command(
        "export",
        cmd_export,
        "one row per run: id, sweep, state, flattened config, final metrics",
        _export_options,
    )

    from jobs.manifest import DATA_FILES

    data = commands.add_parser("data", help="stage data sets (jobs never download)")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    fetch = data_commands.add_parser(
        "fetch", help="download a data set with torchvision into a data root (needs internet)"
    )
    fetch.set_defaults(handler=cmd_data_fetch)
    # the staged data sets (jobs.data.vision), named without torch
    fetch.add_argument("name", choices=tuple(DATA_FILES))
    fetch.add_argument(
        "--root", type=path_argument, required=True, help="the data root (a cluster profile's data_root)"
    )
    fetch.add_argument("--json", action="store_true", help="print JSON instead of text")

    container = commands.add_parser("container", help="the container runtime and image of a cluster profile")
    container_commands = container.add_subparsers(dest="container_command", required=True, metavar="COMMAND")
    check = container_commands.add_parser(
        "check", help="runtime, its version, the image's sha256 and Python/torch inside"
    )
    check.set_defaults(handler=cmd_container_check)
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.add_argument("--cluster", default="tcml", help="cluster profile (default: tcml)")
    check.add_argument(
        "--image", type=path_argument, help="image to check (default: the profile's container.image)"
    )

    database = commands.add_parser("db", help="the registry's database as a whole")
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    move = database_commands.add_parser(
        "migrate",
        help="copy the registry into an empty database (e.g. SQLite to PostgreSQL), verified row for row",
        description="Copy every row of the registry into an empty database, in one transaction that "
        "commits only once each table reads back equal (docs/registry.md). The source is only read.",
    )
    move.set_defaults(handler=cmd_db_migrate)
    move.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the registry to copy (default: the current one: ORCH_DB_URL or <home>/registry.sqlite)",
    )
    move.add_argument("--to", dest="target", metavar="URL", required=True, help="an empty database")
    move.add_argument("--json", action="store_true", help="print JSON instead of text")

    sweep = commands.add_parser("sweep", help="a recorded sweep as a whole")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    prune = sweep_commands.add_parser(
        "prune", help="detach the recorded runs a sweep file no longer plans (their results stay)"
    )
    prune.set_defaults(handler=cmd_sweep_prune)
    prune.add_argument("file", type=path_argument)
    prune.add_argument("--json", action="store_true", help="print JSON instead of text")

    command("curves", cmd_curves, "write a PNG of training curves into each run's folder", _targets_options)
    command(
        "analyze",
        cmd_analyze,
        "the papers' figures and tables from shards (per run) and metrics (per sweep)",
        _analyze_options,
    )
    command(
        "serve",
        cmd_serve,
        "a read-only web dashboard of the registry (docs/dashboard.md)",
        _serve_options,
        reports=False,
    )
    return parser


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=path_argument)


def _submit_options(parser: argparse.ArgumentParser) -> None:
    _file_options(parser)
    _executor_options(parser)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="first run every distinct configuration for a few steps (a line, a checkpoint and its "
        "restore) on the shortest partition; the runs start only when all of them passed",
    )
    parser.add_argument(
        "--then",
        action="append",
        default=[],
        metavar="COMMAND",
        help='an analysis to run as jobs once the sweep\'s jobs have ended, e.g. "analyze --figure lines" '
        "(repeatable; adds to the sweep file's then:)",
    )


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", nargs="?")
    parser.add_argument("--watch", action="store_true", help="refresh until no run is active (Ctrl-C stops)")


def _usage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", nargs="?", help="only this sweep's runs (default: every run)")
    parser.add_argument(
        "--by",
        default="sweep",
        metavar="KEY",
        help="group by sweep, partition, state, executor or a dotted run-spec key such as optimizer.name "
        "(default: sweep)",
    )


def _selection_options(parser: argparse.ArgumentParser) -> None:
    """--sweep, --state and --where: which runs ``runs`` lists and ``export`` writes."""
    from orchestrator.registry.tables import RunState

    parser.add_argument("--sweep")
    parser.add_argument(
        "--state",
        type=str.upper,
        choices=RunState.ALL,
        metavar="STATE",
        help=f"one of {', '.join(RunState.ALL)}",
    )
    _where_option(parser)


def _where_option(parser: argparse.ArgumentParser) -> None:
    """--where, the one clause language of runs, export and analyze."""
    from orchestrator.views import WhereClause

    parser.add_argument(
        "--where",
        action="append",
        default=[],
        type=WhereClause.parse,
        metavar="CLAUSE",
        help="only runs where KEY=VALUE, KEY!=VALUE, KEY>NUMBER (>=, <, <=) or 'KEY in (A, B)' holds: KEY a "
        "dotted run-spec key (probes[0].every: one probe's), values YAML (repeatable: all hold)",
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run id or a unique prefix")


def _shards_options(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    parser.add_argument("--probe", help="only this probe (its name, by default its type)")
    parser.add_argument("--start", type=int, help="first step (inclusive)")
    parser.add_argument("--stop", type=int, help="last step (exclusive)")


def _logs_options(parser: argparse.ArgumentParser) -> None:
    _run_options(parser)
    parser.add_argument("--attempt", type=int, help="attempt number (default: the last)")
    parser.add_argument("--stderr", action="store_true")
    parser.add_argument("--tail", type=int, metavar="N", help="only the last N lines")


def _targets_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="SWEEP|RUN")


def _resume_options(parser: argparse.ArgumentParser) -> None:
    _targets_options(parser)
    _executor_options(parser)


def _export_options(parser: argparse.ArgumentParser) -> None:
    _selection_options(parser)
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    parser.add_argument(
        "--out",
        type=path_argument,
        help="file to write, replaced atomically (required for parquet; default or -: stdout)",
    )


def path_argument(text: str) -> Path:
    """A path from the command line: not empty (``Path("")`` would quietly mean the current folder),
    ``~`` expanded."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; accepted: a file or folder path")
    try:
        return Path(text).expanduser()
    except RuntimeError as error:  # ~nosuchuser
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: {error}; accepted: a path, ~ for your home folder"
        ) from None


def step_range(text: str) -> tuple[int, int]:
    start, separator, stop = text.partition(":")
    if not separator or not start.isdigit() or not stop.isdigit() or int(stop) <= int(start):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step range; accepted: A:B with integers 0 <= A < B"
        )
    return int(start), int(stop)


def _analyze_options(parser: argparse.ArgumentParser) -> None:
    from jobs.analyses import RUN_ANALYSES, SWEEP_VIEWS
    from orchestrator.executors import EXECUTOR_NAMES

    parser.add_argument(
        "targets",
        nargs="*",
        metavar="SWEEP|RUN",
        help="sweeps and runs (id prefixes); none: every run --where selects",
    )
    parser.add_argument("--figure", choices=RUN_ANALYSES + SWEEP_VIEWS, required=True)
    _where_option(parser)
    parser.add_argument("--probe", help="the probe's name (default: line; walk: interpolation)")
    parser.add_argument("--steps", type=step_range, metavar="A:B", help="only shards with A <= step < B")
    parser.add_argument(
        "--out",
        type=path_argument,
        help="folder for figures and tables (default: each run's figures/; sweep views: <home>/analyses)",
    )
    parser.add_argument("--format", choices=("png", "pdf"), default="png")
    parser.add_argument(
        "--window",
        type=float,
        default=0.2,
        help="|s| <= WINDOW for shape distances and fits (Fig. 3: 0.2 SGD, 0.5 momentum)",
    )
    parser.add_argument("--stride", type=int, default=1, help="shape distance on every STRIDE-th line")
    parser.add_argument(
        "--block",
        type=int,
        default=256,
        help="shape distance: lines per block of the pairwise matrix (memory: block² × points × 4 bytes)",
    )
    parser.add_argument("--kernel", type=int, default=25, help="moving average over lines (strategies)")
    parser.add_argument(
        "--sgd-lr", type=float, nargs="+", default=[0.1, 0.05], help="SGD strategies' learning rates"
    )
    parser.add_argument("--pal-mu", type=float, default=0.1, help="PAL/FBPAL strategies' measuring step")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        help="walk: epoch length (default: from the run's split and batch size)",
    )
    parser.add_argument(
        "--group-by", nargs="+", metavar="KEY", help="sweep views: dotted config keys to group runs by"
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        help="run the runs' analyses as one job array (slurm: on the runs' cluster, in their container, no "
        "GPU, the time their shards need); default: in this process; sweep views always run here",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="--executor slurm: wait for the jobs and print their reports (default: print what was "
        "submitted and return); local and debug always wait",
    )


def _executor_options(parser: argparse.ArgumentParser) -> None:
    from orchestrator.executors import EXECUTOR_NAMES

    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        default=None,
        help="slurm, local or debug (in-process, pdb works); default: the cluster profile's executor",
    )
    parser.add_argument(
        "--wait", action="store_true", help="block with a progress bar until the submitted runs end"
    )
    parser.add_argument(
        "--max-parallel",
        type=positive_count,
        metavar="N",
        help="at most N tasks of an array run at once (Slurm's %%N); default: the cluster profile's "
        "max_parallel",
    )


def positive_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)}: accepted: a whole number of at least 1, e.g. 4")
    return count


def _submit_choices(arguments: argparse.Namespace) -> "SubmitChoices":
    from orchestrator.launch import SubmitChoices

    return SubmitChoices(arguments.executor, arguments.max_parallel)


# -- commands -------------------------------------------------------------------------------------


def cmd_plan(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator.registry.engine import open_registry_if_exists

    with collector_paused():
        return _print_plan(arguments, read_sweep(arguments.file), open_registry_if_exists(home))


def _print_plan(arguments: argparse.Namespace, plan: SweepPlan, engine: Optional[Engine]) -> int:
    from sqlalchemy.orm import Session

    from orchestrator import output
    from orchestrator.estimates import schedule_plan
    from orchestrator.registry.tables import RunState

    with Session(engine) if engine is not None else contextlib.nullcontext() as session:
        scheduled = schedule_plan(session, plan)
        states = _known_states(session, [run.run_id for run in plan.runs]) if session is not None else {}
        gone = no_longer_in_file(session.connection(), plan) if session is not None else []
    rows = [PlanRow.of(item, states.get(item.run.run_id, "NEW")) for item in scheduled]
    estimated = [row for row in rows if row.estimate_seconds is not None and row.state != RunState.COMPLETED]
    # packed runs share a GPU
    projected = (
        sum(row.estimate_seconds * row.gpus / row.pack for row in estimated if row.estimate_seconds) / 3600
    )
    if arguments.json:
        payload = {
            "sweep": plan.name,
            "runs": rows,
            "no_longer_in_file": gone,
            "projected_gpu_hours": round(projected, 4),
            "runs_estimated": len(estimated),
        }
        output.print_json_records(payload, "runs")
        return 0
    title = (
        f"sweep {plan.name}: {len(rows)} runs ({sum(row.state == RunState.COMPLETED for row in rows)} "
        "completed)"
        + (
            f"; projected {projected:,.1f} GPU-hours for the {len(estimated)} runs to do with an estimate"
            if estimated
            else ""
        )
    )
    swept_names, swept_cells = output.swept_columns([row.swept for row in rows])
    columns = ["run", "state", *swept_names, "estimate", "partition", "time", "segments", "pack"]
    table_rows = [
        [
            row.id,
            row.state,
            *cells,
            output.format_duration(row.estimate_seconds),
            row.partition,
            row.time,
            row.segments,
            f"{row.pack} (fits {row.pack_offered})" if row.pack_offered is not None else row.pack,
        ]
        for row, cells in zip(rows, swept_cells)
    ]
    output.console().print(output.table(title, columns, table_rows))
    if gone:
        print(
            f"{len(gone)} runs recorded for sweep {plan.name} are no longer in {arguments.file}: "
            f"{', '.join(gone[:10])}"
            + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
            + f"; orch sweep prune {shlex.quote(str(arguments.file))} detaches them from the sweep "
            "(their results stay)"
        )
    return 0


def no_longer_in_file(connection: Connection, plan: SweepPlan) -> list[str]:
    """The runs recorded as members of the plan's sweep that the sweep file no longer plans."""
    from sqlalchemy import select

    from orchestrator.registry.tables import sweep_runs, sweeps

    members = (
        select(sweep_runs.c.run_id)
        .join(sweeps, sweeps.c.id == sweep_runs.c.sweep_id)
        .where(sweeps.c.name == plan.name)
        .order_by(sweep_runs.c.position)
    )
    planned = {run.run_id for run in plan.runs}
    return [run_id for run_id in connection.execute(members).scalars() if run_id not in planned]


def cmd_db_migrate(arguments: argparse.Namespace, home: OrchHome) -> int:
    """Copy the registry into an empty database, verified row for row (orchestrator/registry/move.py)."""
    from orchestrator import output
    from orchestrator.registry.engine import registry_url
    from orchestrator.registry.move import move_registry

    source = arguments.source or registry_url(home).render_as_string(hide_password=False)
    report = move_registry(source, arguments.target)
    if arguments.json:
        output.print_json(
            {
                "source": report.source,
                "target": report.target,
                "rows": report.rows,
                "seconds": round(report.seconds, 3),
                "tables": report.tables,
            }
        )
        return 0
    rows = [[table.table, table.rows, table.sha256[:16]] for table in report.tables]
    output.console().print(output.table("rows copied and read back equal", ["table", "rows", "sha256"], rows))
    print(f"moved {report.rows} rows from {report.source} to {report.target} in {report.seconds:.1f} s")
    print("use it: export ORCH_DB_URL='<the --to URL>'  (docs/registry.md)")
    return 0


def cmd_sweep_prune(arguments: argparse.Namespace, home: OrchHome) -> int:
    """Detach from the file's sweep the recorded runs it no longer plans: their rows, attempts and
    results stay (``orch runs`` lists them without that sweep), the sweep's views lose them."""
    from sqlalchemy import delete, select

    from orchestrator import output
    from orchestrator.registry.tables import sweep_runs, sweeps

    plan = read_sweep(arguments.file)
    engine = require_registry(home)
    with engine.begin() as connection:
        _check_sweep_known(connection, plan.name, home)
        gone = no_longer_in_file(connection, plan)
        sweep_id = select(sweeps.c.id).where(sweeps.c.name == plan.name).scalar_subquery()
        for chunk in in_chunks(gone):
            connection.execute(
                delete(sweep_runs).where(sweep_runs.c.sweep_id == sweep_id, sweep_runs.c.run_id.in_(chunk))
            )
    if arguments.json:
        output.print_json({"sweep": plan.name, "detached": gone})
    else:
        print(
            f"sweep {plan.name}: detached {len(gone)} runs no longer in {arguments.file}"
            + (f" ({', '.join(gone[:10])}{' ...' if len(gone) > 10 else ''})" if gone else "")
        )
    return 0


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """One planned run as ``orch plan`` lists it: its state in the registry (NEW if not recorded)
    and the resources it would be submitted with."""

    id: str
    state: str
    swept: dict[str, Any]
    estimate_seconds: Optional[float]
    partition: Optional[str]
    time: Optional[str]
    segments: int
    gpus: int
    pack: int  # runs per array task (one GPU)
    pack_offered: Optional[int]  # what fits one GPU by the peak memory of similar completed runs

    @classmethod
    def of(cls, item: Scheduled, state: str) -> PlanRow:
        resources = item.run.spec.resources
        return cls(
            item.run.run_id,
            state,
            item.run.swept,
            item.estimate_seconds,
            resources.partition,
            resources.time,
            resources.segments,
            resources.gpus,
            resources.pack,
            item.pack_offered,
        )


def cmd_submit(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import submit as submission
    from orchestrator.analyze import check_out_folder
    from orchestrator.registry.engine import open_registry
    from orchestrator.stages import stage_request

    plan = read_sweep(arguments.file)  # validated before the registry is touched
    for index, command in enumerate(arguments.then):
        stage_request(command, "the command line", f"--then[{index}]")
    plan = dataclasses.replace(plan, then=(*plan.then, *arguments.then))
    for command in plan.then:  # where the stages would write
        try:
            check_out_folder(stage_request(command, str(arguments.file), "then").out, home)
        except UserError as problem:
            raise UserError(f"then {command!r}: {problem}") from None
    require_home_folder(home)
    engine = open_registry(home)
    choices = _submit_choices(arguments)
    if arguments.smoke:
        report = submission.submit_smoke_tested(engine, home, plan, choices)
    else:
        report = submission.submit_sweep(engine, home, plan, choices)
    return _report_submission(arguments, engine, home, report, f"sweep {plan.name}")


def cmd_resume(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import submit as submission
    from orchestrator.stages import resume_stages

    engine = require_registry(home)
    report = submission.resume(engine, home, arguments.targets, _submit_choices(arguments))
    resume_stages(engine, arguments.targets)
    return _report_submission(arguments, engine, home, report, "resume")


def _report_submission(
    arguments: argparse.Namespace,
    engine: Engine,
    home: OrchHome,
    report: submission.SubmissionReport,
    label: str,
) -> int:
    from collections import Counter

    from orchestrator import output
    from orchestrator.registry.tables import RunState
    from orchestrator.wait import wait_for_runs

    payload: dict[str, Any] = {
        "submitted": report.submitted,
        "skipped": report.skipped,
        "waiting_for_slot": report.waiting,
        "refusals": report.refusals,
        "smoke": report.smoke,
    }
    if not arguments.json:
        if report.smoke:
            print(
                f"{label}: smoke test of {len(report.smoke)} configurations submitted; the runs start when "
                "all of them passed"
            )
        skipped = ", ".join(
            f"{count} {state.lower()}" for state, count in Counter(report.skipped.values()).items()
        )
        print(
            f"{label}: submitted {len(report.submitted)} runs" + (f"; skipped {skipped}" if skipped else "")
        )
        if report.waiting and report.smoke:
            print(f"{len(report.waiting)} runs wait for the smoke test; orch status shows how it goes")
        elif report.waiting:
            print(_waiting_words(len(report.waiting), report.refusals))
    exit_code = 0
    if arguments.wait and (report.submitted or report.waiting or report.smoke):
        final = wait_for_runs(
            engine,
            report.smoke + report.submitted + report.waiting,
            show_progress=not arguments.json,
            synchronize=lambda: _sync_and_feed(engine, home),
        )
        payload["final_states"] = final.states
        if not arguments.json:
            print(f"{label}: {final.summary()}")
        if any(state != RunState.COMPLETED for state in final.states.values()):
            exit_code = SOME_RUNS_FAILED_EXIT
    if arguments.json:
        output.print_json(payload)
    return exit_code


def cmd_status(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import output
    from orchestrator.registry.engine import open_registry_if_exists

    engine = open_registry_if_exists(home)
    if not arguments.watch:
        views = _status(engine, arguments.sweep, home)
        output.print_json(views) if arguments.json else output.console().print(*_status_tables(views, home))
        return 0
    import time

    from rich.console import Group
    from rich.live import Live

    from orchestrator.executors import poll_seconds

    with Live(auto_refresh=False, console=output.console()) as live:
        while True:
            views = _status(engine, arguments.sweep, home)
            live.update(Group(*_status_tables(views, home)), refresh=True)
            if not any(view.active for view in views):
                break
            executors = [item.executor for view in views for item in view.active if item.executor]
            time.sleep(poll_seconds(executors))
    if arguments.json:
        output.print_json(views)
    return 0


def _status(engine: Optional[Engine], sweep_name: Optional[str], home: OrchHome) -> list[SweepStatus]:
    from orchestrator.status import status_view

    with _synced_reader(engine, sweep_name, home) as connection:
        return status_view(connection, sweep_name) if connection is not None else []


@contextlib.contextmanager
def _synced_reader(
    engine: Optional[Engine], sweep_name: Optional[str], home: OrchHome
) -> Iterator[Optional[Connection]]:
    """What a reading command reads from: the registry after a sync, with the sweep named on the
    command line known to it (:func:`_check_sweep_known`); None where there is no registry yet."""
    if engine is None:
        _check_sweep_known(None, sweep_name, home)
        yield None
        return
    _sync_and_feed(engine, home)
    with engine.connect() as connection:
        _check_sweep_known(connection, sweep_name, home)
        yield connection


def _check_sweep_known(connection: Optional[Connection], sweep_name: Optional[str], home: OrchHome) -> None:
    """A sweep named on the command line that the registry does not hold is bad input, with the
    names it does hold: not an empty answer."""
    from sqlalchemy import select

    from orchestrator.errors import bounded_list
    from orchestrator.registry.tables import sweeps

    if not sweep_name:
        return
    names = (
        list(connection.execute(select(sweeps.c.name).order_by(sweeps.c.name)).scalars())
        if connection is not None
        else []
    )
    if sweep_name not in names:
        accepted = (
            bounded_list(names, MAX_NAMES_CHARS)
            if names
            else "none: no sweep is recorded yet (orch submit FILE records one)"
        )
        raise UserError(
            f"no sweep named {shown(sweep_name)} in registry {_registry_of(home)}; accepted: {accepted}"
        )


def _status_tables(views: list[SweepStatus], home: OrchHome) -> list[Any]:
    from orchestrator import output
    from orchestrator.registry.tables import RunState

    if not views:
        return [f"no sweeps recorded yet in registry {_registry_of(home)} (orch submit FILE records one)"]
    states = [state for state in RunState.ALL if any(state in view.counts for view in views)]
    waiting = any(view.waiting_for_slot for view in views)  # a column only where some wait
    summary = output.table(
        "runs per state",
        ["sweep", "runs", *[s.lower() for s in states], *(["waiting for a submit slot"] if waiting else [])],
        [
            [
                view.sweep,
                view.runs,
                *[view.counts.get(state, 0) for state in states],
                *([view.waiting_for_slot] if waiting else []),
            ]
            for view in views
        ],
    )
    active_rows = [
        [
            view.sweep,
            item.run,
            item.state,
            f"{item.step}/{item.total_steps}",
            output.format_duration(item.eta_seconds),
            item.job_id,
            item.node,
            item.reason,
        ]
        for view in views
        for item in view.active
    ]
    parts: list[Any] = [summary]
    if active_rows:
        parts.append(
            output.table(
                "active runs", ["sweep", "run", "state", "step", "eta", "job", "node", "reason"], active_rows
            )
        )
    stage_rows = [
        [view.sweep, stage.command, stage.state, ", ".join(stage.job_ids), stage.after_jobs, stage.reason]
        for view in views
        for stage in view.stages
    ]
    if stage_rows:
        parts.append(
            output.table(
                "stages after sweeps", ["sweep", "then", "state", "jobs", "after", "reason"], stage_rows
            )
        )
    failures = [failure for view in views for failure in view.smoke_failures]
    if failures:
        parts.append(_smoke_failures_text(failures))
    return parts


def _smoke_failures_text(failures: Sequence[Any]) -> Any:
    """Each failed smoke run: what failed, how to reproduce it, its traceback's tail."""
    from rich.text import Text

    from orchestrator.smoke import failure_words

    lines = [
        line
        for failure in failures
        for line in (failure_words(failure), *(f"  {tail}" for tail in failure.traceback_tail))
    ]
    return Text("\n".join(lines))


def cmd_usage(arguments: argparse.Namespace, home: OrchHome) -> int:
    from collections import Counter

    from orchestrator import output
    from orchestrator.errors import bounded_list
    from orchestrator.registry.engine import open_registry_if_exists
    from orchestrator.usage import BUILT_IN_GROUPS, attempt_rows, attempt_usage, grouped, total
    from orchestrator.views import spec_keys

    if arguments.by not in BUILT_IN_GROUPS and arguments.by not in spec_keys().plain:
        accepted = bounded_list([*BUILT_IN_GROUPS, *spec_keys().plain], MAX_NAMES_CHARS)
        raise UserError(f"--by {shown(arguments.by)}: not a group; accepted: {accepted}")
    with _synced_reader(open_registry_if_exists(home), arguments.sweep, home) as connection:
        rows = attempt_rows(connection, arguments.sweep) if connection is not None else []
    usages = attempt_usage(rows, _accounting(rows))
    groups, whole = grouped(rows, usages, arguments.by), total(usages)
    payload = {
        "by": arguments.by,
        "groups": [group.as_json() for group in groups],
        "total": whole.as_json(),
        "sources": dict(Counter(usage.source for usage in usages)),
    }
    if arguments.json:
        output.print_json(payload)
        return 0
    columns = ["attempts", "gpu_hours", "cpu_hours", "failed_share", "requeued_share", "mean_queue_wait_s"]
    table_rows = [
        [row["group"], *[row[column] for column in columns]] for row in [*payload["groups"], payload["total"]]
    ]
    title = f"usage by {arguments.by}" + (f" of sweep {arguments.sweep}" if arguments.sweep else "")
    output.console().print(output.table(title, [arguments.by, *columns], table_rows))
    return 0


def _accounting(rows: Sequence[Any]) -> dict[str, Any]:
    """sacct's runs of the Slurm jobs among ``rows`` (nothing when Slurm does not answer: the
    registry's times stand in, and ``sources`` says so)."""
    job_ids = [row.job_id for row in rows if row.executor == "slurm" and row.job_id]
    if not job_ids:
        return {}
    from orchestrator.executors.slurm import SlurmError, run_slurm
    from orchestrator.usage import sacct_job_runs

    try:
        return sacct_job_runs(run_slurm, job_ids)
    except SlurmError:
        return {}


def cmd_runs(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import output
    from orchestrator.registry.engine import open_registry_if_exists
    from orchestrator.views import RunSelection, run_rows

    rows: list[RunRow] = []
    with (
        _synced_reader(open_registry_if_exists(home), arguments.sweep, home) as connection,
        collector_paused(),
    ):
        if connection is not None:  # read whole before printing: a slow reader must not hold the registry
            rows = list(
                run_rows(connection, RunSelection(arguments.sweep, arguments.state, tuple(arguments.where)))
            )
    if arguments.json:
        output.write_json_list(rows, sys.stdout, sort_keys=True)
        return 0
    if not rows:
        print(f"no runs{_selection_words(arguments)} in registry {_registry_of(home)}")
        return 0
    swept_names, swept_cells = output.swept_columns([row.swept for row in rows])
    table_rows = [
        [r.id, ",".join(r.sweeps), r.state, f"{r.step}/{r.total_steps}", r.attempts, *cells]
        for r, cells in zip(rows, swept_cells)
    ]
    output.console().print(
        output.table(
            f"{len(rows)} runs", ["run", "sweeps", "state", "step", "attempts", *swept_names], table_rows
        )
    )
    return 0


def _selection_words(arguments: argparse.Namespace) -> str:
    """`` of sweep S, in state X, where k=v`` for what ``runs``/``export`` were asked to select."""
    words = [f" of sweep {arguments.sweep}"] if arguments.sweep else []
    words += [f" in state {arguments.state}"] if arguments.state else []
    words += [" where " + " and ".join(clause.text for clause in arguments.where)] if arguments.where else []
    return ",".join(words)


def _registry_of(home: OrchHome) -> str:
    from orchestrator.registry.engine import registry_of

    return registry_of(home)


def cmd_show(arguments: argparse.Namespace, home: OrchHome) -> int:
    import yaml
    from sqlalchemy.orm import Session

    from orchestrator import output
    from orchestrator import submit as submission
    from orchestrator.sync import sync
    from orchestrator.views import show_view

    engine = require_registry(home)
    sync(engine)
    with Session(engine) as session:
        view = show_view(session, submission.find_run(session, arguments.run))
    if arguments.json:
        output.print_json(view)
        return 0
    console = output.console()
    console.print(
        f"run {view.id}  state {view.state}  step {view.step}/{view.total_steps}  "
        f"sweeps {', '.join(view.sweeps)}"
    )
    console.print(f"folder {view.run_dir}")
    console.print(yaml.safe_dump(view.spec, sort_keys=False).rstrip())
    attempt_columns = [
        "number",
        "executor",
        "job_id",
        "array_task",
        "hostname",
        "state",
        "exit_code",
        "start_step",
        "end_step",
    ]
    times = [
        [
            output.format_time(a.submitted_time),
            output.format_time(a.started_time),
            output.format_time(a.ended_time),
            output.format_duration(a.queue_wait_s),
            output.format_duration(a.elapsed_s),
            a.reason,
        ]
        for a in view.attempts
    ]
    columns = [*attempt_columns, "submitted", "started", "ended", "queue wait", "elapsed", "reason"]
    console.print(
        output.table(
            "attempts",
            columns,
            [[getattr(a, c) for c in attempt_columns] + when for a, when in zip(view.attempts, times)],
        )
    )
    requeues = [
        [a.number, output.format_time(r.time), r.cause, r.node, r.step, r.source]
        for a in view.attempts
        for r in a.requeue_history
    ]
    if requeues:
        console.print(
            output.table("requeues", ["attempt", "time", "cause", "node", "step", "from"], requeues)
        )
    console.print(
        output.table(
            "checkpoints",
            ["step", "path", "bytes"],
            [[c.step, c.path, c.bytes] for c in view.checkpoints],
        )
    )
    console.print(f"shards: {len(view.shards)}")
    metric_rows = [
        [name, m.count, m.last_step, m.last, m.min, m.max] for name, m in sorted(view.metrics.items())
    ]
    console.print(output.table("metrics", ["name", "points", "last step", "last", "min", "max"], metric_rows))
    return 0


def cmd_shards(arguments: argparse.Namespace, home: OrchHome) -> int:
    from sqlalchemy.orm import Session

    from orchestrator import output
    from orchestrator import submit as submission
    from orchestrator.sync import sync
    from orchestrator.views import shard_row

    engine = require_registry(home)
    sync(engine)
    with Session(engine) as session:
        run = submission.find_run(session, arguments.run)
        rows = [
            shard_row(shard)
            for shard in run.shards
            if (arguments.probe is None or shard.probe == arguments.probe)
            and (arguments.start is None or shard.step >= arguments.start)
            and (arguments.stop is None or shard.step < arguments.stop)
        ]
    if arguments.json:
        output.print_json({"run": run.id, "shards": rows})
    else:
        columns = ["probe", "step", "path", "bytes", "sha256"]
        output.console().print(
            output.table(
                f"run {run.id}: {len(rows)} shards",
                columns,
                [[getattr(row, c) for c in columns] for row in rows],
            )
        )
    return 0


def cmd_logs(arguments: argparse.Namespace, home: OrchHome) -> int:
    from sqlalchemy.orm import Session

    from orchestrator import output
    from orchestrator import submit as submission

    if arguments.tail is not None and arguments.tail < 0:
        raise UserError(f"--tail {arguments.tail}: a negative number of lines; accepted: an integer >= 0")
    engine = require_registry(home)
    with Session(engine) as session:
        run = submission.find_run(session, arguments.run)
        attempt = _pick_attempt(run, arguments.attempt)
        stream = "stderr" if arguments.stderr else "stdout"
        path = attempt.stderr_path if arguments.stderr else attempt.stdout_path
        label = f"run {run.id} attempt {attempt.number}"
    if not path:
        raise UserError(
            f"{label} ({attempt.executor} executor) has no {stream} file: a debug attempt prints to "
            "the terminal that submitted it"
        )
    if not Path(path).is_file():
        raise UserError(
            f"{label}: {stream} file {path} does not exist (yet); accepted: an attempt that has started"
        )
    lines = Path(path).read_text(errors="replace").splitlines()
    if arguments.tail is not None:
        lines = lines[-arguments.tail :] if arguments.tail > 0 else []
    if arguments.json:
        output.print_json(
            {"run": run.id, "attempt": attempt.number, "stream": stream, "path": path, "lines": lines}
        )
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _pick_attempt(run: Run, number: Optional[int]) -> Attempt:
    if not run.attempts:
        raise UserError(f"run {run.id} has no attempts yet; accepted: a run that was submitted")
    if number is None:
        return run.attempts[-1]
    for attempt in run.attempts:
        if attempt.number == number:
            return attempt
    raise UserError(f"run {run.id}: --attempt {number} does not exist; accepted: 1..{len(run.attempts)}")


def cmd_cancel(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import output
    from orchestrator import submit as submission

    cancelled = submission.cancel(require_registry(home), arguments.targets)
    output.print_json({"cancelled": cancelled}) if arguments.json else print(
        f"cancelled {len(cancelled)} runs"
    )
    return 0


def _sync_and_feed(
    engine: Optional[Engine], home: OrchHome, budget: Optional[SlotBudget] = None
) -> tuple[SyncReport, FeedReport]:
    """What every command that syncs does: ingest the journals and the scheduler's word, submit
    held-back runs into the slots that freed (orchestrator/feed.py), and send the notices that are
    due (orchestrator/notify.py); nothing without a registry."""
    from orchestrator.notify import notify
    from orchestrator.sync import FeedReport, SyncReport, any_gate_open, any_held_back, any_stage_open, sync

    if engine is None:
        return SyncReport(), FeedReport()
    synced = sync(engine)
    if any_gate_open(engine):
        from orchestrator.smoke import settle_gates

        settle_gates(engine)
    if any_held_back(engine):
        from orchestrator.feed import feed

        fed = feed(engine, home, budget)
    else:
        fed = FeedReport()
    if any_stage_open(engine):
        from orchestrator.stages import advance_stages

        advance_stages(engine, home)
    notify(engine)
    return synced, fed


def _waiting_words(waiting: int, refusals: Sequence[str]) -> str:
    refused = f" (the scheduler said: {refusals[-1]})" if refusals else ""
    return (
        f"{waiting} runs wait for a submit slot{refused}: the user's submit limits are reached; "
        "every orch status, sync or feed submits more as slots free (docs/cluster.md, Submit limits)"
    )


def cmd_sync(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import output
    from orchestrator.registry.engine import open_registry_if_exists

    engine = open_registry_if_exists(home)
    synced, fed = _sync_and_feed(engine, home)
    payload = {**vars(synced), "submitted": len(fed.launched), "waiting_for_slot": fed.waiting}
    if arguments.json:
        output.print_json(payload)
    else:
        print(", ".join(f"{key.replace('_', ' ')} {value}" for key, value in payload.items()))
    return 0


def _feed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reschedule",
        type=_positive_minutes,
        metavar="MINUTES",
        help="while runs still wait, submit this command again as a small Slurm job that starts MINUTES "
        "from now (sbatch --begin), for users who log out",
    )
    parser.add_argument("--partition", help="the feeder job's partition (default: Slurm's default)")


def _positive_minutes(text: str) -> int:
    try:
        minutes = int(text)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= 24 * 60:
        raise argparse.ArgumentTypeError(f"{shown(text)}: accepted: whole minutes from 1 to 1440")
    return minutes


def cmd_feed(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator import output
    from orchestrator.errors import one_paragraph
    from orchestrator.executors.slurm import SlurmError
    from orchestrator.feed import SlotBudget, pending_feeder, reschedule_feeder
    from orchestrator.registry.engine import open_registry_if_exists
    from orchestrator.sync import any_held_back

    engine = open_registry_if_exists(home)
    rescheduling = bool(arguments.reschedule) and engine is not None and any_held_back(engine)
    try:  # the feeder job is a job too: a slot is kept for it unless it waits in the queue already
        kept = {"slurm": 1} if rescheduling and pending_feeder(home) is None else {}
    except SlurmError as error:
        raise UserError(
            "--reschedule queues a Slurm job, and Slurm does not answer here "
            f"({one_paragraph(str(error), 300)}); accepted: --reschedule on a Slurm login node, or orch "
            "feed from cron"
        ) from None
    fed = _sync_and_feed(engine, home, SlotBudget(kept=kept))[1]
    feeder, feeder_refused = None, None
    if rescheduling and fed.waiting:
        try:
            feeder = reschedule_feeder(home, arguments.reschedule, arguments.partition)
        except SlurmError as error:
            feeder_refused = one_paragraph(str(error), 400)
    payload = {
        "submitted": len(fed.launched),
        "waiting_for_slot": fed.waiting,
        "refusals": fed.refusals,
        "feeder_job": feeder,
        "feeder_refused": feeder_refused,
    }
    if arguments.json:
        output.print_json(payload)
        return 0
    print(f"submitted {len(fed.launched)} runs; {fed.waiting} wait for a submit slot")
    if feeder:
        print(f"feeding again in {arguments.reschedule} minutes: Slurm job {feeder}")
    if feeder_refused:
        print(f"the feeder job could not be queued ({feeder_refused}); feed from cron, or again later")
    return 0


def cmd_export(arguments: argparse.Namespace, home: OrchHome) -> int:
    import io

    from orchestrator import output

    export_format = "json" if arguments.json else arguments.format
    to_stdout = arguments.out in (None, STDOUT_PATH)
    if export_format == "parquet" and to_stdout:
        raise UserError(
            "export --format parquet: --out FILE is required (parquet is binary); accepted: --out "
            "runs.parquet"
        )
    out = None if to_stdout else check_output_file("--out", arguments.out, protected_folders(home))
    write_text = output.write_json_rows if export_format == "json" else output.write_csv_rows
    with collector_paused():
        rows = _export_rows(home, arguments)
        if export_format == "parquet":
            replace_file(out, output.parquet_bytes(rows))  # type: ignore[arg-type]  # parquet has an --out
        elif out is None:
            write_text(rows, sys.stdout)
        else:
            text = io.StringIO()
            write_text(rows, text)
            replace_file(out, text.getvalue().encode())
    if out is not None:
        print(
            f"wrote {len(rows)} runs to {out}"
            + ("" if rows else f" (none{_selection_words(arguments)} in registry {_registry_of(home)})"),
            file=sys.stderr,
        )
    return 0


def _export_rows(home: OrchHome, arguments: argparse.Namespace) -> list[Any]:
    """The export rows of the selected runs (--sweep, --state, --where) after a sync, read whole
    before anything is written: a slow reader of orch's output must not keep the registry locked."""
    from orchestrator.registry.engine import open_registry_if_exists
    from orchestrator.views import RunSelection, export_rows

    with _synced_reader(open_registry_if_exists(home), arguments.sweep, home) as connection:
        return (
            export_rows(connection, RunSelection(arguments.sweep, arguments.state, tuple(arguments.where)))
            if connection is not None
            else []
        )


def protected_folders(home: OrchHome) -> list[Path]:
    """Folders whose contents orch owns, never a target of ``--out``: the home (registry, its journal,
    cache, default results), the registry where ``ORCH_DB_URL`` puts it, and the results folder of
    each cluster profile."""
    from orchestrator.profiles import load_profile, profile_names

    folders = [home.root, *registry_files(home)]
    for name in profile_names():
        try:
            folders.append(load_profile(name).results_path(home))
        except SpecError:  # a broken profile: the commands that use it report it
            continue
    return list(dict.fromkeys(folders))


def registry_files(home: OrchHome) -> list[Path]:
    """The SQLite registry file and its rollback journal (none for a database server)."""
    from orchestrator.registry.engine import registry_url, sqlite_file

    try:
        url = registry_url(home)
    except UserError:
        return []
    file = sqlite_file(url)
    return [] if file is None else [file, file.with_name(file.name + "-journal")]


def cmd_curves(arguments: argparse.Namespace, home: OrchHome) -> int:
    from jobs.analyses.curves import plot_training_curves
    from jobs.paths import RunPaths
    from orchestrator import output
    from orchestrator import submit as submission
    from orchestrator.launch import results_umask
    from orchestrator.views import metric_series_of, swept_values

    plots = []
    with submitted_runs(home, arguments.targets) as (session, runs):
        for run in runs:  # every figure's place is checked before the first is written
            assert run.run_dir is not None  # submitted_runs yields runs with a folder only
            check_figure_path(run, RunPaths(Path(run.run_dir)).curves_png)
        series_of = metric_series_of(session, [run.id for run in runs])
        for run in runs:
            assert run.run_dir is not None  # submitted_runs yields runs with a folder only
            title = f"run {run.id} ({run.state}) {swept_values(run)}"
            curves_png = RunPaths(Path(run.run_dir)).curves_png
            plots.append((series_of[run.id], title, curves_png, submission.profile_of(run)))
    written = []  # drawn with the registry closed: an open transaction holds off other commands
    for series, title, curves_png, profile in plots:
        with results_umask(profile):
            written.append(str(plot_training_curves(series, title, curves_png)))
    output.print_json({"written": written}) if arguments.json else print(
        "\n".join(written) or "no submitted runs"
    )
    return 0


def check_figure_path(run: Run, figure: Path) -> None:
    """A figure goes into its run's folder, which must still be there; an existing figure is replaced."""
    if not figure.parent.is_dir():
        raise UserError(
            f"run {run.id}: its folder {figure.parent} does not exist (moved or deleted?); accepted: "
            "runs whose folder is in place"
        )
    if os.path.lexists(figure) and not figure.is_file():
        raise UserError(
            f"run {run.id}: {figure} is {describe_kind(figure)}, not a regular file; accepted: a "
            "regular file or none (remove it)"
        )


@contextlib.contextmanager
def submitted_runs(home: OrchHome, targets: Sequence[str]) -> Iterator[tuple[Session, list[Run]]]:
    """The named runs that have a folder (were ever submitted), after a sync, in an open session."""
    from sqlalchemy.orm import Session

    from orchestrator import submit as submission
    from orchestrator.sync import sync

    engine = require_registry(home)
    sync(engine)
    with Session(engine) as session:
        yield (
            session,
            [run for run in submission.resolve_targets(session, targets) if run.run_dir is not None],
        )


def cmd_analyze(arguments: argparse.Namespace, home: OrchHome) -> int:
    import dataclasses

    from sqlalchemy.orm import Session

    from jobs.analyses import SWEEP_VIEWS
    from orchestrator import analyze
    from orchestrator.sync import sync

    fields = dataclasses.fields(analyze.AnalyzeRequest)
    request = analyze.AnalyzeRequest(**{field.name: getattr(arguments, field.name) for field in fields})
    analyze.check_out_folder(request.out, home)
    engine = require_registry(home)
    sync(engine)
    with Session(engine) as session:
        runs = analyze.selected_runs(session, request.targets, request.where)
        if request.figure in SWEEP_VIEWS:
            analyze.print_reports([analyze.analyze_sweep(session, runs, request, home)], [], arguments.json)
            return 0
        jobs = analyze.analysis_jobs(runs, request)
        profiles = [analyze.profile_of(run) for run in runs]
        if request.executor is not None:
            arrays = analyze.plan_arrays(session, runs, jobs, request.executor, home)
    # the session is closed before the analyses run or are waited for: an open transaction would
    # hold off every other orch command's (the registry's lock, on either backend)
    if request.executor is None:
        analyze.print_reports(analyze.run_in_process(jobs, profiles), [], arguments.json)
        return 0
    submission = analyze.submit_arrays(arrays, request.figure, request.executor)
    if not analyze.waits(request.executor, request.wait):
        return analyze.print_submission(submission, arguments.json)
    reports, failures = analyze.collect_reports(submission)
    return SOME_RUNS_FAILED_EXIT if analyze.print_reports(reports, failures, arguments.json) else 0


# -- orch serve ------------------------------------------------------------------------------------

SERVE_HOST = "127.0.0.1"  # this machine only: from elsewhere through an SSH tunnel
SERVE_PORT = 8765


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=SERVE_HOST,
        help=f"address to listen on (default: {SERVE_HOST}, this machine only; another prints a warning)",
    )
    parser.add_argument(
        "--port", type=port_number, default=SERVE_PORT, help=f"default: {SERVE_PORT}; 0: a free one (printed)"
    )


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{shown(text)}: accepted: a port number from 0 to 65535, e.g. 8765")
    return port


def cmd_serve(arguments: argparse.Namespace, home: OrchHome) -> int:
    from orchestrator.serve.server import serve

    serve(home, arguments.host, arguments.port)
    return 0


def cmd_data_fetch(arguments: argparse.Namespace, home: OrchHome) -> int:
    from jobs.data.vision import fetch
    from orchestrator import output

    root = check_output_folder("--root", arguments.root, protected_folders(home))
    try:
        files = fetch(arguments.name, str(root))
    except OSError as error:  # no network, no space, no permission
        raise UserError(
            f"could not fetch {arguments.name} into {arguments.root}: {error}; accepted: a writable "
            "folder on a machine with internet access"
        ) from None
    output.print_json(
        {"data_set": arguments.name, "files": list(map(str, files))}
    ) if arguments.json else print("\n".join(map(str, files)))
    return 0


def cmd_container_check(arguments: argparse.Namespace, home: OrchHome) -> int:
    import dataclasses

    from orchestrator import output
    from orchestrator.containers import check_container, report_lines
    from orchestrator.profiles import load_profile, profile_names

    if arguments.cluster not in profile_names():  # a name, not a path to some other YAML file
        raise UserError(
            f"--cluster {shown(arguments.cluster)}: no such cluster profile; accepted: "
            f"{', '.join(profile_names())}"
        )
    profile = load_profile(arguments.cluster)
    image = arguments.image or (
        Path(profile.container.image).expanduser() if profile.container.image else None
    )
    report = check_container(profile, image, home.image_digest_cache)
    if arguments.json:
        output.print_json(dataclasses.asdict(report))
    else:
        print("\n".join(report_lines(report, profile.name)))
    return 0 if not report.problems else CHECK_FAILED_EXIT


# -- helpers --------------------------------------------------------------------------------------


def read_sweep(file: Path) -> SweepPlan:
    from orchestrator.sweep import load_sweep

    if os.path.lexists(file) and not file.is_file():  # a folder, a device, a FIFO (reading it would block)
        raise SpecError(str(file), "(file)", "not a regular file", describe_kind(file), "a YAML sweep file")
    return load_sweep(file)


def require_home_folder(home: OrchHome) -> None:
    """The home is a folder, or can become one: nothing but folders on the way to it."""
    for folder in (home.root, *home.root.parents):
        if os.path.lexists(folder):
            if not folder.is_dir():
                raise UserError(
                    f"--home {home.root}: {folder} is {describe_kind(folder)}, not a folder; accepted: "
                    "a folder (or a path where one can be created)"
                )
            return


def require_registry(home: OrchHome) -> Engine:
    from orchestrator.registry.engine import open_registry_if_exists

    engine = open_registry_if_exists(home)
    if engine is None:
        raise UserError(
            f"no registry at {home.registry_file}; accepted: --home (or ORCH_HOME) of a registry "
            "created by orch submit"
        )
    return engine


def _known_states(session: Session, run_ids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    from orchestrator.registry.models import Run

    return {run.id: run.state for run in session.scalars(select(Run).where(Run.id.in_(run_ids)))}


if __name__ == "__main__":
    raise SystemExit(main())
