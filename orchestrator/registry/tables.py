"""The run registry's tables (SQLAlchemy Core): the one definition of its schema. The schema is
created by Alembic (db/); the ORM classes of :mod:`orchestrator.registry.models` are mapped onto
these tables. Read paths that need only rows and counts (``orch status``, the check whether sync
has work) query these tables without importing the ORM.

Times are UNIX seconds (REAL): exact, portable between SQLite and PostgreSQL, and taken verbatim
from the journal so that ingesting an event twice writes the same value.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)


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


metadata = MetaData()

sweeps = Table(
    "sweeps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(80), unique=True, nullable=False),
    Column("description", Text, default="", nullable=False),
    Column("source_path", Text, nullable=False),
    Column("source_text", Text, nullable=False),
    Column("created_time", Float, nullable=False),
    Column("updated_time", Float, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("canonical_json", Text, nullable=False),  # what the id hashes
    # The resolved spec, every field, as JSON in schema order: what estimates read in SQL, and
    # what show, resume and the analyses type again (jobs.spec.spec_from_json).
    Column("spec_json", Text, nullable=False),
    # The spec_sections row of each of its top-level fields, {"model": 3, "data": 1, ...} in schema
    # order: --where and export read each distinct section once, not every run's whole spec.
    Column("section_ids", Text, nullable=False),
    Column("state", String(16), default=RunState.PLANNED, index=True, nullable=False),
    Column("run_dir", Text),
    Column("total_steps", Integer, nullable=False),
    Column("current_step", Integer, default=0, nullable=False),
    Column("created_time", Float, nullable=False),
    # --where scans this index, not the runs' rows (their specs make them a page each)
    Index("ix_runs_section_ids", "section_ids", "id"),
)

# One distinct value of a top-level field (section) of run specs: the runs of a sweep share most
# (one model, a few optimizers, one training section per seed).
spec_sections = Table(
    "spec_sections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),  # the field: model, data, optimizer, ...
    Column("json", Text, nullable=False),  # its value as spec_json writes it
    Column("digest", String(64), unique=True, nullable=False),  # sha256 of '"<name>": <json>'
)

# A run reached from a sweep (the same run may belong to several sweeps).
sweep_runs = Table(
    "sweep_runs",
    metadata,
    Column("sweep_id", ForeignKey("sweeps.id"), primary_key=True),
    Column("run_id", ForeignKey("runs.id"), primary_key=True, index=True),  # the sweeps of a run
    Column("position", Integer, nullable=False),
    Column("swept_json", Text, nullable=False),  # the values this run takes on the sweep's axes
)

# One execution try of a run.
attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id"), index=True, nullable=False),
    Column("number", Integer, nullable=False),
    Column("key", String(64), unique=True, nullable=False),  # names the journal folder
    Column("executor", String(32), nullable=False),
    Column("submission_id", String(200), nullable=False),
    Column("job_id", String(64)),
    Column("array_task", Integer),
    Column("hostname", String(255)),
    Column("pid", Integer),
    Column("state", String(16), default=RunState.PENDING, index=True, nullable=False),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("submitted_time", Float, nullable=False),
    Column("started_time", Float),
    Column("ended_time", Float),
    Column("heartbeat_time", Float),
    Column("steps_per_second", Float),
    Column("start_step", Integer),  # where its first segment started
    Column("end_step", Integer),  # where it finished or failed (its final or failure event's)
    # Ended by the scheduler's word or by silence, without a final journal event: sync reads its
    # journal again for a while (orchestrator.sync.RECHECK_SECONDS), and a final event there wins.
    Column("closed_by_guess", Boolean, default=False, server_default=false(), nullable=False),
    Column("journal_dir", Text, nullable=False),
    Column("journal_seq", Integer, default=0, nullable=False),  # last ingested event
    Column("requeues", Integer, default=0, server_default="0", nullable=False),  # by the scheduler, same job
    Column("stdout_path", Text),
    Column("stderr_path", Text),
    Column("provenance_json", Text),
    Column("image_sha256", String(64)),  # the container image it ran in
    # "<host>:<pid>" of the orch process that committed the attempt: while it lives and no job id
    # is recorded, the attempt is being submitted (not lost), whatever another command's sync sees.
    Column("submitter", String(300)),
    # Committed but not handed to the scheduler yet: the user's submit limits are reached (or sbatch
    # refused it). Every command that syncs submits held-back attempts as slots free (orchestrator/feed.py).
    Column("held_back", Boolean, default=False, server_default=false(), nullable=False),
    # Its place among the runs packed into its array task (one process each on one GPU); NULL when
    # the task is its own. Cancelling it alone asks the task to stop its process (jobs/pack.py).
    Column("pack_slot", Integer),
    Column("peak_gpu_bytes", BigInteger),  # torch.cuda.max_memory_allocated of its process; NULL on a CPU
    # The smoke sweep whose runs must complete first (orch submit --smoke; orchestrator/smoke.py),
    # and the Slurm dependency its job went out with ("" released without one; NULL: still gated).
    Column("gate", String(80)),
    Column("after_jobs", Text),
    # The login name of the user whose orch committed it: only that user's orch syncs, launches
    # and settles it (a registry shared by a lab); NULL in registries from before owners.
    Column("owner", String(64)),
    UniqueConstraint("run_id", "number"),
    # At most one active attempt per run, whatever the timing of concurrent submits: the database
    # refuses the second (SQLite and PostgreSQL both have partial unique indexes).
    Index(
        "uq_attempts_one_active_per_run",
        "run_id",
        unique=True,
        sqlite_where=text(RunState.ACTIVE_SQL),
        postgresql_where=text(RunState.ACTIVE_SQL),
    ),
    Index("ix_attempts_closed_by_guess", "closed_by_guess", "ended_time"),  # sync's recent guesses
    Index("ix_attempts_held_back", "held_back", "executor"),  # the feeder's backlog
    Index("ix_attempts_gate", "gate", "state"),  # attempts waiting on a smoke test
)

# An analysis after a sweep (orch submit --then, a sweep's then:): a job array that starts when the
# sweep's jobs have ended (orchestrator/stages.py).
stages = Table(
    "stages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sweep_id", ForeignKey("sweeps.id"), nullable=False),
    Column("command", Text, nullable=False),  # "analyze --figure lines ..."
    Column("state", String(16), nullable=False),  # WAITING, then as an attempt's
    Column("executor", String(16), nullable=False),
    Column("number", Integer, nullable=False, default=0, server_default="0"),  # submissions so far
    Column("job_ids", Text, nullable=False, default="[]", server_default="[]"),  # JSON list
    Column("after_jobs", Text),  # the dependency it went out with
    Column("reason", Text),
    Column("created_time", Float, nullable=False),
    Column("submitted_time", Float),
    Column("ended_time", Float),
    Column("owner", String(64)),  # as an attempt's
    Index("ix_stages_state", "state"),
)

# Each time the scheduler put an attempt's job back in the queue: on the job's own request at a
# time limit (from its journal, with the step) or because its node failed, it was preempted or
# requeued by hand (from Slurm's accounting). One row per (attempt, time, cause): sync adds them
# idempotently.
requeues = Table(
    "requeues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("attempt_id", ForeignKey("attempts.id"), nullable=False),
    Column("time", Float, nullable=False),  # when that run of the job ended
    Column(
        "cause", String(32), nullable=False
    ),  # SIGUSR2 (the job's checkpoint and requeue), NODE_FAIL, PREEMPTED, REQUEUED, ...
    Column("source", String(16), nullable=False),  # journal or scheduler
    Column("node", String(255)),
    Column("step", Integer),  # where the run was (the journal's requeues say)
    UniqueConstraint("attempt_id", "time", "cause"),
)

# Each notice sent about a sweep (orchestrator/notify.py): one row per (sweep, event, subject), so
# that several syncs, by several people, send each notice once. A digest's sweep is "".
notices = Table(
    "notices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sweep", String(80), nullable=False),
    Column("event", String(32), nullable=False),  # finished, first_failure, stuck_pending, digest
    Column("subject", String(128), nullable=False),  # what it was about: an attempt, a period, ...
    Column("sent_time", Float, nullable=False),
    UniqueConstraint("sweep", "event", "subject"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id"), index=True, nullable=False),
    Column("attempt_id", ForeignKey("attempts.id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_time", Float, nullable=False),
    UniqueConstraint("run_id", "step"),
)

# A landscape shard: one file per (run, probe, step), written by the probes.
shards = Table(
    "shards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id"), index=True, nullable=False),
    Column("attempt_id", ForeignKey("attempts.id"), nullable=False),
    Column("probe", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("n_points", Integer, nullable=False),
    Column("is_extrapolation", Boolean, nullable=False),
    Column("created_time", Float, nullable=False),
    UniqueConstraint("run_id", "probe", "step"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", ForeignKey("runs.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("value", Float, nullable=False),
    Column("attempt_id", ForeignKey("attempts.id"), nullable=False),
)
