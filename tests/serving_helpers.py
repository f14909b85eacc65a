"""Helpers for the serving tests: free ports, bounded waits, HTTP calls, subprocesses killed by pid.

Every wait here has a deadline and fails with what it was waiting for;
every process started is killed by pid when its ``with`` block ends.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def gunicorn_command(target: str, port: int, *options: str) -> list[str]:
    """Return the command line of a gunicorn serving ``target`` with taskrun's worker."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "taskrun.gunicorn.GeventWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        *options,
        target,
    ]


def worker_pids(served: Served) -> set[int]:
    """Return the pids of the workers gunicorn has booted so far (and remember them)."""
    pids = {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", served.log_text())}
    served.extra_pids |= pids
    return pids


def wait_workers_ready(served: Served, count: int, timeout: float) -> None:
    """Wait until ``count`` gunicorn workers have loaded the app (and so handle signals).

    Each worker of a multi-worker test app warns once, after gunicorn has set
    up its signal handlers, that its job store is not shared.
    """
    wait_for(
        lambda: served.log_text().count("worker processes each keep their jobs in memory") >= count,
        timeout,
        f"{count} workers to load the app",
    )
    worker_pids(served)
