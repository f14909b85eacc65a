"""Threaded mode: in an unpatched process the runner lives on a thread and hub of its own.

Each test runs a script in a fresh, unpatched interpreter (this suite's own
process is patched by its launcher), which submits from plain threads, as
the request threads of ``flask run`` do, and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

PRELUDE = """
import json, threading, time
from taskrun import TaskRunner, JobState
"""


def run_unpatched(code: str, tmp_path: Path, timeout: float = 60) -> tuple[Any, str]:
    """Run ``code`` unpatched; return (the JSON of its last stdout line, its stderr)."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_jobs_submitted_from_plain_threads_run_and_their_results_reach_those_threads(
    tmp_path: Path,
) -> None:
    out, _ = run_unpatched(
        """
        runner = TaskRunner(lock_path=None, concurrency=4)

        @runner.task
        def add(a, b):
            return a + b

        runner.start()
        results, ids = [], []

        def request(n):
            job = add.delay(n, 1)  # returns at once, from a thread with no hub
            ids.append(job.id)
            results.append(job.get(timeout=10))

        threads = [threading.Thread(target=request, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        looked_up = runner.job(ids[0])
        print(json.dumps({
            "results": sorted(results),
            "state": looked_up.state.value,
            "same_thread": runner._mode.here(),
            "completed": runner.stats()["completed"],
        }))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out["results"] == [n + 1 for n in range(20)]
    assert out["state"] == "SUCCESS"
    assert out["same_thread"] is False
    assert out["completed"] == 20


def test_a_job_waits_on_another_job_inside_the_runner_thread(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        runner = TaskRunner(lock_path=None)

        @runner.task
        def inner():
            return "inner"

        @runner.task
        def outer():
            return "outer+" + inner.delay().get(timeout=5)

        runner.start()
        print(json.dumps({"value": outer.delay().get(timeout=10)}))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out["value"] == "outer+inner"


def test_cancel_from_a_plain_thread_stops_a_scheduled_and_a_running_job(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        import gevent
        runner = TaskRunner(lock_path=None)
        started = threading.Event()

        @runner.task
        def slow():
            started.set()
            gevent.sleep(30)

        runner.start()
        later = slow.apply_async(countdown=60)
        running = slow.delay()
        assert started.wait(10)
        answers = [later.cancel(), running.cancel()]
        try:
            running.get(timeout=10)
        except Exception as error:
            raised = type(error).__name__
        print(json.dumps({
            "answers": answers,
            "states": [later.state.value, running.state.value],
            "raised": raised,
        }))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out["answers"] == [True, True]
    assert out["states"] == ["CANCELLED", "CANCELLED"]
    assert out["raised"] == "JobCancelled"


def test_a_full_pool_refuses_a_thread_s_delay_at_once(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        import gevent
        from taskrun import QueueFull
        runner = TaskRunner(lock_path=None, concurrency=1, max_pending=1)
        started = threading.Event()

        @runner.task
        def slow():
            started.set()
            gevent.sleep(30)

        runner.start()
        slow.delay()
        assert started.wait(10)
        slow.delay()  # the backlog's one place
        runner.flush(timeout=5)
        try:
            slow.delay()
            refused = None
        except QueueFull as error:
            refused = str(error)
        print(json.dumps({"refused": refused}))
        runner.stop(timeout=0)
        """,
        tmp_path,
    )

    assert out["refused"] is not None and "raise max_pending or concurrency" in out["refused"]


def test_a_job_submitted_after_stop_is_refused_with_the_fix(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        from taskrun import RunnerNotRunning
        runner = TaskRunner(lock_path=None)

        @runner.task
        def noop():
            return 1

        runner.start()
        assert noop.delay().get(timeout=5) == 1
        runner.stop(timeout=5)
        try:
            noop.delay()
        except RunnerNotRunning as error:
            message = str(error)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("taskrun-")]
        print(json.dumps({"message": message, "alive": alive}))
        """,
        tmp_path,
    )

    assert "the runner was stopped" in out["message"]
    assert out["alive"] == []


def test_a_sqlite_store_works_in_threaded_mode(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    out, _ = run_unpatched(
        f"""
        from taskrun import NotSerializable
        runner = TaskRunner(lock_path=None, store="sqlite:///{db}")

        @runner.task
        def double(x):
            return 2 * x

        runner.start()
        try:
            double.delay(lambda: 1)
            refused = None
        except NotSerializable as error:
            refused = type(error).__name__
        job = double.delay(21)
        value = job.get(timeout=10)
        assert runner.flush(timeout=5)
        found = runner.job(job.id).state.value
        print(json.dumps({{"value": value, "found": found, "refused": refused}}))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out == {"value": 42, "found": "SUCCESS", "refused": "NotSerializable"}


def test_a_runner_started_before_fork_refuses_jobs_in_the_child(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        import os
        from taskrun import RunnerNotRunning
        runner = TaskRunner(lock_path=None)

        @runner.task
        def noop():
            return 1

        runner.start()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                noop.delay()
                message = "accepted"
            except RunnerNotRunning as error:
                message = str(error)
            os.write(write, message.encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"child": os.read(read, 4096).decode()}))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert "before that process forked" in out["child"]
    assert "start the runner after fork" in out["child"]


def test_a_start_that_fails_on_the_runner_thread_raises_in_the_caller(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"not a database" * 100)
    db.chmod(0o600)
    out, _ = run_unpatched(
        f"""
        from taskrun.errors import StoreError
        runner = TaskRunner(lock_path=None, store={str(db)!r})
        try:
            runner.start()
            raised = None
        except StoreError as error:
            raised = str(error)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("taskrun-")]
        print(json.dumps({{"raised": raised, "running": runner.is_running, "alive": alive}}))
        """,
        tmp_path,
    )

    assert out["raised"] is not None and "corrupt.db" in out["raised"]
    assert out["running"] is False
    assert out["alive"] == []


def test_thread_executor_jobs_run_in_threaded_mode(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        runner = TaskRunner(lock_path=None, threads=2)

        @runner.task(executor="thread")
        def where():
            return threading.current_thread().name

        runner.start()
        names = [where.delay() for _ in range(4)]
        names = [job.get(timeout=10) for job in names]
        print(json.dumps({"names": names, "main": threading.current_thread().name}))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert len(out["names"]) == 4
    assert not any(name.startswith("taskrun-") for name in out["names"])  # not the hub thread
    assert out["main"] not in out["names"]


def test_a_job_of_another_process_is_waited_on_and_cancelled_from_a_plain_thread(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    out, _ = run_unpatched(
        f"""
        from taskrun import WaitTimeout
        serving = TaskRunner(lock_path=None, store={str(db)!r})
        serving.start()  # threaded: the store's connection lives on its thread
        other = TaskRunner(lock_path=None, store={str(db)!r})

        @other.task(name="other.deploy.task")  # a task the serving runner does not know
        def elsewhere():
            return 1

        other.start(run_jobs=False)
        submitted = elsewhere.delay()
        seen = serving.job(submitted.id)
        try:
            seen.get(timeout=0.3)
            waited = "finished"
        except WaitTimeout:
            waited = "timed out"
        cancelled = seen.cancel()
        final = serving.job(submitted.id).state.value
        print(json.dumps({{"waited": waited, "cancelled": cancelled, "final": final}}))
        other.stop()
        serving.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out == {"waited": "timed out", "cancelled": True, "final": "CANCELLED"}


def test_a_unique_key_holds_across_plain_threads(tmp_path: Path) -> None:
    out, _ = run_unpatched(
        """
        import gevent
        runner = TaskRunner(lock_path=None)

        @runner.task
        def slow(n):
            gevent.sleep(1)
            return n

        runner.start()
        first = slow.apply_async(args=(1,), unique_key="report:2026")
        again = slow.apply_async(args=(2,), unique_key="report:2026")
        print(json.dumps({"same": again is first or again.id == first.id,
                          "value": again.get(timeout=10)}))
        runner.stop(timeout=5)
        """,
        tmp_path,
    )

    assert out == {"same": True, "value": 1}


def test_join_waits_for_periodic_slots_a_manual_clock_made_due(tmp_path: Path) -> None:
    # Asked from the caller's thread, join() could take a slot that came due for
    # idle: in about every other process it then lagged one slot behind for good.
    # Four processes make a miss near certain.
    for _ in range(4):
        out, _ = run_unpatched(
            """
            from datetime import UTC, datetime, timedelta
            from taskrun import ManualClock, every

            clock = ManualClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
            runner = TaskRunner(clock=clock, lock_path=None)
            runs = []

            @runner.periodic(every(minutes=5), pass_slot=True)
            def poll(slot):
                runs.append(slot)

            seen = []
            with runner:
                for _ in range(10):
                    clock.advance(timedelta(minutes=5))
                    assert runner.join(timeout=10)
                    seen.append(len(runs))
            print(json.dumps({"seen": seen}))
            """,
            tmp_path,
        )

        assert out["seen"] == list(range(1, 11))
