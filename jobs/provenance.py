"""Where an attempt's results came from: source version, library versions, machine."""

from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

from jobs.journal import Provenance

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def collect_provenance(device: torch.device) -> Provenance:
    return Provenance(
        git_commit=_git(["rev-parse", "HEAD"]),
        git_diff_sha256=_diff_sha256(),
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=_version("torchvision"),
        submitit=_version("submitit"),
        numpy=_version("numpy"),
        hostname=socket.gethostname(),
        device=_device_name(device),
    )


def _git(arguments: list[str]) -> Optional[str]:
    try:
        completed = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *arguments],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # not a checkout (an installed copy), or no git inside the container
    return completed.stdout.strip()


def _diff_sha256() -> Optional[str]:
    diff = _git(["diff", "HEAD", "--", "."])
    return hashlib.sha256(diff.encode()).hexdigest() if diff else None


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {sys.platform})"
