"""The dashboard's URLs, built in one place: every path part url-quoted (a sweep name or a
figure's file name never changes the path), every query url-encoded."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import quote, urlencode


def part(text: str) -> str:
    """One path segment: every character but unreserved ones quoted, ``/`` included."""
    return quote(text, safe="")


def sweeps_url() -> str:
    return "/"


def active_url() -> str:
    return "/active"


def sweep_url(name: str, query: Sequence[tuple[str, str]] = ()) -> str:
    return f"/sweeps/{part(name)}" + (f"?{urlencode(list(query))}" if query else "")


def run_url(run_id: str) -> str:
    return f"/runs/{part(run_id)}"


def file_url(run_id: str, relative: str) -> str:
    """A file of a run's folder (its figures), each segment of its relative path quoted."""
    return f"/runs/{part(run_id)}/files/" + "/".join(part(segment) for segment in relative.split("/"))


def compare_url(sweeps: Sequence[str], group_by: Sequence[str] = ()) -> str:
    query = [("sweep", name) for name in sweeps] + [("group_by", key) for key in group_by]
    return "/compare" + (f"?{urlencode(query)}" if query else "")
