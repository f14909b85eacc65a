"""A process that runs one periodic job, sharing a leader lock with its siblings.

Usage: python tests/periodic_child.py LOCK_PATH OUT_FILE [SECONDS [STORE]]
The job runs every SECONDS (default 1), with jobs kept in STORE (a SQLite
file; default: memory).  Each run appends "<pid> <slot>" to
OUT_FILE, the slot being the POSIX second the run is for (passed to the job
by ``pass_slot=True``), not when it ran.  Exits by itself after 30 s.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
from datetime import datetime  # noqa: E402

import gevent  # noqa: E402

from taskrun import TaskRunner  # noqa: E402
from taskrun.schedules import every  # noqa: E402


def main() -> None:
    lock_path, out_path = sys.argv[1], sys.argv[2]
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    store = sys.argv[4] if len(sys.argv) > 4 else None
    runner = TaskRunner(name="periodic-child", lock_path=lock_path, store=store)

    @runner.periodic(every(seconds=interval), pass_slot=True)
    def tick(slot: datetime) -> None:
        with open(out_path, "a") as out:
            out.write(f"{os.getpid()} {round(slot.timestamp())}\n")

    runner.start()
    gevent.sleep(30)
    runner.stop(timeout=1)


if __name__ == "__main__":
    main()
