"""Store benchmark: the shared SQLite store against the in-memory store and bare gevent.

Run through ``python bench/run.py store``, which monkey-patches first.  In
one process, with the same no-op task:

* enqueue: microseconds per ``delay()`` in a 20,000-job burst from one
  greenlet (what a view pays), and the same burst amortised up to the
  moment every row is committed (``store.flush()``);
* throughput: 20,000 no-op jobs at concurrency 100, from the first
  ``delay()`` until every job is done and, for SQLite, every outcome is
  committed to the file;
* status lookup: ``runner.job(id)`` of a finished job from a second runner
  on the same file (a row read, as a status view in another worker does).

SQLite runs twice: with the writer on the event loop (the default) and with
the writer in a thread (``writer_thread=True``), which shows why the
default is the loop.  Targets: >= 20,000 jobs/s end to end and <= 20 us
per enqueue, amortised, with the store on.
"""

from __future__ import annotations

import functools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_core
import gevent
from bench_core import CONCURRENCY, N_JOBS, counting_task, in_greenlet, median_of, throughput_pool
from gevent.event import Event

from taskrun import TaskRunner
from taskrun.stores.sqlite.store import SqliteStore

LOOKUPS = 2_000
BURST = 500
BUSY_BURST = 500

Kind = str  # "memory", "sqlite" (writer on the loop) or "sqlite-thread"
KINDS: tuple[Kind, ...] = ("memory", "sqlite", "sqlite-thread")


def new_runner(kind: Kind, directory: str) -> TaskRunner:
    """A started runner with the store ``kind``, its file (if any) in ``directory``."""
    runner = TaskRunner(concurrency=CONCURRENCY, max_pending=N_JOBS, lock_path=None)
    if kind != "memory":
        runner.configure(
            store=SqliteStore(
                Path(directory) / "taskrun.db",
                clock=runner.clock,
                result_ttl=3600,
                max_results=100_000,
                host=runner,
                writer_thread=kind == "sqlite-thread",
            )
        )
    return runner.start()


def flush(runner: TaskRunner) -> None:
    """Wait until a SQLite store has committed everything (no-op in memory)."""
    store = runner.store
    if isinstance(store, SqliteStore):
        store.flush(timeout=60)


def enqueue(kind: Kind) -> tuple[float, float]:
    """(us per delay() in the burst, us per job until the burst is committed)."""
    with tempfile.TemporaryDirectory() as directory:
        runner = new_runner(kind, directory)
        delay, done = counting_task(runner, name="bench.noop")

        def burst() -> tuple[float, float]:
            start = time.perf_counter()
            for _ in range(N_JOBS):
                delay()
            called = time.perf_counter()
            flush(runner)
            committed = time.perf_counter()
            return (called - start) / N_JOBS * 1e6, (committed - start) / N_JOBS * 1e6

        result: tuple[float, float] = in_greenlet(burst)
        done.wait(60)
        runner.stop(timeout=10)
        return result


def enqueue_spawn() -> tuple[float, float]:
    """Microseconds per bare ``gevent.spawn`` of a no-op (twice: nothing to commit)."""
    per_call = bench_core.enqueue_spawn(lambda: gevent.spawn)
    return per_call, per_call


def throughput(kind: Kind) -> float:
    """Jobs per second, first ``delay()`` to every job done and committed."""
    with tempfile.TemporaryDirectory() as directory:
        runner = new_runner(kind, directory)
        delay, done = counting_task(runner, name="bench.noop")

        def run() -> float:
            start = time.perf_counter()
            for _ in range(N_JOBS):
                delay()
            done.wait(120)
            flush(runner)
            return N_JOBS / (time.perf_counter() - start)

        rate: float = in_greenlet(run)
        runner.stop(timeout=10)
        return rate


def stall(kind: Kind) -> float:
    """Longest pause of the event loop (ms) while bursts of jobs are stored and run.

    Every 50 ms for 1 s a view enqueues a burst of ``BURST`` no-op jobs; a
    greenlet sleeping 1 ms at a time notes its longest wait beyond the 1 ms,
    the enqueueing itself excluded: how long a request waits for the loop
    while the store commits.
    """
    with tempfile.TemporaryDirectory() as directory:
        runner = new_runner(kind, directory)
        delay, _ = counting_task(runner)
        longest = [0.0]
        enqueueing = [False]
        finished = Event()

        def tick() -> None:
            last = time.perf_counter()
            while not finished.is_set():
                gevent.sleep(0.001)
                now = time.perf_counter()
                if not enqueueing[0]:
                    longest[0] = max(longest[0], now - last - 0.001)
                last = now

        def bursts() -> None:
            for _ in range(20):
                enqueueing[0] = True
                for _ in range(BURST):
                    delay()
                start = time.perf_counter()
                enqueueing[0] = False
                gevent.sleep(max(0.05 - (time.perf_counter() - start), 0))
            flush(runner)
            finished.set()

        ticker = gevent.spawn(tick)
        in_greenlet(bursts)
        ticker.join(timeout=5)
        runner.stop(timeout=10)
        return longest[0] * 1e3


def busy_commit(kind: Kind) -> float:
    """Microseconds per job to commit a ``BUSY_BURST``-job burst while the loop is kept busy.

    A greenlet spins on the CPU meanwhile (yielding every millisecond), as
    request handling would: a writer thread must then win the GIL back from
    the loop once per row.  Jobs stay SCHEDULED an hour ahead, so only
    inserts are timed.
    """
    with tempfile.TemporaryDirectory() as directory:
        runner = new_runner(kind, directory)

        @runner.task(name="bench.later")
        def later() -> None: ...

        busy = [True]

        def spin() -> None:
            while busy[0]:
                end = time.perf_counter() + 0.001
                while time.perf_counter() < end:
                    pass
                gevent.sleep(0)

        spinner = gevent.spawn(spin)

        def burst() -> float:
            start = time.perf_counter()
            for _ in range(BUSY_BURST):
                later.apply_async(countdown=3600)
            flush(runner)
            return (time.perf_counter() - start) / BUSY_BURST * 1e6

        per_job: float = in_greenlet(burst)
        busy[0] = False
        spinner.join(timeout=5)
        runner.stop(timeout=1)
        return per_job


def lookup() -> float:
    """Microseconds per ``runner.job(id)`` of a finished job run by another runner."""
    with tempfile.TemporaryDirectory() as directory:
        owner = new_runner("sqlite", directory)
        viewer = new_runner("sqlite", directory)

        @owner.task(name="bench.echo")
        def echo(value: int) -> int:
            return value

        jobs = [echo.delay(n) for n in range(LOOKUPS)]
        for job in jobs:
            job.get(timeout=10)
        flush(owner)
        start = time.perf_counter()
        for job in jobs:
            found = viewer.job(job.id)
            assert found is not None and found.result == job.result
        per_call = (time.perf_counter() - start) / LOOKUPS * 1e6
        viewer.stop(timeout=10)
        owner.stop(timeout=10)
        return per_call


def medians(repeats: int, measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    runs = [measure() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main(repeats: int = 5) -> list[tuple[str, str, dict[str, float], str]]:
    """Measure, print a Markdown table and return its rows."""
    # Stopping a runner with jobs an hour ahead logs each time; keep the table readable.
    logging.getLogger("taskrun").setLevel(logging.ERROR)
    calls: dict[str, float] = {}
    committed: dict[str, float] = {}
    rates: dict[str, float] = {}
    stalls: dict[str, float] = {"gevent": float("nan")}
    busy: dict[str, float] = {"gevent": float("nan")}
    calls["gevent"], committed["gevent"] = medians(repeats, enqueue_spawn)
    rates["gevent"] = median_of(repeats, throughput_pool)
    for kind in KINDS:
        calls[kind], committed[kind] = medians(repeats, functools.partial(enqueue, kind))
        rates[kind] = median_of(repeats, functools.partial(throughput, kind))
        stalls[kind] = median_of(repeats, functools.partial(stall, kind))
        busy[kind] = median_of(repeats, functools.partial(busy_commit, kind))
    rows = [
        ("enqueue, the caller's cost", "us/job", calls, "<= 20"),
        ("enqueue, amortised until committed", "us/job", committed, "<= 20"),
        ("throughput, end to end", "jobs/s", rates, ">= 20,000"),
        (f"longest loop stall, bursts of {BURST}", "ms", stalls, ""),
        ("enqueue until committed, loop kept busy", "us/job", busy, ""),
    ]
    columns = ("gevent", *KINDS)
    lines = [
        "| metric | unit | bare gevent | memory store | sqlite (loop writer) "
        "| sqlite (thread writer) | target (sqlite) | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for metric, unit, values, target in rows:
        sqlite = values["sqlite"]
        met = (
            ""
            if not target
            else "yes"
            if (sqlite >= 20_000 if unit == "jobs/s" else sqlite <= 20)
            else "NO"
        )
        cells = " | ".join(f"{values[column]:,.1f}" for column in columns)
        lines.append(f"| {metric} | {unit} | {cells} | {target} | {met} |")
    lookup_us = median_of(repeats, lookup)
    lines.append(f"| status lookup from another runner | us/call | | | {lookup_us:,.1f} | | | |")
    print("\n".join(lines))  # noqa: T201
    return rows


if __name__ == "__main__":
    sys.exit("run the benchmarks with: python bench/run.py store")
