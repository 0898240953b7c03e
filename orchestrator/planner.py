"""Runs from the points of a sweep: the shared part of the spec resolved and checked once, each
point built from memoized sections.

A run spec is a handful of sections (model, data, optimizer, training, probes, resources,
container, cluster). The value of a section at a point depends only on the axes that set keys in
it, so each distinct section is built, converted to the schema's types and checked once, and a
point is assembled from its sections; the checks across sections (resources on the cluster, data
present, split hash, batch sizes, a line's memory) and each section's part of the run id are
memoized the same way. A point costs some dictionary lookups and one sha256.

The exact way, OmegaConf merging, resolving and converting each point (:func:`resolve_point`),
stays the reference. It plans sweeps where a point can resolve differently from the shared part
(an interpolation that depends on a swept key, an interpolation among the swept values, a swept
key inside another swept key's mapping), and it reports every problem: a point whose memoized
sections hold one is planned the exact way again, which raises the same SpecError as always.
tests/test_plan_fidelity.py proves both ways give today's run ids and specs for every shipped sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, Callable, Hashable, Iterator, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jobs.manifest import DATA_FILES, missing_files, source_init
from jobs.spec import (
    SECTION_CHECKS,
    DataSpec,
    ModelSpec,
    ResourcesSpec,
    RunSpec,
    field_violations,
    line_memory_bytes,
    violations,
)
from jobs.splits import planned_indices_sha256, planned_split_sizes
from orchestrator.bulk import collector_paused
from orchestrator.errors import SpecError
from orchestrator.expansion import SEED_KEY, UNSET, Axis, Origins, point_indices
from orchestrator.fingerprint import FINGERPRINTED_SECTIONS, RUN_ID_HEX_DIGITS, canonical_fragment, run_id
from orchestrator.profiles import load_profile, profile_names
from orchestrator.resources import ResourceProblem, node_memory, resolve_resources

SPEC_FIELDS = {spec_field.name: spec_field for spec_field in dataclasses.fields(RunSpec)}
SECTIONS = tuple(SPEC_FIELDS)
RESOURCES, CLUSTER, DATA, TRAINING, OPTIMIZER, PROBES, MODEL = (
    SECTIONS.index(name)
    for name in ("resources", "cluster", "data", "training", "optimizer", "probes", "model")
)
# in the canonical JSON's (sorted) order
FINGERPRINTED_POSITIONS = tuple(SECTIONS.index(name) for name in FINGERPRINTED_SECTIONS)
INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
KEY_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    spec: RunSpec  # resources resolved against the cluster profile
    swept: dict[str, Any]  # dotted key -> value this run takes on each axis
    time_was_given: bool  # resources.time came from the sweep (else an estimate may choose it)


def plan_runs(
    base_config: DictConfig,
    axes: Sequence[Axis],
    origins: Origins,
    converter: ValueConverter,
    known_names: Mapping[str, Sequence[str]],
) -> list[PlannedRun]:
    """The run of every point of the expansion, in order (``converter`` holds the swept values
    the sweep's checks converted already)."""

    def exact(indices: tuple[int, ...]) -> PlannedRun:
        point = tuple(zip(axes, indices))
        return resolve_point(base_config, point, origins.with_point(point), known_names)

    builder = SectionBuilder.create(base_config, axes, converter, known_names)
    if builder is None:
        return [exact(indices) for indices in point_indices(axes)]
    # runs hold no reference cycles: full collections would rescan them all, again and again
    with collector_paused():
        return [builder.run(indices) or exact(indices) for indices in point_indices(axes)]


class ValueConverter:
    """Swept values as the schema types their keys (OmegaConf converts each distinct value once).

    A single value is set on one scratch copy of the shared part, one after another (it replaces
    what is there); a mapping or list merges into what is there, so it starts from a fresh copy.
    Raises OmegaConf's error for a value of the wrong type."""

    def __init__(self, base_config: DictConfig) -> None:
        self.base_config = base_config
        self.scratch = base_config.copy()
        self.values: dict[tuple[str, str], Any] = {}

    def convert(self, key: str, raw: Any) -> Any:
        token = (key, json.dumps(raw, sort_keys=True, default=repr))
        if token not in self.values:
            self.values[token] = self._convert(key, raw)
        return self.values[token]

    def _convert(self, key: str, raw: Any) -> Any:
        fresh = isinstance(raw, (Mapping, list)) or isinstance(
            OmegaConf.select(self.scratch, key), (DictConfig, ListConfig)
        )
        config = self.base_config.copy() if fresh else self.scratch
        OmegaConf.update(config, key, raw, merge=True)
        node = OmegaConf.select(config, key)
        if not isinstance(node, (DictConfig, ListConfig)):
            return node
        if not fresh:  # a null mapping took a value: later values start from the shared part again
            self.scratch = self.base_config.copy()
        return OmegaConf.to_object(node)


class _Problem:
    """A memoized section or check that failed: the point is planned the exact way (which raises)."""


PROBLEM = _Problem()


IndexGetter = Callable[[tuple[int, ...]], Hashable]  # a point's indices -> its key in one section's table


@dataclass(frozen=True, eq=False)
class SectionEntry:
    """One distinct value of a section: the point's values set in the shared part's section."""

    value: Any  # converted to the schema's types: what the checks see
    recorded: Any  # what the run records: the model's source init and the split's hash filled in
    fragment: str  # ``"name":<canonical JSON>``, its part of the run id ("" when left out of it)
    ok: bool  # passed the section's checks (else the point is planned the exact way, which raises)


class SectionBuilder:
    """Builds the runs of a sweep whose points all resolve like its shared part."""

    def __init__(
        self,
        converter: ValueConverter,
        base_spec: RunSpec,
        axes: Sequence[Axis],
        known_names: Mapping[str, Sequence[str]],
    ) -> None:
        self.converter = converter
        self.base_spec = base_spec
        self.axes = axes
        self.known_names = known_names
        self.touching = {
            name: tuple(
                p for p, axis in enumerate(axes) if any(key.split(".")[0] == name for key in axis.keys)
            )
            for name in SECTIONS
        }
        # (position, index getter, section key -> SectionEntry) of each section some axis touches
        self.varying: list[tuple[int, IndexGetter, dict[Hashable, SectionEntry]]] = [
            (position, _index_getter(self.touching[name]), {})
            for position, name in enumerate(SECTIONS)
            if self.touching[name]
        ]
        self.fixed: Optional[list[SectionEntry]] = None
        # per axis and point
        self.swept_items: list[dict[int, tuple[tuple[str, Any], ...]]] = [{} for _ in axes]
        self.resources: dict[tuple[SectionEntry, str], Any] = {}
        self.fits: dict[tuple[Any, ...], bool] = {}
        self.failing: dict[str, set[str]] = {}

    @classmethod
    def create(
        cls,
        base_config: DictConfig,
        axes: Sequence[Axis],
        converter: ValueConverter,
        known_names: Mapping[str, Sequence[str]],
    ) -> Optional["SectionBuilder"]:
        """The builder, or None where a point may resolve differently from the shared part (or the
        shared part does not resolve: the exact way reports it)."""
        if not points_resolve_alike(base_config, axes):
            return None
        try:
            resolved = base_config.copy()
            OmegaConf.resolve(resolved)
            base_spec: RunSpec = OmegaConf.to_object(resolved)  # type: ignore[assignment]  # a structured config's dataclass
        except OmegaConfBaseException:
            return None
        return cls(converter, base_spec, axes, known_names)

    def run(self, indices: tuple[int, ...]) -> Optional[PlannedRun]:
        """The run of the point ``indices``; None where one of its parts has a problem."""
        entries = list(self.fixed_entries(indices))
        for position, key_of, table in self.varying:
            key = key_of(indices)
            entry = table.get(key)
            if entry is None:
                entry = table[key] = self._entry(SECTIONS[position], indices)
            entries[position] = entry
        if not all(entry.ok for entry in entries):
            return None
        resources = self._resolved_resources(entries[RESOURCES], entries[CLUSTER].value)
        if resources is PROBLEM or not self._fits(entries):
            return None
        recorded = [entry.recorded for entry in entries]
        recorded[RESOURCES] = resources
        canonical = ",".join(
            filter(None, [entries[position].fragment for position in FINGERPRINTED_POSITIONS])
        )
        digest = hashlib.sha256(f"{{{canonical}}}".encode()).hexdigest()[:RUN_ID_HEX_DIGITS]
        return PlannedRun(
            digest, RunSpec(*recorded), self._swept(indices), entries[RESOURCES].value.time is not None
        )

    def fixed_entries(self, indices: tuple[int, ...]) -> list[SectionEntry]:
        """The entries of the sections no axis touches (built at the first point)."""
        if self.fixed is None:
            self.fixed = [self._entry(name, indices) for name in SECTIONS]
        return self.fixed

    def _swept(self, indices: tuple[int, ...]) -> dict[str, Any]:
        """The value the point takes on each swept key (as the sweep file writes it)."""
        return dict(itertools.chain.from_iterable(map(self._swept_items, range(len(indices)), indices)))

    def _swept_items(self, position: int, index: int) -> tuple[tuple[str, Any], ...]:
        items = self.swept_items[position].get(index)
        if items is None:
            axis = self.axes[position]
            items = self.swept_items[position][index] = tuple(
                (key, value) for key, value in zip(axis.keys, axis.points[index]) if value is not UNSET
            )
        return items

    def _entry(self, name: str, indices: tuple[int, ...]) -> SectionEntry:
        """Section ``name`` with the point's values set, converted, checked and recorded."""
        value = getattr(self.base_spec, name)
        changed: set[str] = set()  # the section's fields the point sets ("" for the whole section)
        for position in self.touching[name]:
            axis = self.axes[position]
            for key, raw in zip(axis.keys, axis.points[indices[position]]):
                if raw is not UNSET and key.split(".")[0] == name:
                    path = key.split(".")[1:]
                    value = _with_value(value, path, self._converted(key, raw))
                    if value is PROBLEM:
                        return SectionEntry(None, None, "", False)
                    changed.add(path[0] if path else "")
        recorded = RECORDED_FORM.get(name, _unchanged)(value)
        if not self._passes_checks(name, value, changed) or recorded is PROBLEM:
            return SectionEntry(value, None, "", False)
        return SectionEntry(value, recorded, canonical_fragment(name, recorded), True)

    def _passes_checks(self, name: str, value: Any, changed: set[str]) -> bool:
        """Whether the section passes its fields' checks and its own: the fields the point leaves
        as the shared part has them passed (or failed) once already, so only the others are checked."""
        if "" in changed or not dataclasses.is_dataclass(value):
            problems: Iterator[Any] = field_violations(SPEC_FIELDS[name], value, self.known_names)
        else:
            if not self._failing_fields(name) <= changed:
                return False
            schema: type = type(value)
            fields = _fields_of(schema)
            problems = itertools.chain.from_iterable(
                field_violations(fields[field_name], getattr(value, field_name), self.known_names, f"{name}.")
                for field_name in changed
            )
        problems = itertools.chain(problems, SECTION_CHECKS.get(name, _no_problems)(value))
        return next(problems, None) is None

    def _failing_fields(self, name: str) -> set[str]:
        """The fields of the shared part's section ``name`` that fail their own checks."""
        if name not in self.failing:
            found = field_violations(SPEC_FIELDS[name], getattr(self.base_spec, name), self.known_names)
            self.failing[name] = {KEY_PART.findall(key)[1] for key, _, _ in found}
        return self.failing[name]

    def _converted(self, key: str, raw: Any) -> Any:
        if key == SEED_KEY and type(raw) is int:
            return raw  # seeds: checked integers already; a sweep may have thousands
        return self.converter.convert(key, raw)

    def _resolved_resources(self, resources: SectionEntry, cluster: str) -> Any:
        """The resources resolved on the cluster's profile (PROBLEM where they do not fit it)."""
        key = (resources, cluster)
        if key not in self.resources:
            self.resources[key] = _on_cluster(resources.value, cluster)
        return self.resources[key]

    def _fits(self, entries: list[SectionEntry]) -> bool:
        """The data set is staged, the batches and a line of each probe fit the split and a node,
        and the probes suit the model."""
        data, training, optimizer, probes, cluster, model = (
            entries[DATA],
            entries[TRAINING].value,
            entries[OPTIMIZER].value,
            entries[PROBES],
            entries[CLUSTER].value,
            entries[MODEL],
        )
        key = (data, training.batch_size, optimizer.search_batch_size, probes, cluster, model)
        if key not in self.fits:
            spec = RunSpec(
                data=data.recorded,
                training=training,
                optimizer=optimizer,
                probes=probes.recorded,
                cluster=cluster,
                model=model.value,
            )
            self.fits[key] = all(
                _passes(check, spec) for check in (check_data_present, check_sizes, check_probes_on_model)
            )
        return self.fits[key]


def _unchanged(value: Any) -> Any:
    return value


def _passes(check: Callable[[RunSpec, Origins], None], spec: RunSpec) -> bool:
    try:
        check(spec, Origins(""))
    except SpecError:
        return False
    return True


def _index_getter(positions: tuple[int, ...]) -> IndexGetter:
    if not positions:
        return lambda indices: ()
    return itemgetter(*positions)


@functools.lru_cache(maxsize=None)
def _fields_of(schema: type) -> dict[str, dataclasses.Field]:
    return {schema_field.name: schema_field for schema_field in dataclasses.fields(schema)}


def _no_problems(value: Any) -> Iterator[tuple[str, Any, str]]:
    return iter(())


def _with_value(node: Any, path: list[str], value: Any) -> Any:
    """``node`` with ``value`` at the dotted ``path`` below it (PROBLEM where a mapping on the way is
    None)."""
    if not path:
        return value
    child = getattr(node, path[0])
    if len(path) > 1 and child is None:
        return PROBLEM
    updated = _with_value(child, path[1:], value)
    return PROBLEM if updated is PROBLEM else replace(node, **{path[0]: updated})


def _on_cluster(resources: ResourcesSpec, cluster: str) -> Any:
    if cluster not in profile_names():
        return PROBLEM
    try:
        return resolve_resources(resources, load_profile(cluster))
    except (ResourceProblem, SpecError):
        return PROBLEM


def _data_with_split_hash(data: DataSpec) -> Any:
    try:
        return data_with_split_hash(data)
    except ValueError:
        return PROBLEM


def points_resolve_alike(base_config: DictConfig, axes: Sequence[Axis]) -> bool:
    """Whether every point resolves like the shared part: no swept key inside another, no
    interpolation among the swept values, and no interpolation of the spec that depends (itself,
    or through another interpolation) on a swept key."""
    swept = [key for axis in axes for key in axis.keys]
    if any(_related(one, other) for one, other in itertools.combinations(swept, 2)):
        return False
    if any(
        _has_interpolation(point)
        for axis in axes
        if axis.label != "seeds"
        for point in _distinct_points(axis)
    ):
        return False
    interpolations = list(_interpolations(OmegaConf.to_container(base_config, resolve=False), ""))
    depends = set(swept)
    grew = True
    while grew:
        grew = False
        for path, references in interpolations:
            if path not in depends and any(
                reference is None or any(_related(reference, key) for key in depends)
                for reference in [path, *references]
            ):
                depends.add(path)
                grew = True
    return depends == set(swept)


def _distinct_points(axis: Axis) -> Iterator[Any]:
    """The values an axis lists (a union of grids: each alternative's lists, not their product)."""
    alternatives = getattr(axis.points, "alternatives", None)
    if alternatives is None:
        yield from axis.points
        return
    for grid in alternatives:
        for alternative_axis in grid:
            yield from alternative_axis.points


def _has_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(_has_interpolation(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_interpolation(item) for item in value)
    return False


def _interpolations(node: Any, path: str) -> Iterator[tuple[str, list[Optional[str]]]]:
    """(dotted key, the absolute keys it refers to; None for one not understood) of each interpolation."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _interpolations(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _interpolations(value, f"{path}[{index}]")
    elif isinstance(node, str) and "${" in node:
        references = INTERPOLATION.findall(node)
        yield path, [_absolute(reference.strip(), path) for reference in references] or [None]


def _absolute(reference: str, path: str) -> Optional[str]:
    """The absolute dotted key of an interpolation's reference (``.x`` is a sibling, ``..x`` the parent's)."""
    dots = len(reference) - len(reference.lstrip("."))
    if dots == 0:
        return reference
    parts = KEY_PART.findall(path)[:-dots]
    if len(KEY_PART.findall(path)) < dots:
        return None
    joined = "".join(part if part.startswith("[") else f".{part}" for part in parts).lstrip(".")
    rest = reference[dots:]
    return f"{joined}.{rest}" if joined and rest else (joined or rest)


def _related(one: str, other: str) -> bool:
    """Whether one dotted key is the other or lies inside it."""
    return (
        one == other or one.startswith((other + ".", other + "[")) or other.startswith((one + ".", one + "["))
    )


def resolve_point(
    base_config: DictConfig,
    point: Sequence[tuple[Axis, int]],
    origins: Origins,
    known_names: Mapping[str, Sequence[str]],
) -> PlannedRun:
    """The run of one point, the exact way: the point's values merged into the shared part by
    OmegaConf, resolved, converted, checked. Raises the SpecError of the point's first problem."""
    config = base_config.copy()
    swept: dict[str, Any] = {}
    for axis, index in point:
        for key, value in zip(axis.keys, axis.points[index]):
            if value is not UNSET:
                OmegaConf.update(config, key, value, merge=True)
                swept[key] = value
    try:
        OmegaConf.resolve(config)
        spec: RunSpec = OmegaConf.to_object(config)  # type: ignore[assignment]  # a structured config's dataclass
    except OmegaConfBaseException as error:
        key = str(getattr(error, "full_key", "") or "")
        origin_file, origin_key = origins.of(key)
        raise SpecError(
            origin_file,
            origin_key,
            "cannot resolve",
            str(error).splitlines()[0],
            "an interpolation ${dotted.key} of an existing field with a value of the right type",
        ) from None
    for key, found, accepted in violations(spec, known_names):
        origin_file, origin_key = origins.of(key)
        raise SpecError(origin_file, origin_key, "value not accepted", found, accepted)
    if spec.cluster not in profile_names():
        origin_file, origin_key = origins.of("cluster")
        raise SpecError(
            origin_file, origin_key, "unknown cluster profile", spec.cluster, ", ".join(profile_names())
        )
    time_was_given = spec.resources.time is not None
    try:
        spec = replace(spec, resources=resolve_resources(spec.resources, load_profile(spec.cluster)))
    except ResourceProblem as problem:
        origin_file, origin_key = origins.of(f"resources.{problem.key}")
        raise SpecError(
            origin_file,
            origin_key,
            f"not possible on cluster {spec.cluster}",
            problem.found,
            problem.accepted,
        ) from None
    check_data_present(spec, origins)
    spec = _with_split_hash(_with_source_init(spec), origins)
    check_sizes(spec, origins)
    check_probes_on_model(spec, origins)
    return PlannedRun(run_id(spec), spec, swept, time_was_given)


def check_probes_on_model(spec: RunSpec, origins: Origins) -> None:
    """Stacked points (``points_per_forward`` > 1) and a model with dropout: on a GPU the stacked
    forward draws other dropout masks than one point at a time, and would measure another line."""
    if not spec.model.dropout:
        return
    for index, probe in enumerate(spec.probes):
        if getattr(probe, "points_per_forward", 1) > 1:
            origin_file, origin_key = origins.of(f"probes[{index}].points_per_forward")
            raise SpecError(
                origin_file,
                origin_key,
                "stacked points with a model that has dropout",
                probe.points_per_forward,
                f"points_per_forward 1 while model.dropout is {spec.model.dropout:g} (on a GPU the stacked "
                "forward draws other dropout masks than one point at a time)",
            )


def check_sizes(spec: RunSpec, origins: Origins) -> None:
    """Batch sizes against the training split, and one line of each line probe against the memory
    of a node (only where the planner knows the split: the official files of a known data set)."""
    split = planned_split_sizes(spec.data)
    if split is None:
        return
    train, val = split
    check_fraction(spec, train, val, origins)
    for key, size in (
        ("training.batch_size", spec.training.batch_size),
        ("optimizer.search_batch_size", spec.optimizer.search_batch_size),
    ):
        if size is not None and size > train:
            origin_file, origin_key = origins.of(key)
            raise SpecError(
                origin_file,
                origin_key,
                "larger than the training split",
                size,
                f"at most {train} (the training samples of {spec.data.name} with this split)",
            )
    memory, memory_words = node_memory(load_profile(spec.cluster))
    for index, probe in enumerate(spec.probes):
        needed = line_memory_bytes(probe, train, val, spec.training.batch_size)
        if needed > memory:
            origin_file, origin_key = origins.of(f"probes[{index}]")
            accepted = (
                f"at most {memory_words} per line: a larger resolution, a smaller interval, fewer "
                "max_enlargements, directions or recorded sets"
            )
            raise SpecError(
                origin_file,
                origin_key,
                "a line of this probe does not fit in memory",
                f"{needed / 2**30:,.1f} GiB of losses per line",
                accepted,
            )


def check_fraction(spec: RunSpec, train: int, val: int, origins: Origins) -> None:
    """A ``data.fraction`` must keep a validation sample and a batch of training samples (one
    sample where the batch size exceeds even the whole split: then the batch size is at fault)."""
    if spec.data.fraction is None:
        return
    whole = planned_split_sizes(replace(spec.data, fraction=None))
    assert whole is not None  # the same data set and files as the split itself
    whole_train, whole_val = whole
    needed = spec.training.batch_size if spec.training.batch_size <= whole_train else 1
    origin_file, origin_key = origins.of("data.fraction")
    if train < needed:
        problem = (
            "leaves no training sample"
            if train < 1
            else "leaves fewer training samples than training.batch_size"
        )
        accepted = (
            f"a fraction of at least {_rounded_up(needed / whole_train)} (keeps {needed} of the "
            f"{whole_train} training samples of {spec.data.name}; training.batch_size is "
            f"{spec.training.batch_size})"
        )
        raise SpecError(origin_file, origin_key, problem, spec.data.fraction, accepted)
    if val < 1 <= whole_val:
        accepted = (
            f"a fraction of at least {_rounded_up(1 / whole_val)} (keeps one of the {whole_val} validation "
            f"samples of {spec.data.name})"
        )
        raise SpecError(origin_file, origin_key, "leaves no validation sample", spec.data.fraction, accepted)


def _rounded_up(number: float) -> float:
    """``number`` rounded up to four significant digits."""
    scale = 10 ** (3 - math.floor(math.log10(number)))
    return math.ceil(number * scale) / scale


def _with_split_hash(spec: RunSpec, origins: Origins) -> RunSpec:
    try:
        return replace(spec, data=data_with_split_hash(spec.data))
    except ValueError as problem:
        origin_file, origin_key = origins.of(
            "data.train_size" if spec.data.train_size is not None else "data.val_source"
        )
        raise SpecError(
            origin_file,
            origin_key,
            "the split does not fit the data set",
            str(problem),
            "a train_size smaller than the official training set, val_source: test only where a test "
            "set exists",
        ) from None


def data_with_split_hash(data: DataSpec) -> DataSpec:
    """Write the hash of the run's training/validation indices into the data spec (the job checks
    it). Raises ValueError where the split does not fit the data set."""
    if data.indices_sha256 is not None:
        return data
    digest = planned_indices_sha256(data)
    return data if digest is None else replace(data, indices_sha256=digest)


def _with_source_init(spec: RunSpec) -> RunSpec:
    return replace(spec, model=model_with_source_init(spec.model))


def model_with_source_init(model: ModelSpec) -> ModelSpec:
    """Record the initialization the model's source uses when the sweep leaves ``model.init`` open."""
    return model if model.init is not None else replace(model, init=source_init(model.name))


# What a run records of a section beyond the values the sweep sets (each from that section alone).
RECORDED_FORM: dict[str, Callable[[Any], Any]] = {
    "model": model_with_source_init,
    "data": _data_with_split_hash,
}


def check_data_present(spec: RunSpec, origins: Origins) -> None:
    """Jobs never download: a data set missing under its root fails here, on the login node."""
    if spec.data.name not in DATA_FILES:
        return  # bundled with a package (digits)
    root = spec.data.root or load_profile(spec.cluster).data_root
    missing = missing_files(spec.data.name, root)
    if missing:
        origin_file, origin_key = origins.of("data.root" if spec.data.root else "data.name")
        looked_at = (
            ", ".join(map(str, missing))
            if root
            else f"no data.root and no data_root in cluster profile {spec.cluster}"
        )
        fetch = f"orch data fetch {spec.data.name} --root {root or 'DIR'}"
        raise SpecError(
            origin_file,
            origin_key,
            f"data set {spec.data.name} not found",
            looked_at,
            "its files under data.root (or the profile's data_root); stage them on a machine with "
            f"internet: {fetch}",
        )
