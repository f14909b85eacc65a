"""What signals and metrics cost a no-op job: throughput with them on, off and absent.

Run through ``python bench/run.py signals``.  Every measurement is the
core section's throughput run (20,000 no-op jobs at concurrency 100), timed
in CPU seconds of the process (``time.process_time``): on a shared machine
wall-clock throughput swung by 2x between identical runs, CPU time much
less.  The modes alternate within each repeat, and medians are reported.

* metrics on vs off: ``taskrun.metrics.runner_metrics(runner)`` connected,
  against the same runner with no receiver (target >= 0.9x);
* a no-op receiver on every job signal vs none: what a Sentry- or
  OpenTelemetry-style hook costs;
* no receiver vs the signal code absent: each run in a fresh process, this
  tree against the tree in ``$TASKRUN_BASELINE_TREE`` (e.g. ``git archive``
  of the commit before signals, unpacked; the row is skipped without it),
  eight runs in each of ``repeats`` processes per tree, target >= 0.98x.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_core
from bench_core import N_JOBS, Row, counting_task, in_greenlet, new_runner, report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Runs in each fresh process of the "signal code absent" comparison (all count in the median).
RUNS_PER_PROCESS = 8
JOB_SIGNALS = [
    "job_enqueued",
    "job_started",
    "job_succeeded",
    "job_failed",
    "job_retrying",
    "job_cancelled",
]


def throughput(mode: str) -> float:
    """Jobs per CPU second of 20,000 no-op jobs with ``mode``: ``off``, ``metrics`` or ``receiver``.

    ``off`` imports nothing of taskrun.signals, so it runs on a tree without them too.
    """
    runner = new_runner()
    keep: list[Any] = []
    job_signals: list[Any] = []
    if mode == "metrics":
        from taskrun.metrics import runner_metrics

        keep.append(runner_metrics(runner))
    elif mode == "receiver":
        from taskrun import signals

        def receiver(sender: Any, **kwargs: Any) -> None:
            pass

        keep.append(receiver)
        job_signals.extend(getattr(signals, name) for name in JOB_SIGNALS)
        for signal in job_signals:
            signal.connect(receiver, sender=runner)
    runner.start()
    delay, done = counting_task(runner, warm=False)

    def run() -> float:
        start = time.process_time()
        for _ in range(N_JOBS):
            delay()
        done.wait(60)
        return N_JOBS / (time.process_time() - start)

    rate = in_greenlet(run)
    runner.stop(timeout=10)
    for signal in job_signals:
        signal.disconnect(keep[0])
    return rate


def throughput_in_tree(tree: Path, runs: int) -> list[float]:
    """Run :func:`throughput` ``off`` ``runs`` times in a new process with taskrun from ``tree``."""
    child = (
        "from gevent import monkey; monkey.patch_all(); import sys, json; "
        f"sys.path[:0] = [{str(tree)!r}, {str(HERE)!r}]; import bench_signals, taskrun; "
        f"assert taskrun.__file__.startswith({str(tree)!r}), taskrun.__file__; "
        f"print(json.dumps([bench_signals.throughput('off') for _ in range({runs})]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-c", child]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True, env=env)
    return [float(rate) for rate in json.loads(out.stdout.strip().splitlines()[-1])]


def measure(repeats: int) -> list[Row]:
    """Alternate the modes ``repeats`` times; return the median ratios as rows."""
    runs: dict[str, list[float]] = {"off": [], "metrics": [], "receiver": []}
    for _ in range(repeats):
        for mode, values in runs.items():
            values.append(throughput(mode))
    off = statistics.median(runs["off"])
    rows = [
        Row(
            "metrics on vs off",
            "jobs/CPU s",
            statistics.median(runs["metrics"]),
            off,
            ">= 0.9x",
            lower_is_better=False,
        ),
        Row(
            "a no-op receiver on every job signal vs none",
            "jobs/CPU s",
            statistics.median(runs["receiver"]),
            off,
            lower_is_better=False,
        ),
    ]
    rows[0].ok = rows[0].ratio >= 0.9
    baseline = os.environ.get("TASKRUN_BASELINE_TREE")
    if baseline:
        here: list[float] = []
        there: list[float] = []
        for _ in range(repeats):
            here += throughput_in_tree(ROOT, RUNS_PER_PROCESS)
            there += throughput_in_tree(Path(baseline).resolve(), RUNS_PER_PROCESS)
        rows.append(
            Row(
                "no receiver vs signal code absent",
                "jobs/CPU s",
                statistics.median(here),
                statistics.median(there),
                ">= 0.98x",
                lower_is_better=False,
            )
        )
        rows[-1].ok = rows[-1].ratio >= 0.98
    return rows


def main(repeats: int = 5) -> list[Row]:
    """Run the signals section and print its table; return the rows."""
    rows = measure(repeats)
    print(report(rows).replace("| bare gevent |", "| baseline |"))  # noqa: T201
    return rows


__all__ = ["bench_core", "main"]
