"""Run ids: the hash of the canonical form of a resolved run spec.

The canonical form leaves out fields that cannot change results (metadata ``fingerprint=False``:
resources, cluster, container binds, data root, heartbeat cadence) and fields at an "off" value
(None or an empty list), so a later release that adds an optional feature, off by default, keeps
every existing run id. Keys are sorted and floats written in Python's shortest round-trip form.

An optimizer (a probe) contributes its own kind's fields, and for every other key of the first
schema, one flat mapping of all optimizers' (probe types') fields that run ids were first hashed
over, the default that key had there: existing run ids stay as they were, and adding an optimizer
or a probe type, adding a field to one, or changing one kind's default leaves every other kind's
run ids alone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Sequence

import yaml
from omegaconf._utils import get_omega_conf_dumper

from jobs.optimizer_fields import OPTIMIZER_KINDS, OptimizerFields
from jobs.probe_fields import PROBE_KINDS, ProbeFields
from jobs.schema import SpecKinds
from jobs.spec import RunSpec

RUN_ID_HEX_DIGITS = 16


# The canonical defaults of the first schema's keys (``name``/``type`` left out: every kind has it).
FIRST_SCHEMA_OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "alig_delta": 1e-05,
    "approximation_samples": 1280,
    "approximation_scales_with_k": False,
    "armijo_c": 0.1,
    "average_last": 25,
    "backtrack": 0.9,
    "batch_factors": [1, 2, 4],
    "batch_milestones": [0.5, 0.75],
    "betas": [0.9, 0.999],
    "cocob_alpha": 100.0,
    "direction_adaptation": 0.4,
    "eps": 1e-08,
    "exact_directional_derivative": True,
    "fallback_step": 1e-06,
    "fd_epsilon": 0.0001,
    "growth": 2.0,
    "hypergradient_lr": 0.001,
    "labpal_mode": "nsgd",
    "lr": 0.1,
    "max_backtracks": 100,
    "measure_points": [0.0, 0.0001, 0.01],
    "measuring_step": 0.1,
    "min_grad_norm": 1e-08,
    "min_step": 1e-08,
    "momentum": 0.0,
    "nesterov": False,
    "parabola_fit": "exact",
    "reset": "grow_per_epoch",
    "reuse_steps": 1000,
    "rms_alpha": 0.99,
    "schedule": {"gamma": 0.1, "name": "constant", "warmup_steps": 0},
    "search_batch": "same",
    "search_metric": "loss",
    "slope_factor": 1.0,
    "step_scaling": 2.0,
    "untrusted_updates": 400,
    "weight_decay": 0.0,
    "wolfe_c2": 0.9,
}
FIRST_SCHEMA_PROBE_DEFAULTS: dict[str, Any] = {
    "alpha_endpoints": "inclusive",
    "alphas": 10,
    "bn_mode": "batch",
    "directions": 0,
    "every": 1,
    "from_step": 0,
    "hessian_samples": 1000,
    "interval": 0.5,
    "max_enlargements": 5,
    "power_iterations": 20,
    "power_tolerance": 0.001,
    "precision": "fp32",
    "record": ["train", "val", "direction"],
    "resolution": 0.006,
    "store_direction": False,
}


def canonical_form(node: Any) -> Any:
    if isinstance(node, OptimizerFields):
        return _canonical_kind(node, OPTIMIZER_KINDS, FIRST_SCHEMA_OPTIMIZER_DEFAULTS)
    if isinstance(node, ProbeFields):
        return _canonical_kind(node, PROBE_KINDS, FIRST_SCHEMA_PROBE_DEFAULTS)
    if dataclasses.is_dataclass(node):
        return _canonical_fields(node, [spec_field.name for spec_field in dataclasses.fields(node)])
    if isinstance(node, list):
        return [canonical_form(item) for item in node]
    return node


def _canonical_fields(node: Any, names: Sequence[str]) -> dict[str, Any]:
    """The canonical form of the fields ``names`` of a dataclass: those that can change results and
    are not off."""
    fingerprinted = {
        spec_field.name
        for spec_field in dataclasses.fields(node)
        if spec_field.metadata.get("fingerprint", True)
    }
    return {
        name: canonical_form(getattr(node, name))
        for name in names
        if name in fingerprinted and not _is_off(getattr(node, name))
    }


def _canonical_kind(flat: Any, kinds: SpecKinds[Any], first_schema: dict[str, Any]) -> dict[str, Any]:
    """The kind's own fields over the first schema's defaults of every other key."""
    own = kinds.field_names(getattr(flat, kinds.selector))
    if not own:  # an unknown kind: refused by the spec's checks before any run id is asked for
        return _canonical_fields(flat, [spec_field.name for spec_field in dataclasses.fields(flat)])
    others = {key: default for key, default in first_schema.items() if key not in own}
    return {**others, **_canonical_fields(flat, own)}


def canonical_json(spec: RunSpec) -> str:
    return json.dumps(canonical_form(spec), sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_json(spec: RunSpec) -> str:
    """Every field of the resolved spec as JSON, in schema order (the registry's ``runs.spec_json``)."""
    return json.dumps(dataclasses.asdict(spec), allow_nan=False)


class SpecTexts:
    """The YAML (``spec_to_yaml``) and JSON (:func:`spec_json`, :func:`canonical_json`) of many run
    specs that share section objects (the planner's runs do): each distinct section object is
    rendered once, in each form only when that form is first asked for, and a spec's text is the
    concatenation of its sections'. Holds the objects it rendered, so an id is never reused while
    it is cached."""

    def __init__(self) -> None:
        self._sections: dict[tuple[str, int], SectionTexts] = {}

    def canonical(self, spec: RunSpec) -> str:
        """:func:`canonical_json` of ``spec``."""
        fragments = (self._section(name, getattr(spec, name)).canonical for name in FINGERPRINTED_SECTIONS)
        return "{" + ",".join(fragment for fragment in fragments if fragment) + "}"

    def yaml(self, spec: RunSpec) -> str:
        return "".join(self._section(name, getattr(spec, name)).yaml for name in SECTION_NAMES)

    def json(self, spec: RunSpec) -> str:
        return joined_json(self.sections(spec))

    def sections(self, spec: RunSpec) -> list[SectionTexts]:
        """The spec's sections in schema order."""
        return [self._section(name, getattr(spec, name)) for name in SECTION_NAMES]

    def _section(self, name: str, value: Any) -> SectionTexts:
        key = (name, id(value))
        section = self._sections.get(key)
        if section is None:
            section = self._sections[key] = SectionTexts(name, value)
        return section


@dataclasses.dataclass(eq=False)
class SectionTexts:
    """The texts of one top-level field (section) of a run spec, each rendered when first read."""

    name: str
    value: Any

    @functools.cached_property
    def plain(self) -> Any:
        return _plain(self.value)

    @functools.cached_property
    def yaml(self) -> str:
        """The section's YAML block in ``spec_to_yaml``."""
        return _section_yaml(self.name, self.plain)

    @functools.cached_property
    def value_json(self) -> str:
        """The section's value as :func:`spec_json` writes it (``spec_sections.json``)."""
        return json.dumps(self.plain, allow_nan=False)

    @functools.cached_property
    def json(self) -> str:
        """``"name": <JSON>``, the section's part of :func:`spec_json`."""
        return f"{json.dumps(self.name)}: {self.value_json}"

    @functools.cached_property
    def digest(self) -> str:
        """What identifies the section among all runs' (``spec_sections.digest``)."""
        return section_digest(self.json)

    @functools.cached_property
    def canonical(self) -> str:
        """``"name":<canonical JSON>`` ("" where the run id leaves it out)."""
        return canonical_fragment(self.name, self.value)


def joined_json(sections: Sequence[SectionTexts]) -> str:
    """:func:`spec_json` of the spec whose sections (in schema order) these are."""
    return "{" + ", ".join(section.json for section in sections) + "}"


def section_digest(section_json: str) -> str:
    """sha256 of a section's ``"name": <JSON>`` (migration 0006 computes the same)."""
    return hashlib.sha256(section_json.encode()).hexdigest()


SECTION_NAMES = tuple(spec_field.name for spec_field in dataclasses.fields(RunSpec))
FINGERPRINTED_SECTIONS = tuple(
    sorted(
        spec_field.name
        for spec_field in dataclasses.fields(RunSpec)
        if spec_field.metadata.get("fingerprint", True)
    )
)


def canonical_fragment(name: str, value: Any) -> str:
    """``"name":<canonical JSON>`` of a top-level field of a run spec: its part of
    :func:`canonical_json` ("" for a field the run id leaves out or one that is off)."""
    if name not in FINGERPRINTED_SECTIONS or _is_off(value):
        return ""
    canonical = json.dumps(canonical_form(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{json.dumps(name)}:{canonical}"


def _section_yaml(name: str, plain: Any) -> str:
    """The block of ``name`` in ``spec_to_yaml`` of a spec holding ``plain`` (:func:`_plain` of a
    section) there: the top-level blocks are independent, and OmegaConf dumps plain values with its
    own YAML dumper and these options (tests/test_plan_fidelity.py compares whole files with
    spec_to_yaml's)."""
    return yaml.dump(
        {name: plain},
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        Dumper=get_omega_conf_dumper(),
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def run_id(spec: RunSpec) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:RUN_ID_HEX_DIGITS]


def _is_off(value: Any) -> bool:
    return value is None or (isinstance(value, list) and not value)
