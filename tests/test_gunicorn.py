"""taskrun's gunicorn worker, end to end: a real gunicorn on 127.0.0.1, real signals.

Each test starts ``python -m gunicorn -k taskrun.gunicorn.GeventWorker`` as a
subprocess serving an app from ``tests/apps``, talks to it over HTTP, signals
the master and reads what the jobs wrote to a file.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from serving_helpers import (
    app_env,
    free_port,
    gunicorn_command,
    http_get,
    lines,
    pid_exists,
    run_process,
    try_get,
    wait_for,
    wait_workers_ready,
    worker_pids,
)

from taskrun.gunicorn import DEFAULT_RECYCLE_GRACE, RECYCLE_GRACE_ENV, recycle_grace

BOOT = 20.0  # seconds a gunicorn gets to answer its first request


@pytest.mark.timeout(60)
def test_sigterm_lets_a_running_job_finish_before_every_process_exits(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    port = free_port()
    command = gunicorn_command("jobs_app:app", port, "-w", "2", "--graceful-timeout", "15")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")
        wait_workers_ready(served, 2, BOOT)
        _, worker = http_get(url + "/enqueue?id=a&sleep=2")[1].split()
        wait_for(lambda: f"started a {worker}" in lines(out), 10, "the job to start")

        served.signal(signal.SIGTERM)
        code = served.wait_exit(timeout=15 + 5)

        assert code == 0, served.log_text()
        assert f"finished a {worker}" in lines(out), served.log_text()
        assert not [pid for pid in worker_pids(served) if pid_exists(pid)]
        assert "WORKER TIMEOUT" not in served.log_text()


@pytest.mark.timeout(60)
def test_max_requests_recycle_lets_a_running_job_finish_without_a_worker_timeout(
    tmp_path: Path,
) -> None:
    out = tmp_path / "jobs.txt"
    port = free_port()
    # A 2 s heartbeat timeout: a worker draining a 4 s job without
    # heartbeats would be aborted as a timeout by the master.
    options = ["-w", "1", "--timeout", "2", "--graceful-timeout", "15"]
    options += ["--max-requests", "3", "--max-requests-jitter", "0"]
    with run_process(
        gunicorn_command("jobs_app:app", port, *options), app_env(out), tmp_path / "gunicorn.log"
    ) as served:
        url = f"http://127.0.0.1:{port}"
        first = wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")  # request 1
        _, worker = http_get(url + "/enqueue?id=a&sleep=4")[1].split()  # request 2
        http_get(url + "/ping")  # request 3: the worker recycles after it

        served.wait_log(r"Autorestarting worker", 10)
        wait_for(lambda: f"finished a {worker}" in lines(out), 15, "the job to finish")
        second = wait_for(lambda: try_get(url + "/ping"), BOOT, "the new worker to answer")

        assert first.split()[1] == worker != second.split()[1]
        assert "WORKER TIMEOUT" not in served.log_text()
        assert "cancelled" not in served.log_text()
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0


@pytest.mark.timeout(60)
def test_quick_shutdown_kills_running_jobs_at_once(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    port = free_port()
    command = gunicorn_command("jobs_app:app", port, "-w", "1", "--graceful-timeout", "60")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")
        job_id, worker = http_get(url + "/enqueue?id=a&sleep=60")[1].split()
        wait_for(lambda: f"started a {worker}" in lines(out), 10, "the job to start")

        served.signal(signal.SIGINT)  # the master sends SIGQUIT to its workers
        code = served.wait_exit(timeout=15)

        assert code == 0, served.log_text()
        assert f"finished a {worker}" not in lines(out)
        assert job_id in served.log_text()  # reported as cancelled


@pytest.mark.timeout(60)
def test_quick_shutdown_during_a_graceful_drain_kills_the_jobs_at_once(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    port = free_port()
    command = gunicorn_command("jobs_app:app", port, "-w", "1", "--graceful-timeout", "60")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")
        job_id, worker = http_get(url + "/enqueue?id=a&sleep=60")[1].split()
        wait_for(lambda: f"started a {worker}" in lines(out), 10, "the job to start")
        served.signal(signal.SIGTERM)
        served.wait_log(r"letting jobs finish within", 10)

        served.signal(signal.SIGINT)  # the master sends SIGQUIT to the draining worker
        code = served.wait_exit(timeout=15)

        assert code == 0, served.log_text()
        assert f"finished a {worker}" not in lines(out)
        assert job_id in served.log_text()  # reported as cancelled


@pytest.mark.timeout(60)
def test_preloaded_periodic_job_runs_once_per_slot_across_three_workers(tmp_path: Path) -> None:
    out = tmp_path / "ticks.txt"
    port = free_port()
    env = app_env(out, TASKRUN_TEST_LOCK=str(tmp_path / "leader.lock"))
    command = gunicorn_command("periodic_app:app", port, "-w", "3", "--preload")
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")
        wait_workers_ready(served, 3, BOOT)
        wait_for(lambda: len(lines(out)) >= 4, 15, "four periodic runs")

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=40) == 0, served.log_text()

    slots = Counter(line.split()[1] for line in lines(out))
    assert [slot for slot, runs in slots.items() if runs > 1] == [], lines(out)
    assert {int(line.split()[0]) for line in lines(out)} <= worker_pids(served)


@pytest.mark.timeout(60)
def test_flask_factory_app_runner_is_found_in_its_extension(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    port = free_port()
    command = gunicorn_command("flask_app:create_app()", port, "-w", "1")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: try_get(url + "/ping"), BOOT, "gunicorn to answer")
        _, worker = http_get(url + "/enqueue?id=f&sleep=0")[1].split()

        wait_for(lambda: f"finished f {worker}" in lines(out), 10, "the job to run")
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0


@pytest.mark.timeout(60)
def test_several_workers_with_memory_store_warn_to_share_a_store(tmp_path: Path) -> None:
    port = free_port()
    command = gunicorn_command("jobs_app:app", port, "-w", "2")
    with run_process(command, app_env(tmp_path / "jobs.txt"), tmp_path / "g.log") as served:
        wait_workers_ready(served, 2, BOOT)  # each warned once

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0
    assert 'TaskRunner(store="sqlite:///' in served.log_text()


# -- the recycle budget --------------------------------------------------------


def test_recycle_grace_defaults_to_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECYCLE_GRACE_ENV, raising=False)

    assert recycle_grace(30.0) == DEFAULT_RECYCLE_GRACE == 10.0


def test_recycle_grace_never_exceeds_graceful_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECYCLE_GRACE_ENV, "25")

    assert recycle_grace(30.0) == 25.0
    assert recycle_grace(5.0) == 5.0


def test_bad_recycle_grace_is_logged_and_the_default_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(RECYCLE_GRACE_ENV, "soon")

    assert recycle_grace(30.0) == DEFAULT_RECYCLE_GRACE
    assert "TASKRUN_RECYCLE_GRACE='soon' is not a number of seconds >= 0" in caplog.text
