"""Helpers for the serving tests: bounded waits, HTTP calls, subprocesses killed by pid.

Every wait here has a deadline and fails with what it was waiting for;
every process started is killed by pid when its ``with`` block ends.
Servers bind port 0 and the tests read the port they got from their log
(a port picked beforehand may be taken by another process before the
server binds it).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

APPS = Path(__file__).with_name("apps")
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll ``check()`` until it returns a true value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        time.sleep(step)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str, dict[str, str]]:
    """GET ``url`` on a fresh connection; return (status, body, headers with lower-case names)."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match, url
    conn = http.client.HTTPConnection(match[1], int(match[2]), timeout=timeout)
    try:
        conn.request("GET", match[3])
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def try_get(url: str) -> str | None:
    """Return the body of a 200 answer to GET ``url``, or ``None`` if nothing answers yet."""
    try:
        status, body, _ = http_get(url, timeout=2.0)
    except OSError:
        return None
    return body if status == 200 else None


def lines(path: Path) -> list[str]:
    """Return the lines of ``path`` (none if it does not exist yet)."""
    return path.read_text().splitlines() if path.exists() else []


def pid_exists(pid: int) -> bool:
    """Return whether a process ``pid`` exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and ") Z " in status.read_text())


def app_env(out: Path, **extra: str) -> dict[str, str]:
    """The environment for a served test app: ``tests/apps`` importable, jobs writing to ``out``."""
    env = {**os.environ, "PYTHONPATH": str(APPS), "TASKRUN_TEST_OUT": str(out), **extra}
    env.pop("TASKRUN_RUNNER", None)
    env.pop("TASKRUN_RECYCLE_GRACE", None)
    return env


@dataclass
class Served:
    """A server process under test: its ``Popen``, log file and URL."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    #: Other processes to kill at the end (e.g. gunicorn workers).
    extra_pids: set[int] = field(default_factory=set)

    def log_text(self) -> str:
        """Return what the process wrote to stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the process to exit; return its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"process {self.proc.pid} still running {timeout} s later; log:\n{self.log_text()}"
            )

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the log matches ``pattern``; fail with the log if the process dies first."""

        def check() -> re.Match[str] | None:
            found = re.search(pattern, self.log_text())
            if found is None and self.proc.poll() is not None:
                pytest.fail(
                    f"process exited ({self.proc.returncode}) before logging {pattern!r}:\n"
                    + self.log_text()
                )
            return found

        return wait_for(check, timeout, f"{pattern!r} in the log")


@contextmanager
def run_process(args: Sequence[str], env: dict[str, str], log: Path) -> Iterator[Served]:
    """Start ``args`` logging to ``log``; SIGKILL it and its known children afterwards."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            list(args), env=env, cwd=log.parent, stdout=sink, stderr=subprocess.STDOUT
        )
    served = Served(proc, log)
    try:
        yield served
    finally:
        for pid in [proc.pid, *served.extra_pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


#: The worker class of the gunicorn tests.
WORKER_CLASS = "taskrun.gunicorn.GeventWorker"
#: What a gunicorn worker logs once its runner has started (``taskrun.gunicorn.RUNNER_STARTED``).
RUNNER_STARTED = "taskrun runner started in worker"


def gunicorn_command(
    target: str, *options: str, worker: str = WORKER_CLASS, control_socket: Path | None = None
) -> list[str]:
    """Return the command line of a gunicorn serving ``target`` on 127.0.0.1, any free port.

    Read the port it got with :func:`gunicorn_url`.  The master's control
    socket is off unless ``control_socket`` names where to put it.
    """
    control = ["--control-socket", str(control_socket)] if control_socket else []
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "--bind",
        "127.0.0.1:0",
        *(control or ["--no-control-socket"]),
        *options,
        target,
    ]


def gunicorn_url(served: Served, timeout: float) -> str:
    """Wait for gunicorn's ``Listening at: http://127.0.0.1:PORT`` line; return (and keep) the URL.

    The master binds before it forks: every worker accepts on that socket.
    """
    served.url = served.wait_log(r"Listening at: (http://127\.0\.0\.1:\d+) ", timeout)[1]
    return served.url


def worker_pids(served: Served) -> set[int]:
    """Return the pids of the workers gunicorn has booted so far (and remember them)."""
    pids = {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", served.log_text())}
    served.extra_pids |= pids
    return pids


def wait_workers_ready(served: Served, count: int, timeout: float) -> set[int]:
    """Wait until ``count`` gunicorn workers have started their runners; return the workers' pids.

    A worker logs :data:`RUNNER_STARTED` after it has loaded the app and set
    up its signal handlers, right before it serves, whatever store the app
    uses (with ``taskrun.gunicorn.GeventWorker`` or its ``post_worker_init``
    hook).  Workers that started before count too (e.g. one recycled).
    """
    wait_for(
        lambda: served.log_text().count(RUNNER_STARTED) >= count,
        timeout,
        f"{count} workers to start their runners ({RUNNER_STARTED!r} in the log)",
    )
    return worker_pids(served)
