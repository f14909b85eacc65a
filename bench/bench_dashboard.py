"""Dashboard benchmark: every page, and ``runner.stats()``, with 100,000 jobs in the SQLite store.

Run through ``python bench/run.py dashboard``, which monkey-patches first.
One runner fills a store file with 100,000 finished jobs (95 % succeeded,
5 % failed, over two tasks) and is stopped; a second runner, as a freshly
started worker would be, serves a Flask app with the dashboard on.  Each
page is requested through Flask's test client (so each time includes the
routing, the store's statements and the template) and the median of
``PAGE_RUNS`` requests is kept.  Targets: every page <= 50 ms, the job page
<= 10 ms.

``stats()`` is measured both ways: the process-scope count (every job this
process knows iterated, as before), in the runner
that submitted all 100,000 jobs, and the machine-wide answer from the
store's state index (no row read).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from taskrun import TaskRunner
from taskrun.schedules import every

N_JOBS = 100_000
PAGE_RUNS = 30
STATS_RUNS = 30
PREFIX = "/taskrun/dashboard"


def _declare(runner: TaskRunner) -> None:
    @runner.task(name="bench.ok")
    def ok(n: int) -> int:
        return n

    @runner.task(name="bench.bad")
    def bad(n: int) -> None:
        raise ValueError(n)

    @runner.periodic(every(hours=1), name="bench.hourly")
    def hourly() -> None: ...


def _fill(path: Path) -> tuple[TaskRunner, list[str]]:
    runner = TaskRunner(
        concurrency=100,
        max_pending=N_JOBS,
        max_results=N_JOBS,
        lock_path=None,
        store=f"sqlite:///{path}",
    )
    _declare(runner)
    runner.start()
    ok, bad = runner.tasks["bench.ok"], runner.tasks["bench.bad"]
    ids = [(bad if n % 20 == 0 else ok).delay(n).id for n in range(N_JOBS)]
    deadline = time.monotonic() + 120
    while runner.stats()["states"]["SUCCESS"] + runner.stats()["states"]["FAILURE"] < N_JOBS:
        if time.monotonic() > deadline:
            raise RuntimeError("the bench jobs did not finish within 120 s")
        time.sleep(0.1)
    assert runner.store.flush(timeout=60)
    kept = runner.stats()["states"]
    if (kept["SUCCESS"], kept["FAILURE"]) != (N_JOBS * 19 // 20, N_JOBS // 20):
        raise RuntimeError(f"the store's counts are off: {kept}")
    return runner, ids


def _median_ms(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(repeats: int) -> list[tuple[str, float, str]]:
    """Fill the store, measure stats() and every page; print a Markdown table."""
    logging.getLogger("taskrun").setLevel(logging.CRITICAL)  # 5,000 failures are expected
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "taskrun.db"
        filled, ids = _fill(path)
        # Before: the process-scope count iterates every job the process knows.
        rows.append(
            (
                "stats(), counting 100k jobs in the process",
                _median_ms(STATS_RUNS, filled._router.stats),
                "",
            )
        )
        rows.append(
            ("stats(), machine-wide (state index)", _median_ms(STATS_RUNS, filled.stats), "")
        )
        filled.stop(timeout=5)

        runner = TaskRunner(lock_path=None, store=f"sqlite:///{path}", max_results=N_JOBS)
        _declare(runner)
        app = Flask("bench")
        app.config.update(TASKRUN_DASHBOARD=True, SECRET_KEY="bench")
        runner.init_app(app)
        runner.dashboard_auth(lambda request: True)
        runner.start()
        try:
            rows.append(
                ("stats(), fresh worker, machine-wide", _median_ms(STATS_RUNS, runner.stats), "")
            )
            client = app.test_client()
            first = client.get(f"{PREFIX}/jobs").get_data(as_text=True)
            cursor = first.split("after=")[1].split('"')[0].replace("&amp;", "&")
            failed = ids[20 * 100]
            pages = {
                "overview": "/",
                "jobs": "/jobs",
                "jobs, page 2": f"/jobs?after={cursor}",
                "jobs, state=FAILURE": "/jobs?state=FAILURE",
                "jobs, task=bench.bad": "/jobs?task=bench.bad",
                "jobs, id search": f"/jobs?q={ids[5000][:6]}",
                "job (failed, traceback)": f"/jobs/{failed}",
                "job (succeeded)": f"/jobs/{ids[1]}",
                "periodic": "/periodic",
                "processes": "/processes",
            }
            for name, url in pages.items():
                answer = client.get(PREFIX + url)
                if answer.status_code != 200:
                    raise RuntimeError(f"{url} answered {answer.status_code}")
                target = "<= 10 ms" if name.startswith("job ") else "<= 50 ms"
                ms = _median_ms(PAGE_RUNS, lambda url=url: client.get(PREFIX + url))
                rows.append((f"page: {name}", ms, target))
        finally:
            runner.stop(timeout=5)
    print("| what (100,000 jobs in the SQLite store) | median ms | target |")  # noqa: T201
    print("| --- | ---: | --- |")  # noqa: T201
    for name, ms, target in rows:
        print(f"| {name} | {ms:.2f} | {target} |")  # noqa: T201
    return rows
