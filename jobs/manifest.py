"""What the login node knows of the catalogs without importing torch: the registered names, the
initialization each model's source uses, and the files each staged data set needs.

The catalogs (jobs.models, jobs.data, jobs.optim, jobs.probes) register the builders; this
manifest reads their names from the decorators in the source for the planner, which validates
sweeps of 100 000 runs in seconds and must not load torch for it. tests/test_manifest.py checks
that both agree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).parent  # jobs/

CATALOGS = {
    "models": ("models", "MODELS"),
    "datasets": ("data", "DATASETS"),
    "optimizers": ("optim", "OPTIMIZERS"),
    "probes": ("probes", "PROBES"),
}


@functools.cache
def catalog_names() -> dict[str, tuple[str, ...]]:
    """Each catalog's names, keyed as the spec's ``Check.catalog`` refers to them, read from the
    ``<CATALOG>.register("name")`` calls (decorators or not) in its package's source files:
    parsed, not imported, so no torch. A name that is not a literal would be missed:
    tests/test_manifest.py checks that this equals the imported catalogs'."""
    return {
        kind: tuple(sorted(_registered(PACKAGE_DIR / package, catalog)))
        for kind, (package, catalog) in CATALOGS.items()
    }


def _registered(package: Path, catalog: str) -> set[str]:
    return {
        node.args[0].value  # type: ignore[attr-defined]  # a str constant: _is_registration checked it
        for source in sorted(package.glob("*.py"))
        for node in ast.walk(ast.parse(source.read_text(), str(source)))
        if _is_registration(node, catalog)
    }


def _is_registration(node: ast.AST, catalog: str) -> bool:
    """``CATALOG.register("name")`` with a literal name."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == catalog
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


# the line paper's code
KAIMING_NORMAL_SOURCES = (
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
)

DATA_FILES: dict[
    str, tuple[str, ...]
] = {  # files under a data root that must exist (what ``orch data fetch`` stages)
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
    return [
        base / relative
        for relative in DATA_FILES[dataset_name]
        if root is None or not (base / relative).is_file()
    ]
