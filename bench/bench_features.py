"""Feature benchmark: the cost of ``Job.update()`` (progress meta) inside a running job.

Run through ``python bench/run.py features``, which monkey-patches first.
A job calls ``current_job().update(current=i, total=n)`` 10,000 times in a
loop; the time of the loop divided by 10,000 is the cost of one call, with
the memory store and with the SQLite store (whose writer coalesces the
updates: the file gets the latest meta, not a row per call).  Target:
<= 5 us per call in both.  Rows written to the file are counted by a
trigger on the ``meta`` column.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from bench_core import median_of

from taskrun import TaskRunner, current_job
from taskrun.stores.sqlite.store import SqliteStore

UPDATES = 10_000
TARGET_US = 5.0


def update_loop(kind: str) -> tuple[float, int]:
    """(us per update() call, meta rows written to the file) for one job of ``kind``'s store."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "taskrun.db"
        store = "memory" if kind == "memory" else f"sqlite:///{path}"
        runner = TaskRunner(concurrency=4, lock_path=None, store=store).start()
        if kind != "memory":
            with sqlite3.connect(path) as conn:
                conn.executescript(
                    "CREATE TABLE meta_writes (n INTEGER);"
                    "CREATE TRIGGER count_meta AFTER UPDATE OF meta ON jobs "
                    "BEGIN INSERT INTO meta_writes VALUES (1); END;"
                )

        @runner.task(name="bench.progress")
        def progress(total: int) -> float:
            job = current_job()
            start = time.perf_counter()
            for i in range(total):
                job.update(current=i + 1, total=total)
            return time.perf_counter() - start

        try:
            elapsed = progress.delay(UPDATES).get(timeout=60)
            writes = 0
            if isinstance(runner.store, SqliteStore):
                runner.store.flush(timeout=10)
                with sqlite3.connect(path) as conn:
                    writes = conn.execute("SELECT count(*) FROM meta_writes").fetchone()[0]
        finally:
            runner.stop(timeout=5)
        return elapsed / UPDATES * 1e6, writes


def main(repeats: int = 5) -> list[tuple[str, str, dict[str, float], str]]:
    """Measure, print a Markdown table and return its rows."""
    costs: dict[str, float] = {}
    writes: dict[str, float] = {}
    for kind in ("memory", "sqlite"):
        samples: list[int] = []

        def measure(kind: str = kind, samples: list[int] = samples) -> float:
            cost, written = update_loop(kind)
            samples.append(written)
            return cost

        costs[kind] = median_of(repeats, measure)
        writes[kind] = max(samples)
    lines = [
        "| metric | unit | memory store | sqlite store | target | met |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    met = "yes" if max(costs.values()) <= TARGET_US else "NO"
    lines.append(
        f"| Job.update() in a loop of {UPDATES:,} | us/call | {costs['memory']:.2f} "
        f"| {costs['sqlite']:.2f} | <= {TARGET_US:g} | {met} |"
    )
    lines.append(
        f"| meta rows written for {UPDATES:,} updates | rows | - | {writes['sqlite']:.0f} "
        "| coalesced | |"
    )
    print("\n".join(lines))  # noqa: T201
    return [
        (f"Job.update() in a loop of {UPDATES:,}", "us/call", costs, f"<= {TARGET_US:g}"),
        (f"meta rows written for {UPDATES:,} updates", "rows", writes, ""),
    ]
