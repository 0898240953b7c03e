"""What the login node knows of the catalogs without importing torch: the registered names, the
initialization each model's source uses, and the files each staged data set needs.

The catalogs (jobs.models, jobs.data, jobs.optim, jobs.probes) register the builders; this
manifest lists their names for the planner, which validates sweeps of 100 000 runs in seconds and
must not load torch for it. tests/test_manifest.py checks that both agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

CATALOG_NAMES: dict[str, tuple[str, ...]] = {  # keyed as the spec's Check.catalog refers to them
    "models": (
        "cnn", "densenet121", "densenet40", "mlp", "mobilenetv2", "resnet110", "resnet18",
        "resnet20", "resnet32", "resnet34", "resnet44", "resnet56", "vgg11",
    ),
    "datasets": ("cifar10", "cifar100", "digits", "mnist", "svhn"),
    "optimizers": ("accuracy_sls", "adam", "adamw", "alig", "cocob", "gols_i", "labpal", "pal", "pls", "rmsprop", "sgd", "sgd_hd", "sls"),
    "probes": ("hessian_norm", "interpolation", "line"),
}  # fmt: skip

KAIMING_NORMAL_SOURCES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")  # the line paper's code

DATA_FILES: dict[str, tuple[str, ...]] = {  # files under a data root that must exist (what ``orch data fetch`` stages)
    "cifar10": ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "mnist": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-images-idx3-ubyte"),
}


def source_init(model_name: str) -> str:
    """The initialization the model's source uses: what ``model.init: null`` resolves to."""
    return "kaiming_normal" if model_name in KAIMING_NORMAL_SOURCES else "pytorch_default"


def missing_files(dataset_name: str, root: Optional[str]) -> list[Path]:
    """The files of a staged data set that are not under ``root`` (all of them when root is None)."""
    base = Path(root or "").expanduser()
    return [base / relative for relative in DATA_FILES[dataset_name] if root is None or not (base / relative).is_file()]
