"""Landscape probes registered by type name (the probe issue adds line, interpolation, …)."""

from __future__ import annotations

from typing import Callable

from jobs.catalog import Catalog

PROBES: Catalog[Callable] = Catalog("probe")
