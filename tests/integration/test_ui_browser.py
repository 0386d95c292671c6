"""``abyssal ui`` in a real browser: the dashboard started as its own process over a home with
trained, audited and benchmarked versions (built as in ``tests/unit/test_ui.py``, with a real
audit), driven by headless Chromium through Playwright: find a version through the filter,
follow its lineage to its parent, open its audit report, open a leaderboard and a run's curves,
and save a full-page screenshot of each.

Screenshots go to ``$ABYSSAL_SCREENSHOTS`` when set (``ABYSSAL_SCREENSHOTS=docs/images python3
-m pytest tests/integration/test_ui_browser.py`` refreshes the documentation's
``docs/images/ui-*.png``), else to the test's temporary folder. Browsers are not downloaded: the
system Chromium is used (``$ABYSSAL_CHROMIUM``, ``chromium`` on the path, or
``/usr/bin/chromium``); without it or without Playwright the test skips, saying which.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_ui import BENCH_ID, build_demo_home

WIDTH = 1280


def chromium() -> str:
    """The Chromium to drive, or skip the test naming what is missing."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    for found in (
        os.environ.get("ABYSSAL_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if found and Path(found).is_file():
            return found
    pytest.skip("no Chromium: set ABYSSAL_CHROMIUM or install chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``abyssal ui`` running as a process over the demo home: its URL and the home's facts."""
    chromium()
    demo = build_demo_home(tmp_path_factory.mktemp("ui-browser"), real_audit=True, hostile=False)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "abyssal",
        "ui",
        "--port",
        str(port),
        "--home",
        str(demo["home"]),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"abyssal ui did not start: {out[-2000:]}")
                time.sleep(0.2)
        yield {**demo, "url": url}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("ABYSSAL_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_person_finds_a_version_follows_its_lineage_and_reads_its_reports(
    dashboard: dict[str, Any], shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = dashboard["url"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 800})

            def shot(name: str) -> None:
                page.screenshot(path=str(shots / f"ui-{name}.png"), full_page=True)

            page.goto(url)
            expect(page.get_by_test_id("count-versions")).to_contain_text("4")
            shot("overview")

            page.get_by_test_id("nav-models").click()
            page.get_by_test_id("model-filter").fill("tabular:4")
            page.get_by_test_id("model-filter").press("Enter")
            rows = page.locator("[data-testid=versions-table] tbody tr")
            expect(rows).to_have_count(1)
            rows.get_by_test_id("version-link").click()
            expect(page).to_have_url(f"{url}/models/tabular/4")
            expect(page.locator("h1")).to_contain_text("tabular:4")
            expect(page.get_by_test_id("lineage-graph")).to_be_visible()
            shot("version")

            page.get_by_test_id("parent-link").click()
            expect(page).to_have_url(f"{url}/models/tabular/1")
            expect(page.locator("h1")).to_contain_text("tabular:1")
            expect(page.get_by_test_id("child-link")).to_have_text("tabular:4")
            page.go_back()

            page.locator("[data-testid=lineage-graph] a[data-ref='tabular:1']").click()
            expect(page).to_have_url(f"{url}/models/tabular/1")
            page.go_back()

            page.get_by_test_id("audit-link").click()
            expect(page).to_have_url(f"{url}/audits/tabular/4")
            expect(page.locator("h1")).to_contain_text("Model card and audit: tabular:4")
            shot("audit")

            page.goto(url)
            page.get_by_test_id("nav-benchmarks").click()
            page.get_by_test_id("bench-link").first.click()
            expect(page).to_have_url(f"{url}/bench/{BENCH_ID}")
            board = page.get_by_test_id("leaderboard-0")
            expect(board.locator("tbody tr").first).to_have_attribute("data-row", "tabular:4")
            expect(page.get_by_test_id("leaderboard-chart-0")).to_be_visible()
            shot("leaderboard")

            page.goto(f"{url}/runs/{dashboard['runs']['train']}")
            expect(page.get_by_test_id("curve-val_auroc")).to_be_visible()
            shot("run")

            page.goto(f"{url}/pipelines/tabular-daily/{dashboard['runs']['refused']}")
            expect(page.get_by_test_id("gate-table")).to_contain_text("FAIL")
            shot("pipeline")
        finally:
            browser.close()
    names = sorted(p.name for p in shots.glob("ui-*.png"))
    expected = ["audit", "leaderboard", "overview", "pipeline", "run", "version"]
    assert names == [f"ui-{n}.png" for n in expected]
    assert all((shots / n).stat().st_size > 10_000 for n in names)
