"""Queue controls and job meta across processes sharing one SQLite file.

``max_running`` and ``rate_limit`` hold machine-wide, ``unique_key`` gives
exactly one job when three processes submit the same key at once, and meta
written by a job reaches the file (coalesced) and every reader.  The
processes are real (``tests/features_child.py``); assertions use the jobs'
own start and end times, never timings of the test.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import pytest

from taskrun import JobState, ManualClock, TaskRunner, current_job
from taskrun.options import Executor
from taskrun.stores.sqlite.store import SqliteStore

MakeRunner = Callable[..., TaskRunner]
CHILD = Path(__file__).with_name("features_child.py")


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Yield to the loop until ``check()`` is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        gevent.sleep(0.01)
    return value


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Callable[[str, int, int], list[subprocess.Popen[str]]]]:
    """Start ``count`` children of one mode on one store, all released together by ``go``."""
    started: list[subprocess.Popen[str]] = []

    def start(mode: str, count: int, jobs: int) -> list[subprocess.Popen[str]]:
        store = f"sqlite:///{tmp_path / 'taskrun.db'}"
        procs = []
        for i in range(count):
            with (tmp_path / f"{mode}-{i}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(CHILD), mode, store, str(tmp_path), str(jobs)],
                        stderr=log,
                        text=True,
                    )
                )
        started.extend(procs)
        wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == count, "children ready")
        (tmp_path / "go").touch()
        return procs

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_done(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every child wrote ``done-<pid>``; fail showing the logs if one died."""

    def done() -> bool:
        for proc in procs:
            if proc.poll() is not None and not (tmp_path / f"done-{proc.pid}").exists():
                logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
                pytest.fail(f"child {proc.pid} exited with {proc.returncode}:\n{logs}")
        return all((tmp_path / f"done-{proc.pid}").exists() for proc in procs)

    wait_until(done, "every child to finish its jobs", timeout=60)


@pytest.mark.slow
def test_max_running_1_holds_across_three_processes(children: Any, tmp_path: Path) -> None:
    procs = children("exclusive", 3, 4)
    wait_done(tmp_path, procs)
    spans = sorted(
        (float(start), float(end), int(pid))
        for start, end, pid in (
            line.split() for line in (tmp_path / "spans.txt").read_text().splitlines()
        )
    )
    assert len(spans) == 12
    assert len({pid for _, _, pid in spans}) == 3
    for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two runs overlapped: {spans!r}"


@pytest.mark.slow
def test_rate_limit_holds_across_three_processes(children: Any, tmp_path: Path) -> None:
    procs = children("rate", 3, 3)
    wait_done(tmp_path, procs)
    starts = sorted(float(line) for line in (tmp_path / "starts.txt").read_text().splitlines())
    assert len(starts) == 9
    for i, first in enumerate(starts):
        in_window = [t for t in starts[i:] if t < first + 1.0 - 1e-6]  # stamps are in us
        assert len(in_window) <= 4, f"more than 4 starts within a second: {starts!r}"


@pytest.mark.slow
def test_unique_key_submitted_by_three_processes_at_once_makes_one_job(
    children: Any, tmp_path: Path
) -> None:
    procs = children("unique", 3, 0)
    wait_done(tmp_path, procs)
    ids = (tmp_path / "ids.txt").read_text().split()
    assert len(ids) == 3 and len(set(ids)) == 1, ids
    rows = sqlite3.connect(tmp_path / "taskrun.db").execute(
        "SELECT id, unique_key FROM jobs WHERE task = 'features.held'"
    )
    assert rows.fetchall() == [(ids[0], "same")]
    (tmp_path / "release").touch()


@pytest.mark.parametrize("executor", ["greenlet", "thread"])
def test_meta_reaches_the_file_coalesced_and_every_reader_sees_it(
    make_runner: MakeRunner, tmp_path: Path, executor: Executor
) -> None:
    path = tmp_path / "taskrun.db"
    worker = make_runner(store=f"sqlite:///{path}")
    reader = make_runner(store=f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.executescript(
        "CREATE TABLE meta_writes (n INTEGER);"
        "CREATE TRIGGER count_meta AFTER UPDATE OF meta ON jobs "
        "BEGIN INSERT INTO meta_writes VALUES (1); END;"
    )
    release = threading.Event()
    updates = 0

    @worker.task(name="progress", executor=executor)
    def progress(total: int) -> str:
        nonlocal updates
        job = current_job()
        while not release.is_set():  # a tight loop of updates
            updates += 1
            job.update(current=min(updates, total), total=total)
            if executor == "greenlet":
                gevent.sleep(0)  # let the reader and the writer run
        return "done"

    job = progress.delay(4)
    wait_until(
        lambda: (
            (remote := reader.job(job.id)) is not None and remote.meta == {"current": 4, "total": 4}
        ),
        "the latest meta in the file",
    )
    remote = reader.job(job.id)
    assert remote is not None and remote is not job and remote.state is JobState.STARTED
    wait_until(lambda: updates > 5000, "5,000 updates")
    release.set()
    assert job.get(timeout=5) == "done"
    store = worker.store
    assert isinstance(store, SqliteStore)
    store.flush(timeout=5)
    writes = conn.execute("SELECT count(*) FROM meta_writes").fetchone()[0]
    assert updates > 5000 and writes < 20, (updates, writes)  # coalesced, not a row each
    finished = reader.job(job.id)
    assert finished is not None and finished.meta == {"current": 4, "total": 4}
    conn.close()


def test_a_job_expired_and_a_failed_job_retried_from_another_process(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = f"sqlite:///{tmp_path / 'taskrun.db'}"
    first = make_runner(store=path)
    second = make_runner(store=path)
    calls: list[int] = []

    def declare(runner: TaskRunner) -> Any:
        @runner.task(name="charge")
        def charge(order: int) -> int:
            calls.append(order)
            if len(calls) == 1:
                raise ConnectionError("down")
            return order

        return charge

    charge, _ = declare(first), declare(second)
    failed = charge.delay(7)
    with pytest.raises(ConnectionError):
        failed.get(timeout=5)
    expired = charge.apply_async(args=(8,), countdown=0.3, expires=0.1)
    with pytest.raises(Exception, match="expired"):
        expired.get(timeout=5)
    first.store.flush(timeout=5)
    seen = second.job(failed.id)
    assert seen is not None and seen is not failed and seen.state is JobState.FAILURE
    again = seen.retry()
    assert again.get(timeout=5) == 7
    remote_expired = second.job(expired.id)
    assert remote_expired is not None
    with pytest.raises(Exception, match="expired"):
        remote_expired.get(timeout=1)


@pytest.mark.slow
def test_a_tasks_result_ttl_prunes_its_rows_from_the_file(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    clock = ManualClock(datetime.now(UTC))
    path = tmp_path / "taskrun.db"
    runner = make_runner(store=f"sqlite:///{path}", clock=clock, result_ttl=3600)
    short = runner.task(name="short", result_ttl=10, ignore_result=True)(lambda: "x")
    long = runner.task(name="long")(lambda: "y")
    a, b = short.delay(), long.delay()
    a.get(timeout=5), b.get(timeout=5)
    store = runner.store
    assert isinstance(store, SqliteStore)
    store.flush(timeout=5)

    def tasks_in_file() -> list[str]:
        with sqlite3.connect(path) as conn:
            return [row[0] for row in conn.execute("SELECT task FROM jobs ORDER BY task")]

    assert tasks_in_file() == ["long", "short"]
    clock.advance(11)
    wait_until(lambda: tasks_in_file() == ["long"], "the short-lived result to be pruned")
    assert runner.job(a.id) is None and runner.job(b.id) is b
