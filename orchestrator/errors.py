"""Errors a user can act on. Each says what was wrong, where, and what would be accepted."""

from __future__ import annotations

from typing import Any

BAD_INPUT_EXIT = 2


class UserError(Exception):
    """Bad input from the user (command line, sweep file, run id): exit status 2, nothing written."""


class SpecError(UserError):
    """A sweep or config file is invalid at ``key``."""

    def __init__(self, file: str, key: str, problem: str, found: Any, accepted: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.found = found
        self.accepted = accepted
        super().__init__(f"{file}: {key}: {problem}; found {_show(found)}; accepted: {accepted}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
