"""The example app's page in a real browser: headless Chromium against ``python -m example_app``.

The app runs for real in a subprocess (gevent's WSGI server, its runner,
and the SMTP server it starts as its own child) with its data in a
temporary folder.  Playwright drives Debian's ``chromium`` (playwright's
own browser download is not used): the page is loaded, the sign-up form
submitted, an image uploaded and the report built, each checked on what
the page's script renders while it polls the job's status (the report's
progress bar part-way and at the end).

Without Chromium the test is skipped, and says how to install it, except
in CI (``CI`` set), where it fails: ``bash dev.sh test`` installs it there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from serving_helpers import ROOT, Served, run_process, wait_for

#: Every test here runs real subprocesses end to end; deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
INSTALL = "sudo apt-get update && sudo apt-get install -y chromium (Debian/Ubuntu)"
#: Without these Chromium reaches for Google's servers, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium's sandbox refuses to run as root, as CI does
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOOT = 40.0  # seconds the app (and its SMTP server) get to come up
JOB = 15.0  # seconds the page gets to show a job's end
GRACE = 5  # the app's grace period on SIGTERM, in seconds
#: The app's upload limit here: small, so that exceeding it is quick.
MAX_UPLOAD = 100_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def require_chromium() -> None:
    """Skip the test if Chromium is missing, or fail it in CI, where it must run."""
    if Path(CHROMIUM).is_file():
        return
    message = f"the browser test needs Chromium at {CHROMIUM}; install it: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def child_pids(pid: int) -> set[int]:
    """Return the pids of the processes whose parent is ``pid`` (from ``/proc``)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@contextmanager
def example_app(data_dir: Path, log: Path) -> Iterator[Served]:
    """Run ``python -m example_app`` on 127.0.0.1, free ports, data in ``data_dir``.

    Yields once it serves, its URL in ``url``; its SMTP server child is in
    ``extra_pids``, so both are killed by pid at the end.
    """
    command = [sys.executable, "-m", "example_app", "--port", "0", "--smtp-port", "0"]
    command += ["--data-dir", str(data_dir), "--grace", str(GRACE)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    # The report takes 2 s in 4 steps, so the page's polls see it part-way.
    env.update({"FLASK_WARM_URLS": "[]", "FLASK_REPORT_DELAY": "2", "FLASK_SMTP_TIMEOUT": "5"})
    env["FLASK_MAX_CONTENT_LENGTH"] = str(MAX_UPLOAD)
    for name in ("TASKRUN_RUNNER", "TASKRUN_RECYCLE_GRACE"):
        env.pop(name, None)
    with run_process(command, env, log) as served:
        try:
            # The SMTP server is up before the app prints its address.
            served.url = served.wait_log(r"open (http://127\.0\.0\.1:\d+)/", BOOT)[1]
            served.extra_pids |= child_pids(served.proc.pid)
            yield served
        finally:
            served.extra_pids |= child_pids(served.proc.pid)  # if it failed to come up


@contextmanager
def chromium() -> Iterator[Browser]:
    """Launch headless Chromium (Debian's, not a download); close it at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=BOOT * 1000
        )
        try:
            yield browser
        finally:
            browser.close()


def png(width: int, height: int) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(data, format="PNG")
    return data.getvalue()


def progress_text(page: Page) -> str:
    """The "current / total" text beside the report's progress bar."""
    return page.locator("#report-progress .count").inner_text()


def shown_job(page: Page, selector: str) -> dict[str, Any]:
    """Wait until the ``<pre>`` at ``selector`` shows a finished job; return that status."""
    out = page.locator(selector)
    expect(out).to_contain_text('"state": "SUCCESS"', timeout=JOB * 1000)
    document: dict[str, Any] = json.loads(out.inner_text())
    return document


@pytest.mark.timeout(120)
def test_page_signs_up_uploads_and_shows_the_finished_report_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    data = tmp_path / "data"
    mail = data / "mail"
    page_errors: list[str] = []  # exceptions the page's script did not catch
    console_errors: list[str] = []  # includes every failed request
    with example_app(data, tmp_path / "app.log") as served, chromium() as browser:
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        page.set_default_timeout(JOB * 1000)
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                console_errors.append(message.text)

        page.on("console", on_console)

        page.goto(served.url + "/")
        title = page.title()
        heading = page.locator("h1").inner_text()

        page.fill("#signup input[name=email]", "ada@example.com")
        page.click("#signup button")
        welcome = shown_job(page, "#signup-out")
        wait_for(lambda: list(mail.glob("*.eml")), JOB, f"the welcome email in {mail}")

        page.set_input_files(
            "#upload input[type=file]",
            {"name": "photo.png", "mimeType": "image/png", "buffer": png(640, 320)},
        )
        page.click("#upload button")
        thumbnail = page.locator("#thumbnail img")
        expect(thumbnail).to_have_js_property("complete", True, timeout=JOB * 1000)
        thumbnail_size = thumbnail.evaluate("img => [img.naturalWidth, img.naturalHeight]")

        page.click("#report button")
        bar = page.locator("#report-progress progress")
        # Part-way: the bar is shown with the job's latest progress, and the job still runs.
        page.wait_for_function(
            "() => { const bar = document.querySelector('#report-progress progress');"
            " const out = document.querySelector('#report-out').textContent;"
            " return !bar.closest('p').hidden && bar.value >= 1 && bar.value < bar.max"
            " && out.includes('STARTED'); }",
            timeout=JOB * 1000,
        )
        part_way = (bar.evaluate("bar => [bar.value, bar.max]"), progress_text(page))
        progress_shot = tmp_path / "progress.png"
        page.locator("#report").locator("xpath=..").screenshot(path=progress_shot)
        report = shown_job(page, "#report-out")
        done_bar = (bar.evaluate("bar => [bar.value, bar.max]"), progress_text(page))

        screenshot = tmp_path / "page.png"
        page.screenshot(path=screenshot, full_page=True)
        happy_path_console_errors = list(console_errors)

        # Over MAX_CONTENT_LENGTH: Flask answers 413 with an HTML page, not JSON.
        page.set_input_files(
            "#upload input[type=file]",
            {"name": "huge.png", "mimeType": "image/png", "buffer": bytes(2 * MAX_UPLOAD)},
        )
        page.click("#upload button")
        expect(page.locator("#upload-out")).to_contain_text("the server answered 413")

        served.signal(signal.SIGTERM)
        code = served.wait_exit(timeout=GRACE + 5)

    assert (title, heading) == ("taskrun example", "taskrun example")
    assert (welcome["state"], welcome["result"]) == ("SUCCESS", "sent")
    [email] = mail.glob("*.eml")
    assert "To: ada@example.com" in email.read_text()
    assert thumbnail_size == [128, 64]
    assert report["result"]["days"] == 7, report
    assert report["meta"] == {"current": 4, "total": 4}, report
    [value, top], text = part_way
    assert top == 4 and 1 <= value < 4 and text == f"{value:g} / 4", part_way
    assert done_bar == ([4, 4], "4 / 4"), done_bar
    assert progress_shot.read_bytes().startswith(PNG_MAGIC)
    assert (report["result"]["signups"], report["result"]["images"]) == (1, 1), report
    assert report["result"]["welcome_emails_sent"] == 1, report
    assert (page_errors, happy_path_console_errors) == ([], [])
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    with Image.open(screenshot) as image:
        assert image.width == 900 and image.height >= 1000
    assert code == 0, served.log_text()
    assert "Traceback" not in served.log_text()
    assert [pid for pid in served.extra_pids if Path(f"/proc/{pid}").exists()] == []
