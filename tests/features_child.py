"""A process sharing a SQLite store, driven by tests/test_features_shared.py.

Usage: ``python tests/features_child.py MODE STORE OUT_DIR [N]``.  Each
process opens the store, writes ``OUT_DIR/ready-<pid>`` and waits for
``OUT_DIR/go`` (so that all of them submit at once), then per MODE:

* ``exclusive``: submit N jobs of ``features.exclusive`` (``max_running=1``),
  each appending ``start end pid`` (wall-clock seconds) to ``OUT_DIR/spans.txt``
  after a 30 ms run; wait for them, write ``OUT_DIR/done-<pid>``;
* ``rate``: submit N jobs of ``features.limited`` (``rate_limit="4/s"``), each
  appending its start time (``job.started_at``) to ``OUT_DIR/starts.txt``; wait,
  write ``done-<pid>``;
* ``unique``: submit one ``features.held`` job with ``unique_key="same"``
  (it runs until ``OUT_DIR/release`` exists), append its id to
  ``OUT_DIR/ids.txt``, write ``done-<pid>``.

Then every mode waits for SIGTERM and stops gracefully.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402 - imported after patching on purpose
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from taskrun import TaskRunner, current_job  # noqa: E402


def append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write (lines of several processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    """Sleep (yielding) until ``path`` exists; exit with an error after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        gevent.sleep(0.005)


def main(mode: str, store: str, out: Path, count: int) -> None:
    """Run ``mode`` (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format=f"{mode} %(levelname)s %(name)s %(message)s")
    runner = TaskRunner(concurrency=4, max_pending=1000, store=store, lock_path=None)

    @runner.task(name="features.exclusive", max_running=1)
    def exclusive(n: int) -> None:
        start = time.time()
        time.sleep(0.03)
        append(out / "spans.txt", f"{start!r} {time.time()!r} {os.getpid()}\n")

    @runner.task(name="features.limited", rate_limit="4/s")
    def limited(n: int) -> None:
        started = current_job().started_at
        assert started is not None
        append(out / "starts.txt", f"{started.timestamp()!r}\n")

    @runner.task(name="features.held")
    def held() -> None:
        while not (out / "release").exists():
            time.sleep(0.01)

    stopping = Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    runner.start()
    (out / f"ready-{os.getpid()}").touch()
    wait_for_file(out / "go")
    if mode == "exclusive":
        jobs = [exclusive.delay(i) for i in range(count)]
    elif mode == "rate":
        jobs = [limited.delay(i) for i in range(count)]
    else:
        job = held.apply_async(unique_key="same")
        append(out / "ids.txt", f"{job.id}\n")
        jobs = []
    for job in jobs:
        job.get(timeout=60)
    (out / f"done-{os.getpid()}").touch()
    stopping.wait()
    runner.stop(timeout=5)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
