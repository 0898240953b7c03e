"""Errors a user can act on. Each says what was wrong, where, and what would be accepted.

A message is one paragraph of bounded length: control characters (newlines included) are shown
escaped, and every part that can echo input is cut short, so a hostile or mistaken file can
neither fill the terminal nor move its cursor.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Sequence

BAD_INPUT_EXIT = 2
MAX_MESSAGE_CHARS = 960  # "orch: error: " and the newline keep a printed message within 1 000
MAX_PART_CHARS = 200  # of a file name, key, problem or found value inside a message
MAX_QUOTED_CHARS = 80  # of a value quoted inside a one-line command-line message


class UserError(Exception):
    """Bad input from the user (command line, sweep file, run id): exit status 2, nothing written."""

    def __str__(self) -> str:
        return one_paragraph(super().__str__(), MAX_MESSAGE_CHARS)


class SpecError(UserError):
    """A sweep or config file is invalid at ``key``."""

    def __init__(self, file: str, key: str, problem: str, found: Any, accepted: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.found = found
        self.accepted = accepted
        parts = [one_paragraph(str(part), MAX_PART_CHARS) for part in (file, key, problem)]
        super().__init__(
            f"{parts[0]}: {parts[1]}: {parts[2]}; found {shown(found, MAX_PART_CHARS)}; accepted: "
            f"{one_paragraph(accepted, MAX_MESSAGE_CHARS)}"
        )


def one_paragraph(text: str, limit: int) -> str:
    """``text`` on one line, control characters escaped (``\\n``, ``\\x1b``), at most ``limit`` characters."""
    escaped = "".join(_escaped(character) for character in text[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def _escaped(character: str) -> str:
    if unicodedata.category(character) in ("Cc", "Zl", "Zp"):
        return repr(character)[1:-1]
    return character


def shown(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``value`` quoted (its ``repr``) for a message: one line, at most ``limit`` characters."""
    return one_paragraph(repr(value), limit)


def bounded_list(items: Sequence[str], limit: int) -> str:
    """``items`` joined by commas, cut at an item so that at most ``limit`` characters are shown."""
    text = ", ".join(items)
    if len(text) <= limit:
        return text
    shown_items: list[str] = []
    for item in items:
        if len(", ".join([*shown_items, item])) > limit - 20:
            break
        shown_items.append(item)
    return f"{', '.join(shown_items)}, and {len(items) - len(shown_items)} more"
