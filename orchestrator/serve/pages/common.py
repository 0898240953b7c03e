"""What the pages share: links, how values are written, and the two problems a request can have."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import MAX_MESSAGE_CHARS, one_paragraph


class NotFound(Exception):
    """The request names a sweep, run or file the registry does not hold (HTTP 404)."""


class BadRequest(Exception):
    """The request asks for something malformed (HTTP 400), e.g. a ``--where`` clause."""


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


def value_text(value: Any, digits: int = 6) -> str:
    """A value from a spec or a metric as one cell: numbers to ``digits`` significant digits,
    text as it is, lists and mappings as JSON, nothing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def usage_error(command: str, message: str) -> str:
    """A usage error as ``orch <command>`` prints it after ``error:`` (its parser bounds it to one
    paragraph: cli.BoundedParser)."""
    prog = f"orch {command}"
    return one_paragraph(message, MAX_MESSAGE_CHARS - len(prog) - 10)
