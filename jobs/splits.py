"""Training/validation splits of the official data sets, without torch.

The indices are exactly those of ``torch.utils.data.random_split`` with a ``torch.Generator``
seeded ``seed`` (what the line paper's code draws): ``random_split`` takes ``torch.randperm``,
which on the CPU is a Fisher-Yates shuffle driven by the generator's MT19937 stream; numpy's
legacy ``RandomState(seed)`` seeds the same MT19937 the same way, and its full-range 32-bit draws
are that stream's raw outputs. tests/test_datasets.py checks the equality against torch.

The planner on the login node computes a run's split hash from here without loading torch; the
job draws its split from here too, so both sides agree by construction.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from jobs.spec import DataSpec

# (training, test) set sizes of the official data sets: the planner computes a run's split from
# them and writes its hash into the spec, which the job checks against the files it reads
OFFICIAL_COUNTS = {
    "digits": (1797, 0),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "svhn": (73257, 26032),
    "mnist": (60000, 10000),
}
MT19937_SEED_MASK = 2**32 - 1  # torch seeds its MT19937 with the low 32 bits of the seed


def random_permutation(count: int, seed: int) -> list[int]:
    """``torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()``."""
    draws = (
        np.random.RandomState(seed & MT19937_SEED_MASK)
        .randint(0, 2**32, size=max(count - 1, 0), dtype=np.uint64)
        .tolist()
    )
    permutation = list(range(count))
    for position, draw in enumerate(draws):
        other = position + draw % (count - position)
        permutation[position], permutation[other] = permutation[other], permutation[position]
    return permutation


def random_split_indices(indices: Sequence[int], first_length: int, seed: int) -> tuple[list[int], list[int]]:
    """The two parts ``random_split(indices, [first_length, rest], Generator().manual_seed(seed))`` yields."""
    order = random_permutation(len(indices), seed)
    return [indices[i] for i in order[:first_length]], [indices[i] for i in order[first_length:]]


def subset_indices(spec: DataSpec, train_count: int, test_count: int) -> tuple[list[int], list[int]]:
    """(training, validation) sample indices for a source with ``train_count`` training and
    ``test_count`` test samples: into the training set, or with ``val_source: test`` validation
    indices into the test set. Raises ValueError when the spec does not fit those sizes."""
    if spec.val_source == "test":
        if test_count == 0:
            raise ValueError(f"data set {spec.name} has no official test set to validate on")
        train = list(range(train_count))
        return (_keep_fraction(train, spec.fraction, spec.split_seed) if spec.fraction else train), list(
            range(test_count)
        )
    return split_indices(train_count, _train_size(spec, train_count), spec.fraction, spec.split_seed)


def split_sizes(spec: DataSpec, train_count: int, test_count: int) -> tuple[int, int]:
    """The lengths of :func:`subset_indices`, without drawing them."""
    if spec.val_source == "test":
        if test_count == 0:
            raise ValueError(f"data set {spec.name} has no official test set to validate on")
        return (int(train_count * spec.fraction) if spec.fraction else train_count), test_count
    train_size = _train_size(spec, train_count)
    if spec.fraction is not None and spec.fraction != 1.0:
        return int(train_size * spec.fraction), int((train_count - train_size) * spec.fraction)
    return train_size, train_count - train_size


def _train_size(spec: DataSpec, train_count: int) -> int:
    train_size = (
        spec.train_size
        if spec.train_size is not None
        else train_count - max(1, round(train_count * spec.val_fraction))
    )
    if not 0 < train_size < train_count:
        raise ValueError(
            f"train_size {train_size} leaves no validation samples of the {train_count} training "
            f"samples of {spec.name}"
        )
    return train_size


def split_indices(
    num_samples: int, train_size: int, fraction: Optional[float], seed: int
) -> tuple[list[int], list[int]]:
    """Indices of the training and validation subsets, exactly as the line paper's code draws them:
    ``random_split`` into ``train_size`` and the rest, then of each part into ``int(size · fraction)``
    and the rest, each with a ``Generator`` seeded ``seed``."""
    train, val = random_split_indices(range(num_samples), train_size, seed)
    if fraction is not None and fraction != 1.0:
        train, val = _keep_fraction(train, fraction, seed), _keep_fraction(val, fraction, seed)
    return train, val


def _keep_fraction(indices: list[int], fraction: float, seed: int) -> list[int]:
    return random_split_indices(indices, int(len(indices) * fraction), seed)[0]


def split_sha256(train_indices: Sequence[int], val_indices: Sequence[int]) -> str:
    """sha256 of the training then the validation indices as little-endian int64."""
    digest = hashlib.sha256(np.asarray(train_indices, dtype="<i8").tobytes())
    digest.update(np.asarray(val_indices, dtype="<i8").tobytes())
    return digest.hexdigest()


def planned_split_sizes(spec: DataSpec) -> Optional[tuple[int, int]]:
    """(training, validation) sample counts of the run's split of the official files (None where
    :func:`planned_indices_sha256` is None: an unknown data set or unverified files)."""
    if spec.name not in OFFICIAL_COUNTS or spec.verify_checksums is False:
        return None
    return split_sizes(spec, *OFFICIAL_COUNTS[spec.name])


def planned_indices_sha256(spec: DataSpec) -> Optional[str]:
    """The split's hash for the official files (None for an unknown data set or unverified files)."""
    if spec.name not in OFFICIAL_COUNTS or spec.verify_checksums is False:
        return None
    return split_sha256(*subset_indices(spec, *OFFICIAL_COUNTS[spec.name]))
