"""A tour of taskrun in one process: background jobs, a retry, a delayed job, a timeout.

Run it with ``.venv/bin/python examples/demo.py`` (after ``bash dev.sh test`` or
``bash dev.sh demo`` has made ``.venv``; ``bash dev.sh demo`` itself runs the example
Flask app in ``example_app/``, not this script).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # first thing, before any other import: as a gevent app's entry point does

import logging  # noqa: E402 - imported after patching on purpose
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from taskrun import JobTimeout, TaskRunner  # noqa: E402

logging.basicConfig(
    stream=sys.stdout, level=logging.WARNING, format="  log %(levelname)s %(name)s: %(message)s"
)

runner = TaskRunner(concurrency=10, max_pending=100)
calls = {"flaky": 0}


@runner.task
def add(a: int, b: int) -> int:
    """A plain background job."""
    gevent.sleep(0.05)  # waits without blocking the other jobs
    return a + b


@runner.task(retries=3, retry_delay=0.1, retry_backoff=2.0)
def flaky_fetch(url: str) -> str:
    """Fails twice, then succeeds: retried with back-off."""
    calls["flaky"] += 1
    if calls["flaky"] < 3:
        raise ConnectionError(f"{url} is not answering (attempt {calls['flaky']})")
    return f"fetched {url}"


@runner.task(executor="thread")
def checksum(data: bytes) -> int:
    """CPU work in the runner's thread pool, off the event loop."""
    return sum(data) % 65_521


@runner.task(timeout=0.2)
def too_slow() -> None:
    """Runs past its time limit and is stopped."""
    gevent.sleep(5)


def main() -> None:
    """Start the runner, submit jobs, print what became of them, stop it."""
    with runner:  # start(); stop(timeout=30) on exit
        started = time.monotonic()
        jobs = [add.delay(n, n) for n in range(5)]
        fetch = flaky_fetch.delay("https://example.invalid/feed")
        later = add.apply_async(args=(40, 2), countdown=0.5)
        digest = checksum.delay(bytes(range(256)) * 1000)
        slow = too_slow.delay()
        print(f"submitted {len(jobs) + 4} jobs; the delayed one is {later.state.value}")  # noqa: T201

        print("sums:", [job.get(timeout=5) for job in jobs])  # noqa: T201
        print(f"retried job: {fetch.get(timeout=5)!r} after {fetch.attempts} attempts")  # noqa: T201
        print(f"thread job: checksum {digest.get(timeout=5)}")  # noqa: T201
        try:
            slow.get(timeout=5)
        except JobTimeout as error:
            print(f"timed-out job: {slow.state.value}: {error}")  # noqa: T201
        print(  # noqa: T201
            f"delayed job: {later.get(timeout=5)} at "
            f"+{time.monotonic() - started:.2f} s (countdown 0.5 s)"
        )
        found = runner.job(later.id)
        print(f"looked up by id {later.id}: {found!r}")  # noqa: T201
        print("stats:", runner.stats()["states"])  # noqa: T201


if __name__ == "__main__":
    main()
