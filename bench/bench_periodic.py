"""Periodic precision: how late a periodic run starts after its slot.

taskrun's ``@runner.periodic(every(seconds=0.05))`` against a bare greenlet
that sleeps until each slot with ``gevent.sleep`` and spawns the job (the
least an app could write).  Slots are aligned to multiples of the interval,
so lateness is the start time minus the slot.  Run through
``python bench/run.py periodic``.
"""

from __future__ import annotations

import math
import statistics
import time

import gevent
from bench_core import Row, percentile, report

from taskrun import TaskRunner, every

INTERVAL = 0.05
RUNS = 100


def lateness_of(starts: list[float]) -> list[float]:
    """Seconds each run started after its slot: the k-th run belongs to the k-th slot.

    Counting slots from the first run (not taking each start modulo the
    interval) makes a skipped or doubled slot show up as a huge lateness.
    """
    first_slot = math.floor(starts[0] / INTERVAL) * INTERVAL
    return [start - (first_slot + k * INTERVAL) for k, start in enumerate(starts)]


def lateness_taskrun() -> tuple[float, float]:
    """p50/p99 ms a periodic run starts after its slot, over RUNS slots."""
    starts: list[float] = []
    runner = TaskRunner(lock_path=None)

    @runner.periodic(every(seconds=INTERVAL))
    def tick() -> None:
        starts.append(time.time())

    runner.start()
    deadline = time.monotonic() + RUNS * INTERVAL * 3
    while len(starts) < RUNS and time.monotonic() < deadline:
        gevent.sleep(INTERVAL)
    runner.stop(timeout=1)
    late = lateness_of(starts[:RUNS])
    return percentile(late, 50) * 1e3, percentile(late, 99) * 1e3


def lateness_sleep_loop() -> tuple[float, float]:
    """The same with a bare greenlet sleeping until each slot."""
    starts: list[float] = []

    def tick() -> None:
        starts.append(time.time())

    def loop() -> None:
        slot = (math.floor(time.time() / INTERVAL) + 1) * INTERVAL
        for _ in range(RUNS):
            gevent.sleep(max(0.0, slot - time.time()))
            gevent.spawn(tick)
            slot += INTERVAL

    gevent.spawn(loop).join()
    gevent.sleep(0.01)
    late = lateness_of(starts)
    return percentile(late, 50) * 1e3, percentile(late, 99) * 1e3


def main(repeats: int = 5) -> list[Row]:
    """Measure, print the table and return the rows."""
    ours = [lateness_taskrun() for _ in range(repeats)]
    bare = [lateness_sleep_loop() for _ in range(repeats)]
    p50 = statistics.median(r[0] for r in ours), statistics.median(r[0] for r in bare)
    p99 = statistics.median(r[1] for r in ours), statistics.median(r[1] for r in bare)
    rows = [
        Row("periodic lateness p50", "ms", p50[0], p50[1]),
        Row("periodic lateness p99", "ms", p99[0], p99[1], "<= 2 ms", p99[0] <= 2.0),
    ]
    print("baseline: a greenlet sleeping until each slot with gevent.sleep")  # noqa: T201
    print(report(rows))  # noqa: T201
    return rows
