"""Run ids: the hash of the canonical form of a resolved run spec.

The canonical form leaves out fields that cannot change results (metadata ``fingerprint=False``:
resources, cluster, container binds, data root, heartbeat cadence) and fields at an "off" value
(None or an empty list), so a later release that adds an optional feature, off by default, keeps
every existing run id. Keys are sorted and floats written in Python's shortest round-trip form.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Sequence

import yaml
from omegaconf._utils import get_omega_conf_dumper

from jobs.spec import RunSpec

RUN_ID_HEX_DIGITS = 16


def canonical_form(node: Any) -> Any:
    if dataclasses.is_dataclass(node):
        return {
            spec_field.name: canonical_form(getattr(node, spec_field.name))
            for spec_field in dataclasses.fields(node)
            if spec_field.metadata.get("fingerprint", True) and not _is_off(getattr(node, spec_field.name))
        }
    if isinstance(node, list):
        return [canonical_form(item) for item in node]
    return node


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
