"""The ORM classes of the run registry, mapped onto the tables of :mod:`orchestrator.registry.tables`
(the one definition of the schema; created by Alembic, db/). The annotations type each attribute."""

from __future__ import annotations

from typing import Optional

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from orchestrator.registry import tables
from orchestrator.registry.tables import RunState  # noqa: F401  (imported from here too)


class Base(DeclarativeBase):
    metadata = tables.metadata


class Sweep(Base):
    __table__ = tables.sweeps

    id: Mapped[int]
    name: Mapped[str]
    description: Mapped[str]
    source_path: Mapped[str]
    source_text: Mapped[str]
    created_time: Mapped[float]
    updated_time: Mapped[float]

    members: Mapped[list["SweepRun"]] = relationship(back_populates="sweep", order_by="SweepRun.position")


class Run(Base):
    __table__ = tables.runs

    id: Mapped[str]
    canonical_json: Mapped[str]
    spec_json: Mapped[str]
    section_ids: Mapped[str]
    state: Mapped[str]
    run_dir: Mapped[Optional[str]]
    total_steps: Mapped[int]
    current_step: Mapped[int]
    created_time: Mapped[float]

    memberships: Mapped[list["SweepRun"]] = relationship(back_populates="run")
    attempts: Mapped[list["Attempt"]] = relationship(back_populates="run", order_by="Attempt.number")
    checkpoints: Mapped[list["Checkpoint"]] = relationship(order_by="Checkpoint.step")
    shards: Mapped[list["Shard"]] = relationship(order_by="(Shard.probe, Shard.step)")


class SpecSection(Base):
    __table__ = tables.spec_sections

    id: Mapped[int]
    name: Mapped[str]
    json: Mapped[str]
    digest: Mapped[str]


class SweepRun(Base):
    """A run reached from a sweep (the same run may belong to several sweeps)."""

    __table__ = tables.sweep_runs

    sweep_id: Mapped[int]
    run_id: Mapped[str]
    position: Mapped[int]
    swept_json: Mapped[str]

    sweep: Mapped[Sweep] = relationship(back_populates="members")
    run: Mapped[Run] = relationship(back_populates="memberships")


class Attempt(Base):
    """One execution try of a run."""

    __table__ = tables.attempts

    id: Mapped[int]
    run_id: Mapped[str]
    number: Mapped[int]
    key: Mapped[str]
    executor: Mapped[str]
    submission_id: Mapped[str]
    job_id: Mapped[Optional[str]]
    array_task: Mapped[Optional[int]]
    hostname: Mapped[Optional[str]]
    pid: Mapped[Optional[int]]
    state: Mapped[str]
    exit_code: Mapped[Optional[int]]
    reason: Mapped[Optional[str]]
    submitted_time: Mapped[float]
    started_time: Mapped[Optional[float]]
    ended_time: Mapped[Optional[float]]
    heartbeat_time: Mapped[Optional[float]]
    steps_per_second: Mapped[Optional[float]]
    start_step: Mapped[Optional[int]]
    end_step: Mapped[Optional[int]]
    closed_by_guess: Mapped[bool]
    journal_dir: Mapped[str]
    journal_seq: Mapped[int]
    requeues: Mapped[int]
    stdout_path: Mapped[Optional[str]]
    stderr_path: Mapped[Optional[str]]
    provenance_json: Mapped[Optional[str]]
    image_sha256: Mapped[Optional[str]]
    submitter: Mapped[Optional[str]]
    held_back: Mapped[bool]
    pack_slot: Mapped[Optional[int]]
    peak_gpu_bytes: Mapped[Optional[int]]
    gate: Mapped[Optional[str]]
    after_jobs: Mapped[Optional[str]]
    owner: Mapped[Optional[str]]

    run: Mapped[Run] = relationship(back_populates="attempts")
    requeue_history: Mapped[list["Requeue"]] = relationship(order_by="Requeue.time", viewonly=True)


class Stage(Base):
    """An analysis after a sweep (tables.stages)."""

    __table__ = tables.stages

    id: Mapped[int]
    sweep_id: Mapped[int]
    command: Mapped[str]
    state: Mapped[str]
    executor: Mapped[str]
    number: Mapped[int]
    job_ids: Mapped[str]
    after_jobs: Mapped[Optional[str]]
    reason: Mapped[Optional[str]]
    created_time: Mapped[float]
    submitted_time: Mapped[Optional[float]]
    ended_time: Mapped[Optional[float]]
    owner: Mapped[Optional[str]]


class Requeue(Base):
    """The scheduler put the attempt's job back in the queue (tables.requeues)."""

    __table__ = tables.requeues

    id: Mapped[int]
    attempt_id: Mapped[int]
    time: Mapped[float]
    cause: Mapped[str]
    source: Mapped[str]
    node: Mapped[Optional[str]]
    step: Mapped[Optional[int]]


class Checkpoint(Base):
    __table__ = tables.checkpoints

    id: Mapped[int]
    run_id: Mapped[str]
    attempt_id: Mapped[int]
    step: Mapped[int]
    path: Mapped[str]
    bytes: Mapped[int]
    sha256: Mapped[str]
    created_time: Mapped[float]


class Shard(Base):
    """A landscape shard: one file per (run, probe, step), written by the probes."""

    __table__ = tables.shards

    id: Mapped[int]
    run_id: Mapped[str]
    attempt_id: Mapped[int]
    probe: Mapped[str]
    step: Mapped[int]
    path: Mapped[str]
    bytes: Mapped[int]
    sha256: Mapped[str]
    n_points: Mapped[int]
    is_extrapolation: Mapped[bool]
    created_time: Mapped[float]


class Metric(Base):
    __table__ = tables.metrics

    run_id: Mapped[str]
    name: Mapped[str]
    step: Mapped[int]
    value: Mapped[float]
    attempt_id: Mapped[int]
