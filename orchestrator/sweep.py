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

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from jobs.manifest import catalog_names
from jobs.spec import RunSpec, value_problem
from orchestrator.errors import SpecError
from orchestrator.expansion import SEED_KEY, Axis, GridUnion, Origins, SeedCount, run_count
from orchestrator.home import CONFIGS_DIR
from orchestrator.planner import PlannedRun, ValueConverter, plan_runs
from orchestrator.sweep_files import check_no_resolvers, parse_yaml_mapping, read_text

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "include",
    "base",
    "grid",
    "grids",
    "zip",
    "seeds",
    "max_runs",
    "then",
)
SWEEP_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
SWEEP_DOCS = "docs/sweeps.md"
DEFAULT_MAX_RUNS = 250_000
MAX_RUNS_CEILING = 10_000_000  # max_runs may not switch the guard off
MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class SweepPlan:
    name: str
    description: str
    source_path: Path
    source_text: str
    runs: list[PlannedRun]
    then: tuple[
        str, ...
    ] = ()  # analyses run as jobs once the sweep's jobs have ended (orchestrator/stages.py)


def load_sweep(path: Path, known_names: Optional[Mapping[str, Sequence[str]]] = None) -> SweepPlan:
    """The sweep at ``path``, checked and expanded into runs (catalog names: the manifest's)."""
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
        raise SpecError(
            file,
            "base",
            "base must be a run-spec mapping",
            base,
            "a mapping such as {training: {steps: 100}}",
        )
    base_config = merge_fragment(base_config, base, file, "base.")
    origins.add(base, file, "base.")
    converter = ValueConverter(base_config)
    _check_values(file, _value_axes(axes), converter)
    runs = plan_runs(
        base_config, axes, origins, converter, catalog_names() if known_names is None else known_names
    )
    _check_unique(file, runs)
    return SweepPlan(name, description, path, text, runs, _stages(file, document))


def _stages(file: str, document: Mapping[str, Any]) -> tuple[str, ...]:
    """The sweep's ``then:`` commands, each checked as a stage."""
    from orchestrator.stages import STAGE_ACCEPTED, stage_request

    commands = document.get("then", [])
    if not isinstance(commands, list) or not all(isinstance(command, str) for command in commands):
        raise SpecError(file, "then", "not a list of commands", commands, f"a list of {STAGE_ACCEPTED}")
    for index, command in enumerate(commands):
        stage_request(command, file, f"then[{index}]")
    return tuple(commands)


def merge_fragment(config: DictConfig, fragment: Mapping[str, Any], file: str, prefix: str) -> DictConfig:
    """``config`` with a run-spec fragment merged in, type-checked against the schema."""
    try:
        return OmegaConf.merge(config, OmegaConf.create(dict(fragment)))  # type: ignore[return-value]  # a mapping merged into a DictConfig
    except OmegaConfBaseException as error:
        raise _schema_error(error, file, prefix, fragment) from None


def _schema_error(error: OmegaConfBaseException, file: str, prefix: str, fragment: Any) -> SpecError:
    key = _key_in_fragment(str(getattr(error, "full_key", "") or ""), fragment)
    if isinstance(error, ConfigKeyError):
        parent, _, leaf = key.rpartition(".")
        accepted = accepted_keys(parent)
        return SpecError(file, prefix + key, "unknown key", leaf, ", ".join(accepted))
    found = _value_at(fragment, key)
    return SpecError(
        file, prefix + key if key else prefix.rstrip(".") or "(file)", "wrong type", found, expected_type(key)
    )


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
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
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
            raise SpecError(
                file, str(key), "unknown top-level key of a sweep", key, ", ".join(TOP_LEVEL_KEYS)
            )


def _sweep_name(file: str, document: Mapping[str, Any]) -> str:
    name = document.get("name")
    if not isinstance(name, str) or not re.fullmatch(SWEEP_NAME, name):
        accepted = "a name of 1-64 letters, digits, '_', '.', '-' starting with a letter or digit"
        raise SpecError(file, "name", "missing or invalid sweep name", name, accepted)
    return name


def _description(file: str, document: Mapping[str, Any]) -> str:
    description = str(document.get("description", ""))
    if value_problem(description) is not None:
        raise SpecError(
            file, "description", "value not accepted", description, str(value_problem(description))
        )
    return description


def run_limit(file: str, document: Mapping[str, Any]) -> int:
    """The most runs the sweep may expand to: ``max_runs`` (at most MAX_RUNS_CEILING), else
    DEFAULT_MAX_RUNS."""
    limit = document.get("max_runs", DEFAULT_MAX_RUNS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RUNS_CEILING:
        raise SpecError(
            file,
            "max_runs",
            "invalid max_runs",
            limit,
            f"a whole number of runs from 1 to {MAX_RUNS_CEILING} (default {DEFAULT_MAX_RUNS}; {SWEEP_DOCS})",
        )
    return limit


def _include_paths(file: str, sweep_dir: Path, includes: Any) -> list[Path]:
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(_is_path_text(item) for item in includes):
        accepted = (
            f"a list of paths relative to the sweep file or configs/ (1-{MAX_PATH_CHARS} characters, no "
            "control characters)"
        )
        raise SpecError(file, "include", "include must list YAML files", includes, accepted)
    return [
        _include_path(file, f"include[{index}]", sweep_dir, include) for index, include in enumerate(includes)
    ]


def _is_path_text(item: Any) -> bool:
    return isinstance(item, str) and 0 < len(item) <= MAX_PATH_CHARS and value_problem(item) is None


def _include_path(file: str, key: str, sweep_dir: Path, include: str) -> Path:
    """The file ``include`` names, relative to the sweep's folder or configs/; after symlinks are
    resolved it must lie under one of them (no absolute paths or ../ out of them, no symlink out)."""
    roots = (sweep_dir.resolve(), CONFIGS_DIR.resolve())
    candidates = [sweep_dir / include, CONFIGS_DIR / include]
    outside = SpecError(
        file,
        key,
        "include outside the sweep's folder and configs/",
        include,
        f"a file under {roots[0]} or {roots[1]} (symlinks resolved)",
    )
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
    except (
        OSError,
        RuntimeError,
    ) as error:  # a name too long for the file system; a symlink loop (RuntimeError before Python 3.13)
        reason = error.strerror if isinstance(error, OSError) else "a symlink loop"
        raise SpecError(
            file, key, "include path cannot be used", include, f"a path to an existing file ({reason})"
        ) from None
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


def check_run_count(file: str, axes: Sequence[Axis], limit: int) -> None:
    count = run_count(axes)
    if count > limit:
        operators = ", ".join(dict.fromkeys(re.split(r"[.\[]", axis.label)[0] for axis in axes))
        if count <= MAX_RUNS_CEILING:
            accepted = (
                f"at most {limit} runs, or raise the limit with the top-level key max_runs: {count} "
                f"({SWEEP_DOCS})"
            )
        else:
            accepted = (
                f"at most {limit} runs (max_runs raises it up to {MAX_RUNS_CEILING}); split a larger study "
                f"into several sweeps ({SWEEP_DOCS})"
            )
        raise SpecError(
            file,
            operators,
            f"sweep expands to {count} runs, above the limit of {limit}",
            {axis.label: axis.size for axis in axes},
            accepted,
        )


def _grid_axes(file: str, grid: Any, label: str) -> list[Axis]:
    if not isinstance(grid, Mapping) or not grid:
        raise SpecError(
            file, label, "empty grid", grid, "a mapping of dotted keys to non-empty lists of values"
        )
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
        accepted = (
            "a non-empty list of grids, each a mapping of dotted keys to non-empty lists (e.g. one grid "
            "per optimizer)"
        )
        raise SpecError(file, "grids", "grids must list grid mappings", alternatives, accepted)
    return [_grid_axes(file, grid, f"grids[{index}]") for index, grid in enumerate(alternatives)]


def _zip_axes(file: str, document: Mapping[str, Any]) -> list[Axis]:
    if "zip" not in document:
        return []
    groups = document["zip"]
    groups = [groups] if isinstance(groups, Mapping) else groups
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(group, Mapping) and group for group in groups)
    ):
        raise SpecError(
            file,
            "zip",
            "empty or malformed zip",
            document["zip"],
            "a mapping of dotted keys to lists of equal length, or a list of such mappings",
        )
    axes = []
    for index, group in enumerate(groups):
        label = "zip" if len(groups) == 1 else f"zip[{index}]"
        columns = {str(key): _values(file, f"{label}.{key}", values) for key, values in group.items()}
        lengths = {key: len(values) for key, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(
                file, label, "zip lists have unequal lengths", lengths, "lists of one common length"
            )
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
    valid_list = (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    )
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
                raise SpecError(
                    file,
                    axis.label,
                    f"key swept twice (also by {swept_by[key]})",
                    key,
                    "each key in one grid, grids, zip or seeds entry",
                )
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


def _check_values(file: str, axes: list[Axis], converter: ValueConverter) -> None:
    """Every listed value converts to its key's type (the conversions are kept for planning)."""
    for axis in axes:
        for key in axis.keys:
            _check_key_exists(file, axis.label, key)
        for index, point in enumerate(axis.points):
            for key, value in zip(axis.keys, point):
                try:
                    converter.convert(key, value)
                except OmegaConfBaseException:
                    label = (
                        f"{axis.label}[{index}]" if len(axis.keys) == 1 else f"{axis.label}.{key}[{index}]"
                    )
                    raise SpecError(file, label, "wrong type", value, expected_type(key)) from None


def _check_key_exists(file: str, label: str, dotted_key: str) -> None:
    parent = ""
    for part in dotted_key.split("."):
        accepted = accepted_keys(parent)
        if part not in accepted:
            where = f"under '{parent}'" if parent else "at the top of a run spec"
            raise SpecError(
                file,
                label,
                f"unknown key '{dotted_key}'",
                part,
                f"{where}: {', '.join(accepted) or '(no keys: not a mapping)'}",
            )
        parent = f"{parent}.{part}" if parent else part


def _check_unique(file: str, runs: list[PlannedRun]) -> None:
    first_index: dict[str, int] = {}
    for index, run in enumerate(runs):
        if run.run_id in first_index:
            other = runs[first_index[run.run_id]]
            raise SpecError(
                file,
                ", ".join(sorted(run.swept)) or "(sweep)",
                f"two points of the sweep are the same run {run.run_id} (points "
                f"{first_index[run.run_id]} and {index})",
                [other.swept, run.swept],
                "points that differ in a field that changes results (resources, cluster, "
                "container.binds, data.root do not)",
            )
        first_index[run.run_id] = index
