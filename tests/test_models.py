"""Every registered model: parameter count (10 classes), output shape, initialization."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jobs.models import MODELS, build_model
from jobs.spec import ModelSpec

# name, spec fields, input shape, parameters (10 classes)
PARAMETER_COUNTS = [
    ("resnet20", {}, (3, 32, 32), 269_722),  # 0.27 M (He et al. 2016, Table 6)
    ("resnet32", {}, (3, 32, 32), 464_154),  # 0.46 M
    ("resnet44", {}, (3, 32, 32), 658_586),  # 0.66 M
    ("resnet56", {}, (3, 32, 32), 853_018),  # 0.85 M
    ("resnet110", {}, (3, 32, 32), 1_727_962),  # 1.7 M
    ("resnet18", {}, (3, 32, 32), 11_173_962),
    ("resnet34", {}, (3, 32, 32), 21_282_122),
    ("mobilenetv2", {}, (3, 32, 32), 2_236_682),
    ("densenet40", {}, (3, 32, 32), 1_019_722),  # 1.0 M (Huang et al. 2017, Table 2)
    ("densenet121", {}, (3, 32, 32), 6_956_298),
    ("vgg11", {}, (3, 32, 32), 9_231_114),
    ("mlp", {"hidden": [512, 256]}, (1, 28, 28), 535_818),  # the thesis MLP 784-512-256-10
    ("mlp", {"hidden": [64, 64]}, (1, 8, 8), 8_970),  # digits
    ("cnn", {"hidden": [16, 32]}, (1, 8, 8), 5_178),  # digits: 144 + 32 + 4 608 + 64 + 330
]


@pytest.mark.parametrize(
    ("name", "fields", "input_shape", "expected"),
    PARAMETER_COUNTS,
    ids=[f"{row[0]}-{row[3]}" for row in PARAMETER_COUNTS],
)
def test_parameter_count_and_output_shape(
    name: str, fields: dict, input_shape: tuple[int, ...], expected: int
) -> None:
    model = build_model(ModelSpec(name=name, **fields), input_shape, 10)
    assert sum(parameter.numel() for parameter in model.parameters()) == expected
    with torch.no_grad():
        assert model.eval()(torch.randn(2, *input_shape)).shape == (2, 10)


def test_every_registered_model_has_a_parameter_count_test() -> None:
    assert set(MODELS.names()) == {row[0] for row in PARAMETER_COUNTS}


def test_cifar_resnets_use_kaiming_normal_initialization_unless_told_otherwise() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet56"), (3, 32, 32), 10)
    convolution = model.stages[2][0].conv1  # 32 → 64 channels, 3×3: fan-in 288
    assert convolution.weight.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.02)
    default = build_model(ModelSpec(name="resnet56", init="pytorch_default"), (3, 32, 32), 10)
    bound = 1 / math.sqrt(288)  # kaiming_uniform(a=√5): U(−1/√fan_in, 1/√fan_in)
    assert default.stages[2][0].conv1.weight.abs().max().item() <= bound
    # option A
    assert not any(
        isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) for module in model.modules()
    )


def test_plan_records_the_source_initialization(tmp_path) -> None:
    from jobs.catalog import known_names
    from orchestrator.sweep import load_sweep
    from tests.conftest import write_sweep

    sweep = write_sweep(
        tmp_path,
        "inits",
        "name: inits\ninclude: [problems/digits_mlp.yaml]\ngrid: {model.name: [mlp, resnet20]}\n",
    )
    assert [run.spec.model.init for run in load_sweep(sweep, known_names()).runs] == [
        "pytorch_default",
        "kaiming_normal",
    ]
    chosen = write_sweep(
        tmp_path,
        "chosen",
        "name: chosen\ninclude: [problems/digits_mlp.yaml]\nbase: {model: {name: resnet20, init: "
        "pytorch_default}}\n",
    )
    assert load_sweep(chosen, known_names()).runs[0].spec.model.init == "pytorch_default"
