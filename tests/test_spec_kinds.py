"""Each optimizer and probe type has its own dataclass of fields; the run spec's ``optimizer`` and
``probes`` items hold their union, and run ids depend on a kind's own fields only."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest
import torch

from jobs.catalog import known_names
from jobs.manifest import catalog_names
from jobs.optim import TrainingShape, build_optimizer
from jobs.optimizer_fields import OPTIMIZER_KINDS, OptimizerFields, PalFields, SgdFields
from jobs.probe_fields import PROBE_KINDS, LineFields
from jobs.schema import SpecKinds, checked
from jobs.spec import OptimizerSpec, ProbeSpec, RunSpec, violations
from orchestrator.fingerprint import canonical_form, run_id


def test_every_kind_has_a_builder_and_every_builder_a_kind() -> None:
    assert OPTIMIZER_KINDS.names() == known_names()["optimizers"] == list(catalog_names()["optimizers"])
    assert PROBE_KINDS.names() == known_names()["probes"] == list(catalog_names()["probes"])


def test_the_union_holds_every_kinds_fields_and_nothing_else() -> None:
    for kinds, union in ((OPTIMIZER_KINDS, OptimizerSpec), (PROBE_KINDS, ProbeSpec)):
        declared = {name for kind in kinds.names() for name in kinds.field_names(kind)}
        assert {spec_field.name for spec_field in dataclasses.fields(union)} == declared


def test_an_optimizer_gets_its_own_fields_only() -> None:
    parameter = torch.nn.Parameter(torch.zeros(3))
    flat = OptimizerSpec(name="pal", measuring_step=0.05, max_step=2.0)
    shape = TrainingShape(total_steps=10, steps_per_epoch=4, batch_size=4, train_size=16)
    optimizer = build_optimizer([parameter], flat, shape, batches=None)  # type: ignore[arg-type]  # PAL asks for no batches at construction

    own = getattr(optimizer, "spec")  # the fields the optimizer keeps
    assert type(own) is PalFields
    assert (own.name, own.measuring_step, own.max_step) == ("pal", 0.05, 2.0)
    assert not hasattr(own, "lr")  # PAL has no learning rate


def test_a_probe_type_gets_its_own_fields_only() -> None:
    line = PROBE_KINDS.typed(ProbeSpec(type="line", interval=0.25, name="lines"))

    assert type(line) is LineFields and (line.interval, line.label) == (0.25, "lines")
    assert not hasattr(line, "alphas") and not hasattr(line, "hessian_samples")


def test_a_field_of_another_kind_is_refused_unless_at_its_default() -> None:
    at_default = RunSpec(optimizer=OptimizerSpec(name="pal", lr=0.1))
    set_for_sgd = RunSpec(optimizer=OptimizerSpec(name="pal", lr=0.3))

    assert list(violations(at_default, known_names())) == []
    [(key, value, accepted)] = violations(set_for_sgd, known_names())
    assert (key, value) == ("optimizer.lr", 0.3)
    assert accepted.startswith("not a field of optimizer pal; its fields: direction_adaptation, ")


def test_each_kinds_own_checks_run_with_its_keys() -> None:
    spec = RunSpec(optimizer=OptimizerSpec(name="labpal", batch_factors=[1, 2]))

    [(key, _, accepted)] = violations(spec, known_names())
    assert key == "optimizer.batch_factors" and accepted == "one factor more than batch_milestones (2)"


def test_two_kinds_declaring_one_field_unlike_cannot_form_a_union() -> None:
    @dataclasses.dataclass
    class Slow(OptimizerFields):
        lr: float = checked(0.1, gt=0.0)

    @dataclasses.dataclass
    class Fast(OptimizerFields):
        lr: float = checked(1.0, gt=0.0)

    kinds: SpecKinds[OptimizerFields] = SpecKinds(OptimizerFields, "name", "optimizer {}")
    kinds.register("slow")(Slow)
    kinds.register("fast")(Fast)
    with pytest.raises(TypeError, match="Fast.lr is declared unlike"):
        kinds.union("Both", __name__)
    with pytest.raises(ValueError, match="optimizer slow is declared twice"):
        kinds.register("slow")(Slow)


@dataclasses.dataclass
class NewOptimizerFields(OptimizerFields):
    """An optimizer added later, with fields on by default and one the SGD fields share."""

    lr: float = checked(0.1, gt=0.0)
    trust_ratio: float = checked(0.02, gt=0.0)
    extra_passes: int = checked(3, ge=0)
    clip: Optional[float] = None


def test_a_new_optimizer_or_a_changed_default_leaves_other_kinds_run_ids_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids hash a kind's own fields over the first flat schema's defaults: an optimizer added later,
    with fields on by default, or another optimizer's default changed, changes no SGD run id."""
    sgd = RunSpec(optimizer=OptimizerSpec(name="sgd", lr=0.05, momentum=0.9))
    before = run_id(sgd)

    kinds: dict[str, Any] = dict(OPTIMIZER_KINDS._classes)
    monkeypatch.setattr(OPTIMIZER_KINDS, "_classes", {**kinds, "newopt": NewOptimizerFields})
    with_new_kind = OPTIMIZER_KINDS.union("OptimizerSpec", __name__)
    flat_sgd = with_new_kind(name="sgd", lr=0.05, momentum=0.9)
    assert canonical_form(flat_sgd) == canonical_form(sgd.optimizer)
    assert run_id(dataclasses.replace(sgd, optimizer=flat_sgd)) == before

    new_run = RunSpec(optimizer=with_new_kind(name="newopt", trust_ratio=0.01))
    assert canonical_form(new_run.optimizer)["trust_ratio"] == 0.01
    assert run_id(new_run) != before

    @dataclasses.dataclass
    class PalWithAnotherDefault(OptimizerFields):
        weight_decay: float = checked(0.0, ge=0.0)
        measuring_step: float = checked(0.2, gt=0.0)

    monkeypatch.setattr(OPTIMIZER_KINDS, "_classes", {**kinds, "pal": PalWithAnotherDefault})
    assert canonical_form(SgdFields(name="sgd", lr=0.05, momentum=0.9)) == canonical_form(sgd.optimizer)
