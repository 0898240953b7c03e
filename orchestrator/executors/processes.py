"""Process checks on this host (for the local and debug backends)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional


def process_alive(pid: Optional[int], command_fragment: str) -> bool:
    """Whether ``pid`` runs here with ``command_fragment`` in its command line (guards pid reuse)."""
    if not pid:
        return False
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if "\nState:\tZ" in status:
        return False  # a zombie has exited; its parent has not reaped it yet
    return command_fragment in command_line


def this_host(hostname: Optional[str]) -> bool:
    return hostname is None or hostname in (socket.gethostname(), os.uname().nodename)


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants on this host, parents first."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    tree, frontier = [], [root_pid]
    while frontier:
        pid = frontier.pop(0)
        tree.append(pid)
        frontier.extend(sorted(children.get(pid, [])))
    return tree


def processes_running(*fragments: str) -> list[int]:
    """Processes on this host whose command line holds every one of ``fragments``."""
    found = []
    for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command_line = cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if all(fragment in command_line for fragment in fragments):
            found.append(int(cmdline_file.parent.name))
    return sorted(found)


def submitter_alive(submitter: Optional[str]) -> bool:
    """Whether the orch process ``"<host>:<pid>"`` that submits an attempt still runs; True when it
    ran on another login node (this one cannot tell: the attempt's age decides there)."""
    host, _, pid = (submitter or "").rpartition(":")
    if not pid.isdigit():
        return False
    return not this_host(host) or process_alive(int(pid), "")
