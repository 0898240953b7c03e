"""Kill points: deterministic SIGKILLs for the kill tests (docs/reliability.md).

``ORCH_KILL_AT=<point>:<n>`` makes this process SIGKILL itself the ``n``-th time it passes the
named point, so a test can stop a command or a job in any window without sleeping and guessing.
Points: ``sql`` (before each statement on the registry, login node), ``commit`` (before each
commit of a registry transaction), ``publish`` (before each
atomic publication, both sides: a file left as ``.tmp-*`` or not at all), and named steps of
``orch submit``/``resume`` (``submit.committed``: attempts committed, scheduler not called;
``submit.scheduler``: before each array goes to the scheduler; ``submit.launched``: after, before
its job ids are recorded).

Unset (always, outside the tests) it costs one environment lookup per pass.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_VARIABLE = "ORCH_KILL_AT"

# Passes per point in this process: a test hook's counter, the only mutable module state.
_passes: Counter[str] = Counter()


def reached(point: str) -> None:
    """Count a pass through ``point``; SIGKILL this process if ``ORCH_KILL_AT`` names this pass."""
    wanted = os.environ.get(KILL_VARIABLE)
    if not wanted:
        return
    _passes[point] += 1
    name, _, count = wanted.rpartition(":")
    if name == point and count.isdigit() and _passes[point] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def passes(point: str) -> int:
    """How often ``point`` was passed in this process while ``ORCH_KILL_AT`` was set."""
    return _passes[point]


def all_passes() -> dict[str, int]:
    """Passes per point so far in this process (a copy)."""
    return dict(_passes)
