"""The attempt journal: how a job reports, without ever opening the registry.

An attempt's journal is a folder (:class:`jobs.paths.AttemptPaths`) holding

- ``events/<seq>-<kind>.json``: one atomically published file per event, numbered in order;
- ``heartbeat.json``: the latest heartbeat, replaced atomically.

The login node's ``orch sync`` reads events after the last sequence number it ingested, so
ingesting is incremental and idempotent. The event types below are the whole contract.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional, Union

from jobs.atomic import TEMP_PREFIX, publish_json
from jobs.paths import AttemptPaths


@dataclass(frozen=True)
class Provenance:
    git_commit: Optional[str]
    git_diff_sha256: Optional[str]  # None when the source tree has no uncommitted change
    python: str
    torch: str
    torchvision: str
    submitit: str
    numpy: str
    hostname: str
    device: str


@dataclass(frozen=True)
class Started:
    pid: int
    hostname: str
    start_step: int  # 0, or the step of the checkpoint this attempt resumed from
    total_steps: int
    provenance: Provenance


@dataclass(frozen=True)
class MetricRow:
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class Metrics:
    rows: list[MetricRow] = field(default_factory=list)


@dataclass(frozen=True)
class CheckpointWritten:
    step: int
    path: str  # relative to the run directory
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardWritten:
    probe: str
    step: int
    path: str  # relative to the run directory
    bytes: int
    sha256: str
    n_points: int
    is_extrapolation: bool


@dataclass(frozen=True)
class Finished:
    final_step: int
    peak_gpu_bytes: Optional[int] = None  # torch.cuda.max_memory_allocated of the attempt; None on a CPU


@dataclass(frozen=True)
class Requeued:
    """The job stopped at ``step`` on the scheduler's warning signal and asked to be requeued."""

    step: int
    signal: str


@dataclass(frozen=True)
class Failed:
    error_type: str
    message: str
    traceback: str
    state: str = "FAILED"  # or TIMEOUT: out of requeues at the time limit
    step: Optional[int] = None  # the step the attempt had reached (its last heartbeat's), if it trained


@dataclass(frozen=True)
class Heartbeat:
    time: float
    step: int
    total_steps: int
    steps_per_second: float
    peak_gpu_bytes: Optional[int] = None  # torch.cuda.max_memory_allocated so far; None on a CPU


Payload = Union[Started, Metrics, CheckpointWritten, ShardWritten, Requeued, Finished, Failed]
EVENT_KINDS: dict[str, type] = {
    "started": Started,
    "metrics": Metrics,
    "checkpoint": CheckpointWritten,
    "shard": ShardWritten,
    "requeued": Requeued,
    "finished": Finished,
    "failed": Failed,
}
KIND_OF: dict[type, str] = {payload_type: kind for kind, payload_type in EVENT_KINDS.items()}


@dataclass(frozen=True)
class JournalEvent:
    seq: int
    time: float
    payload: Payload

    @property
    def kind(self) -> str:
        return KIND_OF[type(self.payload)]


class JournalWriter:
    """Appends events to one attempt's journal. A restarted process continues the numbering."""

    def __init__(self, paths: AttemptPaths) -> None:
        self.paths = paths
        paths.events_dir.mkdir(parents=True, exist_ok=True)
        existing = [
            _seq_of(name) for name in os.listdir(paths.events_dir) if not name.startswith(TEMP_PREFIX)
        ]
        self._next_seq = max(existing, default=0) + 1
        self.last_step: Optional[int] = None  # of the last heartbeat this writer published

    def append(self, payload: Payload) -> JournalEvent:
        event = JournalEvent(seq=self._next_seq, time=time.time(), payload=payload)
        document = {
            "seq": event.seq,
            "kind": event.kind,
            "time": event.time,
            "payload": dataclasses.asdict(payload),
        }
        publish_json(self.paths.events_dir / f"{event.seq:08d}-{event.kind}.json", document)
        self._next_seq += 1
        return event

    def heartbeat(self, beat: Heartbeat) -> None:
        publish_json(self.paths.heartbeat_file, dataclasses.asdict(beat))
        self.last_step = beat.step

    def failed(self, error: BaseException, state: str = "FAILED") -> JournalEvent:
        return self.append(failure_of(error, state))


def failure_of(error: BaseException, state: str = "FAILED", step: Optional[int] = None) -> Failed:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return Failed(type(error).__name__, failure_message(error), text[-8000:], state, step)


def failure_message(error: BaseException) -> str:
    """What went wrong, and for a file system error where: ``No space left on device: <path>``."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = error.filename
        return f"{error.strerror}: {os.fsdecode(where) if isinstance(where, bytes) else where}"
    return str(error)


FAILURE_LINE_PREFIX = "orch-job: failed: "  # then a JSON object: state, error_type, message


def failure_line(failed: Failed) -> str:
    """The one line a failing job prints last on stderr, journal or not: ``orch sync`` reads it when
    the journal has no final event (the disk was full for that event too)."""
    fields = {"state": failed.state, "error_type": failed.error_type, "message": failed.message}
    return FAILURE_LINE_PREFIX + json.dumps(fields, sort_keys=True)


def find_failure_line(text: str) -> Optional[Failed]:
    """The failure the last well-formed :func:`failure_line` in ``text`` reports (no traceback), if any."""
    for line in reversed(text.splitlines()):
        if not line.startswith(FAILURE_LINE_PREFIX):
            continue
        try:
            fields = json.loads(line[len(FAILURE_LINE_PREFIX) :])
            return Failed(str(fields["error_type"]), str(fields["message"]), "", str(fields["state"]))
        except (ValueError, KeyError, TypeError):
            continue  # cut short or garbled: an earlier line may still be whole
    return None


def read_events(paths: AttemptPaths, after_seq: int = 0) -> list[JournalEvent]:
    """Published events with a sequence number above ``after_seq``, in order."""
    folder = str(paths.events_dir)  # plain strings and bytes: sync reads tens of thousands of events
    try:
        listed = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = sorted(
        name
        for name in listed
        if not name.startswith(TEMP_PREFIX) and name.endswith(".json") and _seq_of(name) > after_seq
    )
    return [_parse_event(json.loads(_read_bytes(os.path.join(folder, name)))) for name in names]


def read_heartbeat(paths: AttemptPaths) -> Optional[Heartbeat]:
    try:
        return Heartbeat(**json.loads(_read_bytes(str(paths.heartbeat_file))))
    except FileNotFoundError:
        return None


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _seq_of(file_name: str) -> int:
    return int(file_name.split("-", 1)[0])


def _parse_event(document: dict) -> JournalEvent:
    payload_type = EVENT_KINDS[document["kind"]]
    fields = dict(document["payload"])
    if payload_type is Started:
        fields["provenance"] = Provenance(**fields["provenance"])
    if payload_type is Metrics:
        fields["rows"] = [MetricRow(**row) for row in fields["rows"]]
    return JournalEvent(seq=document["seq"], time=document["time"], payload=payload_type(**fields))
