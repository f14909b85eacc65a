"""Core benchmark: taskrun against bare gevent on enqueue cost, throughput, latency, memory.

Run through ``python bench/run.py`` (or ``python bench/run.py core``), which
monkey-patches first, as an app's entry point would.  Every measurement is
repeated and the median reported; the machine may be shared and noisy.

Baselines (what an app would write without taskrun):

* enqueue: ``gevent.spawn(fn)`` -- a bare ``gevent.pool.Pool(100).spawn``
  blocks its caller once 100 run, so it cannot take a 20,000-job burst from
  a view; ``Pool(20_000).spawn`` is shown too, for reference;
* throughput and dispatch latency: ``gevent.pool.Pool(100).spawn``;
* memory per scheduled job and countdown lateness: ``gevent.spawn_later``;
* longest loop stall under CPU-bound jobs: ``gevent.pool.Pool(100)`` (see
  :mod:`loop_stall`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.pool
from gevent.event import Event
from loop_stall import stall_pool, stall_taskrun

from taskrun import TaskRunner

N_JOBS = 20_000
CONCURRENCY = 100
RATE = 1_000  # jobs per second for the latency run
LATENCY_JOBS = 1_000
N_SCHEDULED = 100_000
LATENESS_JOBS = 200

T = TypeVar("T")


@dataclass
class Row:
    """One line of the report: a metric for taskrun and its baseline."""

    metric: str
    unit: str
    taskrun: float
    baseline: float
    target: str = ""
    ok: bool | None = None
    lower_is_better: bool = True

    @property
    def ratio(self) -> float:
        return self.taskrun / self.baseline if self.baseline else float("nan")


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    """Run ``measure`` ``repeats`` times and return the median."""
    return statistics.median(measure() for _ in range(repeats))


def alternating_medians(repeats: int, *measures: Callable[[], float]) -> list[float]:
    """Run each of ``measures`` once per round, ``repeats`` rounds; return each one's median.

    Alternating, rather than all runs of one then all of the other, spreads a
    burst of load from a neighbour over both sides of a ratio.
    """
    runs: list[list[float]] = [[] for _ in measures]
    for _ in range(repeats):
        for values, measure in zip(runs, measures, strict=True):
            values.append(measure())
    return [statistics.median(values) for values in runs]


def in_greenlet(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh greenlet, as a view handling a request would."""
    result: T = gevent.spawn(fn).get()
    return result


def percentile(values: list[float], pct: float) -> float:
    """Return the ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def new_runner(**options: Any) -> TaskRunner:
    return TaskRunner(concurrency=CONCURRENCY, max_pending=N_JOBS, **options)


def counting_task(
    runner: TaskRunner, *, name: str | None = None, warm: bool = True
) -> tuple[Callable[[], Any], Event]:
    """Register a no-op task that sets the returned event on its N_JOBS-th run.

    Returns the task's ``delay`` and the event.  With ``warm``, first runs
    CONCURRENCY jobs (not counted): a long-running app has its workers already.
    """
    done = Event()
    count = [0]

    @runner.task(name=name)
    def noop() -> None:
        count[0] += 1
        if count[0] == N_JOBS:
            done.set()

    if warm:
        for job in [noop.delay() for _ in range(CONCURRENCY)]:
            job.get(timeout=10)
        count[0] = 0
    return noop.delay, done


# -- enqueue -----------------------------------------------------------------


def enqueue_taskrun() -> float:
    """Microseconds per ``delay()`` of a no-op job, 20,000 in a burst from one greenlet."""
    runner = new_runner().start()
    delay, done = counting_task(runner)

    def burst() -> float:
        start = time.perf_counter()
        for _ in range(N_JOBS):
            delay()
        return (time.perf_counter() - start) / N_JOBS * 1e6

    per_call = in_greenlet(burst)
    done.wait(30)
    runner.stop(timeout=10)
    return per_call


def enqueue_spawn(make_spawn: Callable[[], Callable[..., Any]]) -> float:
    """Microseconds per bare spawn of a no-op, 20,000 in a burst from one greenlet."""
    done = Event()
    count = [0]

    def noop() -> None:
        count[0] += 1
        if count[0] == N_JOBS:
            done.set()

    spawn = make_spawn()

    def burst() -> float:
        start = time.perf_counter()
        for _ in range(N_JOBS):
            spawn(noop)
        return (time.perf_counter() - start) / N_JOBS * 1e6

    per_call = in_greenlet(burst)
    done.wait(30)
    return per_call


# -- throughput ------------------------------------------------------------------


def throughput_taskrun() -> float:
    """Jobs per second, 20,000 no-op jobs at concurrency 100, submit to last one done."""
    runner = new_runner().start()
    delay, done = counting_task(runner, warm=False)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(N_JOBS):
            delay()
        done.wait(60)
        return N_JOBS / (time.perf_counter() - start)

    rate = in_greenlet(run)
    runner.stop(timeout=10)
    return rate


def throughput_pool() -> float:
    """Jobs per second through a bare ``Pool(100).spawn`` (which blocks when full)."""
    pool = gevent.pool.Pool(CONCURRENCY)

    def noop() -> None:
        pass

    def run() -> float:
        start = time.perf_counter()
        for _ in range(N_JOBS):
            pool.spawn(noop)
        pool.join()
        return N_JOBS / (time.perf_counter() - start)

    return in_greenlet(run)


# -- dispatch latency ------------------------------------------------------------


def paced(submit: Callable[[float], Any], starts: list[float]) -> None:
    """Submit ``LATENCY_JOBS`` jobs at ``RATE`` per second; each appends its delay."""
    begin = time.perf_counter()
    for n in range(LATENCY_JOBS):
        wait = begin + n / RATE - time.perf_counter()
        if wait > 0:
            gevent.sleep(wait)
        submit(time.perf_counter())
    deadline = time.perf_counter() + 10
    while len(starts) < LATENCY_JOBS and time.perf_counter() < deadline:
        gevent.sleep(0.01)


def latency_taskrun() -> tuple[float, float]:
    """p50/p99 microseconds from ``delay()`` to the job starting, at ~1,000 jobs/s."""
    runner = new_runner().start()
    starts: list[float] = []

    @runner.task
    def record(submitted: float) -> None:
        starts.append(time.perf_counter() - submitted)

    gevent.spawn(paced, record.delay, starts).get()
    runner.stop(timeout=10)
    return percentile(starts, 50) * 1e6, percentile(starts, 99) * 1e6


def latency_pool() -> tuple[float, float]:
    """p50/p99 microseconds from ``Pool(100).spawn`` to the function starting."""
    pool = gevent.pool.Pool(CONCURRENCY)
    starts: list[float] = []

    def record(submitted: float) -> None:
        starts.append(time.perf_counter() - submitted)

    gevent.spawn(paced, lambda t: pool.spawn(record, t), starts).get()
    pool.join()
    return percentile(starts, 50) * 1e6, percentile(starts, 99) * 1e6


# -- countdown lateness ------------------------------------------------------------


def lateness(schedule: Callable[[float, float, list[float]], Any]) -> tuple[float, float]:
    """p50/p99 ms a job starts after its due time, countdowns spread over 0.01-0.5 s."""
    late: list[float] = []
    for n in range(LATENESS_JOBS):
        countdown = 0.01 + 0.49 * n / (LATENESS_JOBS - 1)
        schedule(countdown, time.time() + countdown, late)
    deadline = time.perf_counter() + 10
    while len(late) < LATENESS_JOBS and time.perf_counter() < deadline:
        gevent.sleep(0.05)
    return percentile(late, 50) * 1e3, percentile(late, 99) * 1e3


def lateness_taskrun() -> tuple[float, float]:
    runner = new_runner().start()

    @runner.task
    def record(due: float, late: list[float]) -> None:
        late.append(time.time() - due)

    def schedule(countdown: float, due: float, late: list[float]) -> None:
        record.apply_async(args=(due, late), countdown=countdown)

    result = gevent.spawn(lateness, schedule).get()
    runner.stop(timeout=10)
    return result


def lateness_spawn_later() -> tuple[float, float]:
    def record(due: float, late: list[float]) -> None:
        late.append(time.time() - due)

    def schedule(countdown: float, due: float, late: list[float]) -> None:
        gevent.spawn_later(countdown, record, due, late)

    return gevent.spawn(lateness, schedule).get()


# -- memory per scheduled job (in a fresh process) -------------------------------------


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(kind: str) -> None:
    """In a fresh process: print bytes of RSS per job for 100,000 jobs one hour ahead."""
    import gc

    runner = TaskRunner(max_scheduled=N_SCHEDULED).start()

    @runner.task
    def noop() -> None:
        pass

    keep: list[Any] = []
    gc.collect()
    before = rss_bytes()
    if kind == "taskrun":
        for _ in range(N_SCHEDULED):
            noop.apply_async(countdown=3600)
    else:
        for _ in range(N_SCHEDULED):
            keep.append(gevent.spawn_later(3600, noop))
    gc.collect()
    after = rss_bytes()
    print(json.dumps({"bytes_per_job": (after - before) / N_SCHEDULED}))  # noqa: T201
    os._exit(0)  # skip a slow, pointless teardown of 100,000 jobs


def memory_per_job(kind: str) -> float:
    child = (
        "from gevent import monkey; monkey.patch_all(); import sys; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench_core; bench_core.memory_child({kind!r})"
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["bytes_per_job"])


# -- the report ------------------------------------------------------------------


def measure(repeats: int) -> list[Row]:
    """Run every core measurement ``repeats`` times and return the medians."""
    rows = []
    taskrun_us, spawn_us, pool_us = alternating_medians(
        repeats,
        enqueue_taskrun,
        lambda: enqueue_spawn(lambda: gevent.spawn),
        lambda: enqueue_spawn(lambda: gevent.pool.Pool(N_JOBS + 1).spawn),
    )
    rows.append(Row("enqueue (vs gevent.spawn)", "us/call", taskrun_us, spawn_us, "<= 1.0x"))
    rows[-1].ok = rows[-1].ratio <= 1.0
    rows.append(Row("enqueue (vs Pool(20000).spawn)", "us/call", taskrun_us, pool_us))

    rows.append(
        Row(
            "throughput, concurrency 100",
            "jobs/s",
            *alternating_medians(repeats, throughput_taskrun, throughput_pool),
            ">= 1.0x",
            lower_is_better=False,
        )
    )
    rows[-1].ok = rows[-1].ratio >= 1.0

    stall_t, stall_b = alternating_medians(min(repeats, 3), stall_taskrun, stall_pool)
    rows.append(Row("longest loop stall, 2,000 x 1 ms CPU jobs", "ms", stall_t, stall_b, "<= 2.0x"))
    rows[-1].ok = rows[-1].ratio <= 2.0
    throughput = next(row for row in rows if row.metric.startswith("throughput"))
    throughput.target, throughput.ok = ">= 2.0x", throughput.ratio >= 2.0

    lat_t = [latency_taskrun() for _ in range(repeats)]
    lat_b = [latency_pool() for _ in range(repeats)]
    for index, name in ((0, "p50"), (1, "p99")):
        rows.append(
            Row(
                f"dispatch latency {name} @1000/s",
                "us",
                statistics.median(r[index] for r in lat_t),
                statistics.median(r[index] for r in lat_b),
            )
        )

    mem_t = median_of(min(repeats, 3), lambda: memory_per_job("taskrun"))
    mem_b = median_of(min(repeats, 3), lambda: memory_per_job("spawn_later"))
    rows.append(Row("memory per scheduled job", "bytes", mem_t, mem_b, "<= 300 B", mem_t <= 300))

    late_t = [lateness_taskrun() for _ in range(repeats)]
    late_b = [lateness_spawn_later() for _ in range(repeats)]
    for index, name in ((0, "p50"), (1, "p99")):
        target = "<= 2 ms" if name == "p99" else ""
        value = statistics.median(r[index] for r in late_t)
        rows.append(
            Row(
                f"countdown lateness {name}",
                "ms",
                value,
                statistics.median(r[index] for r in late_b),
                target,
                (value <= 2.0) if target else None,
            )
        )
    return rows


def report(rows: list[Row]) -> str:
    """Format ``rows`` as a Markdown table."""
    lines = [
        "| metric | unit | taskrun | bare gevent | ratio | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "NO")
        lines.append(
            f"| {row.metric} | {row.unit} | {row.taskrun:,.1f} | {row.baseline:,.1f} "
            f"| {row.ratio:.2f}x | {row.target} | {met} |"
        )
    return "\n".join(lines)


def main(repeats: int = 5) -> list[Row]:
    """Run the core section and print its table; return the rows."""
    rows = measure(repeats)
    print(report(rows))  # noqa: T201
    return rows


if __name__ == "__main__":
    sys.exit("run the benchmarks with: python bench/run.py [core]")
