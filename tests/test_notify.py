"""Notices about sweeps through apprise, to a real HTTP receiver on 127.0.0.1 (apprise's json://
scheme): a run stuck pending, the first failure, the sweep finished and a digest, each once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import Orch, write_sweep


class Receiver:
    """An HTTP server that keeps the JSON body of every POST it gets."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                received.append({"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/notices"

    def titles(self) -> list[str]:
        return [notice["title"] for notice in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    receiving.thread.start()
    yield receiving
    receiving.server.shutdown()


@pytest.fixture
def notifying_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> str:
    """A user's profile of this machine that sends every notice to the receiver; one run at a time,
    so the others wait (pending) while the first trains."""
    folder = tmp_path / "clusters"
    folder.mkdir()
    (folder / "notifying.yaml").write_text(
        "executor: local\nmax_parallel: 1\n"
        f"notify:\n  urls: ['{receiver.url}']\n  pending_minutes: 0.0001\n  digest_hours: 24\n"
    )
    monkeypatch.setenv("ORCH_CLUSTERS", str(folder))
    return "notifying"


def digits_sweep(folder: Path, name: str, cluster: str, steps: int, rest: str = "") -> Path:
    """A sweep of the digits MLP on ``cluster``, evaluated four times."""
    text = (
        f"name: {name}\ninclude: [problems/digits_mlp.yaml]\nbase:\n"
        f"  cluster: {cluster}\n  training: {{steps: {steps}, eval_every: {steps // 4}}}\n{rest}"
    )
    return write_sweep(folder, name, text)


def test_each_notice_of_a_sweep_is_sent_once_to_its_profiles_urls(
    orch: Orch, notifying_profile: str, receiver: Receiver, tmp_path: Path
) -> None:
    grid = "grid:\n  optimizer.lr: [0.1, 1000.0, 0.05]\n"
    orch.ok("submit", digits_sweep(tmp_path, "noticed", notifying_profile, steps=200, rest=grid))
    orch.ok("status")  # the second and third run wait for the first: stuck past 0.0001 minutes
    orch.ok("status", "--watch")  # until none is active
    orch.ok("status")
    orch.ok("sync")  # nothing new to say

    titles = receiver.titles()
    assert sorted(titles) == sorted(
        [
            "orch: runs of noticed stuck pending",
            "orch: digest of the sweeps on notifying",
            "orch: first failure in sweep noticed",
            "orch: sweep noticed finished",
        ]
    ), titles
    by_title = {notice["title"]: notice for notice in receiver.received}
    failed = next(run for run in orch.ok("runs", "--json").json() if run["state"] == "FAILED")
    failure = by_title["orch: first failure in sweep noticed"]["message"]
    assert f"run {failed['id']} FAILED at step" in failure and "training loss is" in failure
    assert by_title["orch: sweep noticed finished"]["message"] == "completed 2, failed 1"
    assert (
        "pending for more than 0.0001 minutes" in by_title["orch: runs of noticed stuck pending"]["message"]
    )
    assert {notice["path"] for notice in receiver.received} == {"/notices"}


def test_a_notice_that_cannot_be_sent_is_tried_again_by_the_next_sync(
    orch: Orch, notifying_profile: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.server.shutdown()
    receiver.server.server_close()  # nobody listens: sending fails
    orch.ok("submit", digits_sweep(tmp_path, "retried", notifying_profile, steps=20), "--executor", "debug")
    orch.ok("status")
    assert receiver.received == []

    # listening again on the same port, with the same handler (it keeps what it gets in ``receiver``)
    server = ThreadingHTTPServer(receiver.server.server_address, receiver.server.RequestHandlerClass)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        orch.ok("status")
        orch.ok("status")
    finally:
        server.shutdown()
    assert sorted(receiver.titles()) == [
        "orch: digest of the sweeps on notifying",
        "orch: sweep retried finished",
    ]
