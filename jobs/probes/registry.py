"""The probe contract (setup, context, measurement, the Probe protocol and its base class) and the
probe catalog, in a module of their own: the probe modules register into it without importing the
package that imports them (no cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import nn

from jobs.catalog import Catalog
from jobs.data.registry import InMemoryData
from jobs.probe_fields import ProbeFields
from jobs.spec import TrainingSpec


@dataclass(frozen=True)
class ProbeSetup:
    """What a probe may keep from the start of a run (before any checkpoint is restored)."""

    model: nn.Module  # the training model; read only
    data: InMemoryData
    training: TrainingSpec
    device: torch.device


@dataclass(frozen=True)
class ProbeContext:
    """One update step θ_t → θ_{t+1} as a probe sees it."""

    step: int  # t, the number of updates before this one
    model: nn.Module  # holds θ_{t+1}; read only
    data: InMemoryData
    batch_indices: torch.Tensor  # the step's mini-batch, as indices into the training split
    params_before: torch.Tensor  # flat θ_t
    params_after: torch.Tensor  # flat θ_{t+1}
    gradient: torch.Tensor  # flat gradient of the step's mini-batch at θ_t
    learning_rate: Optional[float]  # λ of the update, as the optimizer reports it; None: it made none
    optimizer_step: Optional[float]  # the step length the optimizer reports choosing, if it reports one


@dataclass
class Measurement:
    """A probe's result for one step: arrays (safe dtypes only) and JSON-able metadata."""

    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    is_extrapolation: bool = False


class Probe(Protocol):
    @property
    def spec(self) -> ProbeFields:
        """The probe type's own fields."""

    def wants(self, step: int) -> bool:
        """Whether the probe needs step ``step``'s context (to measure it or to remember it)."""

    def measure(self, context: ProbeContext) -> Measurement: ...

    def observe(self, context: ProbeContext) -> None:
        """Called after ``measure`` (or instead, when the step's shard already exists)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ChunkedFields(Protocol):
    """What the base of the probes reads of a probe type's fields."""

    eval_chunk: Optional[int]

    @property
    def label(self) -> str: ...

    def selects(self, step: int) -> bool: ...


class ProbeBase:
    """What most probes share: their spec and setup, measuring only at selected steps, no state."""

    def __init__(self, spec: ChunkedFields, setup: ProbeSetup) -> None:
        self.spec = spec
        self.setup = setup
        self.chunk = spec.eval_chunk or setup.training.batch_size  # samples per BatchNorm group

    def wants(self, step: int) -> bool:
        return self.spec.selects(step)

    def observe(self, context: ProbeContext) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def seed(self, step: int) -> int:
        return line_seed(self.setup.training.seed, step, self.spec.label)


# (the probe type's own fields: its dataclass in jobs/probe_fields.py, the setup)
ProbeBuilder = Callable[[Any, ProbeSetup], Probe]
PROBES: Catalog[ProbeBuilder] = Catalog("probe")


def line_seed(training_seed: int, step: int, label: str, salt: int = 0) -> int:
    """The fixed random state of one measurement: a pure function of run seed, step and probe."""
    words = np.random.SeedSequence([training_seed, step, salt, *label.encode()]).generate_state(1)
    return int(words[0])
