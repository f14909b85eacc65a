"""Threaded mode: what ``delay()`` costs from a plain thread, as under ``flask run``.

The runner of an unpatched process lives on a hub thread of its own (see
``taskrun.modes``); a request thread's ``delay()`` makes the job and posts it
there.  Measured in a fresh, unpatched interpreter (``run.py`` patches its
own process): 20,000 no-op jobs submitted in a burst from one plain thread,
microseconds per call, median of ``repeats`` runs; then the time until the
last one ran.  Baseline: ``queue.SimpleQueue.put`` of a tuple, the least a
hand-off between threads costs.  Target: <= 10 us per call.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap

N_JOBS = 20_000

CHILD = textwrap.dedent(
    f"""
    import json, queue, threading, time
    from taskrun import TaskRunner

    N = {N_JOBS}
    runner = TaskRunner(concurrency=100, max_pending=N, lock_path=None)
    count = [0]
    done = threading.Event()

    @runner.task
    def noop():
        count[0] += 1
        if count[0] == N:
            done.set()

    runner.start()
    for job in [noop.delay() for _ in range(100)]:  # warm: the workers exist
        job.get(timeout=10)
    count[0] = 0
    out = {{}}

    def burst():
        start = time.perf_counter()
        for _ in range(N):
            noop.delay()
        out["delay_us"] = (time.perf_counter() - start) / N * 1e6
        done.wait(60)
        out["all_ran_s"] = time.perf_counter() - start

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join(120)
    runner.stop(timeout=10)

    handoff = queue.SimpleQueue()
    start = time.perf_counter()
    for _ in range(N):
        handoff.put((noop, (), None))
    out["baseline_us"] = (time.perf_counter() - start) / N * 1e6
    print(json.dumps(out))
    """
)


def one_run() -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=180, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(repeats: int = 5) -> list[dict[str, float]]:
    """Run the threaded section and print its table; return the runs."""
    runs = [one_run() for _ in range(repeats)]
    delay_us = statistics.median(run["delay_us"] for run in runs)
    baseline_us = statistics.median(run["baseline_us"] for run in runs)
    all_ran = statistics.median(run["all_ran_s"] for run in runs)
    met = "yes" if delay_us <= 10 else "NO"
    print("| metric | unit | taskrun | SimpleQueue.put | ratio | target | met |")  # noqa: T201
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")  # noqa: T201
    print(  # noqa: T201
        f"| delay() from a plain thread | us/call | {delay_us:.1f} | {baseline_us:.1f} "
        f"| {delay_us / baseline_us:.2f}x | <= 10 us | {met} |"
    )
    print(  # noqa: T201
        f"| 20,000 no-op jobs, first delay() to last run | jobs/s | {N_JOBS / all_ran:,.0f} "
        "| | | | |"
    )
    return runs
