"""Run ``orch`` in a real child process that SIGKILLs itself at a named point (``jobs/faults.py``).

Children come from a fork server that has imported the orchestrator and torch once, so a killed
command costs milliseconds to start, not the seconds of a fresh interpreter. The server itself
never computes anything (no thread pools exist when it forks), so its children train safely.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from jobs.faults import KILL_VARIABLE
from orchestrator.registry.engine import DB_URL_VARIABLE

PRELOAD = [
    "orchestrator.cli",
    "orchestrator.submit",
    "orchestrator.sync",
    "orchestrator.ingest",
    "orchestrator.status",
    "orchestrator.views",
    "orchestrator.registry.engine",
    "alembic.command",
    "jobs.train",
    "torch._dynamo",  # torch.optim imports it at a first optimizer: 1.5 s in every child that trains
    "jobs.catalog",
]
NEVER = "never:0"  # a kill point that is never reached: the child counts its passes and finishes
KILLED = -signal.SIGKILL


@dataclass(frozen=True)
class ChildResult:
    exit_code: int  # KILLED when the kill point was reached
    passes: dict[str, int]  # passes per point, for a child that was not killed


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def registry_environment(environment: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``environment`` with this process's ``ORCH_DB_URL`` ("" for none): the fork server's own
    environment is the one of the test that started it, which may have named another registry."""
    return {DB_URL_VARIABLE: os.environ.get(DB_URL_VARIABLE, ""), **(environment or {})}


def _child(argv: Sequence[str], kill_at: str, environment: dict[str, str], passes_file: str) -> None:
    from jobs import faults
    from orchestrator.cli import main

    os.environ.update(environment)
    os.environ[KILL_VARIABLE] = kill_at
    with open(os.devnull, "w") as quiet:
        os.dup2(quiet.fileno(), 1)
        os.dup2(quiet.fileno(), 2)
    exit_code = main(list(argv))
    Path(passes_file).write_text(json.dumps(faults.all_passes()))
    sys.stdout.flush()
    os._exit(exit_code)


def run_orch(
    home: Path,
    argv: Sequence[str],
    kill_at: str = NEVER,
    environment: Optional[dict[str, str]] = None,
    timeout: float = 300,
) -> ChildResult:
    """``orch --home HOME ARGV`` in a child process with ``ORCH_KILL_AT=kill_at``."""
    passes_file = home.parent / f".passes-{os.getpid()}-{abs(hash((str(home), kill_at, tuple(argv))))}.json"
    passes_file.unlink(missing_ok=True)
    process = _context().Process(
        target=_child,
        args=(
            ["--home", str(home), *map(str, argv)],
            kill_at,
            registry_environment(environment),
            str(passes_file),
        ),
    )
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        raise AssertionError(
            f"orch {' '.join(map(str, argv))} (kill at {kill_at}) still running after {timeout} s"
        )
    passes = json.loads(passes_file.read_text()) if passes_file.exists() else {}
    passes_file.unlink(missing_ok=True)
    return ChildResult(process.exitcode, passes)


def spread(count: int, points: int) -> list[int]:
    """``points`` distinct pass numbers spread evenly over 1..count, first and last included."""
    if count <= points:
        return list(range(1, count + 1))
    return sorted({1 + round(index * (count - 1) / (points - 1)) for index in range(points)})
