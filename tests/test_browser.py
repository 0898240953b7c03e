"""``orch serve`` in a real browser: headless Chromium (Debian's, through Playwright) against the
command running as a subprocess over a populated home. One server and one browser for the module.

Screenshots of every page go to ``$ORCH_TEST_ARTIFACTS`` (default ``<repo>/.test-artifacts/
screenshots``); their paths are printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from orchestrator.cli import INTERRUPTED_EXIT
from tests.serve_home import (
    ATTRIBUTE_INJECTION,
    INJECTION_SWEEP,
    LIVE_TOTAL_STEPS,
    SCRIPT_INJECTION,
    ServedHome,
    build_served_home,
    file_sha256,
)

pytestmark = pytest.mark.subprocess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY = Path(__file__).resolve().parent.parent
ARTIFACTS_VARIABLE = "ORCH_TEST_ARTIFACTS"
TIMEOUT_MS = 15_000


@dataclass
class BrowserTab:
    """The module's one page, with what it saw: dialogs (a script that ran), console errors
    (a CSP violation, a failed request) and the screenshots taken."""

    page: Page
    base_url: str
    screenshots_dir: Path
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)

    def open(self, path: str) -> int:
        response = self.page.goto(self.base_url + path)
        assert response is not None
        return response.status

    def screenshot(self, name: str) -> None:
        path = self.screenshots_dir / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a script ran: {self.dialogs}"
        assert self.console_errors == [], self.console_errors


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get where it is missing (no browser download)."""
    if not CHROMIUM.exists():
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            check=True,
            env=environment,
        )
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing after apt-get install chromium"
    return CHROMIUM


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedHome:
    return build_served_home(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def server(served: ServedHome) -> Iterator[str]:
    """``orch serve`` as a subprocess on a free port (``--port 0``: it prints the URL)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("ORCH_DB_URL", "ORCH_HOME")}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--home", str(served.root), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=REPOSITORY,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"orch serve printed {line!r} (exit status {process.poll()})"
        yield found.group(0)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=30) == INTERRUPTED_EXIT


@pytest.fixture(scope="module")
def screenshots_dir() -> Path:
    folder = Path(os.environ.get(ARTIFACTS_VARIABLE) or REPOSITORY / ".test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)  # each screenshot replaces the last run's of its name
    return folder


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def tab(
    browser: Browser, server: str, screenshots_dir: Path, pytestconfig: pytest.Config
) -> Iterator[BrowserTab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = BrowserTab(context.new_page(), server, screenshots_dir)

    def on_dialog(dialog: Dialog) -> None:
        opened.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.console_errors.append(message.text)

    opened.page.on("dialog", on_dialog)
    opened.page.on("console", on_console)
    yield opened
    context.close()
    report = "screenshots:\n" + "\n".join(f"  {path}" for path in opened.screenshots)
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print("\n" + report)  # on the terminal, captured or not


def test_sweeps_page_lists_the_sweeps(tab: BrowserTab) -> None:
    assert tab.open("/") == 200
    table = tab.page.locator("table#sweeps")
    expect(table).to_contain_text("tiny")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(tab.page.get_by_role("link", name="1 active runs")).to_be_visible()
    tab.screenshot("01-sweeps")
    tab.assert_clean()


def test_click_through_sweep_run_and_figure(tab: BrowserTab, served: ServedHome) -> None:
    run = served.tiny_runs[0]
    tab.open("/")
    tab.page.get_by_role("link", name="tiny", exact=True).click()
    expect(tab.page).to_have_url(re.compile(r"/sweeps/tiny$"))
    expect(tab.page.locator("table#runs tbody tr")).to_have_count(2)
    tab.screenshot("02-sweep")

    tab.page.get_by_role("link", name=run, exact=True).click()
    expect(tab.page.locator("h1")).to_contain_text(run)
    expect(tab.page.locator("table#attempts")).to_contain_text("COMPLETED")
    expect(tab.page.locator("figure.chart svg polyline").first).to_be_visible()
    figure = tab.page.locator(f'img[alt="figures/{run}-lines.png"]')
    expect(figure).to_be_visible()
    loaded = "image => image.complete && image.naturalWidth > 0"  # the CSP allows it, and it is a PNG
    tab.page.wait_for_function(loaded, arg=figure.element_handle())
    tab.screenshot("03-run")

    with tab.page.expect_response(re.compile(r"-lines\.png$")) as answer:
        tab.page.get_by_text(f"figures/{run}-lines.png", exact=True).click()
    assert answer.value.status == 200 and answer.value.headers["content-type"] == "image/png"
    expect(tab.page).to_have_url(re.compile(rf"/runs/{run}/files/figures/{run}-lines\.png$"))
    tab.screenshot("04-figure")
    tab.assert_clean()


def test_a_where_clause_typed_into_the_filter_selects_runs(tab: BrowserTab, served: ServedHome) -> None:
    tab.open("/sweeps/tiny")
    box = tab.page.locator('input[name="where"]').last
    box.fill("optimizer.lr=0.05")
    with tab.page.expect_navigation():
        box.press("Enter")
    rows = tab.page.locator("table#runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(served.tiny_runs[1])
    expect(rows.first).to_contain_text("0.05")
    tab.screenshot("05-sweep-where")

    box = tab.page.locator('input[name="where"]').last
    box.fill("optimizer.lr>fast")
    with tab.page.expect_navigation() as navigation:
        box.press("Enter")
    assert navigation.value is not None and navigation.value.status == 400
    expect(tab.page.locator("#where-error")).to_have_text(
        "argument --where: 'optimizer.lr>fast': > compares numbers; found 'fast'; accepted: a number, "
        "e.g. optimizer.lr>0.01"
    )
    tab.screenshot("06-sweep-bad-where")
    tab.console_errors.clear()  # the browser logs the 400 of the page itself
    tab.assert_clean()


def test_clicking_a_header_sorts_the_runs(tab: BrowserTab, served: ServedHome) -> None:
    tab.open("/sweeps/tiny")
    first_run = tab.page.locator("table#runs tbody tr").first
    expect(first_run).to_contain_text(served.tiny_runs[0])
    tab.page.get_by_role("link", name="optimizer.lr", exact=True).click()
    expect(tab.page.locator("th[aria-sort=ascending]")).to_contain_text("optimizer.lr")
    expect(first_run).to_contain_text(served.tiny_runs[1])  # 0.05 first
    tab.page.get_by_role("link", name="optimizer.lr", exact=True).click()
    expect(tab.page.locator("th[aria-sort=descending]")).to_contain_text("optimizer.lr")
    expect(first_run).to_contain_text(served.tiny_runs[0])
    tab.screenshot("07-sweep-sorted")
    tab.assert_clean()


def test_the_live_page_follows_a_run_without_reloading(tab: BrowserTab, served: ServedHome) -> None:
    tab.open("/active")
    row = tab.page.locator(f'table#active-runs tr[data-run="{served.live_run}"]')
    expect(row).to_have_count(1)
    progress = row.locator('td[data-field="progress"]')
    step = int(progress.inner_text().split("/")[0])
    tab.page.evaluate("window.notReloaded = true")
    ahead = step + 4321

    served.publish_heartbeat(ahead, steps_per_second=20.0)

    expect(progress).to_have_text(f"{ahead}/{LIVE_TOTAL_STEPS}", timeout=10_000)
    expect(row.locator('td[data-field="eta"]')).to_have_text(re.compile(r"^\d+h\d\dm$"))
    expect(tab.page.locator("#active-status")).to_contain_text("updated")
    assert tab.page.evaluate("window.notReloaded") is True  # the cells changed, the page stayed
    tab.screenshot("08-active")
    tab.assert_clean()


def test_markup_in_names_values_reasons_and_logs_never_runs(tab: BrowserTab, served: ServedHome) -> None:
    tab.open("/")
    tab.page.get_by_role("link", name=SCRIPT_INJECTION, exact=True).click()
    expect(tab.page).to_have_url(re.compile(r"/sweeps/%3Cscript%3Ealert%281%29%3C%2Fscript%3E$"))
    expect(tab.page.locator("h1")).to_have_text(f"Sweep {SCRIPT_INJECTION}")
    table = tab.page.locator("table#runs")
    expect(table.get_by_text(SCRIPT_INJECTION, exact=True)).to_be_visible()
    expect(table.get_by_text(ATTRIBUTE_INJECTION, exact=True)).to_be_visible()
    tab.screenshot("09-injection-sweep")

    tab.open(f"/runs/{served.injected_runs[0]}")
    expect(tab.page.locator("table#attempts")).to_contain_text(ATTRIBUTE_INJECTION)  # its reason
    tab.screenshot("10-injection-run")
    tab.open(f"/runs/{served.live_run}")
    expect(tab.page.get_by_text(f"a config value printed by the job: {SCRIPT_INJECTION}")).to_be_attached()
    tab.open(f"/compare?sweep={quote(INJECTION_SWEEP, safe='')}&sweep=tiny")
    tab.open(f"/sweeps/tiny?where={quote(SCRIPT_INJECTION)}")
    tab.console_errors.clear()  # the 400 of that last page

    assert tab.page.locator("img[src=x]").count() == 0
    tab.assert_clean()


def test_compare_the_selected_sweeps(tab: BrowserTab) -> None:
    tab.open("/")
    tab.page.get_by_role("checkbox", name="compare tiny", exact=True).check()
    tab.page.get_by_role("checkbox", name=f"compare {INJECTION_SWEEP}", exact=True).check()
    tab.page.get_by_role("button", name="compare the selected sweeps").click()
    expect(tab.page.locator("table#result-table tbody tr")).to_have_count(4)  # 2 learning rates + 2 images
    expect(tab.page.locator("figure.chart")).to_have_count(3)
    expect(tab.page.locator("figure.chart polygon").first).to_be_attached()  # the bands
    tab.screenshot("11-compare")
    tab.assert_clean()


def test_concurrent_requests_all_answer(server: str, served: ServedHome) -> None:
    """What a browser does (a page, its images, its script, the live page's polls at once) from
    32 threads: every request answers, none breaks another's registry connection."""
    run = served.tiny_runs[0]
    paths = [
        "/",
        "/sweeps/tiny?sort=swept:optimizer.lr",
        f"/runs/{run}",
        f"/runs/{run}/files/curves.png",
        f"/runs/{run}/files/figures/{run}-lines.png",
        "/api/active",
        "/compare?sweep=tiny",
    ] * 30

    def status_of(path: str) -> int:
        with urllib.request.urlopen(server + path, timeout=60) as answer:
            return int(answer.status)

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert set(pool.map(status_of, paths)) == {200}


def test_browsing_wrote_nothing_into_the_registry(tab: BrowserTab, served: ServedHome) -> None:
    before = file_sha256(served.registry)
    for path in ("/", "/sweeps/tiny", f"/runs/{served.tiny_runs[1]}", "/compare?sweep=tiny", "/active"):
        assert tab.open(path) == 200
    assert file_sha256(served.registry) == before
    assert not served.registry.with_name("registry.sqlite-journal").exists()
    tab.assert_clean()
