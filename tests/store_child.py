"""A process sharing a SQLite store, driven by tests/test_sqlite_store.py.

Usage: ``python tests/store_child.py MODE STORE OUT_DIR [N]``, where MODE is

* ``produce``: accept N ``record`` jobs in chunks of 20 (one every 20 ms), and
  one ``record("scheduled")`` due 3 s after the start; after each chunk is
  committed (``store.flush()``), append its tokens to ``OUT_DIR/accepted.txt``;
  then wait to be killed;
* ``consume``: run jobs of the store (those it takes over) until SIGTERM,
  then stop gracefully;
* ``slow``: accept one ``slow`` job (1.5 s), print its id on stdout, run it,
  wait for SIGTERM;
* ``hold``: accept one ``hold`` job and run it, then wait for SIGTERM.

``hold()`` appends ``start <pid>`` to ``OUT_DIR/done.txt``, sleeps 3 s and
appends ``end <pid>``.  With ``STORE_CHILD_LEASE=<seconds>`` in the
environment the store uses that lease and a heartbeat of a fifth of it.

``record(token)`` sleeps 10 ms and appends ``token`` to ``OUT_DIR/done.txt``
(one ``write`` per line, so lines from several processes never mix).
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

from taskrun import TaskRunner  # noqa: E402
from taskrun.stores.sqlite.store import SqliteStore  # noqa: E402

CHUNK = 20


def append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def main(mode: str, store: str, out: Path, count: int) -> None:
    """Run ``mode`` (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format=f"{mode} %(levelname)s %(name)s %(message)s")
    runner = TaskRunner(concurrency=4, max_pending=10_000, store=store, lock_path=None)
    lease = os.environ.get("STORE_CHILD_LEASE")
    if lease is not None:
        runner.configure(
            store=SqliteStore(
                store,
                clock=runner.clock,
                result_ttl=3600,
                max_results=100_000,
                host=runner,
                heartbeat=float(lease) / 5,
                lease=float(lease),
            )
        )

    @runner.task(name="store_child.record")
    def record(token: str) -> None:
        time.sleep(0.01)
        append(out / "done.txt", f"{token}\n")

    @runner.task(name="store_child.slow")
    def slow(value: int) -> int:
        time.sleep(1.5)
        return value * 2

    @runner.task(name="store_child.hold")
    def hold() -> None:
        append(out / "done.txt", f"start {os.getpid()}\n")
        time.sleep(3)
        append(out / "done.txt", f"end {os.getpid()}\n")

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    runner.start()
    assert isinstance(runner.store, SqliteStore)
    if mode == "produce":
        record.apply_async(("scheduled",), countdown=3.0)
        runner.store.flush()
        append(out / "accepted.txt", "scheduled\n")
        for start in range(0, count, CHUNK):
            tokens = [str(n) for n in range(start, min(start + CHUNK, count))]
            for token in tokens:
                record.delay(token)
            runner.store.flush()
            append(out / "accepted.txt", "".join(f"{token}\n" for token in tokens))
            gevent.sleep(0.02)
    elif mode == "hold":
        hold.delay()
        runner.store.flush()
    elif mode == "slow":
        job = slow.delay(21)
        runner.store.flush()
        print(job.id, flush=True)  # noqa: T201 - the test reads it
    stop.wait(60)
    runner.stop(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
