"""The points of a sweep's expansion: axes (grid keys, the union of grids, zip groups, seeds),
their cartesian product one point at a time, and where each key of a point was set."""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

SEED_KEY = "training.seed"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()  # a key that one alternative of ``grids`` does not set


@dataclass(frozen=True)
class Axis:
    """One expansion operator: the dotted keys it sets together and its points."""

    label: str  # where it stands in the sweep file: "grid.optimizer.lr", "zip", "seeds", "grids"
    keys: tuple[str, ...]
    points: Sequence[tuple[Any, ...]]  # a value per key, or UNSET; seeds and grids compute theirs on access
    size: int  # the number of points, known before any point is built

    def origin(self, point_index: int, key: str) -> str:
        if isinstance(self.points, GridUnion):
            return f"{self.points.label_of(point_index)}.{key}"
        return self.label if len(self.keys) == 1 else f"{self.label}.{key}"


class SeedCount(SequenceABC):
    """The points (0,), (1,), … of ``seeds: n``, none of them stored."""

    def __init__(self, count: int) -> None:
        self.size = count

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int]:  # type: ignore[override]  # ints only, never sliced
        if not 0 <= index < self.size:
            raise IndexError(index)
        return (index,)


class GridUnion(SequenceABC):
    """The points of ``grids:``: each alternative's cartesian product in turn (the last key varies
    fastest, as in ``itertools.product``), computed on access; a key an alternative leaves out is UNSET."""

    def __init__(self, alternatives: list[list[Axis]]) -> None:
        self.alternatives = alternatives
        self.keys = tuple(dict.fromkeys(axis.keys[0] for grid in alternatives for axis in grid))
        self.starts = list(
            itertools.accumulate((math.prod(axis.size for axis in grid) for grid in alternatives), initial=0)
        )

    def __len__(self) -> int:
        return self.starts[-1]

    def alternative_of(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def label_of(self, index: int) -> str:
        return f"grids[{self.alternative_of(index)}]"

    def __getitem__(self, index: int) -> tuple[Any, ...]:  # type: ignore[override]  # ints only, never sliced
        if not 0 <= index < self.starts[-1]:
            raise IndexError(index)
        alternative = self.alternative_of(index)
        values = dict(
            zip(
                [axis.keys[0] for axis in self.alternatives[alternative]],
                _mixed_radix(index - self.starts[alternative], self.alternatives[alternative]),
            )
        )
        return tuple(values[key][0] if key in values else UNSET for key in self.keys)


def _mixed_radix(number: int, axes: Sequence[Axis]) -> list[tuple[Any, ...]]:
    """The point of each axis at position ``number`` of their cartesian product (last axis fastest)."""
    points: list[tuple[Any, ...]] = []
    for axis in reversed(axes):
        number, position = divmod(number, axis.size)
        points.append(axis.points[position])
    return points[::-1]


class Origins:
    """Which file (and key in it) last set each dotted key, for error messages."""

    def __init__(self, default_file: str) -> None:
        self.default_file = default_file
        self._where: dict[str, tuple[str, str]] = {}

    def add(self, fragment: Mapping[str, Any], file: str, prefix: str, key_prefix: str = "") -> None:
        for key, value in fragment.items():
            dotted = f"{key_prefix}{key}"
            self._where[dotted] = (file, f"{prefix}{dotted}")
            if isinstance(value, Mapping):
                self.add(value, file, prefix, dotted + ".")

    def with_point(self, point: Sequence[tuple[Axis, int]]) -> Origins:
        """A copy that knows which sweep entry set each key of one point of the expansion."""
        copy = Origins(self.default_file)
        copy._where = dict(self._where)
        for axis, index in point:
            for key, value in zip(axis.keys, axis.points[index]):
                if value is not UNSET:
                    copy._where[key] = (self.default_file, axis.origin(index, key))
        return copy

    def of(self, dotted_key: str) -> tuple[str, str]:
        """The file and key that set ``dotted_key`` or the nearest enclosing key (``probes[0].every``
        set by a list at ``base.probes`` → ``base.probes[0].every``)."""
        key = dotted_key
        while key:
            if key in self._where:
                file, origin_key = self._where[key]
                return file, origin_key + dotted_key[len(key) :]
            key = re.sub(r"(\[\d+\]|\.?[^.\[]+)$", "", key)
        return self.default_file, dotted_key


def run_count(axes: Sequence[Axis]) -> int:
    return math.prod(axis.size for axis in axes)


def point_indices(axes: Sequence[Axis]) -> Iterator[tuple[int, ...]]:
    """Every point of the expansion, one at a time, as the index of its point on each axis (the
    last axis varies fastest)."""
    return itertools.product(*(range(axis.size) for axis in axes))


def expansion_points(axes: Sequence[Axis]) -> Iterator[tuple[tuple[Axis, int], ...]]:
    """Every point of the expansion as (axis, index of its point) per axis."""
    for indices in point_indices(axes):
        yield tuple(zip(axes, indices))
