"""The shared SQLite store: durable, shared between runners and processes, slots claimed once.

Every test uses a real SQLite file in ``tmp_path``; the process tests run
real children (``tests/store_child.py``, gunicorn) killed by pid at the end.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent import monkey
from gevent.event import Event
from serving_helpers import (
    app_env,
    gunicorn_command,
    gunicorn_url,
    http_get,
    lines,
    run_process,
    wait_for,
    wait_workers_ready,
    worker_pids,
)

from taskrun import JobCancelled, JobState, QueueFull, TaskRunner, WaitTimeout
from taskrun.errors import ConfigError, NotSerializable, StoreError
from taskrun.stores.sqlite.codec import encode_payload
from taskrun.stores.sqlite.procs import host_key
from taskrun.stores.sqlite.schema import LATEST, MIGRATIONS, connect, migrate
from taskrun.stores.sqlite.store import SqliteStore, store_path

MakeRunner = Callable[..., TaskRunner]


def sqlite_runner(make_runner: MakeRunner, path: Path, **options: Any) -> TaskRunner:
    """A started runner on the store file ``path`` (no leader lock)."""
    return make_runner(store=f"sqlite:///{path}", lock_path=None, **options)


@pytest.fixture
def two_runners(make_runner: MakeRunner, tmp_path: Path) -> tuple[TaskRunner, TaskRunner]:
    """Two started runners on one store file, as two workers of an app would have."""
    path = tmp_path / "taskrun.db"
    return sqlite_runner(make_runner, path), sqlite_runner(make_runner, path)


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the file through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def flush(runner: TaskRunner) -> None:
    """Wait until the runner's store has committed everything."""
    store = runner.store
    assert isinstance(store, SqliteStore)
    assert store.flush(timeout=10)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (yielding to the loop) until it is true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        gevent.sleep(0.02)
    return value


# -- sharing jobs between runners ---------------------------------------------------------


def test_a_finished_job_is_seen_with_its_result_by_another_runner_on_the_file(
    two_runners: tuple[TaskRunner, TaskRunner],
) -> None:
    owner, viewer = two_runners

    @owner.task(name="double")
    def double(value: int) -> int:
        return value * 2

    job = double.delay(21)
    assert job.get(timeout=5) == 42
    flush(owner)
    seen = viewer.job(job.id)

    assert seen is not None and seen is not job
    assert (seen.state, seen.name, seen.args, seen.attempts) == (
        JobState.SUCCESS,
        "double",
        (21,),
        1,
    )
    assert seen.get(timeout=1) == 42
    assert owner.job(job.id) is job


def test_a_failed_job_seen_from_another_runner_reraises_the_tasks_own_exception(
    two_runners: tuple[TaskRunner, TaskRunner],
) -> None:
    owner, viewer = two_runners

    @owner.task(name="fail")
    def fail(code: int) -> None:
        raise LookupError("no such order", code)

    job = fail.delay(7)
    with pytest.raises(LookupError):
        job.get(timeout=5)
    flush(owner)
    seen = viewer.job(job.id)

    assert seen is not None and seen.state is JobState.FAILURE
    assert seen.traceback is not None and "LookupError: ('no such order', 7)" in seen.traceback
    with pytest.raises(LookupError) as raised:
        seen.get(timeout=1)
    assert raised.value.args == ("no such order", 7)


def test_get_waits_for_a_job_running_in_another_runner(
    two_runners: tuple[TaskRunner, TaskRunner],
) -> None:
    owner, viewer = two_runners
    release = Event()

    @owner.task(name="slow")
    def slow(value: int) -> int:
        release.wait(10)
        return value + 1

    job = slow.delay(1)
    flush(owner)
    seen = viewer.job(job.id)
    assert seen is not None and not seen.ready()
    with pytest.raises(WaitTimeout, match=r"did not finish within 0\.05 s"):
        seen.get(timeout=0.05)

    release.set()
    assert seen.get(timeout=10) == 2
    assert seen.state is JobState.SUCCESS


def test_a_job_unknown_to_every_runner_is_none(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = sqlite_runner(make_runner, tmp_path / "taskrun.db")

    assert runner.job("no-such-job") is None


@pytest.mark.slow
def test_a_job_can_be_cancelled_from_another_runner_while_it_runs(
    two_runners: tuple[TaskRunner, TaskRunner],
) -> None:
    owner, viewer = two_runners
    started = Event()

    @owner.task(name="long")
    def long() -> None:
        started.set()
        gevent.sleep(30)

    job = long.delay()
    assert started.wait(5)
    flush(owner)
    seen = viewer.job(job.id)
    assert seen is not None

    assert seen.cancel() is True
    with pytest.raises(JobCancelled):
        job.get(timeout=10)  # the owner stops it within about a heartbeat
    with pytest.raises(JobCancelled):
        seen.get(timeout=10)


def test_each_periodic_slot_is_claimed_by_one_runner_only(
    two_runners: tuple[TaskRunner, TaskRunner],
) -> None:
    first, second = two_runners

    assert first.store.claim_slot("warm_cache", 1_800_000_000.0) is True
    assert second.store.claim_slot("warm_cache", 1_800_000_000.0) is False
    assert first.store.claim_slot("warm_cache", 1_800_000_000.0) is False
    assert second.store.claim_slot("warm_cache", 1_800_000_900.0) is True
    assert second.store.claim_slot("poll_feeds", 1_800_000_000.0) is True


# -- durability: handing back and taking over ------------------------------------------


def test_stop_hands_unfinished_jobs_back_and_another_runner_runs_them(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    first = sqlite_runner(make_runner, path, concurrency=1)
    blocked = Event()

    @first.task(name="work")
    def stuck(token: str) -> None:
        blocked.set()
        gevent.sleep(30)

    running = stuck.delay("running")
    waiting = stuck.delay("waiting")
    later = stuck.apply_async(("later",), countdown=0.5)
    assert blocked.wait(5)
    first.stop(timeout=0.1)

    rows = query(path, "SELECT id, state, owner, finished FROM jobs ORDER BY enqueued")
    assert rows == [
        (running.id, "PENDING", None, None),
        (waiting.id, "PENDING", None, None),
        (later.id, "SCHEDULED", None, None),
    ]
    ran: list[str] = []
    second = sqlite_runner(make_runner, path)

    @second.task(name="work")
    def work(token: str) -> None:
        ran.append(token)

    wait_until(lambda: len(ran) == 3, 10, "the handed-back jobs to run")
    assert sorted(ran) == ["later", "running", "waiting"]
    flush(second)
    assert query(path, "SELECT attempts FROM jobs WHERE id = ?", running.id) == [(2,)]


def test_stop_cancels_a_job_still_running_in_a_thread_rather_than_hand_it_back(
    make_runner: MakeRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path, threads=1)
    lock = monkey.get_original("_thread", "allocate_lock")()  # blocks the thread for real
    lock.acquire()
    events: list[str] = []

    @runner.task(executor="thread", name="export")
    def export() -> None:
        events.append("started")
        lock.acquire(timeout=5)
        events.append("returned")

    job = export.delay()
    wait_until(lambda: events == ["started"], 5, "the thread job to start")
    with caplog.at_level(logging.WARNING, logger="taskrun.runner"):
        runner.stop(timeout=0.05)  # returns without waiting for the thread
    lock.release()

    # Handed back, it could run in another process while the thread here runs on.
    assert job.state is JobState.CANCELLED
    assert query(path, "SELECT state, finished IS NOT NULL FROM jobs WHERE id = ?", job.id) == [
        ("CANCELLED", 1)
    ]
    assert "0 handed back to the store, 1 cancelled (1 still running in a thread" in caplog.text
    wait_until(lambda: events == ["started", "returned"], 5, "the abandoned thread to return")


def _orphan(path: Path, *, pid: int, host: str, heartbeat: float, token: str) -> str:
    """Insert a process row and one PENDING ``work`` job it owns; return the job id."""
    job_id = f"job-of-{token}"
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute(
            "INSERT INTO processes (token, pid, pid_start, host, started, heartbeat) "
            "VALUES (?, ?, NULL, ?, ?, ?)",
            (token, pid, host, 0.0, heartbeat),
        )
        conn.execute(
            "INSERT INTO jobs (id, task, state, payload, enqueued, owner) "
            "VALUES (?, 'work', 'PENDING', ?, 0, ?)",
            (job_id, encode_payload("work", (token,), None), token),
        )
    finally:
        conn.close()
    return job_id


def test_jobs_of_a_dead_process_and_of_an_expired_lease_are_taken_over(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()  # creates the file
    dead_pid = _reaped_pid()
    now = query(path, "SELECT unixepoch('now')")[0][0]
    _orphan(path, pid=dead_pid, host=host_key(), heartbeat=now, token="dead")
    _orphan(path, pid=1, host="another-machine", heartbeat=now - 3600, token="expired")
    alive = _orphan(path, pid=1, host="another-machine", heartbeat=now + 3600, token="alive")
    ran: list[str] = []
    runner = sqlite_runner(make_runner, path)

    @runner.task(name="work")
    def work(token: str) -> None:
        ran.append(token)

    wait_until(lambda: len(ran) == 2, 10, "the orphaned jobs to run")
    assert sorted(ran) == ["dead", "expired"]
    assert query(path, "SELECT owner, state FROM jobs WHERE id = ?", alive) == [
        ("alive", "PENDING")
    ]
    tokens = {row[0] for row in query(path, "SELECT token FROM processes")}
    assert "alive" in tokens and not tokens & {"dead", "expired"}


def _reaped_pid() -> int:
    """Return the pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


@pytest.mark.slow
def test_a_job_of_a_task_this_process_lacks_waits_for_a_process_that_has_it(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    first = sqlite_runner(make_runner, path)

    @first.task(name="report")
    def report_v1() -> None:
        gevent.sleep(30)

    job = report_v1.apply_async(countdown=3)
    first.stop(timeout=0.1)
    unaware = sqlite_runner(make_runner, path)
    gevent.sleep(1.5)  # a maintenance round or more
    assert query(path, "SELECT owner FROM jobs WHERE id = ?", job.id) == [(None,)]
    unaware.stop()
    ran = Event()
    aware = sqlite_runner(make_runner, path)

    @aware.task(name="report")
    def report() -> None:
        ran.set()

    assert ran.wait(10)
    flush(aware)
    assert query(path, "SELECT state FROM jobs WHERE id = ?", job.id) == [("SUCCESS",)]


@pytest.mark.slow
def test_a_process_declared_dead_runs_none_of_the_jobs_another_took_over(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    stalled = sqlite_runner(make_runner, path)
    ran: list[str] = []

    @stalled.task(name="work")
    def work_here(token: str) -> None:
        ran.append(f"stalled {token}")

    job = work_here.apply_async(("x",), countdown=2.5)
    flush(stalled)
    # What another process does once this one's lease has expired.
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.execute("DELETE FROM processes")
    conn.execute("UPDATE jobs SET owner = NULL")
    conn.close()
    taker = sqlite_runner(make_runner, path)

    @taker.task(name="work")
    def work(token: str) -> None:
        ran.append(f"taker {token}")

    wait_until(lambda: ran, 10, "the job to run")
    gevent.sleep(0.5)  # the stalled runner's timer fires too
    assert ran == ["taker x"]
    assert query(path, "SELECT state FROM jobs WHERE id = ?", job.id) == [("SUCCESS",)]


# -- bad input, clear errors ---------------------------------------------------------------


def test_arguments_that_cannot_be_stored_fail_at_delay_naming_the_task_and_argument(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path)

    @runner.task(name="notify")
    def notify(user_id: int, callback: Any = None, conn: Any = None) -> None: ...

    with pytest.raises(NotSerializable, match=r"task 'notify': argument 1 \(<function"):
        notify.delay(42, lambda: None)
    with (
        socket.socket() as sock,
        pytest.raises(
            NotSerializable, match=r"task 'notify': argument 'conn' \(<.*socket.*cannot be pickled"
        ),
    ):
        notify.delay(42, conn=sock)

    notify.delay(42)
    flush(runner)
    assert query(path, "SELECT count(*) FROM jobs") == [(1,)]


def test_a_refused_job_leaves_no_row(make_runner: MakeRunner, tmp_path: Path) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path, concurrency=1, max_pending=0)
    release = Event()

    @runner.task(name="hold")
    def hold() -> None:
        release.wait(10)

    hold.delay()
    with pytest.raises(QueueFull):
        hold.delay()
    release.set()
    flush(runner)

    assert query(path, "SELECT count(*) FROM jobs") == [(1,)]


def test_the_store_file_is_readable_by_its_owner_only(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path)

    for name in ("taskrun.db", "taskrun.db-wal", "taskrun.db-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_a_corrupt_store_file_fails_at_start_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "taskrun.db"
    path.write_text("these are not the pages you are looking for\n" * 200)
    path.chmod(0o600)
    runner = TaskRunner(store=str(path), lock_path=None)

    with pytest.raises(StoreError, match=rf"{path}' is not a taskrun store or is corrupt.*mv "):
        runner.start()
    assert not runner.is_running


def test_a_store_from_a_newer_taskrun_fails_at_start_saying_to_upgrade(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    sqlite_runner(make_runner, path).stop()
    query(path, "PRAGMA user_version = 99")
    runner = TaskRunner(store=str(path), lock_path=None)

    with pytest.raises(StoreError, match=r"schema version 99.*upgrade taskrun in every process"):
        runner.start()


def test_an_sqlite_database_of_another_app_is_not_used_as_a_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    query(path, "CREATE TABLE users (id INTEGER PRIMARY KEY)")
    path.chmod(0o600)
    runner = TaskRunner(store=str(path), lock_path=None)

    with pytest.raises(StoreError, match=r"app.db' is an SQLite database but not a taskrun store"):
        runner.start()
    assert query(path, "SELECT name FROM sqlite_master") == [("users",)]


def test_a_store_in_a_missing_directory_fails_at_start_saying_to_create_it(tmp_path: Path) -> None:
    runner = TaskRunner(store=str(tmp_path / "nowhere" / "taskrun.db"), lock_path=None)

    with pytest.raises(StoreError, match=r"directory '.*nowhere' does not exist; create it"):
        runner.start()


UNWRITABLE = """
import os, sys
from taskrun import TaskRunner
from taskrun.errors import StoreError
runner = TaskRunner(store=sys.argv[1], lock_path=None, eager=True)
if os.geteuid() == 0:  # root may write anything: become nobody (imports are done)
    os.setgid(65534)
    os.setuid(65534)
try:
    runner.start()
except StoreError as error:
    print(error)
"""


def test_a_store_file_this_user_cannot_write_fails_at_start_naming_the_fix() -> None:
    # Not tmp_path: pytest keeps it private to its user, and the child may run as nobody.
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o711)
        path = Path(directory) / "taskrun.db"
        query(path, "PRAGMA user_version = 0")
        path.chmod(0o600 if os.geteuid() == 0 else 0o400)

        out = subprocess.run(
            [sys.executable, "-c", UNWRITABLE, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    if os.geteuid() == 0:  # the child runs as nobody: the file is another user's
        assert f"refusing the taskrun store file '{path}': it is owned by uid 0" in out.stdout
        assert "chown 65534" in out.stdout
    else:
        assert f"the taskrun store '{path}' is not readable and writable by this user" in out.stdout
    assert "chmod 600" in out.stdout


def test_store_settings_name_a_file_and_other_schemes_are_refused(tmp_path: Path) -> None:
    assert store_path("sqlite:////var/lib/shop/taskrun.db") == "/var/lib/shop/taskrun.db"
    assert store_path("/var/lib/shop/taskrun.db") == "/var/lib/shop/taskrun.db"
    assert store_path(tmp_path / "x.db") == str(tmp_path / "x.db")


def test_three_slashes_are_relative_and_four_absolute_as_in_sqlalchemy(tmp_path: Path) -> None:
    assert store_path("sqlite:///var/taskrun.db") == os.path.abspath("var/taskrun.db")
    assert store_path("sqlite:///taskrun.db", base=str(tmp_path)) == str(tmp_path / "taskrun.db")
    assert store_path("sqlite:////abs/taskrun.db", base=str(tmp_path)) == "/abs/taskrun.db"
    assert store_path("taskrun.db", base=str(tmp_path)) == str(tmp_path / "taskrun.db")

    with pytest.raises(ConfigError, match=r"write 'sqlite:///taskrun.db' \(three: relative\)"):
        TaskRunner(store="sqlite://taskrun.db")

    with pytest.raises(ConfigError, match=r"unknown store 'redis://localhost'.*'memory'"):
        TaskRunner(store="redis://localhost")
    with pytest.raises(ConfigError, match=r"store 'sqlite:///:memory:' does not name a file"):
        TaskRunner(store="sqlite:///:memory:")


def test_configure_switches_the_store_before_start(make_runner: MakeRunner, tmp_path: Path) -> None:
    path = tmp_path / "taskrun.db"
    runner = TaskRunner(lock_path=None)
    runner.configure(store=str(path))

    @runner.task(name="echo")
    def echo(value: str) -> str:
        return value

    with runner:
        assert echo.delay("x").get(timeout=5) == "x"
    assert query(path, "SELECT task, state FROM jobs") == [("echo", "SUCCESS")]


# -- results and upgrades -------------------------------------------------------------------


@pytest.mark.slow
def test_finished_jobs_in_the_file_are_bounded_by_count_and_age(
    make_runner: MakeRunner, tmp_path: Path, clock: Any
) -> None:
    path = tmp_path / "taskrun.db"
    runner = sqlite_runner(make_runner, path, clock=clock, max_results=5, result_ttl=60)

    @runner.task(name="noop")
    def noop() -> None: ...

    for job in [noop.delay() for _ in range(8)]:
        job.get(timeout=5)
    finished = "SELECT count(*) FROM jobs WHERE finished IS NOT NULL"
    wait_until(lambda: query(path, finished) == [(5,)], 10, "the oldest results to go")

    clock.advance(61)
    wait_until(lambda: query(path, finished) == [(0,)], 10, "results past result_ttl to go")


def test_a_file_of_the_first_schema_version_opens_and_migrations_run_in_order(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    def first_version_file(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        path.chmod(0o600)
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO jobs (id, task, state, payload, enqueued, finished, result) "
            "VALUES ('old', 'echo', 'SUCCESS', ?, 0, 1, ?)",
            (encode_payload("echo", ("v1",), None), pickle.dumps("v1")),
        )
        return conn

    scratch = first_version_file(tmp_path / "scratch.db")
    later = (*MIGRATIONS, "ALTER TABLE jobs ADD COLUMN note TEXT")
    assert migrate(scratch, str(tmp_path / "scratch.db"), later) == (1, len(later))
    assert migrate(scratch, str(tmp_path / "scratch.db"), later) == (len(later), len(later))
    assert query(tmp_path / "scratch.db", "SELECT id, note FROM jobs") == [("old", None)]
    # The operator views' index covers the jobs already there.
    counted = "SELECT state, count(*) FROM jobs INDEXED BY jobs_state_enqueued"
    assert query(tmp_path / "scratch.db", counted) == [("SUCCESS", 1)]
    scratch.close()
    assert LATEST == len(MIGRATIONS)

    path = tmp_path / "taskrun.db"
    first_version_file(path).close()
    runner = sqlite_runner(make_runner, path, result_ttl=10**10)
    old = runner.job("old")
    assert old is not None and old.get(timeout=1) == "v1"


# -- processes -----------------------------------------------------------------------------------

CHILD = Path(__file__).with_name("store_child.py")


def lines_of(path: Path) -> list[str]:
    """The lines of ``path``, none if it does not exist yet."""
    return path.read_text().splitlines() if path.exists() else []


def child(mode: str, store: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """Start ``tests/store_child.py MODE`` on the store, its stderr in ``out/<mode>.log``."""
    with (out / f"{mode}.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, str(CHILD), mode, str(store), str(out), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` by pid if it still runs, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, 9)
    proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_every_job_a_killed_producer_accepted_runs_in_the_next_process(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    store, accepted_file, done_file = (
        tmp_path / "taskrun.db",
        tmp_path / "accepted.txt",
        tmp_path / "done.txt",
    )
    producer = child("produce", store, tmp_path, "300")
    try:
        wait_until(
            lambda: len(lines_of(accepted_file)) > 100 and len(lines_of(done_file)) >= 20,
            30,
            "the producer to accept 100 jobs and run 20",
        )
        os.kill(producer.pid, 9)  # mid-stream: accepting and running
        producer.wait(timeout=10)
    finally:
        kill(producer)
    accepted = set(lines_of(accepted_file))
    unrun = accepted - set(lines_of(done_file))
    assert "scheduled" in unrun and len(unrun) > 50, "the kill came too late to test anything"

    consumer = child("consume", store, tmp_path)
    try:
        wait_until(lambda: accepted <= set(lines_of(done_file)), 30, "every accepted job to run")
        consumer.send_signal(15)
        assert consumer.wait(timeout=20) == 0
    finally:
        kill(consumer)

    done = lines_of(done_file)
    duplicates = {token: count for token, count in Counter(done).items() if count > 1}
    record_property("jobs accepted before the kill", len(accepted))
    record_property("jobs run twice", len(duplicates))
    print(f"accepted {len(accepted)}, ran {len(done)} times, run twice: {sorted(duplicates)}")  # noqa: T201
    assert set(done) <= {*map(str, range(300)), "scheduled"}
    # At least once: only the jobs running at the kill (concurrency 4) may run again.
    assert len(duplicates) <= 4, duplicates
    assert "took over" in (tmp_path / "consume.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_get_waits_for_a_job_running_in_another_process(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    store = tmp_path / "taskrun.db"
    other = child("slow", store, tmp_path)
    try:
        assert other.stdout is not None
        with gevent.Timeout(20, AssertionError("the child printed no job id")):
            job_id = other.stdout.readline().strip()
        runner = sqlite_runner(make_runner, store)
        seen = runner.job(job_id)
        assert seen is not None and seen.name == "store_child.slow" and not seen.ready()

        assert seen.get(timeout=20) == 42
        assert seen.state is JobState.SUCCESS
        other.send_signal(15)
        assert other.wait(timeout=20) == 0
    finally:
        kill(other)


# -- gunicorn workers sharing one store ---------------------------------------------------------

BOOT = 40.0  # seconds a gunicorn gets to answer with all its workers


def _serve_store_app(tmp_path: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    command = gunicorn_command("store_app:app", "-w", "3", "--graceful-timeout", "10")
    environ = app_env(tmp_path / "out.txt", TASKRUN_TEST_STORE=str(tmp_path / "taskrun.db"), **env)
    return command, environ


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_job_enqueued_through_one_gunicorn_worker_is_polled_to_success_through_the_others(
    tmp_path: Path,
) -> None:
    command, env = _serve_store_app(tmp_path)
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 3, BOOT)
        job_id, owner = http_get(url + "/enqueue?value=ab&sleep=1")[1].split()
        answered: dict[str, set[str]] = {}

        def polled_through_two_others() -> bool:
            status, body, _ = http_get(f"{url}/status?id={job_id}")
            state, result, pid = body.split()
            assert status == 200 and state in {"PENDING", "STARTED", "SUCCESS"}, body
            answered.setdefault(state, set()).add(pid)
            return len(answered.get("SUCCESS", set()) - {owner}) >= 2

        wait_for(polled_through_two_others, 30, "SUCCESS through two other workers", step=0.01)
        waited_elsewhere = _wait_through_another_worker(url)

    assert answered["SUCCESS"] - {owner}
    assert waited_elsewhere


def _wait_through_another_worker(url: str) -> list[str]:
    """Enqueue 2 s jobs and ``/wait`` on them until a wait lands on a worker not owning one.

    :returns: the answers (``abab <pid>``) of the waits served by such workers.
    """
    for _ in range(5):
        job_id, owner = http_get(url + "/enqueue?value=ab&sleep=2")[1].split()
        waits = []
        for _ in range(8):  # spaced out, so that different workers accept them
            waits.append(gevent.spawn(http_get, f"{url}/wait?id={job_id}", 20))
            gevent.sleep(0.1)
        bodies = [greenlet.get(timeout=30)[1] for greenlet in waits]
        assert {body.split()[0] for body in bodies} == {"abab"}, bodies
        elsewhere = [body for body in bodies if body.split()[1] != owner]
        if elsewhere:
            return elsewhere
    pytest.fail("every /wait landed on the worker owning the job, five times over")


#: Seconds between periodic slots when a test kills the leader: more than the
#: 2 s a follower waits between tries of the lock, plus the margins below.
SLOW_SLOTS = 3


def _runs(out: Path) -> list[tuple[int, int]]:
    """Return the periodic runs recorded in ``out``: (pid, slot) pairs."""
    return [(int(pid), int(slot)) for pid, slot in (line.split() for line in lines(out))]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_periodic_slot_runs_once_when_its_leader_is_frozen_across_it_then_killed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    command, env = _serve_store_app(
        tmp_path,
        TASKRUN_TEST_LOCK=str(tmp_path / "leader.lock"),
        TASKRUN_TEST_EVERY=str(SLOW_SLOTS),
    )
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        gunicorn_url(served, BOOT)
        wait_workers_ready(served, 3, BOOT)
        wait_for(lambda: len(lines(out)) >= 2, 20, "two periodic runs")
        leader = _runs(out)[-1][0]
        # Frozen across a slot, the leader holds the lock while the followers see
        # the slot come due and let it be; then it dies without having run it.
        due = (int(time.time()) // SLOW_SLOTS + 1) * SLOW_SLOTS
        due += SLOW_SLOTS if due - time.time() < 0.6 else 0
        time.sleep(max(0.0, due - 0.3 - time.time()))
        os.kill(leader, signal.SIGSTOP)
        time.sleep(max(0.0, due + 0.4 - time.time()))
        os.kill(leader, signal.SIGKILL)
        wait_for(lambda: _runs(out)[-1][1] > due, 20, "runs after the frozen slot")
        worker_pids(served)  # note the replacement worker, to kill it at the end
        runs = _runs(out)

    slots = Counter(slot for _, slot in runs)
    assert [slot for slot, count in slots.items() if count > 1] == [], runs
    assert sorted(slots) == list(range(min(slots), max(slots) + 1, SLOW_SLOTS)), runs
    assert [pid for pid, slot in runs if slot == due] != [leader], runs
    claimed = query(tmp_path / "taskrun.db", "SELECT count(*) FROM periodic_slots")[0][0]
    assert claimed >= len(runs)


def test_opening_waits_while_another_process_switches_a_new_file_to_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # as another worker does while it sets the file up
    holder.execute("CREATE TABLE t (x)")

    def let_go() -> None:
        gevent.sleep(0.1)
        holder.execute("COMMIT")

    releaser = gevent.spawn(let_go)
    conn = connect(path)  # must wait for the holder rather than fail at once
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    releaser.join(timeout=5)
    holder.close()

    assert mode == "wal"
