"""How long CPU-bound jobs hold the event loop: taskrun's workers against a bare gevent pool.

A watcher greenlet asks to wake every millisecond and records the longest
gap between two of its wake-ups while 2,000 jobs of 1 ms of CPU each run at
concurrency 100: that gap is how long a request (or a timer) would wait for
the loop at worst.  Used by :mod:`bench_core`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import gevent.pool
from gevent.event import Event

from taskrun import TaskRunner

JOBS = 2_000
CPU_SECONDS = 0.001
CONCURRENCY = 100
TICK = 0.001


def burn() -> None:
    """Hold the loop for CPU_SECONDS without yielding."""
    end = time.perf_counter() + CPU_SECONDS
    while time.perf_counter() < end:
        pass


def longest_stall(run: Callable[[], None]) -> float:
    """Return the longest gap (ms) between the watcher's 1 ms wake-ups while ``run()`` runs."""
    longest = [0.0]
    stop = Event()

    def watch() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            gevent.sleep(TICK)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    watcher = gevent.spawn(watch)
    gevent.sleep(0.01)  # let the watcher tick before the work starts
    gevent.spawn(run).get()
    stop.set()
    watcher.join()
    return longest[0] * 1e3


def stall_taskrun() -> float:
    """The longest loop stall (ms) while a TaskRunner runs the jobs."""
    runner = TaskRunner(concurrency=CONCURRENCY, max_pending=JOBS, lock_path=None).start()
    done = Event()
    count = [0]

    @runner.task
    def cpu() -> None:
        burn()
        count[0] += 1
        if count[0] == JOBS:
            done.set()

    def run() -> None:
        for _ in range(JOBS):
            cpu.delay()
        done.wait(60)

    try:
        return longest_stall(run)
    finally:
        runner.stop(timeout=10)


def stall_pool() -> float:
    """The longest loop stall (ms) while a bare ``gevent.pool.Pool(100)`` runs the jobs."""
    pool = gevent.pool.Pool(CONCURRENCY)

    def run() -> None:
        for _ in range(JOBS):
            pool.spawn(burn)
        pool.join()

    return longest_stall(run)
