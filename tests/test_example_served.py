"""The example app served for real: gunicorn with taskrun's worker, ``taskrun serve``, real HTTP.

The app runs in a subprocess configured through ``FLASK_<KEY>`` variables,
with its data (SQLite database, job store, uploads, emails) in a temporary
folder, and sends its emails to ``example_app.mailsink`` in another
subprocess.  The tests talk to it with ``requests`` and poll with bounded
waits; every process is killed by pid at the end.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from serving_helpers import (
    ROOT,
    Served,
    gunicorn_command,
    gunicorn_url,
    pid_exists,
    run_process,
    wait_for,
    wait_workers_ready,
)

#: Every test here runs real subprocesses end to end; deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

BOOT = 40.0  # seconds a server gets to listen with its workers ready
JOB = 20.0  # seconds a job gets to finish
GRACE = 10  # the servers' grace period on SIGTERM, in seconds
HTTP_TIMEOUT = (3.05, 10.0)
FINISHED = ("SUCCESS", "FAILURE", "CANCELLED")


def example_env(data_dir: Path, **config: str) -> dict[str, str]:
    """The served example app's environment: data in ``data_dir``, ``FLASK_<KEY>`` settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLASK_DATA_DIR": str(data_dir)}
    env.update({"FLASK_WARM_URLS": "[]", "FLASK_SMTP_TIMEOUT": "5", "FLASK_REPORT_DELAY": "0.5"})
    env.update({f"FLASK_{key}": value for key, value in config.items()})
    for name in ("TASKRUN_RUNNER", "TASKRUN_RECYCLE_GRACE"):
        env.pop(name, None)
    return env


@contextmanager
def mailsink(folder: Path, log: Path) -> Iterator[int]:
    """Run the example's SMTP server saving to ``folder`` on a free port; yield the port."""
    command = [sys.executable, "-m", "example_app.mailsink", "--port", "0", "--dir", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with run_process(command, env, log) as sink:
        yield int(sink.wait_log(r"mailsink ready on 127\.0\.0\.1:(\d+)", BOOT)[1])


def emails(folder: Path) -> list[str]:
    """Return the messages the SMTP server saved in ``folder``."""
    return [path.read_text() for path in sorted(folder.glob("*.eml"))] if folder.exists() else []


def poll_job(session: requests.Session, url: str) -> dict[str, Any]:
    """GET the job status at ``url`` until the job has finished; return the last document."""

    def finished() -> dict[str, Any] | None:
        response = session.get(url, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, (url, response.status_code, response.text)
        document: dict[str, Any] = response.json()
        return document if document["state"] in FINISHED else None

    return wait_for(finished, JOB, f"the job at {url} to finish")


def png(width: int, height: int) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(data, format="PNG")
    return data.getvalue()


def sign_up(session: requests.Session, base: str, email: str) -> dict[str, Any]:
    """Sign ``email`` up and poll its welcome email's job to the end; return its status."""
    response = session.post(f"{base}/signup", data={"email": email}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 202, response.text
    return poll_job(session, base + response.headers["Location"])


def exit_cleanly(served: Served, workers: set[int]) -> None:
    """SIGTERM the server; check it exits 0 within its grace period, its workers gone."""
    served.signal(signal.SIGTERM)
    code = served.wait_exit(timeout=GRACE)
    assert code == 0, served.log_text()
    assert [pid for pid in workers if pid_exists(pid)] == []
    for trouble in ("Traceback", "WORKER TIMEOUT", "cancelled"):
        assert trouble not in served.log_text()


# -- gunicorn ------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_signup_thumbnail_and_report_round_trip_through_two_gunicorn_workers(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with mailsink(data / "mail", tmp_path / "mailsink.log") as smtp_port:
        env = example_env(data, SMTP_PORT=str(smtp_port))
        options = ["-w", "2", "--graceful-timeout", str(GRACE)]
        command = gunicorn_command("example_app.wsgi:app", *options)
        with (
            run_process(command, env, tmp_path / "gunicorn.log") as served,
            requests.Session() as session,
        ):
            base = gunicorn_url(served, BOOT)
            workers = wait_workers_ready(served, 2, BOOT)

            welcome = sign_up(session, base, "ada@example.com")

            upload = session.post(
                f"{base}/images",
                files={"file": ("photo.png", png(640, 320), "image/png")},
                timeout=HTTP_TIMEOUT,
            )
            assert upload.status_code == 202, upload.text

            def thumbnail() -> requests.Response | None:
                url = base + upload.json()["thumbnail_url"]
                response = session.get(url, timeout=HTTP_TIMEOUT)
                assert response.status_code in (200, 202), (response.status_code, response.text)
                return response if response.status_code == 200 else None

            made = wait_for(thumbnail, JOB, "the thumbnail to be served")

            started = session.post(f"{base}/report?days=7", timeout=HTTP_TIMEOUT)
            assert started.status_code == 202, started.text
            report = poll_job(session, base + started.headers["Location"])

            exit_cleanly(served, workers)

    assert (welcome["state"], welcome["result"]) == ("SUCCESS", "sent")
    [email] = emails(data / "mail")
    assert "To: ada@example.com" in email
    assert made.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(made.content)) as image:
        assert image.size == (128, 64)
    assert report["state"] == "SUCCESS", report
    assert (report["result"]["signups"], report["result"]["images"]) == (1, 1)
    assert report["result"]["welcome_emails_sent"] == 1


@pytest.mark.timeout(120)
def test_preloaded_app_is_imported_after_patching_and_nothing_starts_in_the_master(
    tmp_path: Path,
) -> None:
    # example_app imports requests (hence urllib3 and ssl) at module level.
    options = ["-w", "2", "--preload", "--graceful-timeout", str(GRACE)]
    command = gunicorn_command("example_app.wsgi:app", *options)
    env = example_env(tmp_path / "data")
    with (
        run_process(command, env, tmp_path / "gunicorn.log") as served,
        requests.Session() as session,
    ):
        base = gunicorn_url(served, BOOT)
        workers = wait_workers_ready(served, 2, BOOT)  # each checked the patching at start
        master = Path(f"/proc/{served.proc.pid}")
        master_threads = len(list((master / "task").iterdir()))
        master_files = [os.readlink(fd) for fd in (master / "fd").iterdir()]

        started = session.post(f"{base}/report?days=1", timeout=HTTP_TIMEOUT)
        report = poll_job(session, base + started.headers["Location"])

        exit_cleanly(served, workers)

    assert report["state"] == "SUCCESS", report
    log = served.log_text()
    assert "MonkeyPatchWarning" not in log
    assert "patched ssl after" not in log
    assert "has not monkey-patched" not in log
    assert master_threads == 1
    assert [path for path in master_files if "taskrun" in path] == []


# -- taskrun serve ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_taskrun_serve_runs_the_example_factory_and_sends_the_welcome_email(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with mailsink(data / "mail", tmp_path / "mailsink.log") as smtp_port:
        command = [sys.executable, "-m", "taskrun", "serve", "example_app:create_app()"]
        command += ["--bind", "127.0.0.1:0", "--grace", str(GRACE)]
        env = example_env(data, SMTP_PORT=str(smtp_port))
        with (
            run_process(command, env, tmp_path / "serve.log") as served,
            requests.Session() as session,
        ):
            base = served.wait_log(r"serving on (http://\S+)", BOOT)[1]

            welcome = sign_up(session, base, "bob@example.com")

            exit_cleanly(served, set())

    assert (welcome["state"], welcome["result"]) == ("SUCCESS", "sent")
    [email] = emails(data / "mail")
    assert "To: bob@example.com" in email
