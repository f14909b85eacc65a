"""A process that runs one periodic job every second, sharing a leader lock.

Usage: python tests/periodic_child.py LOCK_PATH OUT_FILE
Each run appends "<pid> <slot>" to OUT_FILE, the slot being the whole second
it was scheduled for.  Exits by itself after 30 s.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from taskrun import TaskRunner  # noqa: E402
from taskrun.schedules import every  # noqa: E402


def main() -> None:
    lock_path, out_path = sys.argv[1], sys.argv[2]
    runner = TaskRunner(name="periodic-child", lock_path=lock_path)

    @runner.periodic(every(seconds=1))
    def tick() -> None:
        slot = math.floor(time.time())
        with open(out_path, "a") as out:
            out.write(f"{os.getpid()} {slot}\n")

    runner.start()
    gevent.sleep(30)
    runner.stop(timeout=1)


if __name__ == "__main__":
    main()
