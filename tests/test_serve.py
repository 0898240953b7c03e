"""``orch serve``: every page over a populated home through Starlette's TestClient (in process),
the read-only guarantee, escaping, path containment, and the command's errors."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
from markupsafe import escape

from orchestrator.cli import main
from orchestrator.home import OrchHome
from orchestrator.serve.app import CONTENT_SECURITY_POLICY, ServeSettings, build_app
from tests.conftest import Orch
from tests.serve_home import (
    ATTRIBUTE_INJECTION,
    INJECTION_SWEEP,
    INJECTIONS,
    LIVE_TOTAL_STEPS,
    SCRIPT_INJECTION,
    ServedHome,
    build_served_home,
    file_sha256,
    tree_state,
)

with warnings.catch_warnings():  # "install httpx2 instead": httpx is what the project pins
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
LOCAL = "http://127.0.0.1"
LINK = re.compile(r"""(?:href|src)="([^"]*)\"""")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedHome:
    return build_served_home(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(served: ServedHome) -> Iterator[TestClient]:
    with TestClient(build_app(ServeSettings(OrchHome(served.root))), base_url=LOCAL) as test_client:
        yield test_client


def sweep_path(name: str) -> str:
    return f"/sweeps/{quote(name, safe='')}"


def run_ids_in(page: str) -> list[str]:
    return re.findall(r'<td class="id"><a href="/runs/([0-9a-f]+)">', page)


def test_every_page_answers_with_the_security_headers(client: TestClient, served: ServedHome) -> None:
    paths = [
        "/",
        "/sweeps/tiny",
        sweep_path(INJECTION_SWEEP),
        "/sweeps/live",
        *(f"/runs/{run}" for run in (*served.tiny_runs, *served.injected_runs, served.live_run)),
        f"/compare?sweep=tiny&sweep={quote(INJECTION_SWEEP)}",
        "/compare",
        "/active",
        "/static/active.js",
        "/static/dashboard.css",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert (
            "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        )
    assert client.get("/active").text.count("<script") == 1  # the static file, nothing inline
    assert '<script src="/static/active.js" defer></script>' in client.get("/active").text


def test_sweeps_page_counts_states_progress_and_hours(client: TestClient) -> None:
    page = client.get("/").text
    row = page[page.index('href="/sweeps/tiny"') :].split("</tr>")[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[:3] == ["2", "0", "2"]  # runs, running, completed (the states some sweep has)
    assert '<progress max="2" value="2">' in row and "100%" in row
    assert re.search(r'<td class="number">\d+\.\d{3}</td>', row)  # CPU-hours from the registry's times
    live = page[page.index('href="/sweeps/live"') :].split("</tr>")[0]
    assert '<progress max="1" value="0">' in live


def test_sweep_page_lists_runs_with_swept_values_and_final_metrics(
    client: TestClient, served: ServedHome
) -> None:
    page = client.get("/sweeps/tiny").text
    assert run_ids_in(page) == list(served.tiny_runs)
    for header in ("optimizer.lr", "final val_accuracy", "final train_loss"):
        assert f">{header}</a>" in page
    assert "<td>60/60</td>" in page and "<td>0.05</td>" in page


def test_where_filters_as_the_cli_does(client: TestClient, served: ServedHome, tmp_path: Path) -> None:
    assert run_ids_in(client.get("/sweeps/tiny", params={"where": "optimizer.lr=0.05"}).text) == [
        served.tiny_runs[1]
    ]
    both = client.get("/sweeps/tiny", params=[("where", "optimizer.lr<1"), ("where", "model.hidden=[16]")])
    assert run_ids_in(both.text) == list(served.tiny_runs)
    assert run_ids_in(client.get("/sweeps/tiny", params={"where": "optimizer.lr in (0.1, 7)"}).text) == [
        served.tiny_runs[0]
    ]
    assert run_ids_in(client.get("/sweeps/tiny", params={"state": "failed"}).text) == []
    assert run_ids_in(client.get("/sweeps/tiny", params={"state": "completed"}).text) == list(
        served.tiny_runs
    )


@pytest.mark.parametrize("clause", ["nope=1", "optimizer.lr>fast", "optimizer.lr", "model.hidden in ()"])
def test_a_bad_where_is_400_with_the_clis_message(client: TestClient, clause: str) -> None:
    message = cli_usage_error("runs", "--sweep", "tiny", "--where", clause)

    response = client.get("/sweeps/tiny", params={"where": clause})

    assert response.status_code == 400
    assert str(escape(message)) in response.text
    assert "Traceback" not in response.text and run_ids_in(response.text) == []
    assert f'value="{escape(clause)}"' in response.text  # the clause stays in the box, to be fixed


def cli_usage_error(*arguments: str) -> str:
    """What ``orch`` prints after ``error:`` for a usage error (argparse exits 2 before anything runs)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(list(arguments))
    assert exited.value.code == 2
    return stderr.getvalue().strip().splitlines()[-1].split(": error: ", 1)[1]


def test_columns_sort_by_clicking_their_header(client: TestClient, served: ServedHome) -> None:
    page = client.get("/sweeps/tiny").text
    header = html.unescape(re.search(r'<th><a href="([^"]+)">optimizer\.lr</a>', page).group(1))
    ascending = client.get(header).text
    assert run_ids_in(ascending) == [served.tiny_runs[1], served.tiny_runs[0]]  # 0.05, then 0.1
    assert "optimizer.lr</a> ▲" in ascending
    again = html.unescape(re.search(r'<a href="([^"]+)">optimizer\.lr</a>', ascending).group(1))
    descending = client.get(again).text
    assert run_ids_in(descending) == list(served.tiny_runs) and "optimizer.lr</a> ▼" in descending
    assert run_ids_in(client.get("/sweeps/tiny?sort=no-such-column").text) == list(served.tiny_runs)


def test_run_page_shows_spec_attempts_logs_curves_figures_and_shards(
    client: TestClient, served: ServedHome
) -> None:
    page = client.get(f"/runs/{served.tiny_runs[0]}").text
    assert "optimizer:" in page and "lr: 0.1" in page  # the resolved spec
    attempts = page[page.index('id="attempts"') :].split("</table>")[0]
    assert "<td>debug</td>" in attempts and "<td>COMPLETED</td>" in attempts and "<td>cpu (" in attempts
    assert page.count("<polyline") >= 4  # train and validation loss and accuracy
    assert f"/runs/{served.tiny_runs[0]}/files/figures/{served.tiny_runs[0]}-lines.png" in page
    assert f"/runs/{served.tiny_runs[0]}/files/curves.png" in page
    assert "escape.png" not in page  # a link out of the run's folder is not a figure
    assert "<strong>line</strong>: 3 shards, steps 0 to 40" in page
    live = client.get(f"/runs/{served.live_run}").text
    assert "a config value printed by the job" in live  # the tail of its stderr log
    assert "submitit" in live  # its stdout log (submitit's)


def test_api_active_reads_the_journal_between_syncs(client: TestClient, served: ServedHome) -> None:
    (live,) = client.get("/api/active").json()["runs"]
    assert live["run"] == served.live_run and live["state"] == "RUNNING" and live["step"] > 0
    ahead = live["step"] + 5000

    served.publish_heartbeat(ahead, steps_per_second=100.0)

    (moved,) = client.get("/api/active").json()["runs"]
    assert moved["step"] == ahead and moved["step_from"] == "heartbeat"
    assert moved["progress"] == f"{ahead}/{LIVE_TOTAL_STEPS}"
    assert moved["eta_seconds"] == pytest.approx((LIVE_TOTAL_STEPS - ahead) / 100.0)
    assert f"{ahead}/{LIVE_TOTAL_STEPS}" in client.get("/active").text
    with sqlite3.connect(f"{served.registry.as_uri()}?mode=ro", uri=True) as connection:
        (registry_step,) = connection.execute(
            "SELECT current_step FROM runs WHERE id = ?", (served.live_run,)
        ).fetchone()
    assert registry_step < ahead  # the registry was not synced


def test_unknown_sweeps_runs_and_files_are_404(client: TestClient, served: ServedHome) -> None:
    for path in (
        "/sweeps/nope",
        "/runs/0123456789abcdef",
        "/compare?sweep=nope",
        f"/runs/{served.tiny_runs[0]}/files/figures/none.png",
        "/no/such/page",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
    assert "no sweep named &#39;nope&#39;" in client.get("/sweeps/nope").text


def test_figures_are_served_only_from_inside_the_run_figures_folder(
    client: TestClient, served: ServedHome
) -> None:
    run = served.tiny_runs[0]
    figure = client.get(f"/runs/{run}/files/figures/{run}-lines.png")
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"
    assert figure.content.startswith(PNG_MAGIC)
    table = client.get(f"/runs/{run}/files/figures/{run}-lines.csv")
    assert table.headers["content-type"] == "text/plain; charset=utf-8"
    for escape_attempt in (
        "figures/..%2F..%2F..%2F..%2Fregistry.sqlite",
        "figures/%2e%2e/%2e%2e/%2e%2e/%2e%2e/registry.sqlite",
        "..%2F..%2F..%2Fregistry.sqlite",
        "%2Fetc%2Fpasswd",
        "%2F%2Fetc%2Fpasswd",
        "figures/escape.png",  # a symbolic link to the registry
        "spec.yaml",
        "figures/..%2Fspec.yaml",
        "checkpoints/step_000000030.json",
        "figures",
        "figures%00.png",
    ):
        response = client.get(f"/runs/{run}/files/{escape_attempt}")
        assert response.status_code == 404, escape_attempt
        assert b"SQLite format" not in response.content and b"root:" not in response.content


def test_markup_from_the_registry_and_the_runs_is_text(client: TestClient, served: ServedHome) -> None:
    pages = [
        "/",
        sweep_path(INJECTION_SWEEP),
        *(f"/runs/{run}" for run in (*served.injected_runs, served.live_run)),
        f"/compare?sweep={quote(INJECTION_SWEEP)}&sweep=tiny",
        "/active",
        f"/sweeps/tiny?where={quote(SCRIPT_INJECTION)}",
        f"/sweeps/tiny?where={quote('optimizer.lr=' + ATTRIBUTE_INJECTION)}",
    ]
    for path in pages:
        text = client.get(path).text
        for injection in INJECTIONS:
            assert injection not in text, path
        assert "<img src=x" not in text and "<script>" not in text, path
    home = client.get("/").text
    assert f'href="{sweep_path(INJECTION_SWEEP)}"' in home  # %3Cscript%3E...%2F...: one path segment
    assert f">{escape(INJECTION_SWEEP)}</a>" in home
    sweep = client.get(sweep_path(INJECTION_SWEEP)).text
    assert str(escape(ATTRIBUTE_INJECTION)) in sweep and str(escape(SCRIPT_INJECTION)) in sweep
    assert (
        str(escape(ATTRIBUTE_INJECTION)) in client.get(f"/runs/{served.injected_runs[0]}").text
    )  # its reason
    assert "config value printed by the job: &lt;script&gt;" in client.get(f"/runs/{served.live_run}").text


def test_crawling_every_link_writes_nothing(client: TestClient, served: ServedHome) -> None:
    """The registry's bytes and every file of the home (results included: path, size, mtime,
    sha256) are the same after every page and file reachable from / was fetched."""
    registry_before, tree_before = file_sha256(served.registry), tree_state(served.root)
    visited = crawl(client, "/")
    assert file_sha256(served.registry) == registry_before
    assert tree_state(served.root) == tree_before
    assert {"/", "/active", "/compare", "/static/active.js", "/static/dashboard.css"} <= visited
    assert any(path.startswith("/runs/") and "/files/figures/" in path for path in visited)
    assert any("sort=" in path for path in visited) and any(path.startswith("/compare?") for path in visited)
    assert len(visited) > 40


def crawl(client: TestClient, start: str) -> set[str]:
    """Every same-origin href and src reachable from ``start`` (and the live page's API), each
    fetched once; every one answers 200."""
    queue, seen = deque([start, "/api/active"]), {start, "/api/active"}
    while queue:
        path = queue.popleft()
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-300:])
        if not response.headers["content-type"].startswith("text/html"):
            continue
        for link in map(html.unescape, LINK.findall(response.text)):
            if link.startswith("/") and not link.startswith("//") and link not in seen:
                seen.add(link)
                queue.append(link)
    return seen


def test_only_this_machine_names_may_reach_it(client: TestClient) -> None:
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_a_home_without_registry_says_so(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    app = build_app(ServeSettings(OrchHome(tmp_path / "home")))
    with TestClient(app, base_url=LOCAL) as empty:
        assert "no runs recorded yet" in empty.get("/").text
        assert "no runs recorded yet" in empty.get("/active").text
        assert empty.get("/api/active").json() == {"runs": []}
        assert empty.get("/sweeps/tiny").status_code == 404
    assert sorted(path.name for path in (tmp_path / "home").iterdir()) == []  # nothing created


def test_a_postgresql_registry_shows_the_same_pages(
    served: ServedHome,
    client: TestClient,
    postgres_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The home's registry copied into PostgreSQL (orch db migrate, from a copy) and served from
    there through READ ONLY transactions: the same pages, --where in jsonb instead of json_extract."""
    copy = tmp_path / "registry.sqlite"
    shutil.copy2(served.registry, copy)
    url = postgres_server.create_database()
    moved = Orch(tmp_path / "elsewhere")("db", "migrate", "--from", f"sqlite:///{copy}", "--to", url)
    assert moved.exit_code == 0, moved.stderr
    monkeypatch.setenv("ORCH_DB_URL", url)
    paths = [
        "/sweeps/tiny",
        "/sweeps/tiny?where=optimizer.lr%3D0.05&sort=final:val_loss&order=desc",
        "/sweeps/tiny?where=model.hidden%3D%5B16%5D",
        "/sweeps/tiny?where=nope%3D1",
        sweep_path(INJECTION_SWEEP),
        f"/runs/{served.tiny_runs[0]}",
        f"/compare?sweep=tiny&sweep={quote(INJECTION_SWEEP)}",
    ]
    with TestClient(build_app(ServeSettings(OrchHome(served.root))), base_url=LOCAL) as on_postgres:
        for path in paths:
            expected, found = client.get(path), on_postgres.get(path)
            assert (found.status_code, found.text) == (expected.status_code, expected.text), path
        assert [row["run"] for row in on_postgres.get("/api/active").json()["runs"]] == [served.live_run]
        assert "registry postgresql+psycopg://" in on_postgres.get("/").text


def test_serve_imports_no_torch(served: ServedHome) -> None:
    """``orch serve`` and every page it renders, in a fresh interpreter: torch is never imported."""
    script = f"""
import sys, warnings
warnings.simplefilter("ignore")
from orchestrator.cli import build_parser
build_parser(lazy=True).parse_args(["serve", "--port", "0"])
from starlette.testclient import TestClient
from orchestrator.cli import main
from orchestrator.home import OrchHome
from orchestrator.serve.app import ServeSettings, build_app
with TestClient(build_app(ServeSettings(OrchHome.resolve({str(served.root)!r}))), base_url="{LOCAL}") as c:
    for path in ["/", "/sweeps/tiny", "/runs/{served.tiny_runs[0]}", "/compare?sweep=tiny", "/active"]:
        assert c.get(path).status_code == 200, path
print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "torchvision")))
"""
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_bad_port_is_bad_input(served: ServedHome, port: str) -> None:
    message = cli_usage_error("--home", str(served.root), "serve", "--port", port)
    assert message.startswith("argument --port:") and "accepted: a port number from 0 to 65535" in message


def test_a_port_in_use_is_bad_input(served: ServedHome) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = Orch(served.root)("serve", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2
    assert "cannot listen on '127.0.0.1' port" in result.stderr and "accepted: a free port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_home_or_host_is_bad_input(tmp_path: Path, served: ServedHome) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "foreign").mkdir()
    sqlite3.connect(tmp_path / "foreign" / "registry.sqlite").execute(
        "CREATE TABLE t (x)"
    ).connection.commit()
    for home, words in (
        (tmp_path / "file", "not a folder there"),
        (tmp_path / "missing", "nothing there"),
        (tmp_path / "foreign", "not an orch registry"),
    ):
        result = Orch(home)("serve", "--port", "0")
        assert result.exit_code == 2 and words in result.stderr, result.stderr
    not_here = Orch(served.root)(
        "serve", "--host", "192.0.2.1", "--port", "0"
    )  # TEST-NET-1: not this machine's
    assert not_here.exit_code == 2 and "accepted: an address of this machine" in not_here.stderr


def test_a_host_other_than_loopback_warns(served: ServedHome) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--home",
            str(served.root),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = server.stderr.readline()  # type: ignore[union-attr]
        url = server.stdout.readline().split()[2]  # type: ignore[union-attr]
        assert "warning: 0.0.0.0 is not a loopback address" in warning
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET /api/active HTTP/1.1\r\nHost: lab-machine\r\nConnection: close\r\n\r\n")
            answer = b""
            deadline = time.monotonic() + 10
            while (chunk := connection.recv(65536)) and time.monotonic() < deadline:
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
