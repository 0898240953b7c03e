"""Sweep files: load, validate, expand into runs. Nothing here writes anything.

A sweep file (the reference: docs/sweeps.md)::

    name: demo                       # [A-Za-z0-9_.-], names the sweep in the registry
    include: [problems/digits_mlp.yaml]   # run-spec fragments, relative to this file or configs/
    base: {training: {steps: 300}}   # run-spec fragment applied after the includes
    grid: {optimizer.lr: [0.3, 0.1]} # cartesian product over dotted keys
    grids:                           # union of several grids (one per optimizer, say); a key an
      - {optimizer.name: [sgd], optimizer.lr: [0.1, 0.01]}   # alternative leaves out keeps the
      - {optimizer.name: [pal], optimizer.measuring_step: [1, 0.1]}  # value of base/includes
    zip: {a.b: [1, 2], c.d: [3, 4]}  # parallel lists of equal length (or a list of such groups)
    seeds: 2                         # training.seed over range(2), or an explicit list
    max_runs: 400000                 # refuse sweeps of more runs (default 250 000, at most 10 000 000)

The runs are the cartesian product of grid × (union of grids) × zip × seeds. Their number is
computed from the lengths of the lists before any point exists, and a sweep of more than
``max_runs`` runs is refused (``max_runs`` itself may not exceed MAX_RUNS_CEILING, 10 000 000);
the points are then generated one at a time.

Values may interpolate other fields of the run spec (``${training.steps}``, ``${..steps}``), but
no resolver (``${oc.env:NAME}``, ``${oc.decode:...}``, any ``${name:...}``) is allowed in any
value of the sweep file or its includes: resolvers read the environment or build values, so a
sweep could copy a secret into a run's spec or an error message.

Files are read only when they are regular files of at most 1 MiB of UTF-8 text without NUL bytes
or control characters (a directory, FIFO or device is refused before it is opened). Their YAML may
nest at most 32 levels and hold at most 10 000 nodes with aliases expanded; every key is a string.
An include must lie, after symlinks are resolved, under the sweep file's folder or ``configs/``.

Every problem raises :class:`SpecError` naming the file, the dotted key, what was found and what
is accepted.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import re
import typing
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from jobs.spec import RunSpec, line_memory_bytes, value_problem, violations
from orchestrator.errors import SpecError
from orchestrator.fingerprint import run_id
from orchestrator.home import CONFIGS_DIR
from orchestrator.profiles import load_profile, profile_names
from orchestrator.resources import ResourceProblem, node_memory, resolve_resources
from orchestrator.sweep_files import check_no_resolvers, parse_yaml_mapping, read_text

TOP_LEVEL_KEYS = ("name", "description", "include", "base", "grid", "grids", "zip", "seeds", "max_runs")
SWEEP_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
SEED_KEY = "training.seed"
SWEEP_DOCS = "docs/sweeps.md"
DEFAULT_MAX_RUNS = 250_000
MAX_RUNS_CEILING = 10_000_000  # max_runs may not switch the guard off
MAX_PATH_CHARS = 1024


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
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int]:  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        return (index,)


class GridUnion(SequenceABC):
    """The points of ``grids:``: each alternative's cartesian product in turn (the last key varies
    fastest, as in ``itertools.product``), computed on access; a key an alternative leaves out is UNSET."""

    def __init__(self, alternatives: list[list[Axis]]) -> None:
        self.alternatives = alternatives
        self.keys = tuple(dict.fromkeys(axis.keys[0] for grid in alternatives for axis in grid))
        self.starts = list(itertools.accumulate((math.prod(axis.size for axis in grid) for grid in alternatives), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def alternative_of(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def label_of(self, index: int) -> str:
        return f"grids[{self.alternative_of(index)}]"

    def __getitem__(self, index: int) -> tuple[Any, ...]:  # type: ignore[override]
        if not 0 <= index < self.starts[-1]:
            raise IndexError(index)
        alternative = self.alternative_of(index)
        values = dict(zip([axis.keys[0] for axis in self.alternatives[alternative]], _mixed_radix(index - self.starts[alternative], self.alternatives[alternative])))
        return tuple(values[key][0] if key in values else UNSET for key in self.keys)


def _mixed_radix(number: int, axes: Sequence[Axis]) -> list[tuple[Any, ...]]:
    """The point of each axis at position ``number`` of their cartesian product (last axis fastest)."""
    points: list[tuple[Any, ...]] = []
    for axis in reversed(axes):
        number, position = divmod(number, axis.size)
        points.append(axis.points[position])
    return points[::-1]


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    spec: RunSpec  # resources resolved against the cluster profile
    swept: dict[str, Any]  # dotted key -> value this run takes on each axis
    time_was_given: bool  # resources.time came from the sweep (else an estimate may choose it)


@dataclass(frozen=True)
class SweepPlan:
    name: str
    description: str
    source_path: Path
    source_text: str
    runs: list[PlannedRun]


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


def load_sweep(path: Path, known_names: Mapping[str, Sequence[str]]) -> SweepPlan:
    file = str(path)
    text = read_text(path, file, "(file)")
    document = parse_yaml_mapping(text, file)
    check_no_resolvers(file, document, "")
    _check_top_level(file, document)
    name = _sweep_name(file, document)
    description = _description(file, document)
    axes = sweep_axes(file, document)
    _check_swept_once(file, axes)
    check_run_count(file, axes, run_limit(file, document))
    origins = Origins(file)
    base_config = OmegaConf.structured(RunSpec)
    for index, include_path in enumerate(_include_paths(file, path.parent, document.get("include", []))):
        fragment = parse_yaml_mapping(read_text(include_path, file, f"include[{index}]"), str(include_path))
        check_no_resolvers(str(include_path), fragment, "")
        base_config = merge_fragment(base_config, fragment, str(include_path), "")
        origins.add(fragment, str(include_path), "")
    base = document.get("base") or {}
    if not isinstance(base, Mapping):
        raise SpecError(file, "base", "base must be a run-spec mapping", base, "a mapping such as {training: {steps: 100}}")
    base_config = merge_fragment(base_config, base, file, "base.")
    origins.add(base, file, "base.")
    _check_values(file, _value_axes(axes), base_config)
    runs = [_resolve_run(base_config, point, origins.with_point(point), known_names) for point in expansion_points(axes)]
    _check_unique(file, runs)
    return SweepPlan(name, description, path, text, runs)



def merge_fragment(config: DictConfig, fragment: Mapping[str, Any], file: str, prefix: str) -> DictConfig:
    """``config`` with a run-spec fragment merged in, type-checked against the schema."""
    try:
        return OmegaConf.merge(config, OmegaConf.create(dict(fragment)))  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise _schema_error(error, file, prefix, fragment) from None


def _schema_error(error: OmegaConfBaseException, file: str, prefix: str, fragment: Any) -> SpecError:
    key = _key_in_fragment(str(getattr(error, "full_key", "") or ""), fragment)
    if isinstance(error, ConfigKeyError):
        parent, _, leaf = key.rpartition(".")
        accepted = accepted_keys(parent)
        return SpecError(file, prefix + key, "unknown key", leaf, ", ".join(accepted))
    found = _value_at(fragment, key)
    return SpecError(file, prefix + key if key else prefix.rstrip(".") or "(file)", "wrong type", found, expected_type(key))


def _key_in_fragment(key: str, fragment: Any, path: str = "") -> str:
    """The full dotted key of ``key``: OmegaConf reports keys inside list items (``probes[0]``)
    relative to the item, so find the item of ``fragment`` that holds the key's first part."""
    if not key or not isinstance(fragment, Mapping) or path == "" and key.split(".")[0] in fragment:
        return key
    head = key.split(".")[0]
    for name, value in fragment.items():
        where = f"{path}{name}"
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping) and head in item:
                    return f"{where}[{index}].{key}"
        elif isinstance(value, Mapping):
            found = _key_in_fragment(key, value, where + ".")
            if found != key:
                return found
    return key


def accepted_keys(dotted_parent: str) -> list[str]:
    node: Any = RunSpec
    for part in [p for p in re.sub(r"\[\d+\]", "", dotted_parent).split(".") if p]:
        node = _element_type(typing.get_type_hints(node)[part])
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def expected_type(dotted_key: str) -> str:
    """The schema's type at ``dotted_key`` in words ("float", "list[int]", "a mapping (ModelSpec)")."""
    node: Any = RunSpec
    hint: Any = RunSpec
    for part in [p for p in dotted_key.split(".") if p]:
        name, indexed = re.subn(r"\[\d+\]", "", part)
        hint = typing.get_type_hints(node)[name]
        if indexed:
            hint = typing.get_args(hint)[0]
        node = _element_type(hint)
    if dataclasses.is_dataclass(hint):
        return f"a mapping ({hint.__name__}) with keys {', '.join(f.name for f in dataclasses.fields(hint))}"
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _element_type(hint: Any) -> Any:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (list, typing.Union) and args:
        return args[0]
    return hint


def _value_at(fragment: Any, dotted_key: str) -> Any:
    node = fragment
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted_key):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError):
            return fragment
    return node


def _check_top_level(file: str, document: Mapping[str, Any]) -> None:
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise SpecError(file, str(key), "unknown top-level key of a sweep", key, ", ".join(TOP_LEVEL_KEYS))


def _sweep_name(file: str, document: Mapping[str, Any]) -> str:
    name = document.get("name")
    if not isinstance(name, str) or not re.fullmatch(SWEEP_NAME, name):
        accepted = "a name of 1-64 letters, digits, '_', '.', '-' starting with a letter or digit"
        raise SpecError(file, "name", "missing or invalid sweep name", name, accepted)
    return name


def _description(file: str, document: Mapping[str, Any]) -> str:
    description = str(document.get("description", ""))
    if value_problem(description) is not None:
        raise SpecError(file, "description", "value not accepted", description, str(value_problem(description)))
    return description


def run_limit(file: str, document: Mapping[str, Any]) -> int:
    """The most runs the sweep may expand to: ``max_runs`` (at most MAX_RUNS_CEILING), else DEFAULT_MAX_RUNS."""
    limit = document.get("max_runs", DEFAULT_MAX_RUNS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RUNS_CEILING:
        raise SpecError(file, "max_runs", "invalid max_runs", limit, f"a whole number of runs from 1 to {MAX_RUNS_CEILING} (default {DEFAULT_MAX_RUNS}; {SWEEP_DOCS})")
    return limit


def _include_paths(file: str, sweep_dir: Path, includes: Any) -> list[Path]:
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(_is_path_text(item) for item in includes):
        accepted = f"a list of paths relative to the sweep file or configs/ (1-{MAX_PATH_CHARS} characters, no control characters)"
        raise SpecError(file, "include", "include must list YAML files", includes, accepted)
    return [_include_path(file, f"include[{index}]", sweep_dir, include) for index, include in enumerate(includes)]


def _is_path_text(item: Any) -> bool:
    return isinstance(item, str) and 0 < len(item) <= MAX_PATH_CHARS and value_problem(item) is None


def _include_path(file: str, key: str, sweep_dir: Path, include: str) -> Path:
    """The file ``include`` names, relative to the sweep's folder or configs/; after symlinks are
    resolved it must lie under one of them (no absolute paths or ../ out of them, no symlink out)."""
    roots = (sweep_dir.resolve(), CONFIGS_DIR.resolve())
    candidates = [sweep_dir / include, CONFIGS_DIR / include]
    outside = SpecError(file, key, "include outside the sweep's folder and configs/", include, f"a file under {roots[0]} or {roots[1]} (symlinks resolved)")
    try:
        resolved = [candidate.resolve() for candidate in candidates]
        inside = [any(path.is_relative_to(root) for root in roots) for path in resolved]
        if not any(inside):
            raise outside
        for path, is_inside in zip(resolved, inside):
            if path.exists():
                if not is_inside:
                    raise outside  # a symlink out of the sweep's folder
                return path
    except (OSError, RuntimeError) as error:  # a name too long for the file system; a symlink loop (RuntimeError before Python 3.13)
        reason = error.strerror if isinstance(error, OSError) else "a symlink loop"
        raise SpecError(file, key, "include path cannot be used", include, f"a path to an existing file ({reason})") from None
    looked = " or ".join(str(candidate) for candidate in candidates)
    raise SpecError(file, key, "include file not found", include, f"an existing file ({looked})")


def sweep_axes(file: str, document: Mapping[str, Any]) -> list[Axis]:
    """The expansion operators of a sweep in order: grid keys, the union of grids, zip groups,
    seeds. Nothing here is proportional to the number of runs."""
    grid_axes = _grid_axes(file, document.get("grid"), "grid") if "grid" in document else []
    alternatives = _alternative_grids(file, document)
    union = GridUnion(alternatives)
    union_axes = [Axis("grids", union.keys, union, union.starts[-1])] if alternatives else []
    return grid_axes + union_axes + _zip_axes(file, document) + _seed_axes(file, document)


def run_count(axes: Sequence[Axis]) -> int:
    return math.prod(axis.size for axis in axes)


def check_run_count(file: str, axes: Sequence[Axis], limit: int) -> None:
    count = run_count(axes)
    if count > limit:
        operators = ", ".join(dict.fromkeys(re.split(r"[.\[]", axis.label)[0] for axis in axes))
        if count <= MAX_RUNS_CEILING:
            accepted = f"at most {limit} runs, or raise the limit with the top-level key max_runs: {count} ({SWEEP_DOCS})"
        else:
            accepted = f"at most {limit} runs (max_runs raises it up to {MAX_RUNS_CEILING}); split a larger study into several sweeps ({SWEEP_DOCS})"
        raise SpecError(file, operators, f"sweep expands to {count} runs, above the limit of {limit}", {axis.label: axis.size for axis in axes}, accepted)


def expansion_points(axes: Sequence[Axis]) -> Iterator[tuple[tuple[Axis, int], ...]]:
    """Every point of the expansion, one at a time, as (axis, index of its point) per axis (the
    last axis varies fastest)."""
    for number in range(run_count(axes)):
        indices = []
        for axis in reversed(axes):
            number, position = divmod(number, axis.size)
            indices.append(position)
        yield tuple(zip(axes, reversed(indices)))


def _grid_axes(file: str, grid: Any, label: str) -> list[Axis]:
    if not isinstance(grid, Mapping) or not grid:
        raise SpecError(file, label, "empty grid", grid, "a mapping of dotted keys to non-empty lists of values")
    axes = []
    for key, values in grid.items():
        points = tuple((value,) for value in _values(file, f"{label}.{key}", values))
        axes.append(Axis(f"{label}.{key}", (str(key),), points, len(points)))
    return axes


def _alternative_grids(file: str, document: Mapping[str, Any]) -> list[list[Axis]]:
    if "grids" not in document:
        return []
    alternatives = document["grids"]
    if not isinstance(alternatives, list) or not alternatives:
        accepted = "a non-empty list of grids, each a mapping of dotted keys to non-empty lists (e.g. one grid per optimizer)"
        raise SpecError(file, "grids", "grids must list grid mappings", alternatives, accepted)
    return [_grid_axes(file, grid, f"grids[{index}]") for index, grid in enumerate(alternatives)]


def _zip_axes(file: str, document: Mapping[str, Any]) -> list[Axis]:
    if "zip" not in document:
        return []
    groups = document["zip"]
    groups = [groups] if isinstance(groups, Mapping) else groups
    if not isinstance(groups, list) or not groups or not all(isinstance(group, Mapping) and group for group in groups):
        raise SpecError(file, "zip", "empty or malformed zip", document["zip"], "a mapping of dotted keys to lists of equal length, or a list of such mappings")
    axes = []
    for index, group in enumerate(groups):
        label = "zip" if len(groups) == 1 else f"zip[{index}]"
        columns = {str(key): _values(file, f"{label}.{key}", values) for key, values in group.items()}
        lengths = {key: len(values) for key, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(file, label, "zip lists have unequal lengths", lengths, "lists of one common length")
        points = tuple(zip(*columns.values()))
        axes.append(Axis(label, tuple(columns), points, len(points)))
    return axes


def _seed_axes(file: str, document: Mapping[str, Any]) -> list[Axis]:
    if "seeds" not in document:
        return []
    seeds = document["seeds"]
    accepted = "a count n >= 1 (seeds 0..n-1) or a non-empty list of distinct integers >= 0"
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return [Axis("seeds", (SEED_KEY,), SeedCount(seeds), seeds)]
    valid_list = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    if not valid_list:
        raise SpecError(file, "seeds", "invalid seeds", document["seeds"], accepted)
    return [Axis("seeds", (SEED_KEY,), tuple((seed,) for seed in seeds), len(seeds))]


def _values(file: str, label: str, values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise SpecError(file, label, "a swept key needs a list of values", values, "a non-empty list")
    if not values:
        raise SpecError(file, label, "empty list of values", values, "a non-empty list")
    return values


def _check_swept_once(file: str, axes: list[Axis]) -> None:
    swept_by: dict[str, str] = {}
    for axis in axes:
        for key in axis.keys:
            if key in swept_by:
                raise SpecError(file, axis.label, f"key swept twice (also by {swept_by[key]})", key, "each key in one grid, grids, zip or seeds entry")
            swept_by[key] = axis.label


def _value_axes(axes: Sequence[Axis]) -> list[Axis]:
    """The axes whose values come from the sweep file as written: grid keys, each alternative's
    keys, zip groups (seeds are integers >= 0 already)."""
    listed: list[Axis] = []
    for axis in axes:
        if isinstance(axis.points, GridUnion):
            listed += [alternative_axis for grid in axis.points.alternatives for alternative_axis in grid]
        elif axis.label != "seeds":
            listed.append(axis)
    return listed


def _check_values(file: str, axes: list[Axis], base_config: DictConfig) -> None:
    for axis in axes:
        for key in axis.keys:
            _check_key_exists(file, axis.label, key)
        for index, point in enumerate(axis.points):
            config = base_config.copy()
            for key, value in zip(axis.keys, point):
                try:
                    OmegaConf.update(config, key, value, merge=True)
                except OmegaConfBaseException:
                    label = f"{axis.label}[{index}]" if len(axis.keys) == 1 else f"{axis.label}.{key}[{index}]"
                    raise SpecError(file, label, "wrong type", value, expected_type(key)) from None


def _check_key_exists(file: str, label: str, dotted_key: str) -> None:
    parent = ""
    for part in dotted_key.split("."):
        accepted = accepted_keys(parent)
        if part not in accepted:
            where = f"under '{parent}'" if parent else "at the top of a run spec"
            raise SpecError(file, label, f"unknown key '{dotted_key}'", part, f"{where}: {', '.join(accepted) or '(no keys: not a mapping)'}")
        parent = f"{parent}.{part}" if parent else part


def _resolve_run(base_config: DictConfig, point: Sequence[tuple[Axis, int]], origins: Origins, known_names: Mapping[str, Sequence[str]]) -> PlannedRun:
    config = base_config.copy()
    swept: dict[str, Any] = {}
    for axis, index in point:
        for key, value in zip(axis.keys, axis.points[index]):
            if value is not UNSET:
                OmegaConf.update(config, key, value, merge=True)
                swept[key] = value
    try:
        OmegaConf.resolve(config)
        spec: RunSpec = OmegaConf.to_object(config)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        key = str(getattr(error, "full_key", "") or "")
        origin_file, origin_key = origins.of(key)
        raise SpecError(origin_file, origin_key, "cannot resolve", str(error).splitlines()[0], "an interpolation ${dotted.key} of an existing field with a value of the right type") from None
    for key, found, accepted in violations(spec, known_names):
        origin_file, origin_key = origins.of(key)
        raise SpecError(origin_file, origin_key, "value not accepted", found, accepted)
    if spec.cluster not in profile_names():
        origin_file, origin_key = origins.of("cluster")
        raise SpecError(origin_file, origin_key, "unknown cluster profile", spec.cluster, ", ".join(profile_names()))
    time_was_given = spec.resources.time is not None
    try:
        spec = replace(spec, resources=resolve_resources(spec.resources, load_profile(spec.cluster)))
    except ResourceProblem as problem:
        origin_file, origin_key = origins.of(f"resources.{problem.key}")
        raise SpecError(origin_file, origin_key, f"not possible on cluster {spec.cluster}", problem.found, problem.accepted) from None
    _check_data_present(spec, origins)
    spec = _with_split_hash(_with_source_init(spec), origins)
    _check_sizes(spec, origins)
    return PlannedRun(run_id(spec), spec, swept, time_was_given)


def _check_sizes(spec: RunSpec, origins: Origins) -> None:
    """Batch sizes against the training split, and one line of each line probe against the memory
    of a node (only where the planner knows the split: the official files of a known data set)."""
    from jobs.data import planned_split_sizes

    split = planned_split_sizes(spec.data)
    if split is None:
        return
    train, val = split
    _check_fraction(spec, train, val, origins)
    for key, size in (("training.batch_size", spec.training.batch_size), ("optimizer.search_batch_size", spec.optimizer.search_batch_size)):
        if size is not None and size > train:
            origin_file, origin_key = origins.of(key)
            raise SpecError(origin_file, origin_key, "larger than the training split", size, f"at most {train} (the training samples of {spec.data.name} with this split)")
    memory, memory_words = node_memory(load_profile(spec.cluster))
    for index, probe in enumerate(spec.probes):
        needed = line_memory_bytes(probe, train, val, spec.training.batch_size)
        if needed > memory:
            origin_file, origin_key = origins.of(f"probes[{index}]")
            accepted = f"at most {memory_words} per line: a larger resolution, a smaller interval, fewer max_enlargements, directions or recorded sets"
            raise SpecError(origin_file, origin_key, "a line of this probe does not fit in memory", f"{needed / 2**30:,.1f} GiB of losses per line", accepted)


def _check_fraction(spec: RunSpec, train: int, val: int, origins: Origins) -> None:
    """A ``data.fraction`` must keep a validation sample and a batch of training samples (one
    sample where the batch size exceeds even the whole split: then the batch size is at fault)."""
    from jobs.data import planned_split_sizes

    if spec.data.fraction is None:
        return
    whole = planned_split_sizes(replace(spec.data, fraction=None))
    assert whole is not None  # the same data set and files as the split itself
    whole_train, whole_val = whole
    needed = spec.training.batch_size if spec.training.batch_size <= whole_train else 1
    origin_file, origin_key = origins.of("data.fraction")
    if train < needed:
        problem = "leaves no training sample" if train < 1 else "leaves fewer training samples than training.batch_size"
        accepted = f"a fraction of at least {_rounded_up(needed / whole_train)} (keeps {needed} of the {whole_train} training samples of {spec.data.name}; training.batch_size is {spec.training.batch_size})"
        raise SpecError(origin_file, origin_key, problem, spec.data.fraction, accepted)
    if val < 1 <= whole_val:
        accepted = f"a fraction of at least {_rounded_up(1 / whole_val)} (keeps one of the {whole_val} validation samples of {spec.data.name})"
        raise SpecError(origin_file, origin_key, "leaves no validation sample", spec.data.fraction, accepted)


def _rounded_up(number: float) -> float:
    """``number`` rounded up to four significant digits."""
    scale = 10 ** (3 - math.floor(math.log10(number)))
    return math.ceil(number * scale) / scale


def _with_split_hash(spec: RunSpec, origins: Origins) -> RunSpec:
    """Write the hash of the run's training/validation indices into the spec (the job checks it)."""
    from jobs.data import planned_indices_sha256

    if spec.data.indices_sha256 is not None:
        return spec
    try:
        digest = planned_indices_sha256(spec.data)
    except ValueError as problem:
        origin_file, origin_key = origins.of("data.train_size" if spec.data.train_size is not None else "data.val_source")
        raise SpecError(origin_file, origin_key, "the split does not fit the data set", str(problem), "a train_size smaller than the official training set, val_source: test only where a test set exists") from None
    return spec if digest is None else replace(spec, data=replace(spec.data, indices_sha256=digest))


def _with_source_init(spec: RunSpec) -> RunSpec:
    """Record the initialization the model's source uses when the sweep leaves ``model.init`` open."""
    from jobs.models import source_init

    if spec.model.init is not None:
        return spec
    return replace(spec, model=replace(spec.model, init=source_init(spec.model.name)))


def _check_data_present(spec: RunSpec, origins: Origins) -> None:
    """Jobs never download: a data set missing under its root fails here, on the login node."""
    from jobs.data.vision import SOURCES, missing_files

    if spec.data.name not in SOURCES:
        return  # bundled with a package (digits)
    root = spec.data.root or load_profile(spec.cluster).data_root
    missing = missing_files(spec.data.name, root)
    if missing:
        origin_file, origin_key = origins.of("data.root" if spec.data.root else "data.name")
        looked_at = ", ".join(map(str, missing)) if root else f"no data.root and no data_root in cluster profile {spec.cluster}"
        fetch = f"orch data fetch {spec.data.name} --root {root or 'DIR'}"
        raise SpecError(origin_file, origin_key, f"data set {spec.data.name} not found", looked_at, f"its files under data.root (or the profile's data_root); stage them on a machine with internet: {fetch}")


def _check_unique(file: str, runs: list[PlannedRun]) -> None:
    first_index: dict[str, int] = {}
    for index, run in enumerate(runs):
        if run.run_id in first_index:
            other = runs[first_index[run.run_id]]
            raise SpecError(
                file,
                ", ".join(sorted(run.swept)) or "(sweep)",
                f"two points of the sweep are the same run {run.run_id} (points {first_index[run.run_id]} and {index})",
                [other.swept, run.swept],
                "points that differ in a field that changes results (resources, cluster, container.binds, data.root do not)",
            )
        first_index[run.run_id] = index
