"""Helpers for the Celery engine's tests: Debian's redis-server and ``taskrun worker`` processes.

Both run as real subprocesses on 127.0.0.1, started here and killed by pid
when their ``with`` block ends; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from serving_helpers import ROOT, Served, run_process

TESTS = Path(__file__).resolve().parent
TASKRUN = str(ROOT / ".venv" / "bin" / "taskrun")
#: What a Celery worker logs once it consumes.
WORKER_READY = r"ready\."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run Debian's redis-server on a free loopback port, no persistence; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is missing: `bash dev.sh test` installs it (apt-get install redis-server)"
        )
    for _ in range(5):  # a port found free may be taken before redis binds it
        port = _free_port()
        log = directory / f"redis-{port}.log"
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and "Ready to accept connections" in log.read_text(errors="replace"):
                break
            time.sleep(0.02)
        if proc.poll() is None:
            try:
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            return
        proc.wait(timeout=10)
    pytest.fail(f"redis-server would not start; its last log:\n{log.read_text(errors='replace')}")


def worker_env(url: str, marks: Path, name: str, **extra: str) -> dict[str, str]:
    """The environment of a worker of ``e2e_app`` for runner ``name``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "TASKRUN_BROKER_URL": url,
        "E2E_MARKS": str(marks),
        "E2E_NAME": name,
        **extra,
    }
    env.pop("TASKRUN_RUNNER", None)
    return env


@contextmanager
def taskrun_worker(env: dict[str, str], log: Path, concurrency: int = 20) -> Iterator[Served]:
    """Run ``taskrun worker 'e2e_app:create_app()'``; yield it once it consumes."""
    args = [
        TASKRUN,
        "worker",
        "e2e_app:create_app()",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "info",
    ]
    with run_process(args, env, log) as worker:
        worker.wait_log(WORKER_READY, timeout=30)
        yield worker
