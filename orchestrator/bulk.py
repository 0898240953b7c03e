"""Work on the rows of 10⁵ runs at once (planning, exports, queries)."""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator, Sequence, TypeVar

Item = TypeVar("Item")
IN_CHUNK = 500  # ids per IN (...) list: under every database's limit on bound parameters (SQLite's is 32 766)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while the objects of 10⁵ runs are built: they hold no
    cycles, and each of its passes would walk all of them again (it doubles the time of an export)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def in_chunks(items: Sequence[Item]) -> Iterator[Sequence[Item]]:
    """``items`` in consecutive slices of IN_CHUNK: the lists of one ``IN (...)`` each."""
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
