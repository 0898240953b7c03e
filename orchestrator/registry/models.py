"""The run registry's tables (SQLAlchemy 2.0 typed ORM). The schema is created by Alembic (db/).

Times are UNIX seconds (REAL): exact, portable between SQLite and PostgreSQL, and taken verbatim
from the journal so that ingesting an event twice writes the same value.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class RunState:
    PLANNED = "PLANNED"  # recorded, never submitted
    PENDING = "PENDING"  # submitted, not started
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    LOST = "LOST"  # the process is gone without a final journal event (killed, node lost)
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # the states below come from Slurm (sacct)
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"

    ACTIVE = (PENDING, RUNNING)
    ACTIVE_SQL = "state IN ('PENDING', 'RUNNING')"  # the partial index below: one active attempt per run
    RESUMABLE = (FAILED, TIMEOUT, CANCELLED, LOST, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE)
    ALL = (PLANNED, PENDING, RUNNING, COMPLETED, *RESUMABLE)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    source_path: Mapped[str] = mapped_column(Text)
    source_text: Mapped[str] = mapped_column(Text)
    created_time: Mapped[float] = mapped_column(Float)
    updated_time: Mapped[float] = mapped_column(Float)

    members: Mapped[list["SweepRun"]] = relationship(back_populates="sweep", order_by="SweepRun.position")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    canonical_json: Mapped[str] = mapped_column(Text)  # what the id hashes
    spec_yaml: Mapped[str] = mapped_column(Text)  # the resolved spec, all fields
    # The same as JSON (schema order): what --where, export and estimates read in SQL. NULL only
    # while migration 0005 fills it in.
    spec_json: Mapped[Optional[str]] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=RunState.PLANNED, index=True)
    run_dir: Mapped[Optional[str]] = mapped_column(Text)
    total_steps: Mapped[int] = mapped_column(Integer)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    created_time: Mapped[float] = mapped_column(Float)

    memberships: Mapped[list["SweepRun"]] = relationship(back_populates="run")
    attempts: Mapped[list["Attempt"]] = relationship(back_populates="run", order_by="Attempt.number")
    checkpoints: Mapped[list["Checkpoint"]] = relationship(order_by="Checkpoint.step")
    shards: Mapped[list["Shard"]] = relationship(order_by="(Shard.probe, Shard.step)")


class SweepRun(Base):
    """A run reached from a sweep (the same run may belong to several sweeps)."""

    __tablename__ = "sweep_runs"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    swept_json: Mapped[str] = mapped_column(Text)  # the values this run takes on the sweep's axes

    sweep: Mapped[Sweep] = relationship(back_populates="members")
    run: Mapped[Run] = relationship(back_populates="memberships")


class Attempt(Base):
    """One execution try of a run."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("run_id", "number"),
        # At most one active attempt per run, whatever the timing of concurrent submits: the
        # database refuses the second (SQLite and PostgreSQL both have partial unique indexes).
        Index(
            "uq_attempts_one_active_per_run", "run_id", unique=True,
            sqlite_where=text(RunState.ACTIVE_SQL), postgresql_where=text(RunState.ACTIVE_SQL),
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # names the journal folder
    executor: Mapped[str] = mapped_column(String(32))
    submission_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[Optional[str]] = mapped_column(String(64))
    array_task: Mapped[Optional[int]] = mapped_column(Integer)
    hostname: Mapped[Optional[str]] = mapped_column(String(255))
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=RunState.PENDING, index=True)
    exit_code: Mapped[Optional[int]] = mapped_column(Integer)
    reason: Mapped[Optional[str]] = mapped_column(Text)
    submitted_time: Mapped[float] = mapped_column(Float)
    started_time: Mapped[Optional[float]] = mapped_column(Float)
    ended_time: Mapped[Optional[float]] = mapped_column(Float)
    heartbeat_time: Mapped[Optional[float]] = mapped_column(Float)
    steps_per_second: Mapped[Optional[float]] = mapped_column(Float)
    start_step: Mapped[Optional[int]] = mapped_column(Integer)
    journal_dir: Mapped[str] = mapped_column(Text)
    journal_seq: Mapped[int] = mapped_column(Integer, default=0)  # last ingested event
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # by the scheduler, same job
    stdout_path: Mapped[Optional[str]] = mapped_column(Text)
    stderr_path: Mapped[Optional[str]] = mapped_column(Text)
    provenance_json: Mapped[Optional[str]] = mapped_column(Text)
    image_sha256: Mapped[Optional[str]] = mapped_column(String(64))  # the container image it ran in
    # "<host>:<pid>" of the orch process that committed the attempt: while it lives and no job id
    # is recorded, the attempt is being submitted (not lost), whatever another command's sync sees.
    submitter: Mapped[Optional[str]] = mapped_column(String(300))

    run: Mapped[Run] = relationship(back_populates="attempts")


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_time: Mapped[float] = mapped_column(Float)


class Shard(Base):
    """A landscape shard: one file per (run, probe, step), written by the probes."""

    __tablename__ = "shards"
    __table_args__ = (UniqueConstraint("run_id", "probe", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"))
    probe: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    n_points: Mapped[int] = mapped_column(Integer)
    is_extrapolation: Mapped[bool] = mapped_column()
    created_time: Mapped[float] = mapped_column(Float)


class Metric(Base):
    __tablename__ = "metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"))
