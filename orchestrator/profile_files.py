"""Where cluster profiles are: the shipped ones in ``configs/cluster/``, a user's own in the folders
of ``$ORCH_CLUSTERS`` or ``~/.config/orch/clusters/`` (``orchestrator/profiles.py`` parses them).
Imports nothing heavy: the commands that sync look for notification settings here first."""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator.home import CONFIGS_DIR

PROFILES_DIR = CONFIGS_DIR / "cluster"
USER_PROFILES_VARIABLE = "ORCH_CLUSTERS"
PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def user_profile_dirs() -> list[Path]:
    """The user's profile folders: ``$ORCH_CLUSTERS`` if set, else ``~/.config/orch/clusters``."""
    given = os.environ.get(USER_PROFILES_VARIABLE)
    if given is not None:
        return [Path(folder).expanduser() for folder in given.split(os.pathsep) if folder]
    return [Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / "orch" / "clusters"]


def profile_names() -> list[str]:
    folders = [*user_profile_dirs(), PROFILES_DIR]
    return sorted(
        {
            path.stem
            for folder in folders
            if folder.is_dir()
            for path in folder.glob("*.yaml")
            if PROFILE_NAME.fullmatch(path.stem)
        }
    )


def profile_files(name: str) -> list[Path]:
    """The files that make profile ``name``, merged in this order: the shipped one (if any), then
    the first user folder's that has it (if any)."""
    if not PROFILE_NAME.fullmatch(name):
        return []
    shipped = PROFILES_DIR / f"{name}.yaml"
    own = next(
        (folder / f"{name}.yaml" for folder in user_profile_dirs() if (folder / f"{name}.yaml").is_file()),
        None,
    )
    return [path for path in (shipped, own) if path is not None and path.is_file()]
