"""Reading the run folders for the dashboard: only reads, bounded in size, regular files only
(a FIFO or a device where a log belongs must not block a request), and only inside a run's
figures folder for what is served as a file."""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from jobs.journal import Heartbeat
from jobs.paths import AttemptPaths, RunPaths

TAIL_LINES = 50
TAIL_BYTES = 64 * 1024  # of a log read for its tail
HEARTBEAT_BYTES = 64 * 1024
MAX_FIGURE_FILES = 500  # listed per run
FIGURES_FOLDER = "figures"
# what the figure route serves, and as what: text as plain text, never as HTML
SERVED_TYPES = {
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".csv": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".json": "text/plain; charset=utf-8",
}
SHOWN_AS_IMAGE = (".png",)


@dataclass(frozen=True)
class LogTail:
    """The last lines of an attempt's stdout or stderr log."""

    stream: str  # stdout or stderr
    path: str
    lines: tuple[str, ...]
    problem: Optional[str]  # why nothing could be read (no file yet, not a regular file)
    cut: bool  # the file holds more than the lines shown


@dataclass(frozen=True)
class FigureFile:
    """A file an analysis (or ``orch curves``) wrote into a run's folder."""

    relative: str  # to the run folder, with "/" between parts
    size: int
    is_image: bool


def read_regular_file(path: Path, limit: int, from_end: bool = False) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the regular file at ``path`` (its last ones with ``from_end``) and
    whether it holds more. Opened non-blocking and checked before reading: a FIFO or a device is
    refused (``OSError(ENODEV)``), never waited on."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.ENODEV, "not a regular file", str(path))
        start = max(status.st_size - limit, 0) if from_end else 0
        os.lseek(descriptor, start, os.SEEK_SET)
        chunks = []
        remaining = limit
        while remaining > 0 and (chunk := os.read(descriptor, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), status.st_size > limit
    finally:
        os.close(descriptor)


def log_tail(stream: str, path: Optional[str], lines: int = TAIL_LINES) -> LogTail:
    """The last ``lines`` lines of a log (decoded with replacement); a problem instead where there
    is no log to read."""
    if not path:
        return LogTail(
            stream, "", (), "no log file: a debug attempt prints to the terminal that ran it", False
        )
    try:
        data, cut = read_regular_file(Path(path), TAIL_BYTES, from_end=True)
    except OSError as error:
        return LogTail(stream, path, (), error.strerror or type(error).__name__, False)
    text_lines = data.decode("utf-8", errors="replace").splitlines()
    if cut and text_lines:
        text_lines = text_lines[1:]  # the first line read may be the end of a longer one
    shown = tuple(text_lines[-lines:]) if lines > 0 else ()
    return LogTail(stream, path, shown, None, cut or len(text_lines) > len(shown))


def latest_heartbeat(journal_dir: str) -> Optional[Heartbeat]:
    """The heartbeat an attempt's job last published into its journal, as ``jobs.journal`` writes
    it; None where there is none yet or it cannot be read (the registry's step stands)."""
    try:
        data, cut = read_regular_file(AttemptPaths(Path(journal_dir)).heartbeat_file, HEARTBEAT_BYTES)
        if cut:
            return None
        fields = json.loads(data)
        return Heartbeat(**fields) if isinstance(fields, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def figure_files(run_dir: Optional[str]) -> tuple[FigureFile, ...]:
    """The files of the run's ``figures/`` folder that the figure route serves (by suffix), and
    its ``curves.png``: regular files inside the run folder only, by name."""
    if not run_dir:
        return ()
    root = Path(run_dir)
    candidates = [RunPaths(root).curves_png]
    figures = root / FIGURES_FOLDER
    if figures.is_dir():
        candidates += sorted(path for path in figures.rglob("*") if path.suffix.lower() in SERVED_TYPES)
    found = []
    for path in candidates[: MAX_FIGURE_FILES + 1]:
        contained = contained_file(root, path.relative_to(root).as_posix())
        if contained is not None:
            found.append(
                FigureFile(
                    path.relative_to(root).as_posix(),
                    contained.stat().st_size,
                    path.suffix.lower() in SHOWN_AS_IMAGE,
                )
            )
    return tuple(found)


def contained_file(run_dir: Path, relative: str) -> Optional[Path]:
    """The regular file ``relative`` names inside the run's ``figures/`` folder (or its
    ``curves.png``), resolved (links followed) and checked to lie there, with a served suffix;
    None for anything else: ``..``, an absolute path, a link out of the folder, a folder, a FIFO."""
    if "\x00" in relative or not relative:
        return None
    try:
        root = run_dir.resolve(strict=True)
        target = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    allowed = target == root / RunPaths(root).curves_png.name or target.is_relative_to(root / FIGURES_FOLDER)
    if not allowed or target.suffix.lower() not in SERVED_TYPES:
        return None
    try:
        return target if stat.S_ISREG(target.stat().st_mode) else None
    except OSError:
        return None
