"""The dashboard in headless Chromium, against ``taskrun serve`` on a real SQLite store.

Opens every page, filters the jobs, opens a failed job (whose argument holds
a ``<script>``, shown as text) and retries it, cancels a scheduled job,
pauses, resumes and runs a periodic job now, and watches the overview
refresh in place.  Screenshots of each page land in the test's ``tmp_path``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect
from serving_helpers import app_env, http_get, run_process
from test_example_page import chromium, require_chromium

BOOT = 40.0
STEP = 15_000  # ms a page element gets to appear
DASH = "/taskrun/dashboard"
XSS = "<script>window.pwned = 1</script>"


def enqueue(url: str, query: str) -> str:
    status, body, _ = http_get(f"{url}/enqueue?{query}")
    assert status == 200, body
    return body.split()[0]


def shot(page: Page, path: Path) -> None:
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dashboard_pages_and_actions_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    env = app_env(tmp_path / "out.txt", TASKRUN_TEST_STORE=str(tmp_path / "taskrun.db"))
    command = [sys.executable, "-m", "taskrun", "serve", "dash_app:app", "--bind", "127.0.0.1:0"]
    dialogs: list[str] = []
    errors: list[str] = []
    with run_process(command, env, tmp_path / "serve.log") as served, chromium() as browser:
        url = served.wait_log(r"serving on (http://\S+)", BOOT)[1]
        for n in range(6):
            enqueue(url, f"task=dash.add&a={n}&b=1")
        failed = enqueue(url, "task=dash.fail&arg=" + quote(XSS))
        scheduled = enqueue(url, "task=dash.hold&arg=1&countdown=600")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(STEP)
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(url + DASH + "/")
        expect(page.locator("h1")).to_have_text("Overview")
        expect(page.locator("svg.chart").first).to_be_visible()
        page.evaluate("window.sameDocument = true")
        # The page refreshes in place: a new job shows up without a reload.
        before = page.locator(".tile.SUCCESS .n").inner_text()
        enqueue(url, "task=dash.add&a=7&b=7")
        expect(page.locator(".tile.SUCCESS .n")).not_to_have_text(before, timeout=STEP)
        assert page.evaluate("window.sameDocument") is True
        shot(page, tmp_path / "overview.png")

        page.click("nav >> text=Jobs")
        page.select_option("select[name=state]", "FAILURE")
        expect(page.locator("tbody tr")).to_have_count(1)
        expect(page.locator("tbody")).to_contain_text("dash.fail")
        page.select_option("select[name=state]", "")
        page.select_option("select[name=task]", "dash.add")
        expect(page.locator("tbody tr")).to_have_count(7)
        page.select_option("select[name=task]", "")
        shot(page, tmp_path / "jobs.png")

        page.goto(f"{url}{DASH}/jobs?q={failed[:6]}")
        page.click(f"a[href$='/jobs/{failed}']")
        expect(page.locator("h1")).to_contain_text("FAILURE")
        expect(page.locator("dd code").first).to_have_text(repr((XSS,)))
        expect(page.locator("pre")).to_contain_text("RuntimeError")
        shot(page, tmp_path / "job-failed.png")
        page.click("button:has-text('Retry')")
        expect(page.locator(".notice")).to_contain_text("retried as")
        expect(page.locator("h1")).to_contain_text("dash.fail")

        page.goto(f"{url}{DASH}/jobs/{scheduled}")
        expect(page.locator("h1")).to_contain_text("SCHEDULED")
        page.click("button:has-text('Cancel job')")
        expect(page.locator("h1")).to_contain_text("CANCELLED")

        page.click("nav >> text=Periodic")
        row = page.locator("tbody tr", has_text="dash.tick")
        row.locator("button:has-text('Pause')").click()
        expect(page.locator(".notice")).to_contain_text("dash.tick: paused")
        expect(row).to_contain_text("PAUSED")
        shot(page, tmp_path / "periodic-paused.png")
        row.locator("button:has-text('Resume')").click()
        expect(page.locator(".notice")).to_contain_text("dash.tick: resumed")
        expect(row).not_to_contain_text("PAUSED")
        row.locator("button:has-text('Run now')").click()
        expect(page.locator(".notice")).to_contain_text("dash.tick: started job")
        shot(page, tmp_path / "periodic.png")

        page.click("nav >> text=Processes")
        expect(page.locator("tbody tr")).to_have_count(1)
        shot(page, tmp_path / "processes.png")
        page.goto(url + DASH + "/")
        expect(page.locator(".tile.CANCELLED .n")).to_have_text("1")
        shot(page, tmp_path / "overview-after.png")
        pwned = page.evaluate("window.pwned === undefined")

    assert dialogs == [] and errors == []
    assert pwned is True
