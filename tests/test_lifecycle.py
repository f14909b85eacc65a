"""Start is all or nothing, stop is bounded, cancel tells the truth, workers share the loop."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event
from gevent.greenlet import Greenlet
from serving_helpers import app_env, http_get, lines, run_process, wait_for

from taskrun import ConfigError, JobState, TaskRunner
from taskrun.dispatcher import KILL_WAIT
from taskrun.errors import StoreError
from taskrun.schedules import every
from taskrun.stores.sqlite.store import SqliteStore
from taskrun.stores.sqlite.writer import BatchWriter


def stubborn_task(runner: TaskRunner, release: Event, started: Event) -> Any:
    """Register a task that survives every kill and cancel until ``release`` is set."""

    @runner.task
    def stubborn() -> str:
        started.set()
        while not release.is_set():
            try:
                gevent.sleep(0.01)
            except BaseException:  # noqa: B036 - the point: a job that will not die
                pass
        return "finally done"

    return stubborn


def writer_greenlets() -> set[Greenlet[..., Any]]:
    """Return the live greenlets of every SQLite store writer in this process."""
    return {
        g
        for g in gc.get_objects()
        if isinstance(g, Greenlet)
        and not g.dead
        and isinstance(getattr(g._run, "__self__", None), BatchWriter)
    }


def process_rows(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT pid FROM processes")]


# -- start is all or nothing ---------------------------------------------------------


class UnreadableOnce(SqliteStore):
    """A real SQLite store whose first ``last_slot`` read fails (after it has opened)."""

    fails = 1

    def last_slot(self, task_name: str) -> float | None:
        if self.fails:
            self.fails -= 1
            raise StoreError(f"cannot read the last slot of {task_name!r}: disk I/O error")
        return super().last_slot(task_name)


def test_a_start_that_fails_after_the_store_opened_closes_it_and_a_second_start_works(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    runner = TaskRunner(lock_path=None)
    store = UnreadableOnce(db, clock=runner.clock, result_ttl=60, max_results=100, host=runner)
    runner.configure(store=store)

    @runner.periodic(every(hours=1))
    def hourly() -> None:
        pass

    @runner.task
    def ping() -> str:
        return "pong"

    before = writer_greenlets()
    with pytest.raises(StoreError, match="disk I/O error"):  # read as the timer starts
        runner.start()

    assert not runner.is_running
    assert os.getpid() not in process_rows(db)  # unregistered: the store was closed
    assert writer_greenlets() - before == set()
    assert runner._scheduler._greenlet is None

    with runner:  # the fault was for one call only: the cause is gone
        assert os.getpid() in process_rows(db)
        assert ping.delay().get(timeout=10) == "pong"
    assert os.getpid() not in process_rows(db)


def test_a_bad_leader_lock_path_fails_the_start_with_nothing_left_open(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    lock_dir = tmp_path / "locks"  # missing: the leader lock cannot be made
    runner = TaskRunner(store=str(db), lock_path=lock_dir / "app.lock")

    @runner.periodic(every(hours=1))
    def hourly() -> None:
        pass

    before = writer_greenlets()
    with pytest.raises(ConfigError, match="locks"):
        runner.start()
    assert not runner.is_running
    assert not db.exists() or os.getpid() not in process_rows(db)
    assert writer_greenlets() - before == set()

    lock_dir.mkdir(mode=0o700)
    with runner:
        assert runner.is_running


# -- stop is bounded --------------------------------------------------------------


def test_stop_returns_and_closes_the_store_when_a_job_will_not_die(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "jobs.db"
    runner = TaskRunner(store=str(db), lock_path=None)
    release, started = Event(), Event()
    stubborn = stubborn_task(runner, release, started)
    runner.start()
    try:
        job = stubborn.delay()
        assert started.wait(5)
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="taskrun"):
            runner.stop(timeout=0.2)  # must neither raise gevent.Timeout nor hang
        took = time.monotonic() - began

        assert took < 0.2 + KILL_WAIT + 3  # its timeout, plus a bounded margin
        assert job.state is JobState.CANCELLED  # not handed back: it still runs here
        assert os.getpid() not in process_rows(db)  # the store is closed
        assert any(
            job.id in r.getMessage()
            and "stubborn" in r.getMessage()
            and "would not die" in r.getMessage()
            for r in caplog.records
        )
        with sqlite3.connect(db) as conn:
            (state,) = conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
        assert state == "CANCELLED"
    finally:
        release.set()
        runner.stop(timeout=1)


def test_cancel_tells_whether_the_running_job_ended(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    release, started = Event(), Event()
    stubborn = stubborn_task(runner, release, started)
    ordinary_started = Event()

    @runner.task
    def ordinary() -> None:
        ordinary_started.set()
        gevent.sleep(60)

    job = ordinary.delay()
    assert ordinary_started.wait(5)
    assert job.cancel() is True
    assert job.state is JobState.CANCELLED  # ended by the time cancel() returned

    holdout = stubborn.delay()
    assert started.wait(5)
    assert holdout.cancel() is False  # it caught the cancel and runs on
    assert holdout.state is JobState.STARTED
    release.set()
    assert holdout.get(timeout=5) == "finally done"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_exits_0_on_sigterm_with_a_job_that_will_not_die(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [sys.executable, "-m", "taskrun", "serve", "jobs_app:app", "-b", "127.0.0.1:0"]
    command += ["--grace", "0.5"]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = served.wait_log(r"serving on (http://\S+)", 40)[1]
        job_id = http_get(url + "/stubborn?id=s")[1].split()[0]
        wait_for(lambda: any(line.startswith("started s") for line in lines(out)), 10, "start")

        served.signal(signal.SIGTERM)
        code = served.wait_exit(timeout=20)

    log = served.log_text()
    assert code == 0, log
    assert f"job {job_id}" in log and "would not die" in log
    assert "Timeout" not in log


# -- a fair loop ------------------------------------------------------------------


def burn(seconds: float) -> None:
    """Hold the loop (CPU work that never yields) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_job_that_reenqueues_itself_does_not_starve_other_greenlets(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(concurrency=1, max_pending=4)
    copies = 100
    done = Event()
    ran = [0]

    @runner.task
    def again() -> None:
        ran[0] += 1
        burn(0.002)
        if ran[0] < copies:
            again.delay()
        else:
            done.set()

    other_runs = [0]

    def other() -> None:
        while not done.is_set():
            other_runs[0] += 1
            gevent.sleep(0)

    watcher = gevent.spawn(other)
    again.delay()
    assert done.wait(30)
    watcher.join(timeout=5)

    assert ran[0] == copies
    assert other_runs[0] >= copies // 2  # it ran between the jobs, not only after them
