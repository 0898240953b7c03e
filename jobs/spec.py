"""The run spec: the one schema shared by the login-node side and the jobs.

Dataclasses used as OmegaConf structured configs. They are the single source of truth for
defaults, types and value checks. A field's metadata may carry:

- ``check``: a :class:`Check` (numeric bounds, choices, regular expression, catalog name); the
  bounds of a list field hold for each of its items;
- ``fingerprint=False``: the field cannot change results (resources, cluster, log cadence) and is
  left out of the run id.

The checks themselves live in ``jobs/schema.py``. Each optimizer's and each probe type's fields
are their own dataclass (``jobs/optimizer_fields.py``, ``jobs/probe_fields.py``); the
``optimizer`` section and each item of ``probes`` hold the union of those (one mapping whose
``name``/``type`` selects the kind), and the optimizer or probe gets its own kind's dataclass.

Every number must be finite and every string free of control characters, whatever its check;
every integer has an upper bound a real run stays far below (and SQLite's 64-bit integers hold).

This module imports nothing heavy: the login node validates sweeps without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

from jobs.optimizer_fields import OPTIMIZER_KINDS, OptimizerFields, ScheduleSpec
from jobs.probe_fields import (
    LOSS_SETS,
    PROBE_KINDS,
    ProbeFields,
    line_memory_bytes,
    line_points_bound,
)
from jobs.schema import (
    MAX_HIDDEN_LAYERS,
    MAX_HIDDEN_WEIGHTS,
    MAX_LINE_POINTS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    Check,
    checked,
    is_number,
    kind_violations,
    unfingerprinted,
    value_problem,
)

__all__ = [
    "LOSS_SETS",
    "MAX_LINE_POINTS",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "OPTIMIZER_KINDS",
    "PROBE_KINDS",
    "Check",
    "OptimizerSpec",
    "ProbeSpec",
    "RunSpec",
    "ScheduleSpec",
    "is_number",
    "line_memory_bytes",
    "line_points_bound",
    "value_problem",
]

SLURM_TIME = r"(\d{1,4}-)?\d{1,7}(:\d{1,2}){0,2}"
SLURM_TIME_HINT = "a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
SLURM_MEM = r"\d{1,12}[KMGT]?"


@dataclass
class ModelSpec:
    name: str = checked("mlp", catalog="models")
    # widths (mlp) or channels (cnn)
    hidden: list[int] = checked([64], ge=1, le=MAX_WIDTH, max_items=MAX_HIDDEN_LAYERS)
    activation: str = checked("relu", choices=("relu", "tanh", "gelu"))
    dropout: Optional[float] = checked(None, ge=0.0, lt=1.0)  # after each hidden block; None: no dropout
    # None: the source's (docs/models.md)
    init: Optional[str] = checked(None, choices=("kaiming_normal", "pytorch_default"))
    channels_last: Optional[bool] = None  # NHWC memory format for speed on GPUs; None: the faithful NCHW
    # mixed-precision training forwards; None: the faithful float32
    autocast: Optional[str] = checked(None, choices=("bfloat16", "float16"))


@dataclass
class DataSpec:
    name: str = checked("digits", catalog="datasets")
    root: Optional[str] = unfingerprinted(None)  # data set directory; None: the cluster profile's
    val_fraction: float = checked(0.2, gt=0.0, lt=1.0)  # used when train_size is None
    split_seed: int = checked(42, ge=0, le=MAX_SEED)
    # samples of the official training set kept for training; the rest: validation
    train_size: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES)
    # then keep this fraction of each part (line paper: 0.1)
    fraction: Optional[float] = checked(None, gt=0.0, le=1.0)
    # None/split: from the training set; test: the official test set
    val_source: Optional[str] = checked(None, choices=("split", "test"))
    mean: list[float] = field(default_factory=list)  # empty: the source's normalization constants
    std: list[float] = field(default_factory=list)
    # random crop with this zero padding; None: the source's (CIFAR-10 4, CIFAR-100 8)
    crop_padding: Optional[int] = checked(None, ge=0, le=256)
    flip: Optional[bool] = None  # random horizontal flips; None: the source's
    val_augment: Optional[bool] = (
        None  # augment validation too (the line paper's code did, by accident); None: no
    )
    # torchvision's md5 check of the files; None: on (false: e.g. a re-packed private copy)
    verify_checksums: Optional[bool] = unfingerprinted(None)
    # pin the split: the job fails if it differs
    indices_sha256: Optional[str] = checked(
        None, fingerprint=False, pattern=r"[0-9a-f]{64}", pattern_hint="a sha256 in hex"
    )


if TYPE_CHECKING:

    class OptimizerSpec(OptimizerFields):
        """Every optimizer's fields (``jobs/optimizer_fields.py``): what sweep files and
        ``spec.yaml`` hold under ``optimizer:``. Generated, so mypy sees the fields as Any; code that
        needs one optimizer's fields typed takes ``OPTIMIZER_KINDS.typed(spec)``."""

        def __init__(self, **fields: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

    class ProbeSpec(ProbeFields):
        """Every probe type's fields (``jobs/probe_fields.py``): one item of ``probes:``."""

        def __init__(self, **fields: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    OptimizerSpec = OPTIMIZER_KINDS.union("OptimizerSpec", __name__)
    ProbeSpec = PROBE_KINDS.union("ProbeSpec", __name__)


def optimizer_violations(optimizer: OptimizerSpec) -> Iterator[tuple[str, Any, str]]:
    """Fields set that the chosen optimizer does not have; the optimizer's own checks."""
    return kind_violations(OPTIMIZER_KINDS, optimizer, "optimizer.")


@dataclass
class TrainingSpec:
    steps: int = checked(1000, ge=1, le=MAX_STEPS)
    # also at most the training split (checked at plan time)
    batch_size: int = checked(64, ge=1, le=MAX_SAMPLES)
    seed: int = checked(0, ge=0, le=MAX_SEED)
    checkpoint_every: int = checked(100, ge=1, le=MAX_STEPS)
    eval_every: int = checked(50, ge=1, le=MAX_STEPS)
    drop_last: bool = True
    device: str = checked("auto", choices=("auto", "cpu", "cuda"))
    # also publish a checkpoint this often
    checkpoint_minutes: Optional[float] = checked(30.0, gt=0.0, fingerprint=False)
    # a smoke test (orch submit --smoke): train to this step, then restore from its checkpoint and
    # go on, as a requeued job does; None: no rehearsal
    rehearse_requeue_at: Optional[int] = checked(None, ge=1, le=MAX_STEPS)
    # >= 0.1 s: each heartbeat is a published file
    heartbeat_seconds: float = checked(5.0, ge=0.1, fingerprint=False)
    # a diverged run fails at once instead of burning GPU time
    fail_on_nonfinite_loss: bool = unfingerprinted(True)


def probe_violations(probes: Sequence[ProbeSpec]) -> Iterator[tuple[str, Any, str]]:
    """Fields set for another probe type, each type's own checks, duplicate probe names."""
    seen: set[str] = set()
    for index, probe in enumerate(probes):
        yield from kind_violations(PROBE_KINDS, probe, f"probes[{index}].")
        if probe.label in seen:
            yield (
                f"probes[{index}].name",
                probe.name,
                f"a name other than {probe.label!r}, which an earlier probe has",
            )
        seen.add(probe.label)


def model_violations(model: ModelSpec) -> Iterator[tuple[str, Any, str]]:
    """Hidden layers whose weights no node could hold."""
    weights = sum(width_in * width_out for width_in, width_out in zip(model.hidden, model.hidden[1:]))
    if weights > MAX_HIDDEN_WEIGHTS:
        yield (
            "model.hidden",
            model.hidden,
            f"hidden layers with at most {MAX_HIDDEN_WEIGHTS} weights between them (these have {weights})",
        )


SBATCH_MAIL_TYPES = (
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
)
SBATCH_EXTRA_OPTIONS = (
    "reservation",
    "licenses",
    "hint",
    "gres-flags",
    "begin",
    "nice",
    "wckey",
    "cluster-constraint",
    "mcs-label",
)
SBATCH_EXTRA_OPTION = re.compile(r"--(?P<name>[a-z][a-z-]*)(?:=(?P<value>.+))?", re.DOTALL)
SBATCH_VALUE = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


@dataclass
class SbatchOptions:
    """sbatch options passed through to the jobs: a cluster profile's ``sbatch:`` (every job of the
    cluster) and a run's ``resources.sbatch`` (its own, key by key over the profile's; see
    ``orchestrator/sbatch.py``). None leaves an option to the profile, or to Slurm. submitit writes
    each as ``#SBATCH --name=<shell-quoted value>``; :func:`sbatch_problems` says what may go there."""

    account: Optional[str] = None  # --account: whom the allocation is charged to
    qos: Optional[str] = None
    constraint: Optional[str] = None  # node features, e.g. "1080ti&ib"
    exclude: Optional[str] = None  # nodes never to use, e.g. "tcml-node[7-8]"
    nodelist: Optional[str] = None
    mail_type: Optional[str] = None  # comma-separated, from SBATCH_MAIL_TYPES
    mail_user: Optional[str] = None
    # "--name=value" or "--flag", name from SBATCH_EXTRA_OPTIONS
    extra: list[str] = field(default_factory=list)

    def parameters(self) -> dict[str, object]:
        """submitit's ``SlurmExecutor.update_parameters`` keywords for these options."""
        named = {key: value for key, value in vars(self).items() if key != "extra" and value is not None}
        extra = {
            match["name"]: match["value"] if match["value"] is not None else True
            for match in map(SBATCH_EXTRA_OPTION.fullmatch, self.extra)
            if match
        }
        return {**named, **({"additional_parameters": extra} if extra else {})}


def sbatch_extra_name(option: str) -> Optional[str]:
    """The option's name (``reservation`` of ``--reservation=x``); None for text that is no option."""
    match = SBATCH_EXTRA_OPTION.fullmatch(option)
    return match["name"] if match else None


def sbatch_problems(options: SbatchOptions) -> Iterator[tuple[str, Any, str]]:
    """(key under ``sbatch.``, value found, what is accepted) of each option that cannot go to sbatch."""
    for key, value in vars(options).items():
        if key == "extra" or value is None:
            continue
        if not isinstance(value, str) or not SBATCH_VALUE.fullmatch(value):
            yield (
                key,
                value,
                "one line of printable text (no newlines or control characters), at most 512 characters",
            )
    if options.mail_type is not None and not set(options.mail_type.split(",")) <= set(SBATCH_MAIL_TYPES):
        yield "mail_type", options.mail_type, "a comma-separated list of " + ", ".join(SBATCH_MAIL_TYPES)
    for index, option in enumerate(options.extra):
        name = sbatch_extra_name(option) if isinstance(option, str) else None
        if name not in SBATCH_EXTRA_OPTIONS or not SBATCH_VALUE.fullmatch(option):
            allowed = ", ".join(f"--{allowed_name}" for allowed_name in SBATCH_EXTRA_OPTIONS)
            yield (
                f"extra[{index}]",
                option,
                f"--name=value (or --flag), one line, name one of {allowed}; account, qos, constraint, "
                "exclude, nodelist, mail_type and mail_user have keys of their own",
            )


MAX_PACK = 64  # runs one array task may hold


@dataclass
class ResourcesSpec:
    """What one job asks the scheduler for; checked against the cluster profile at plan time."""

    partition: Optional[str] = None  # None: the shortest partition of the profile that fits ``time``
    # None: profile default
    time: Optional[str] = checked(None, pattern=SLURM_TIME, pattern_hint=SLURM_TIME_HINT)
    gpus: int = checked(0, ge=0, le=1024)
    gpu_type: Optional[str] = None  # a gres type of the profile's nodes (1080ti); None: any
    cpus: int = checked(1, ge=1, le=100_000)
    mem: str = checked("4G", pattern=SLURM_MEM, pattern_hint="a Slurm memory size such as 4000, 500M or 16G")
    # jobs of ``time`` the run may take, requeued at each time limit
    segments: int = checked(1, ge=1, le=10_000)
    # runs sharing one array task (and its GPU), a process each; cpus and mem are the task's
    pack: int = checked(1, ge=1, le=MAX_PACK)
    # this run's own, key by key over the profile's sbatch options
    sbatch: SbatchOptions = unfingerprinted(SbatchOptions)


def resources_violations(resources: ResourcesSpec) -> Iterator[tuple[str, Any, str]]:
    """sbatch options of the run that cannot go to sbatch (the checks of a profile's ``sbatch:``)."""
    for key, found, accepted in sbatch_problems(resources.sbatch):
        yield f"resources.sbatch.{key}", found, accepted
    if resources.pack > 1 and resources.gpus > 1:
        yield "resources.pack", resources.pack, "1 for runs of several GPUs (packed runs share one GPU)"


@dataclass
class ContainerSpec:
    image: Optional[str] = None  # a .sif image; None: the cluster profile's default (or none)
    binds: list[str] = unfingerprinted([])


@dataclass
class RunSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    probes: list[ProbeSpec] = field(default_factory=list)
    resources: ResourcesSpec = unfingerprinted(ResourcesSpec)
    container: ContainerSpec = field(default_factory=ContainerSpec)
    cluster: str = unfingerprinted("local")


def memory_megabytes(slurm_mem: str) -> float:
    """Megabytes of a Slurm memory size (a bare number is megabytes, as for ``--mem``)."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", slurm_mem.strip()).groups()  # type: ignore[union-attr]  # spec-checked sizes
    return int(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def slurm_time(minutes: float) -> str:
    """``D-HH:MM:SS`` for a number of minutes (rounded up to whole seconds)."""
    days, rest = divmod(math.ceil(round(minutes * 60, 6)), 24 * 3600)
    hours, rest = divmod(rest, 3600)
    return f"{days}-{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def time_limit_minutes(slurm_time: str) -> float:
    """Minutes of a Slurm time string (the formats of ``SLURM_TIME``)."""
    days = 0
    rest = slurm_time
    if "-" in rest:
        day_text, rest = rest.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in rest.split(":")]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return days * 24 * 60 + hours * 60 + minutes + seconds / 60


def violations(
    spec: Any, known_names: Mapping[str, Sequence[str]], prefix: str = ""
) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value found, what is accepted) for each value that fails its check (an infinite
    number or a string with control characters fails in any field)."""
    for spec_field in dataclasses.fields(spec):
        yield from field_violations(spec_field, getattr(spec, spec_field.name), known_names, prefix)
    if isinstance(spec, RunSpec):
        for name, section_check in SECTION_CHECKS.items():
            yield from section_check(getattr(spec, name))


def field_violations(
    spec_field: dataclasses.Field, value: Any, known_names: Mapping[str, Sequence[str]], prefix: str = ""
) -> Iterator[tuple[str, Any, str]]:
    """The violations of one field's own checks (nested dataclasses and lists of them included)."""
    key = f"{prefix}{spec_field.name}"
    check = spec_field.metadata.get("check")
    if dataclasses.is_dataclass(value):
        yield from violations(value, known_names, key + ".")
    elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        for index, item in enumerate(value):
            yield from violations(item, known_names, f"{key}[{index}].")
    elif value_problem(value) is not None:
        bounds = check.bounds() if check is not None else ""
        yield key, value, f"{value_problem(value)} {bounds}".strip()
    elif check is not None:
        accepted = check.violation(value, known_names)
        if accepted is not None:
            yield key, value, accepted


# The checks of a run spec that look at several fields of one section, after every field's own check.
SECTION_CHECKS: dict[str, Callable[[Any], Iterator[tuple[str, Any, str]]]] = {
    "model": model_violations,
    "probes": probe_violations,
    "optimizer": optimizer_violations,
    "resources": resources_violations,
}


def spec_to_yaml(spec: RunSpec) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(spec))


def spec_from_yaml(text: str) -> RunSpec:
    """The typed spec of a resolved ``spec.yaml`` (as written at submission)."""
    return _typed_spec(text)


def spec_from_json(text: str) -> RunSpec:
    """The typed spec of a resolved spec as JSON (the registry's ``runs.spec_json``)."""
    return _typed_spec(json.loads(text))


def _typed_spec(document: str | dict[str, Any]) -> RunSpec:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(RunSpec), OmegaConf.create(document))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]  # a structured config's dataclass
