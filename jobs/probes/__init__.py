"""Landscape probes: measurements taken inside the training loop, registered by type name.

The training loop knows only this contract. At construction a probe gets a :class:`ProbeSetup`
(the model at θ_0, the data, the training spec); at each selected step ``t`` it gets a
:class:`ProbeContext` describing the update θ_t → θ_{t+1} and returns a :class:`Measurement`,
which :class:`jobs.probes.runner.ProbeRunner` publishes as one shard. Probes never write the
model, its buffers or gradients; the runner restores the random streams around them.
"""

from __future__ import annotations

from jobs.probes import hessian, interpolation, line  # noqa: F401  (each registers its builders)
from jobs.probes.registry import (
    PROBES,
    Measurement,
    Probe,
    ProbeBase,
    ProbeBuilder,
    ProbeContext,
    ProbeSetup,
    line_seed,
)

__all__ = [
    "PROBES",
    "Measurement",
    "Probe",
    "ProbeBase",
    "ProbeBuilder",
    "ProbeContext",
    "ProbeSetup",
    "line_seed",
]
