"""Paths the user names on the command line: what ``orch`` may write there, and writing it safely.

A file ``orch`` writes for the user (``export --out``) must be a regular file or not exist yet,
in a folder that exists, outside the orch home and the results folders. It is written beside its
final name by :func:`jobs.atomic.publish_bytes` (temporary file, fsync, rename, fsync of the
folder), so a reader never sees a torn file and a failure leaves neither a half-written file nor
a temporary one behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from orchestrator.errors import UserError


def describe_kind(path: Path) -> str:
    """What is at ``path`` in words ("a directory", "a FIFO"), without following a final symlink."""
    return describe_mode(os.lstat(path).st_mode)


def describe_mode(mode: int) -> str:
    """The kind of file of an ``st_mode`` in words ("a regular file", "a directory", "a FIFO")."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for is_kind, words in kinds if is_kind(mode)), "a special file")


def absolute(path: Path) -> Path:
    """``path`` made absolute without resolving symlinks (``..`` folded), so its own name is kept."""
    return Path(os.path.abspath(path))


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it, both with symlinks of their folders resolved."""
    real_path = path.parent.resolve() / path.name if path.name else path.resolve()
    return real_path == folder.resolve() or folder.resolve() in real_path.parents


def check_output_file(option: str, target: Path, protected: Sequence[Path]) -> Path:
    """The absolute path of ``target``, a file ``orch`` may replace; UserError if it may not.

    ``protected``: folders whose contents belong to orch (the home, results folders).
    """
    path = absolute(target)
    for owned in protected:
        if inside(path, owned):
            raise UserError(
                f"{option} {target}: inside {owned}, which orch owns (registry, cache, results); "
                "accepted: a path outside it"
            )
    if not path.parent.is_dir():
        raise UserError(
            f"{option} {target}: folder {path.parent} does not exist; accepted: a file in an existing "
            f"folder (create it first: mkdir -p {path.parent})"
        )
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise UserError(
            f"{option} {target}: {describe_kind(path)} is there, not a regular file; accepted: a new "
            "or regular file"
        )
    return path


def check_output_folder(
    option: str, target: Path, protected: Sequence[Path], allowed: Sequence[Path] = ()
) -> Path:
    """The absolute path of ``target``, a folder ``orch`` may write files into (created if it is
    missing, its parent is not); UserError if it may not. ``allowed``: folders inside
    ``protected`` that are fine all the same (a default output folder inside the home)."""
    path = absolute(target)
    for owned in protected:
        if inside(path, owned) and not any(inside(path, fine) for fine in allowed):
            accepted = "a folder outside it" + "".join(f", or {fine}" for fine in allowed)
            raise UserError(
                f"{option} {target}: inside {owned}, which orch owns (registry, cache, results); "
                f"accepted: {accepted}"
            )
    if not path.parent.is_dir():
        raise UserError(
            f"{option} {target}: folder {path.parent} does not exist; accepted: an existing folder or "
            "a new one in an existing folder"
        )
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(
            f"{option} {target}: {describe_kind(path)} is there, not a folder; accepted: a folder"
        )
    return path


def replace_file(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (:func:`jobs.atomic.publish_bytes`); the folder must
    exist (it is not created); on failure nothing is left and the error names ``path``."""
    from jobs.atomic import publish_bytes  # its thread pool stays out of orch's start-up

    publish_bytes(path, payload, create_parents=False)
