"""Handing committed attempts to the scheduler: where each runs (targets), in which arrays, and
the launch itself, which claims held-back attempts, submits them and records their job ids.

An attempt is committed held back (PENDING, no job) before any job exists; a launch claims it in
one short transaction (so two commands never submit it twice), hands the array to the backend
with no transaction open, and records the job ids of what the scheduler took. What it refused
(a submit limit reached meanwhile, slurmctld not answering after the backend's retries) is held
back again with the refusal as its reason: a later sync submits it (orchestrator/feed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import operator
import os
import secrets
import socket
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from jobs import faults
from jobs.entry import AttemptRequest
from jobs.paths import RunPaths
from jobs.spec import RunSpec
from orchestrator.bulk import in_chunks
from orchestrator.containers import container_image, image_sha256, launcher_argv
from orchestrator.errors import UserError
from orchestrator.executors import ArraySubmission, JobHandle, JobSettings, SubmitRefused, get_backend
from orchestrator.home import OrchHome
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt
from orchestrator.registry.tables import RunState
from orchestrator.sbatch import SbatchOptions, effective_sbatch

WAITING_FOR_SLOT = "waiting for a submit slot"  # the reason of a held-back attempt


REQUEUE_MARGIN = 2  # requeues beyond the planned segments (preemptions, early warning signals)


@dataclass(frozen=True)
class PreparedAttempt:
    """A committed attempt, ready for the scheduler (plain values: its session has ended)."""

    executor: str
    array_name: str  # "<submission>.<group>": the job name that finds the array again
    request: AttemptRequest
    spec: RunSpec
    profile: ClusterProfile
    number: int  # of the attempt among its run's
    array_task: int  # its task in the array (shared by the attempts packed into one)
    image_sha256: Optional[str]
    sbatch: SbatchOptions  # the run's sbatch options over the profile's (equal in an array)
    gate: Optional[str] = None  # the smoke sweep it waits on (orchestrator/smoke.py)
    after_jobs: Optional[str] = None  # the Slurm dependency its job goes out with (equal in an array)


@dataclass(frozen=True)
class RunToSubmit:
    """A recorded run a submission considers (plain values: no ORM object per run)."""

    run_id: str
    state: str
    attempts: int  # made so far: the next is number attempts + 1
    spec: RunSpec


@dataclass(frozen=True)
class SubmitChoices:
    """What the command line chooses for a submission over its runs' cluster profiles."""

    executor: Optional[str] = None  # slurm, local or debug; default: each profile's executor
    max_parallel: Optional[int] = None  # tasks of an array running at once; default: each profile's


def grouped(
    submission_id: str, runs: Sequence[RunToSubmit], targets: Sequence[AttemptTarget]
) -> list[list[PreparedAttempt]]:
    """The attempts of ``runs`` in arrays: runs share one when they share an executor, a cluster
    profile, resources, effective sbatch options and an image; each attempt's array and position
    recorded before sbatch."""
    by_array = sorted(zip(runs, targets), key=lambda pair: pair[1].array_key)
    groups = []
    for number, (_, grouped) in enumerate(groupby(by_array, key=lambda pair: pair[1].array_key)):
        array_name = f"{submission_id}.{number}"
        groups.append(
            [
                prepared_attempt(run, target, array_name, position // target.spec.resources.pack)
                for position, (run, target) in enumerate(grouped)
            ]
        )
    return groups


def prepared_attempt(run: RunToSubmit, target: AttemptTarget, array_name: str, task: int) -> PreparedAttempt:
    key = attempt_key(run.run_id, run.attempts + 1)
    request = AttemptRequest(run.run_id, str(target.paths.run_dir), key, umask=target.profile.results_umask)
    return PreparedAttempt(
        target.executor,
        array_name,
        request,
        target.spec,
        target.profile,
        run.attempts + 1,
        task,
        target.image_sha256,
        target.sbatch,
    )


@contextlib.contextmanager
def results_umask(*profiles: ClusterProfile) -> Iterator[None]:
    """Files and folders of runs (spec, logs, figures, and the jobs this process starts) get the
    profiles' modes (the strictest of several)."""
    previous = os.umask(functools.reduce(operator.or_, (profile.results_umask for profile in profiles), 0))
    try:
        yield
    finally:
        os.umask(previous)


def array_of(group: Sequence[PreparedAttempt], home: OrchHome) -> ArraySubmission:
    first = group[0]
    array_name = first.array_name
    settings = JobSettings(
        resources=first.spec.resources,
        folder=first.profile.results_path(home) / "submitit" / array_name.rpartition(".")[0],
        max_parallel=first.profile.max_parallel,
        name=array_name,
        launcher=launcher_argv(first.spec, first.profile, home),
        signal_delay_s=first.profile.signal_delay_s,
        max_requeues=first.spec.resources.segments + REQUEUE_MARGIN,
        sbatch=first.sbatch,
        dependency=first.after_jobs or None,
    )
    return ArraySubmission([item.request for item in group], settings)


@dataclass(frozen=True)
class AttemptTarget:
    """Where and how a run's next attempt runs: resolved, and its image checked, before any write."""

    spec: RunSpec  # with the profile's data root where the spec names none
    profile: ClusterProfile
    paths: RunPaths
    image_sha256: Optional[str]
    executor: str
    sbatch: SbatchOptions  # the run's sbatch options over the profile's
    array_key: str  # runs with the same key share an array


class TargetResolver:
    """Attempt targets of many runs: profiles, data roots, image digests and array keys are
    worked out once per distinct value (the runs of a plan share their section objects)."""

    def __init__(self, home: OrchHome, choices: SubmitChoices) -> None:
        self.home = home
        self.choices = choices
        self.profiles: dict[str, ClusterProfile] = {}
        # (id of data, root) -> (data, with the root)
        self.data: dict[tuple[int, Optional[str]], tuple[Any, Any]] = {}
        self.images: dict[tuple[str, Optional[str]], Optional[str]] = {}
        # -> (resources, effective sbatch, key)
        self.array_keys: dict[tuple[str, str, int, Optional[str]], tuple[Any, SbatchOptions, str]] = {}

    def target(self, run: RunToSubmit) -> AttemptTarget:
        spec = run.spec
        profile = self.profile(spec.cluster)
        if spec.data.root is None and profile.data_root is not None:
            spec = replace(spec, data=self._with_root(spec.data, profile.data_root))
        # a missing image is bad input: found before anything is written
        digest = self._image_digest(spec, profile)
        executor = self.choices.executor or profile.executor
        paths = RunPaths.under(profile.results_path(self.home), run.run_id)
        _, sbatch, array_key = self._array_key(executor, profile, spec)
        return AttemptTarget(spec, profile, paths, digest, executor, sbatch, array_key)

    def profile(self, cluster: str) -> ClusterProfile:
        """The cluster's profile, with the command line's choices over its defaults."""
        if cluster not in self.profiles:
            profile = load_profile(cluster)
            if self.choices.max_parallel is not None:
                profile = replace(profile, max_parallel=self.choices.max_parallel)
            self.profiles[cluster] = profile
        return self.profiles[cluster]

    def _with_root(self, data: Any, root: str) -> Any:
        key = (id(data), root)
        if key not in self.data:
            self.data[key] = (data, replace(data, root=root))  # holds ``data``: its id stays its own
        return self.data[key][1]

    def _image_digest(self, spec: RunSpec, profile: ClusterProfile) -> Optional[str]:
        key = (profile.name, spec.container.image)
        if key not in self.images:
            self.images[key] = checked_image_digest(spec, profile, self.home)
        return self.images[key]

    def _array_key(
        self, executor: str, profile: ClusterProfile, spec: RunSpec
    ) -> tuple[Any, SbatchOptions, str]:
        """(the resources it was worked out for, the effective sbatch options, the array key): runs
        share an array when they agree on all of it (the run's own sbatch options only as far as
        they change the profile's)."""
        key = (executor, profile.name, id(spec.resources), spec.container.image)
        if key not in self.array_keys:
            sbatch = effective_sbatch(profile.sbatch, spec.resources.sbatch)
            scheduled = dataclasses.asdict(replace(spec.resources, sbatch=sbatch))
            self.array_keys[key] = (
                spec.resources,
                sbatch,
                json.dumps([executor, profile.name, scheduled, spec.container.image], sort_keys=True),
            )
        return self.array_keys[key]


def attempt_key(run_id: str, number: int) -> str:
    """Names an attempt's journal folder. Unique by construction (a run's attempt numbers are
    unique), where 32 random bits alone collide at a lab's scale (~1 % at 10 000 attempts); the
    random tail keeps a registry rebuilt from scratch off the journal folders of an older one."""
    return f"{number:03d}-{run_id}-{secrets.token_hex(4)}"


def checked_image_digest(spec: RunSpec, profile: ClusterProfile, home: OrchHome) -> Optional[str]:
    image = container_image(spec, profile)
    if profile.container.runtime is None or image is None:
        return None
    if not image.is_file():
        raise UserError(
            f"container image {image} does not exist (run {spec.cluster}); accepted: an existing .sif "
            "file in container.image or the profile's container.image"
        )
    return image_sha256(image, home.image_digest_cache)


@dataclass
class LaunchReport:
    """What launches handed to the scheduler and what they held back."""

    launched: list[str] = field(default_factory=list)  # run ids
    held_back: list[str] = field(default_factory=list)  # run ids
    refusals: list[str] = field(default_factory=list)  # what the scheduler said when it refused

    def add(self, other: LaunchReport) -> None:
        self.launched += other.launched
        self.held_back += other.held_back
        self.refusals += other.refusals


def grouped_by_array(attempts: Sequence[tuple[PreparedAttempt, str]]) -> list[list[PreparedAttempt]]:
    """The attempts (each with its array key) in arrays, an array per key, in the order the keys
    first appear and the attempts come."""
    arrays: dict[str, list[PreparedAttempt]] = {}
    for attempt, array_key in attempts:
        arrays.setdefault(array_key, []).append(attempt)
    return list(arrays.values())


def claim(engine: Engine, group: Sequence[PreparedAttempt], array_name: str) -> list[PreparedAttempt]:
    """Take the attempts of ``group`` that are still held back (another command may have launched
    some meanwhile) for one array named ``array_name``, numbered in order (``resources.pack``
    consecutive ones share a task), in one transaction: from here a sync that sees them without a
    job id asks the scheduler by that name."""
    keys = [item.request.attempt_key for item in group]
    submitter = f"{socket.gethostname()}:{os.getpid()}"
    with Session(engine) as session, session.begin():
        held: set[str] = set()
        for chunk in in_chunks(keys):
            query = select(Attempt.key).where(
                Attempt.key.in_(chunk), Attempt.held_back.is_(True), Attempt.state == RunState.PENDING
            )
            held.update(session.scalars(query.with_for_update()))
        pack = group[0].spec.resources.pack if group else 1
        claimed = [
            replace(item, array_name=array_name, array_task=position // pack)
            for position, item in enumerate(item for item in group if item.request.attempt_key in held)
        ]
        if claimed:
            attempts = Attempt.__table__
            session.connection().execute(
                update(attempts)
                .where(attempts.c.key == bindparam("attempt"))
                .values(
                    held_back=False,
                    reason=None,
                    submission_id=bindparam("name"),
                    array_task=bindparam("task"),
                    pack_slot=bindparam("slot"),
                    submitter=submitter,
                ),
                [
                    {
                        "attempt": item.request.attempt_key,
                        "name": array_name,
                        "task": item.array_task,
                        "slot": pack_slot(position, pack, len(claimed)),
                    }
                    for position, item in enumerate(claimed)
                ],
            )
    return claimed


def pack_slot(position: int, pack: int, attempts: int) -> Optional[int]:
    """The place of an array's attempt ``position`` in its task (None: the task holds it alone)."""
    task_start = position - position % pack
    return position % pack if min(pack, attempts - task_start) > 1 else None


def launch(engine: Engine, home: OrchHome, group: Sequence[PreparedAttempt]) -> LaunchReport:
    """Submit one array of claimed attempts and record the job ids of those the scheduler took;
    those it refused are held back again, with its answer as their reason."""
    faults.reached("submit.scheduler")
    refusal: Optional[str] = None
    try:
        with results_umask(group[0].profile):
            handles = get_backend(group[0].executor).submit(array_of(group, home))
    except SubmitRefused as refused:
        handles, refusal = refused.handles, refused.message
    faults.reached("submit.launched")
    taken, refused_items = list(group[: len(handles)]), list(group[len(handles) :])
    with Session(engine) as session, session.begin():
        if taken:
            record_jobs(session, taken, handles)
        if refused_items:
            hold_back(session, refused_items, f"{WAITING_FOR_SLOT}: the scheduler refused it ({refusal})")
    return LaunchReport(
        [item.request.run_id for item in taken],
        [item.request.run_id for item in refused_items],
        [refusal] if refusal else [],
    )


def record_jobs(session: Session, items: Sequence[PreparedAttempt], handles: Sequence[JobHandle]) -> None:
    attempts = Attempt.__table__
    session.connection().execute(
        update(attempts)
        .where(attempts.c.key == bindparam("attempt"))
        .values(
            job_id=bindparam("job"),
            array_task=bindparam("task"),
            stdout_path=bindparam("out"),
            stderr_path=bindparam("err"),
        ),
        [
            {
                "attempt": item.request.attempt_key,
                "job": handle.job_id,
                "task": handle.array_task,
                "out": handle.stdout_path or None,
                "err": handle.stderr_path or None,
            }
            for item, handle in zip(items, handles)
        ],
    )


def hold_back(session: Session, items: Sequence[PreparedAttempt], reason: str) -> None:
    """Hold the attempts back again (no job was made for them), with ``reason``."""
    attempts = Attempt.__table__
    session.connection().execute(
        update(attempts)
        .where(attempts.c.key == bindparam("attempt"), attempts.c.job_id.is_(None))
        .values(held_back=True, reason=reason, submitter=None),
        [{"attempt": item.request.attempt_key} for item in items],
    )
