"""The same task code, the same assertions: in-process and on Celery + Redis workers.

Every test here runs twice through the ``setup`` fixture: once with the
jobs in this process's pool, once with ``broker=`` set, the jobs published
to a real redis-server and run by a real ``taskrun worker`` subprocess (one
per module, shared by the tests).  Celery-only behaviour (JSON only, the
visibility limit, Redis down, a worker killed mid-job) follows at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import e2e_app
import gevent
import pytest
import redis
from broker_helpers import TASKRUN, redis_server, taskrun_worker, worker_env
from flask import Flask
from flask.testing import FlaskClient

from taskrun import (
    BrokerError,
    ConfigError,
    JobCancelled,
    JobLost,
    JobState,
    JobTimeout,
    NotSerializable,
    TaskRunner,
)

WAIT = 20.0  # seconds any one job may take to come back
CHILD = Path(__file__).with_name("periodic_web_child.py")


@dataclass
class Setup:
    """One engine's world: the app, its runner and tasks, where marks go."""

    kind: str
    app: Flask
    runner: TaskRunner
    tasks: SimpleNamespace
    client: FlaskClient
    marks: Path
    url: str | None = None
    #: A job submitted and cancelled while no worker ran (in-process: while it waited).
    offline_id: str = ""
    #: The ``taskrun worker`` subprocess's pid (Celery only).
    worker_pid: int = 0


def wait_state(runner: TaskRunner, job_id: str, state: JobState) -> None:
    for _ in range(int(WAIT / 0.02)):
        job = runner.job(job_id)
        if job is not None and job.state is state:
            return
        gevent.sleep(0.02)
    pytest.fail(f"job {job_id} never reached {state}: {runner.job(job_id)!r}")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


#: The Celery run starts redis-server and a worker subprocess: slow, like every such test.
ENGINES = ["in-process", pytest.param("celery", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=ENGINES)
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    marks = tmp_path_factory.mktemp(f"marks-{request.param}")
    os.environ["E2E_MARKS"] = str(marks)  # the in-process tasks read it too
    if request.param == "in-process":
        app = e2e_app.create_app()
        runner: TaskRunner = app.extensions["taskrun"]
        runner.start()
        tasks = app.config["E2E_TASKS"]
        offline = tasks.nap.apply_async(args=(0, "offline"), countdown=0.5)
        assert offline.cancel()
        yield Setup(request.param, app, runner, tasks, app.test_client(), marks, None, offline.id)
        runner.stop(timeout=5)
        return
    url = request.getfixturevalue("redis_url")
    app = e2e_app.create_app(broker=url)
    runner = app.extensions["taskrun"]
    runner.start()
    tasks = app.config["E2E_TASKS"]
    # No worker is running yet: Celery alone would lose this cancel.
    offline = tasks.nap.delay(0, "offline")
    assert offline.cancel()
    env = worker_env(url, marks, "e2e")
    with taskrun_worker(env, marks / "worker.log") as worker:
        client = app.test_client()
        yield Setup(
            request.param, app, runner, tasks, client, marks, url, offline.id, worker.proc.pid
        )
        runner.stop(timeout=5)


def test_delay_then_get_returns_the_value(setup: Setup) -> None:
    job = setup.tasks.add.delay(2, 3)
    assert job.get(timeout=WAIT) == 5
    found = setup.runner.job(job.id)
    assert found is not None and found.state is JobState.SUCCESS and found.result == 5


def test_a_countdown_or_eta_job_reads_scheduled_first(setup: Setup) -> None:
    counted = setup.tasks.nap.apply_async(args=(0,), countdown=1)
    timed = setup.tasks.nap.apply_async(args=(0,), eta=datetime.now(UTC) + timedelta(seconds=1))
    for job in (counted, timed):
        seen = setup.runner.job(job.id)
        assert seen is not None and seen.state is JobState.SCHEDULED and seen.eta is not None
    assert [counted.get(timeout=WAIT), timed.get(timeout=WAIT)] == ["rested", "rested"]


def test_retries_use_taskruns_back_off_until_one_succeeds(setup: Setup) -> None:
    job = setup.tasks.flaky.delay(3)
    assert job.get(timeout=WAIT) == 3
    found = setup.runner.job(job.id)
    assert found is not None and found.attempts == 3
    assert found.traceback is not None and "attempt 2 failed" in found.traceback


def test_a_job_past_its_timeout_fails_with_job_timeout(setup: Setup) -> None:
    with pytest.raises(JobTimeout, match="ran past its timeout of 0.3 s"):
        setup.tasks.overrun.delay().get(timeout=WAIT)


def test_the_tasks_exception_is_raised_with_its_type_and_args(setup: Setup) -> None:
    job = setup.tasks.refuse.delay("word", 4)
    with pytest.raises(LookupError) as raised:
        job.get(timeout=WAIT)
    assert type(raised.value) is LookupError and raised.value.args == ("word", 4)
    assert job.state is JobState.FAILURE and "LookupError" in (job.traceback or "")


def test_cancelling_a_running_job_kills_it(setup: Setup) -> None:
    job = setup.tasks.nap.delay(30)
    wait_state(setup.runner, job.id, JobState.STARTED)
    assert job.cancel() is True
    assert job.state is JobState.CANCELLED
    with pytest.raises(JobCancelled):
        setup.runner.job(job.id).get(timeout=WAIT)  # type: ignore[union-attr]


def test_a_cancelled_scheduled_job_never_runs(setup: Setup) -> None:
    job = setup.tasks.nap.apply_async(args=(0, "scheduled"), countdown=0.5)
    assert job.cancel() is True
    later = setup.tasks.nap.apply_async(args=(0, "later"), countdown=1)
    assert later.get(timeout=WAIT) == "rested"
    assert setup.runner.job(job.id).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert not (setup.marks / "scheduled").exists()


def test_a_job_cancelled_while_no_worker_ran_never_runs(setup: Setup) -> None:
    assert setup.tasks.nap.apply_async(args=(0, "after"), countdown=1).get(timeout=WAIT)
    offline = setup.runner.job(setup.offline_id)
    assert offline is not None and offline.state is JobState.CANCELLED
    assert not (setup.marks / "offline").exists()
    if setup.url is not None:  # the worker took the cancelled message and dropped it
        assert redis.Redis.from_url(setup.url).llen("taskrun.e2e") == 0
        broker = setup.runner.stats()["broker"]
        assert {k: broker[k] for k in ("url", "queue", "queued")} == {
            "url": setup.url,
            "queue": "taskrun.e2e",
            "queued": 0,
        }


def test_an_unknown_id_is_none_and_its_status_is_404(setup: Setup) -> None:
    assert setup.runner.job("no-such-job-id-at-all") is None
    assert setup.client.get("/taskrun/jobs/no-such-job-id-at-all").status_code == 404


def test_a_background_view_is_polled_to_success(setup: Setup) -> None:
    answer = setup.client.post("/report/2026")
    assert answer.status_code == 202
    location = answer.headers["Location"]
    for _ in range(int(WAIT / 0.05)):
        status = setup.client.get(location).get_json()
        if status["state"] == "SUCCESS":
            break
        gevent.sleep(0.05)
    assert status["state"] == "SUCCESS"
    assert status["result"] == {"year": 2026, "label": "made-by-create_app"}


def test_jobs_run_in_the_app_context_and_report_meta(setup: Setup) -> None:
    job = setup.tasks.app_label.delay()
    assert job.get(timeout=WAIT) == "made-by-create_app"
    assert setup.runner.job(job.id).meta == {"step": "context"}  # type: ignore[union-attr]


def test_thread_executor_jobs_run(setup: Setup) -> None:
    assert setup.tasks.in_thread.delay(21).get(timeout=WAIT) == 42


# -- what only the Celery engine has ---------------------------------------------


@pytest.fixture
def celery(setup: Setup) -> Setup:
    if setup.kind != "celery":
        pytest.skip("Celery engine only")
    return setup


def test_the_workers_seen_through_redis_show_in_stats_and_the_dashboard(celery: Setup) -> None:
    workers = celery.runner.stats()["broker"]["workers"]
    assert [(w["pid"], w["concurrency"]) for w in workers] == [(celery.worker_pid, 20)]
    assert workers[0]["seen"] >= workers[0]["started"] and workers[0]["running"] >= 0
    page = celery.client.get("/taskrun/dashboard/processes", headers={"X-Staff": "yes"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Celery workers" in text
    assert f'<td class="num">{celery.worker_pid}</td>' in text and "taskrun.e2e" in text


def test_arguments_must_be_json_and_the_error_names_the_argument(celery: Setup) -> None:
    with pytest.raises(NotSerializable, match=r"its argument 1 is a object .* not JSON"):
        celery.tasks.add.delay(1, object())
    with pytest.raises(NotSerializable, match=r"keyword argument 'b' is a set"):
        celery.tasks.add.delay(1, b={2})


def test_a_wait_past_the_visibility_timeout_is_refused(celery: Setup) -> None:
    with pytest.raises(ConfigError, match=r"countdown of 7200 s.*visibility timeout \(3600 s\)"):
        celery.tasks.add.apply_async(args=(1, 2), countdown=7200)


def test_unique_key_is_refused(celery: Setup) -> None:
    with pytest.raises(ConfigError, match="unique_key='k'"):
        celery.tasks.add.apply_async(args=(1, 2), unique_key="k")


def test_a_limited_task_is_refused_at_start(celery: Setup) -> None:
    runner = TaskRunner(broker=celery.url, lock_path=None)

    @runner.task(max_running=2)
    def limited() -> None: ...

    with pytest.raises(ConfigError, match="max_running=.*cannot hold across Celery workers"):
        runner.start()
    assert not runner.is_running


def test_redis_down_fails_the_start_naming_the_url() -> None:
    runner = TaskRunner(broker="redis://:secret@127.0.0.1:1/0", lock_path=None)
    with pytest.raises(
        BrokerError, match=r"cannot reach the broker at redis://:\*\*\*@127.0.0.1:1/0"
    ):
        runner.start()


def test_a_result_that_is_not_json_fails_the_job(celery: Setup) -> None:
    with pytest.raises(NotSerializable, match="returned a set, which is not JSON"):
        celery.tasks.make_set.delay().get(timeout=WAIT)


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_runs_again_on_another(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_NAME", "kill")
    monkeypatch.setenv("E2E_VISIBILITY", "3")
    monkeypatch.setenv("E2E_MARKS", str(tmp_path))
    app = e2e_app.create_app(broker=redis_url)
    runner = app.extensions["taskrun"]
    runner.start()
    try:
        env = worker_env(redis_url, tmp_path, "kill", E2E_VISIBILITY="3")
        with taskrun_worker(env, tmp_path / "first.log") as first:
            job = app.config["E2E_TASKS"].nap.delay(1, "starts")
            wait_state(runner, job.id, JobState.STARTED)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
        with taskrun_worker(env, tmp_path / "second.log"):
            assert job.get(timeout=30) == "rested"
        starts = (tmp_path / "starts").read_text().split()
        assert len(starts) == 2 and starts[0] != starts[1]  # two workers, one run each
    finally:
        runner.stop(timeout=5)


@contextmanager
def web_child(url: str, lock: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """Run ``periodic_web_child.py`` (a web process on a manual clock); kill it by pid after."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "E2E_MARKS": str(lock.parent)}
    with log.open("w") as errors:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), url, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", (
            log.read_text()
        )
        yield child
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def ask(child: subprocess.Popen[str], command: str) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(command + "\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


@pytest.mark.slow
def test_a_periodic_slot_runs_once_across_two_web_processes_leading_apart(
    celery: Setup, tmp_path: Path
) -> None:
    # Two "machines": each process leads on its own lock file, both on the spring-forward
    # day in Berlin, where the daily 02:30 does not exist and fires once, at 03:00.
    with (
        web_child(celery.url or "", tmp_path / "a.lock", tmp_path / "a.log") as first,
        web_child(celery.url or "", tmp_path / "b.lock", tmp_path / "b.log") as second,
    ):
        for hours in (2, 1):  # to 03:00 CEST (the slot), then an hour past it
            assert [ask(child, f"advance {hours * 3600}") for child in (first, second)] == [
                "done",
                "done",
            ]
        runs = [int(ask(child, "runs")) for child in (first, second)]
    assert sorted(runs) == [0, 1]
    ticks = celery.marks / "ticks"
    for _ in range(int(WAIT / 0.05)):
        if ticks.exists() and ticks.read_text():
            break
        gevent.sleep(0.05)
    (line,) = ticks.read_text().splitlines()
    slot = datetime.fromisoformat(line.split()[0])
    assert slot == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, right after the gap


def test_a_broker_from_the_environment_must_be_a_redis_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKRUN_BROKER_URL", "amqp://guest@127.0.0.1//")
    runner = TaskRunner(lock_path=None)
    assert runner.broker_url == "amqp://guest@127.0.0.1//"
    with pytest.raises(ConfigError, match="broker must be a Redis URL, got 'amqp://"):
        runner.start()
    assert not runner.is_running


@pytest.mark.slow
def test_taskrun_worker_without_a_broker_exits_2_saying_how_to_set_one(tmp_path: Path) -> None:
    env = worker_env("", tmp_path, "e2e")
    env.pop("TASKRUN_BROKER_URL")
    done = subprocess.run(
        [TASKRUN, "worker", "e2e_app:create_app()"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "has no broker: set TaskRunner(broker=" in done.stderr


def test_the_flask_config_names_the_broker_as_taskrun_broker_url() -> None:
    app = Flask(__name__)
    app.config["TASKRUN_BROKER_URL"] = "redis://127.0.0.1:6399/3"
    runner = TaskRunner(lock_path=None)
    runner.init_app(app)
    assert runner.broker_url == "redis://127.0.0.1:6399/3"
    other = Flask(__name__)
    other.config.update(TASKRUN_BROKER_URL="redis://a:1/0", TASKRUN_BROKER="redis://b:1/0")
    with pytest.raises(ConfigError, match="name the same option with different values"):
        TaskRunner(lock_path=None).init_app(other)


def test_a_task_the_worker_does_not_register_fails_saying_so(celery: Setup) -> None:
    @celery.runner.task(name="e2e.web_only")
    def web_only() -> None: ...

    with pytest.raises(JobLost, match="'e2e.web_only' is not registered in the worker's app"):
        web_only.delay().get(timeout=WAIT)


def test_celery_stores_nothing_of_its_own_for_a_job(celery: Setup) -> None:
    job = celery.tasks.add.delay(1, 2)
    assert job.get(timeout=WAIT) == 3
    client = redis.Redis.from_url(celery.url or "")
    assert client.exists(f"taskrun:e2e:job:{job.id}") == 1  # taskrun's record is the state
    assert client.exists(f"celery-task-meta-{job.id}") == 0  # no second copy, no round trip


THREADED = """
import logging, sys, threading
logging.basicConfig(level=logging.INFO)
import e2e_app
app = e2e_app.create_app(broker=sys.argv[1])
runner, tasks = app.extensions["taskrun"], app.config["E2E_TASKS"]
runner.start()
out = []
threads = [threading.Thread(target=lambda: out.append(tasks.add.delay(2, 5).get(timeout=20)))
           for _ in range(3)]
for thread in threads: thread.start()
for thread in threads: thread.join()
runner.stop()
print(out)
"""


@pytest.mark.slow
def test_an_unpatched_process_submits_from_threads_to_the_workers(celery: Setup) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-c", THREADED, celery.url or ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[7, 7, 7]"
    assert "periodic timer on a thread of its own" in done.stderr
    assert "a development mode" not in done.stderr  # the jobs do not run on that thread


def test_a_background_view_is_answered_by_another_web_app(celery: Setup) -> None:
    other = e2e_app.create_app(broker=celery.url)  # a second web process's app and runner
    other.extensions["taskrun"].start()
    try:
        location = celery.client.post("/report/1999").headers["Location"]
        client = other.test_client()
        for _ in range(int(WAIT / 0.05)):
            status = client.get(location).get_json()
            if status["state"] == "SUCCESS":
                break
            gevent.sleep(0.05)
        assert status["result"] == {"year": 1999, "label": "made-by-create_app"}
    finally:
        other.extensions["taskrun"].stop(timeout=5)
