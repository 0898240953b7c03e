"""Runs a run's probes inside the training loop and publishes their shards.

At construction the runner asks :func:`jobs.shards.complete_steps` which shards of each probe are
already whole (a resumed attempt re-trains the steps after its checkpoint and must not measure
their lines twice); torn, corrupt or unjournaled files are dealt with there. Around every probe
call the torch random streams are forked, so a run with probes trains exactly like one without.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from jobs.journal import JournalWriter
from jobs.paths import RunPaths
from jobs.probe_fields import PROBE_KINDS, LossEvaluationFields, ProbeFields
from jobs.probes.functional import flat_gradients, flat_parameters
from jobs.probes.registry import PROBES, Probe, ProbeContext, ProbeSetup
from jobs.shards import complete_steps, write_shard

INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


class ProbeRunner:
    def __init__(self, probes: list[Probe], paths: RunPaths) -> None:
        self.probes = probes
        self.paths = paths
        self.complete = {probe.spec.label: complete_steps(paths, probe.spec.label) for probe in probes}

    @classmethod
    def build(cls, specs: Sequence[ProbeFields], setup: ProbeSetup, paths: RunPaths) -> "ProbeRunner":
        """Each probe of ``specs`` (the run spec's, each the union of every type's fields) with its
        type's own fields."""
        typed = [PROBE_KINDS.typed(spec) for spec in specs]
        if any(isinstance(spec, LossEvaluationFields) and spec.compile_mode != "off" for spec in typed):
            keep_compiled_kernels_in(paths)
        return cls([PROBES.get(spec.type)(spec, setup) for spec in typed], paths)

    def wants(self, step: int) -> bool:
        return any(probe.wants(step) for probe in self.probes)

    def before_step(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """θ_t, when a probe wants this step."""
        return flat_parameters(model) if self.wants(step) else None

    def after_step(self, context: ProbeContext, journal: JournalWriter) -> None:
        with forked_random_streams(context.params_before.device):
            for probe in self.probes:
                if not probe.wants(context.step):
                    continue
                done = self.complete[probe.spec.label]
                if probe.spec.selects(context.step) and context.step not in done:
                    measurement = probe.measure(context)
                    journal.append(
                        write_shard(
                            self.paths,
                            probe.spec.label,
                            context.step,
                            measurement.arrays,
                            measurement.metadata,
                            measurement.is_extrapolation,
                        )
                    )
                    done.add(context.step)
                probe.observe(context)

    def state_dict(self) -> dict[str, Any]:
        return {probe.spec.label: probe.state_dict() for probe in self.probes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for probe in self.probes:
            probe.load_state_dict(state.get(probe.spec.label, {}))


def step_context(
    step: int,
    model: nn.Module,
    data: Any,
    batch_indices: torch.Tensor,
    params_before: torch.Tensor,
    learning_rate: Optional[float],
    step_length: Optional[float],
) -> ProbeContext:
    """The context of the update just taken (the model holds θ_{t+1}, its grads the batch's g)."""
    return ProbeContext(
        step=step,
        model=model,
        data=data,
        batch_indices=batch_indices,
        params_before=params_before,
        params_after=flat_parameters(model),
        gradient=flat_gradients(model),
        learning_rate=learning_rate,
        optimizer_step=step_length,
    )


def keep_compiled_kernels_in(paths: RunPaths) -> None:
    """torch.compile's kernels go to the run's folder (where the environment does not name another),
    so that the run's requeued jobs, on whichever node, load them instead of compiling again."""
    os.environ.setdefault(INDUCTOR_CACHE_VARIABLE, str(paths.compile_cache_dir))


@contextmanager
def forked_random_streams(device: torch.device) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
