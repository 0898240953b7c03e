"""Run ids: the hash of the canonical form of a resolved run spec.

The canonical form leaves out fields that cannot change results (metadata ``fingerprint=False``:
resources, cluster, container binds, data root, heartbeat cadence) and fields at an "off" value
(None or an empty list), so a later release that adds an optional feature, off by default, keeps
every existing run id. Keys are sorted and floats written in Python's shortest round-trip form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

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


def run_id(spec: RunSpec) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:RUN_ID_HEX_DIGITS]


def _is_off(value: Any) -> bool:
    return value is None or (isinstance(value, list) and not value)
