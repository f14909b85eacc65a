"""A web process of ``e2e_app`` that leads its periodic job on a manual clock, with a broker.

Usage: python tests/periodic_web_child.py BROKER_URL LOCK_PATH
Its clock starts at 2026-03-29 00:00 Europe/Berlin (the spring-forward
day).  It reads commands from stdin: ``advance SECONDS`` moves the clock
and answers ``done`` once the timer has fired what came due; ``runs`` answers
how many periodic runs this process submitted; ``quit`` stops.  The periodic
runs go to Celery; the test's worker runs them.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
from datetime import datetime  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import e2e_app  # noqa: E402

from taskrun import ManualClock, TaskRunner  # noqa: E402

START = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))


def answer(text: object) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def main() -> None:
    url, lock_path = sys.argv[1], sys.argv[2]
    clock = ManualClock(START)
    runner = TaskRunner(name="e2e", broker=url, lock_path=lock_path, clock=clock)
    e2e_app.declare(runner, periodic=True)
    runner.start()
    answer("ready")
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["advance"]:
            clock.advance(float(command[1]))
            runner.join(timeout=10)
            answer("done")
        elif command[:1] == ["runs"]:
            answer(sum(info.runs for info in runner.periodic_jobs()))
        elif command[:1] == ["quit"]:
            break
    runner.stop(timeout=1)


if __name__ == "__main__":
    main()
