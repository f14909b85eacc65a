"""The example app with its real parts: an SMTP server, Pillow, HTTP servers, the demo entry point.

The SMTP server is ``example_app.mailsink`` (aiosmtpd) in a subprocess that
saves each message as a file; HTTP servers are gevent's on 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
from conftest import STOP_TIMEOUT, assert_stopped_cleanly
from flask import Flask
from flask.testing import FlaskClient
from gevent.pywsgi import WSGIServer
from PIL import Image

from example_app import create_app
from example_app.mailsink import READY
from example_app.tasks import runner, send_welcome, warm_cache

Waiter = Callable[..., Any]
ROOT = Path(__file__).resolve().parent.parent
#: Seconds a subprocess may take to come up or go down.
PROCESS_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def read_line_with(proc: subprocess.Popen[str], marker: str) -> str:
    """Read ``proc``'s stdout until a line containing ``marker``; fail after a bounded wait."""
    assert proc.stdout is not None
    seen = []
    with gevent.Timeout(PROCESS_TIMEOUT, AssertionError(f"no {marker!r} line: {seen!r}")):
        for _ in range(100):
            line = proc.stdout.readline()
            seen.append(line)
            if marker in line or not line:
                break
    if marker not in seen[-1]:
        pytest.fail(f"{proc.args!r} printed no {marker!r} line; it printed {seen!r}")
    return seen[-1]


def end(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Stop ``proc`` by its pid and return its exit code.

    If it lingers, SIGKILL it, and its own children with it when it leads a
    process group of its own (``start_new_session=True``).
    """
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        code = proc.wait(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        code = proc.wait(timeout=PROCESS_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()
    return code


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def start_mailsink(mail_dir: Path) -> Iterator[Callable[[int], None]]:
    """``start_mailsink(port)`` runs the SMTP server on 127.0.0.1:port until the test ends."""
    sinks: list[subprocess.Popen[str]] = []

    def start(port: int) -> None:
        command = [sys.executable, "-m", "example_app.mailsink", "--port", str(port)]
        command += ["--dir", str(mail_dir)]
        sinks.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT))
        read_line_with(sinks[-1], READY)

    try:
        yield start
    finally:
        for sink in sinks:
            end(sink)


@pytest.fixture
def app(tmp_path: Path, smtp_port: int, mail_dir: Path) -> Iterator[Flask]:
    """The example app on a temporary data folder, its runner started; stopped cleanly after."""
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "MAIL_DIR": str(mail_dir),
            "SMTP_PORT": smtp_port,
            "SMTP_TIMEOUT": 5.0,
            "REPORT_DELAY": 0,
            "WARM_URLS": [],
        }
    )
    runner.start()
    try:
        yield app
    finally:
        runner.stop(timeout=STOP_TIMEOUT)
    assert_stopped_cleanly(runner)


def poll(client: FlaskClient, url: str, wait_for: Waiter) -> dict[str, Any]:
    """GET the status at ``url`` until the job is finished; return the last document."""

    def finished() -> dict[str, Any] | None:
        document: dict[str, Any] = client.get(url).get_json()
        return document if document["state"] in ("SUCCESS", "FAILURE", "CANCELLED") else None

    result: dict[str, Any] = wait_for(finished, f"the job at {url} to finish", timeout=20)
    return result


def emails(mail_dir: Path) -> list[str]:
    if not mail_dir.exists():
        return []
    return [path.read_text() for path in sorted(mail_dir.glob("*.eml"))]


# -- sign-up and the welcome email ----------------------------------------------------


def test_signup_sends_one_welcome_email(
    client: FlaskClient,
    start_mailsink: Callable[[int], None],
    smtp_port: int,
    mail_dir: Path,
    wait_for: Waiter,
) -> None:
    start_mailsink(smtp_port)

    response = client.post("/signup", data={"email": "ada@example.com"})

    assert response.status_code == 202
    assert poll(client, response.headers["Location"], wait_for)["result"] == "sent"
    [email] = emails(mail_dir)
    assert "To: ada@example.com" in email
    assert "Subject: Welcome!" in email


def test_welcome_email_is_sent_once_when_its_job_runs_again(
    client: FlaskClient,
    start_mailsink: Callable[[int], None],
    smtp_port: int,
    mail_dir: Path,
) -> None:
    start_mailsink(smtp_port)
    response = client.post("/signup", json={"email": "bob@example.com"}).get_json()
    first = runner.job(response["id"])
    assert first is not None

    duplicates = [send_welcome.delay(response["signup_id"]) for _ in range(2)]
    outcomes = [job.get(timeout=20) for job in [first, *duplicates]]
    later = send_welcome.delay(response["signup_id"]).get(timeout=20)

    assert outcomes.count("sent") == 1
    assert set(outcomes) <= {"sent", "claimed by another job", "already sent"}
    assert later == "already sent"
    assert len(emails(mail_dir)) == 1


def test_welcome_email_is_retried_until_the_smtp_server_comes_up(
    client: FlaskClient,
    start_mailsink: Callable[[int], None],
    smtp_port: int,
    mail_dir: Path,
    wait_for: Waiter,
) -> None:
    response = client.post("/signup", data={"email": "cy@example.com"})
    job = runner.job(response.get_json()["id"])
    assert job is not None
    wait_for(lambda: job.state == "RETRY", "the first attempt to fail")
    assert isinstance(job.result, ConnectionRefusedError)

    start_mailsink(smtp_port)

    assert job.get(timeout=20) == "sent"
    assert job.attempts >= 2
    assert len(emails(mail_dir)) == 1


def test_signup_with_a_bad_or_repeated_email_is_refused(
    client: FlaskClient, start_mailsink: Callable[[int], None], smtp_port: int
) -> None:
    start_mailsink(smtp_port)

    bad = client.post("/signup", data={"email": "not-an-email"})
    client.post("/signup", data={"email": "dee@example.com"})
    repeated = client.post("/signup", data={"email": "dee@example.com"})

    assert bad.status_code == 400
    assert "not an email address: 'not-an-email'" in bad.get_json()["error"]
    assert repeated.status_code == 409


# -- thumbnails ----------------------------------------------------------------------


def png(width: int, height: int) -> io.BytesIO:
    data = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(data, format="PNG")
    data.seek(0)
    return data


def test_uploaded_image_gets_a_thumbnail(app: Flask, client: FlaskClient, wait_for: Waiter) -> None:
    response = client.post(
        "/images", data={"file": (png(640, 320), "photo.png")}, content_type="multipart/form-data"
    )

    assert response.status_code == 202
    status = poll(client, response.headers["Location"], wait_for)
    assert status["result"] == {"width": 128, "height": 64}
    image_id = response.get_json()["image_id"]
    with client.get(f"/images/{image_id}") as thumbnail:
        assert thumbnail.status_code == 200
        assert thumbnail.mimetype == "image/png"
        with Image.open(io.BytesIO(thumbnail.data)) as image:
            assert image.size == (128, 64)
    folder = Path(app.config["UPLOAD_FOLDER"])
    assert sorted(path.name for path in folder.iterdir()) == [
        f"{image_id}.thumb.png",
        f"{image_id}.upload",
    ]


def test_upload_that_is_not_an_image_is_refused(client: FlaskClient) -> None:
    response = client.post(
        "/images",
        data={"file": (io.BytesIO(b"hello"), "notes.txt")},
        content_type="multipart/form-data",
    )

    assert response.status_code == 400
    assert "'notes.txt' is not an image we can read" in response.get_json()["error"]


def test_thumbnail_of_an_unknown_image_is_404(client: FlaskClient) -> None:
    assert client.get(f"/images/{'0' * 32}").status_code == 404
    assert client.get("/images/../etc").status_code == 404


# -- cache warming -------------------------------------------------------------------


@pytest.fixture
def page_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A live HTTP server on 127.0.0.1 that counts the hits of each path."""
    hits: dict[str, int] = {}

    def count_hits(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        hits[environ["PATH_INFO"]] = hits.get(environ["PATH_INFO"], 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"warm"]

    server = WSGIServer(("127.0.0.1", 0), count_hits, log=None)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.stop(timeout=5)


def test_warm_cache_fetches_every_configured_page(
    app: Flask, page_server: tuple[str, dict[str, int]]
) -> None:
    base, hits = page_server
    closed = f"http://127.0.0.1:{free_port()}/gone"
    app.config["WARM_URLS"] = [f"{base}/a", f"{base}/b", closed]

    results = warm_cache.delay().get(timeout=20)

    assert hits == {"/a": 1, "/b": 1}
    assert results[f"{base}/a"] == results[f"{base}/b"] == 200
    assert str(results[closed]).startswith("ConnectionError")


def test_warm_cache_defaults_to_the_apps_own_pages(app: Flask) -> None:
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        app.config.update(WARM_URLS=None, BASE_URL=base)
        results = warm_cache.delay().get(timeout=20)
    finally:
        server.stop(timeout=5)

    assert results == {f"{base}/": 200}


def test_warm_cache_runs_every_five_minutes() -> None:
    schedules = {info.name: info.schedule for info in runner.periodic_jobs()}

    assert schedules == {warm_cache.name: "every(minutes=5)"}


# -- the report and the page ------------------------------------------------------


def test_report_is_built_in_the_background_and_polled_to_success(
    client: FlaskClient, wait_for: Waiter
) -> None:
    client.post("/signup", data={"email": "eve@example.com"})

    response = client.post("/report?days=7")

    assert response.status_code == 202
    finished = poll(client, response.headers["Location"], wait_for)
    assert finished["meta"] == {"current": 4, "total": 4}  # its progress, kept with the result
    result = finished["result"]
    assert result["days"] == 7
    assert result["signups"] == 1
    assert result["images"] == 0


def test_index_page_offers_signup_upload_and_report(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)

    assert 'action="/signup"' in page
    assert 'action="/images"' in page
    assert 'action="/report?days=7"' in page
    assert 'id="report-progress"' in page


# -- python -m example_app -------------------------------------------------------------


@pytest.mark.slow
def test_python_m_example_app_serves_the_app_and_saves_emails(
    tmp_path: Path, wait_for: Waiter
) -> None:
    command = [sys.executable, "-m", "example_app", "--port", "0", "--smtp-port", "0"]
    command += ["--data-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True
    )
    try:
        url = read_line_with(demo, "open http://").split("open ")[1].strip()
        with requests.Session() as session:

            def index_status() -> int:
                try:
                    return session.get(url, timeout=(3, 10)).status_code
                except requests.ConnectionError:
                    return 0  # not listening yet

            assert wait_for(index_status, "the demo to listen", timeout=20) == 200
            signup = session.post(f"{url}signup", data={"email": "fay@example.com"}, timeout=10)
            status_url = url.rstrip("/") + signup.headers["Location"]

            def sent() -> bool:
                document = session.get(status_url, timeout=10).json()
                return document["state"] == "SUCCESS"

            wait_for(sent, "the welcome email to be sent", timeout=20)
    finally:
        code = end(demo, signal.SIGINT)

    assert code == 0
    assert len(emails(tmp_path / "mail")) == 1
