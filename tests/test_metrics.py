"""Prometheus metrics at /taskrun/metrics: real jobs, real scrapes through the Flask test client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from conftest import WaitFor
from flask import Flask
from flask.testing import FlaskClient
from gevent import monkey
from gevent.event import Event
from prometheus_client.parser import text_string_to_metric_families

from taskrun import ConfigError, JobState, ManualClock, TaskRunner, every, signals
from taskrun.errors import JobCancelled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Return every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_app(runner: TaskRunner, **config: Any) -> Flask:
    app = Flask("taskrun_metrics_test")
    app.config.update(TESTING=True, TASKRUN_METRICS=True, **config)
    runner.init_app(app)
    return app


def scrape(client: FlaskClient, url: str = "/taskrun/metrics") -> Samples:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


def open_to_all(runner: TaskRunner) -> None:
    runner.dashboard_auth(lambda request: True)


def test_finished_jobs_are_counted_and_timed_per_task_and_state(
    runner: TaskRunner, wait_for: WaitFor
) -> None:
    open_to_all(runner)
    client = metrics_app(runner).test_client()
    release = Event()

    @runner.task
    def ok(x: int) -> int:
        return x

    @runner.task
    def broken() -> None:
        raise ValueError("bad")

    @runner.task
    def wait() -> None:
        release.wait(5)

    for job in [ok.delay(n) for n in range(3)]:
        job.get(timeout=5)
    with pytest.raises(ValueError):
        broken.delay().get(timeout=5)
    waiting = wait.delay()
    wait_for(lambda: waiting.state is JobState.STARTED, "the job to start")
    later = wait.apply_async(countdown=600)

    during = scrape(client)
    assert later.cancel() and waiting.cancel()
    with pytest.raises(JobCancelled):
        waiting.get(timeout=5)
    after = scrape(client)

    def total(task: Any, state: str) -> float:
        return after[("taskrun_jobs_total", (("state", state), ("task", task.name)))]

    assert total(ok, "SUCCESS") == 3
    assert total(broken, "FAILURE") == 1
    assert total(wait, "CANCELLED") == 2
    assert after[("taskrun_job_duration_seconds_count", (("task", ok.name),))] == 3
    assert after[("taskrun_job_wait_seconds_count", (("task", ok.name),))] == 3
    # The cancelled job that never started is counted, not timed.
    assert after[("taskrun_job_duration_seconds_count", (("task", wait.name),))] == 1
    assert during[("taskrun_jobs_running", ())] == 1
    assert during[("taskrun_jobs_scheduled", ())] == 1
    assert after[("taskrun_jobs_running", ())] == 0


def test_retries_are_counted(runner: TaskRunner) -> None:
    open_to_all(runner)
    client = metrics_app(runner).test_client()

    @runner.task(retries=2, retry_delay=0.01, retry_jitter=False)
    def flaky() -> None:
        raise OSError("down")

    with pytest.raises(OSError):
        flaky.delay().get(timeout=5)
    samples = scrape(client)
    assert samples[("taskrun_job_retries_total", (("task", flaky.name),))] == 2
    assert samples[("taskrun_job_duration_seconds_count", (("task", flaky.name),))] == 3


def test_the_metrics_page_is_closed_without_an_access_function(runner: TaskRunner) -> None:
    client = metrics_app(runner).test_client()
    response = client.get("/taskrun/metrics")
    assert response.status_code == 403
    assert "@runner.dashboard_auth" in response.get_data(as_text=True)


def test_the_access_function_decides(runner: TaskRunner) -> None:
    runner.dashboard_auth(lambda request: request.headers.get("X-Token") == "s3cret")
    client = metrics_app(runner).test_client()
    assert client.get("/taskrun/metrics").status_code == 403
    assert client.get("/taskrun/metrics", headers={"X-Token": "s3cret"}).status_code == 200


def test_metrics_public_serves_without_an_access_function_at_its_url(runner: TaskRunner) -> None:
    app = metrics_app(runner, TASKRUN_METRICS_PUBLIC=True, TASKRUN_METRICS_URL="/ops/metrics")
    samples = scrape(app.test_client(), "/ops/metrics")
    assert ("taskrun_jobs_running", ()) in samples


def test_without_taskrun_metrics_there_is_no_metrics_page(app: Flask) -> None:
    assert app.test_client().get("/taskrun/metrics").status_code == 404


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("TASKRUN_METRICS", "yes", r"'TASKRUN_METRICS'\] must be True or False, got 'yes'"),
        ("TASKRUN_METRICS_PUBLIC", 1, r"'TASKRUN_METRICS_PUBLIC'\] must be True or False"),
        ("TASKRUN_METRICS_URL", "metrics", r"must be a URL path below the root, got 'metrics'"),
    ],
)
def test_bad_metrics_config_is_refused(key: str, value: Any, match: str) -> None:
    app = Flask("bad_metrics")
    app.config.update(TASKRUN_METRICS=True)
    app.config[key] = value
    with pytest.raises(ConfigError, match=match):
        TaskRunner(lock_path=None).init_app(app)


def test_a_runner_attached_to_a_new_app_is_not_counted_twice() -> None:
    runner = TaskRunner(lock_path=None)
    open_to_all(runner)
    metrics_app(runner)
    client = metrics_app(runner).test_client()  # an app factory, called again

    @runner.task
    def once() -> None:
        pass

    with runner:
        once.delay().get(timeout=5)
        samples = scrape(client)
    assert samples[("taskrun_jobs_total", (("state", "SUCCESS"), ("task", once.name)))] == 1
    # One set of receivers: in multiprocess mode a second would add to the same series.
    assert len(list(signals.job_succeeded.receivers_for(runner))) == 1


def test_jobs_finished_while_stopping_are_flushed(make_runner: Callable[..., TaskRunner]) -> None:
    from taskrun.metrics import runner_metrics

    runner = make_runner()
    metrics = runner_metrics(runner)
    release = Event()

    @runner.task
    def slow() -> None:
        release.wait(5)

    job = slow.delay()
    gevent.sleep(0.01)
    gevent.spawn_later(0.05, release.set)
    runner.stop(timeout=5)
    assert job.state is JobState.SUCCESS
    # Stopped: no flusher runs any more, so the count is in the objects already.
    assert metrics.jobs.labels(slow.name, "SUCCESS")._value.get() == 1


def test_sqlite_commits_and_periodic_skips_are_measured(tmp_path: Path) -> None:
    clock = ManualClock()
    runner = TaskRunner(
        clock=clock, lock_path=None, concurrency=1, max_pending=0, store=tmp_path / "jobs.db"
    )
    open_to_all(runner)
    client = metrics_app(runner).test_client()
    release = Event()

    @runner.task
    def hog() -> None:
        release.wait(5)

    @runner.periodic(every(minutes=1))
    def tick() -> None:
        pass

    with runner:
        held = hog.delay()
        runner.store.flush(timeout=5)
        gevent.sleep(0.01)
        clock.advance(60)
        gevent.sleep(0.01)
        release.set()
        held.get(timeout=5)
        runner.store.flush(timeout=5)
        samples = scrape(client)
    assert samples[("taskrun_store_commit_seconds_count", ())] >= 1
    key = ("taskrun_periodic_skipped_total", (("reason", "full"), ("task", tick.name)))
    assert samples[key] == 1


def test_a_blocked_loop_is_measured(
    make_runner: Callable[..., TaskRunner], wait_for: WaitFor
) -> None:
    runner = make_runner(blocking_warning=0.1)
    open_to_all(runner)
    client = metrics_app(runner).test_client()
    sleep = monkey.get_original("time", "sleep")

    @runner.task
    def stuck() -> None:
        sleep(1.0)

    job = stuck.delay()
    job.get(timeout=5)
    wait_for(lambda: job.blocked_for is not None, "the blocking to be recorded")
    assert scrape(client)[("taskrun_loop_blocked_seconds_count", ())] == 1
