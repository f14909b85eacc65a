"""Celery benchmark: taskrun's Celery engine against plain Celery tuned the same way.

Run through ``python bench/run.py celery`` (``bash dev.sh bench celery``).
It starts Debian's redis-server on a free loopback port and two workers on
it, each ``-P gevent -c 100`` in a process of its own: ``taskrun worker`` for
taskrun's no-op task and ``celery worker`` for plain Celery's (see
``celery_apps.py``).  In this process, for each in turn, repeated:

* ``delay()``: microseconds per call in a burst of 2,000 from one greenlet
  (each call is a network round trip or two);
* end to end: jobs per second for those 2,000 no-op jobs, from the first
  ``delay()`` until every ``get()`` has returned.

Medians of the repeats, and taskrun / plain ratios (target: >= 0.9x plain
Celery's jobs/s, <= 1.1x its µs).
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
N_JOBS = 2_000
CONCURRENCY = 100
WAIT = 120.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _process(args: list[str], log: Path, env: dict[str, str], ready: str) -> Iterator[None]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _burst(submit: Callable[[], Any], wait: Callable[[Any], Any]) -> tuple[float, float]:
    """Submit N_JOBS, then wait for each; return (µs per submit, jobs/s end to end)."""
    began = time.perf_counter()
    handles = [submit() for _ in range(N_JOBS)]
    submitted = time.perf_counter()
    for handle in handles:
        wait(handle)
    done = time.perf_counter()
    return (submitted - began) / N_JOBS * 1e6, N_JOBS / (done - began)


def main(repeats: int) -> list[tuple[str, float, float, float]]:
    """Measure both engines in turn ``repeats`` times; print a Markdown table; return its rows."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("the celery bench needs redis-server: apt-get install redis-server")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        os.environ["BENCH_REDIS"] = url
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        redis_args = [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        # Both at WARNING: per-job INFO lines would cost both sides more than the work.
        taskrun_args = [
            str(VENV_BIN / "taskrun"),
            "worker",
            "celery_apps:app",
            "--concurrency",
            str(CONCURRENCY),
            "--log-level",
            "warning",
        ]
        plain_args = [
            str(VENV_BIN / "celery"),
            "-A",
            "celery_apps:plain",
            "worker",
            "-P",
            "gevent",
            "-c",
            str(CONCURRENCY),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with (
            _process(redis_args, directory / "redis.log", env, "Ready to accept connections"),
            _process(taskrun_args, directory / "taskrun.log", env, ""),
            _process(plain_args, directory / "plain.log", env, ""),
        ):
            return _measure(repeats)


def _measure(repeats: int) -> list[tuple[str, float, float, float]]:
    import celery_apps

    runner = celery_apps.taskrun_runner
    runner.start()
    try:
        taskrun_side = (celery_apps.noop.delay, lambda job: job.get(timeout=WAIT))
        plain_side = (celery_apps.plain_noop.delay, lambda result: result.get(timeout=WAIT))
        for side in (taskrun_side, plain_side):  # the workers are up; warm up connections
            side[1](side[0]())
            _burst(*side)
        taskrun_runs, plain_runs = [], []
        for _ in range(repeats):  # alternate, so drift hits both alike
            taskrun_runs.append(_burst(*taskrun_side))
            plain_runs.append(_burst(*plain_side))
    finally:
        runner.stop(timeout=5)
        # Plain Celery's results unsubscribe when collected: let them go while the hub runs.
        gc.collect()
        celery_apps.plain.close()
    rows = []
    for label, index in (("delay() µs/call", 0), ("end to end jobs/s", 1)):
        mine = statistics.median(run[index] for run in taskrun_runs)
        theirs = statistics.median(run[index] for run in plain_runs)
        rows.append((label, mine, theirs, mine / theirs))
    print(f"{N_JOBS:,} no-op jobs, one worker each, -P gevent -c {CONCURRENCY}, one Redis\n")  # noqa: T201
    print("| measure | taskrun on Celery | plain Celery | ratio | target |")  # noqa: T201
    print("| --- | ---: | ---: | ---: | --- |")  # noqa: T201
    targets = {"delay() µs/call": "<= 1.1x", "end to end jobs/s": ">= 0.9x"}
    for label, mine, theirs, ratio in rows:
        print(f"| {label} | {mine:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {targets[label]} |")  # noqa: T201
    return rows
