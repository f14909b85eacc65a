"""The SQLite store never fails silently: bad outcomes, failing commits, faults, liveness, trust.

Real SQLite files in ``tmp_path``; faults are armed through the store's own
fault hook (:mod:`taskrun.stores.sqlite.faults`), which sits in the real SQL
path; the liveness test runs real children (``tests/store_child.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from gevent.event import Event

from taskrun import JobState, TaskRunner
from taskrun.errors import ConfigError, JobLost, NotSerializable, StoreError
from taskrun.flask.status import job_status
from taskrun.stores.sqlite.procs import host_key
from taskrun.stores.sqlite.store import SqliteStore

MakeRunner = Callable[..., TaskRunner]
CHILD = Path(__file__).with_name("store_child.py")


def sqlite_runner(make_runner: MakeRunner, path: Path, **options: Any) -> TaskRunner:
    """A started runner on the store file ``path`` (no leader lock)."""
    return make_runner(store=f"sqlite:///{path}", lock_path=None, **options)


def store_of(runner: TaskRunner) -> SqliteStore:
    """The runner's SQLite store."""
    store = runner.store
    assert isinstance(store, SqliteStore)
    return store


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the file through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (yielding to the loop) until it is true; fail after ``timeout`` s."""
    deadline = gevent.get_hub().loop.now() + timeout
    while not (value := check()):
        if gevent.get_hub().loop.now() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        gevent.sleep(0.02)
    return value


def records(
    caplog: pytest.LogCaptureFixture, text: str, logger: str = "taskrun.stores.sqlite"
) -> list[logging.LogRecord]:
    """The captured records of ``logger`` (or its children) whose message holds ``text``."""
    return [
        record
        for record in caplog.records
        if text in record.getMessage() and record.name.startswith(logger)
    ]


# -- 1. the writer never dies ------------------------------------------------------------


class _BadRepr:
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_outcomes_that_cannot_be_stored_become_failures_and_the_writer_goes_on(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path)

    @runner.task(name="bad_name")
    def bad_name() -> None:
        raise FileNotFoundError("no such file: " + os.fsdecode(b"report-\xff.csv"))

    @runner.task(name="bad_result")
    def bad_result() -> Any:
        return _BadRepr()

    @runner.task(name="deep_result")
    def deep_result() -> Any:
        return _nested(100_000)

    @runner.task(name="fine")
    def fine(value: int) -> int:
        return value + 1

    jobs = [bad_name.delay(), bad_result.delay(), deep_result.delay()]
    for job in jobs:
        wait_until(job.ready, 10, f"job {job.name} to finish")
    later = fine.delay(1)
    assert later.get(timeout=10) == 2
    assert store_of(runner).flush(timeout=10)

    rows = {
        row[0]: row[1:]
        for row in query(path, "SELECT task, state, result_text, traceback FROM jobs")
    }
    assert rows["fine"][0] == "SUCCESS"
    state, _, traceback = rows["bad_name"]
    assert state == "FAILURE" and "report-\\udcff.csv" in traceback
    for name in ("bad_result", "deep_result"):
        state, text, traceback = rows[name]
        assert state == "FAILURE", name
        assert "could not store the result" in text and text == traceback, name
    assert "its repr raised ValueError: no repr either" in rows["bad_result"][1]
    assert "RecursionError" in rows["deep_result"][1]

    viewer = sqlite_runner(make_runner, path)
    for job in jobs:
        seen = viewer.job(job.id)
        assert seen is not None and seen.state is JobState.FAILURE
        with pytest.raises(Exception):  # noqa: B017 - re-raised or JobLost: never a crash
            seen.get(timeout=1)


def test_a_job_handed_back_with_a_surrogate_traceback_does_not_stop_the_next_writer(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    first = sqlite_runner(make_runner, path)
    attempts: list[int] = []

    @first.task(name="flaky", retries=1, retry_delay=30)
    def flaky() -> None:
        attempts.append(1)
        raise OSError(os.fsdecode(b"bad \xfe name"))

    job = flaky.delay()
    wait_until(lambda: job.state is JobState.RETRY, 10, "the job to wait for its retry")
    first.stop(timeout=1)
    assert query(path, "SELECT state FROM jobs WHERE id = ?", job.id) == [("RETRY",)]

    second = sqlite_runner(make_runner, path)

    @second.task(name="fine")
    def fine() -> str:
        return "ok"

    assert fine.delay().get(timeout=10) == "ok"
    assert store_of(second).flush(timeout=10)


# -- 2. a commit that keeps failing -----------------------------------------------------------


@pytest.mark.slow
def test_a_commit_that_keeps_failing_is_retried_logged_once_surfaced_then_recovers(
    make_runner: MakeRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taskrun.db"
    runner = TaskRunner(lock_path=None, concurrency=4)
    runner.configure(
        store=SqliteStore(
            path, clock=runner.clock, result_ttl=3600, max_results=1000, host=runner,
            heartbeat=0.2, commit_wait=1.0,
        )
    )  # fmt: skip
    runner.start()
    try:
        _keeps_failing(runner, path, caplog)
    finally:
        runner.store.faults.clear()  # type: ignore[attr-defined]
        runner.stop(timeout=5)


def _keeps_failing(runner: TaskRunner, path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = store_of(runner)

    @runner.task(name="work")
    def work(value: int) -> int:
        return value

    assert work.delay(0).get(timeout=10) == 0
    beat = query(path, "SELECT heartbeat FROM processes")[0][0]
    store.faults.disk_full("write_batch", times=1_000_000)
    stuck = work.delay(1)
    assert not store.flush(timeout=timedelta(seconds=0.5))
    with pytest.raises(StoreError, match=rf"{path}'.*database or disk is full"):
        work.delay(2)
    with pytest.raises(StoreError, match=r"was not committed .* within 1.0 s"):
        stuck.get(timeout=10)  # the job fails visibly, it is not dropped
    wait_until(lambda: store.faults.raised["write_batch"] >= 5, 20, "five failed commits")
    assert len(records(caplog, "cannot write to the taskrun store")) == 1
    # The heartbeat goes on while the batch fails.
    wait_until(
        lambda: query(path, "SELECT heartbeat FROM processes")[0][0] > beat, 10, "a heartbeat"
    )

    store.faults.clear()
    assert store.flush(timeout=10)
    assert work.delay(3).get(timeout=10) == 3
    assert store.flush(timeout=10)
    states = dict(query(path, "SELECT id, state FROM jobs"))
    assert states[stuck.id] == "FAILURE"
    assert len(states) == 3
    assert records(caplog, "commits work again")


# -- 3. supervision of maintenance and housekeeping ------------------------------------------------


def test_a_maintenance_round_and_a_housekeeping_pass_that_raise_are_logged_once_and_go_on(
    make_runner: MakeRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path)
    store = store_of(runner)
    store.faults.fail("cancel_requests", RuntimeError("injected maintenance fault"))
    store.faults.fail("prune", RuntimeError("injected housekeeping fault"))

    @runner.task(name="work")
    def work(value: int) -> int:
        return value

    wait_until(
        lambda: store.faults.raised.get("cancel_requests") and store.faults.raised.get("prune"),
        10,
        "both faults to fire",
    )
    assert work.delay(5).get(timeout=10) == 5
    assert store.flush(timeout=10)
    assert query(path, "SELECT state FROM jobs") == [("SUCCESS",)]
    maintenance = records(caplog, "maintenance round of the taskrun store")
    assert len(maintenance) == 1 and "renewing the lease" in maintenance[0].getMessage()
    assert "injected maintenance fault" in caplog.text
    housekeeping = records(caplog, "housekeeping of the taskrun store")
    assert len(housekeeping) == 1 and "injected housekeeping fault" in caplog.text


# -- 4. JobLost while a remote get() polls ----------------------------------------------------


def test_a_job_whose_row_ages_out_while_another_runner_polls_it_raises_job_lost(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    owner, viewer = sqlite_runner(make_runner, path), sqlite_runner(make_runner, path)
    release = Event()

    @owner.task(name="hold")
    def hold() -> None:
        release.wait(20)

    job = hold.delay()
    assert store_of(owner).flush(timeout=10)
    seen = viewer.job(job.id)
    assert seen is not None

    def wait() -> BaseException | None:
        try:
            seen.get(20)
        except JobLost as error:
            return error
        return None

    waiter = gevent.spawn(wait)
    gevent.sleep(0.1)  # it polls
    query(path, "DELETE FROM jobs WHERE id = ?", job.id)  # what pruning does
    lost = waiter.get(timeout=10)
    release.set()
    assert isinstance(lost, JobLost) and "is no longer in" in str(lost)


# -- 5. a live process is not declared dead ----------------------------------------------------


def _child(mode: str, store: Path, out: Path, lease: float) -> subprocess.Popen[str]:
    with (out / f"{mode}.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, str(CHILD), mode, str(store), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env={**os.environ, "STORE_CHILD_LEASE": str(lease)},
        )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_frozen_process_keeps_its_running_job_and_a_killed_one_loses_it(tmp_path: Path) -> None:
    store, done = tmp_path / "taskrun.db", tmp_path / "done.txt"
    lease = 1.0
    holder = _child("hold", store, tmp_path, lease)
    taker: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: _lines(done) == [f"start {holder.pid}"], 30, "the job to start")
        taker = _child("consume", store, tmp_path, lease)
        wait_until(
            lambda: len(query(store, "SELECT token FROM processes")) == 2, 30, "the taker to open"
        )
        os.kill(holder.pid, signal.SIGSTOP)
        gevent.sleep(lease * 5)  # many of the taker's heartbeats and housekeeping passes
        assert _lines(done) == [f"start {holder.pid}"]
        assert len(query(store, "SELECT token FROM processes")) == 2
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        wait_until(lambda: f"start {taker.pid}" in _lines(done), 30, "the take-over after a kill")
    finally:
        for proc in (holder, taker):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_a_dead_process_with_no_jobs_is_reaped_without_a_warning(
    make_runner: MakeRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    query(
        path,
        "INSERT INTO processes (token, pid, pid_start, host, started, heartbeat) "
        "VALUES ('gone', ?, NULL, ?, 0, unixepoch('now'))",
        child.pid,
        host_key(),
    )
    caplog.set_level(logging.INFO)
    sqlite_runner(make_runner, path)
    wait_until(lambda: f"process {child.pid} is gone" in caplog.text, 10, "the reap")
    assert not query(path, "SELECT 1 FROM processes WHERE token = 'gone'")
    assert "unfinished job(s) will run" not in caplog.text
    assert f"process {child.pid} is gone; it held no job" in caplog.text


# -- 6. the store file is a trust boundary -----------------------------------------------------


@pytest.mark.parametrize(("mode", "access"), [(0o666, "write"), (0o620, "write"), (0o640, "read")])
def test_a_store_file_open_to_others_is_refused_naming_the_mode_and_chmod(
    make_runner: MakeRunner, tmp_path: Path, mode: int, access: str
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()
    path.chmod(mode)
    runner = TaskRunner(store=str(path), lock_path=None)

    with pytest.raises(
        StoreError, match=rf"{path}': its mode {mode:04o} lets other users {access}"
    ):
        runner.start()
    with pytest.raises(StoreError, match=rf"chmod 600 {path}"):
        runner.start()


def test_an_open_wal_file_beside_the_store_is_refused_too(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()
    wal = tmp_path / "taskrun.db-wal"
    wal.touch()
    wal.chmod(0o644)

    with pytest.raises(StoreError, match=rf"{wal}': its mode 0644 lets other users read it"):
        TaskRunner(store=str(path), lock_path=None).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_store_file_owned_by_another_user_is_refused(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()
    os.chown(path, 65534, 65534)

    with pytest.raises(StoreError, match=rf"{path}': it is owned by uid 65534.*chown 0 "):
        TaskRunner(store=str(path), lock_path=None).start()


# -- 7. argument size limit -------------------------------------------------------------


def test_arguments_larger_than_max_arg_bytes_fail_at_delay_naming_size_and_limit(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path, max_arg_bytes=1000)

    @runner.task(name="upload")
    def upload(data: bytes) -> int:
        return len(data)

    with pytest.raises(
        NotSerializable, match=r"take 2,0\d\d bytes pickled, over the limit of 1,000"
    ):
        upload.delay(b"x" * 2000)
    assert upload.delay(b"x" * 100).get(timeout=10) == 100

    default = sqlite_runner(make_runner, tmp_path / "default.db")

    @default.task(name="upload")
    def upload_default(data: bytes) -> int:
        return len(data)

    with pytest.raises(NotSerializable, match=r"over the limit of 1,048,576 \(max_arg_bytes\)"):
        upload_default.delay(b"x" * 2_000_000)

    memory = make_runner(lock_path=None, max_arg_bytes=1000)

    @memory.task(name="upload")
    def upload_memory(data: bytes) -> int:
        return len(data)

    assert upload_memory.delay(b"x" * 2000).get(timeout=10) == 2000  # nothing is pickled


def test_max_arg_bytes_is_checked_and_read_from_flask_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_arg_bytes must be a whole number >= 1, got 0"):
        TaskRunner(max_arg_bytes=0)
    app = Flask(__name__)
    app.config["TASKRUN_MAX_ARG_BYTES"] = 500
    app.config["TASKRUN_STORE"] = f"sqlite:///{tmp_path / 'taskrun.db'}"
    runner = TaskRunner(lock_path=None)
    runner.init_app(app)

    @runner.task(name="upload")
    def upload(data: bytes) -> None: ...

    runner.start()
    try:
        with pytest.raises(NotSerializable, match=r"over the limit of 500"):
            upload.delay(b"x" * 600)
    finally:
        runner.stop()


# -- 8. a graceful stop keeps a job's retries -------------------------------------------------


def test_a_job_failing_during_the_drain_keeps_its_retry_and_runs_after_restart(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    first = sqlite_runner(make_runner, path)
    go = Event()

    @first.task(name="flaky", retries=1, retry_delay=0.1)
    def flaky_first() -> str:
        go.wait(10)
        raise ConnectionError("the mail server went away")

    job = flaky_first.delay()
    wait_until(lambda: job.state is JobState.STARTED, 10, "the job to start")
    stopper = gevent.spawn(first.stop, 10)
    wait_until(lambda: first._dispatcher._closing, 10, "the drain to begin")
    go.set()
    stopper.join(timeout=20)
    assert query(path, "SELECT state, attempts, owner FROM jobs WHERE id = ?", job.id) == [
        ("RETRY", 1, None)
    ]

    second = sqlite_runner(make_runner, path)

    @second.task(name="flaky", retries=1, retry_delay=0.1)
    def flaky() -> str:
        return "sent"

    assert store_of(second).flush(timeout=10)
    wait_until(
        lambda: query(path, "SELECT state FROM jobs WHERE id = ?", job.id) == [("SUCCESS",)],
        20,
        "the retry to run after the restart",
    )
    assert query(path, "SELECT attempts FROM jobs WHERE id = ?", job.id) == [(2,)]


def test_with_the_memory_store_a_job_failing_during_the_drain_fails(
    make_runner: MakeRunner,
) -> None:
    runner = make_runner(lock_path=None)
    go = Event()

    @runner.task(name="flaky", retries=1, retry_delay=0.1)
    def flaky() -> None:
        go.wait(10)
        raise ConnectionError("gone")

    job = flaky.delay()
    wait_until(lambda: job.state is JobState.STARTED, 10, "the job to start")
    stopper = gevent.spawn(runner.stop, 10)
    wait_until(lambda: runner._dispatcher._closing, 10, "the drain to begin")
    go.set()
    stopper.join(timeout=20)
    assert job.state is JobState.FAILURE


# -- 9. a RETRY job looks the same from every process ---------------------------------------------


def test_a_retrying_jobs_error_is_seen_from_another_runner_and_its_status_json(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    owner, viewer = sqlite_runner(make_runner, path), sqlite_runner(make_runner, path)

    @owner.task(name="flaky", retries=2, retry_delay=60)
    def flaky() -> None:
        raise ValueError("no such year: 1066")

    job = flaky.delay()
    wait_until(lambda: job.state is JobState.RETRY, 10, "the job to wait for its retry")
    assert store_of(owner).flush(timeout=10)

    seen = viewer.job(job.id)
    assert seen is not None and seen is not job and seen.state is JobState.RETRY
    assert isinstance(seen.result, ValueError) and seen.result.args == ("no such year: 1066",)
    assert seen.traceback is not None and "ValueError: no such year: 1066" in seen.traceback
    app = Flask(__name__)
    with app.app_context():
        assert (
            job_status(seen)
            == job_status(job)
            == {
                "id": job.id,
                "state": "RETRY",
                "result": None,
                "error": {"type": "ValueError", "message": "no such year: 1066"},
            }
        )


def test_a_row_whose_arguments_and_result_cannot_be_loaded_is_read_without_raising(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    viewer = sqlite_runner(make_runner, path)
    broken = b"\x80\x05\x95not a pickle"
    query(
        path,
        "INSERT INTO jobs (id, task, state, payload, enqueued, finished, result, traceback) "
        "VALUES ('broken', 'elsewhere', 'SUCCESS', ?, 0, 1, ?, ?)",
        broken,
        broken,
        "Traceback: \\udcff",
    )

    seen = viewer.job("broken")
    assert seen is not None and seen.state is JobState.SUCCESS and seen.args == ()
    assert str(seen.get(timeout=1)).startswith("<result that cannot be loaded here: ")


@pytest.mark.slow
def test_a_job_fails_visibly_when_the_lease_cannot_be_renewed_and_runs_again_once_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taskrun.db"
    runner = TaskRunner(lock_path=None, concurrency=2)
    runner.configure(
        store=SqliteStore(
            path, clock=runner.clock, result_ttl=3600, max_results=1000, host=runner,
            heartbeat=0.1, lease=1.0,
        )
    )  # fmt: skip
    runner.start()
    store = store_of(runner)
    try:

        @runner.task(name="work")
        def work(value: int) -> int:
            return value

        store.faults.fail("heartbeat", sqlite3.OperationalError("disk I/O error"), 1_000_000)
        wait_until(lambda: store.faults.raised.get("heartbeat", 0) >= 10, 10, "failed heartbeats")
        job = work.delay(1)
        with pytest.raises(StoreError, match=r"could not renew its lease .* for 1.0 s"):
            job.get(timeout=10)
        assert records(caplog, "disk I/O error", "taskrun.stores.sqlite.writer")
        store.faults.clear()
        assert work.delay(2).get(timeout=10) == 2
    finally:
        store.faults.clear()
        runner.stop(timeout=5)
