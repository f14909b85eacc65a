"""taskrun's gunicorn worker, end to end: a real gunicorn on 127.0.0.1, real signals.

Each test starts ``python -m gunicorn -k taskrun.gunicorn.GeventWorker`` (or
gunicorn's own ``-k gevent`` with taskrun's hooks) as a subprocess serving an
app from ``tests/apps`` on port 0, reads the port from its log, talks to it
over HTTP, signals the master and reads what the jobs wrote to a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import (
    app_env,
    gunicorn_command,
    gunicorn_url,
    http_get,
    lines,
    pid_exists,
    run_process,
    wait_for,
    wait_workers_ready,
    worker_pids,
)

from taskrun.gunicorn import (
    DEFAULT_RECYCLE_GRACE,
    RECYCLE_GRACE_ENV,
    RUNNER_FAILED,
    WORKER_BOOT_ERROR,
    recycle_grace,
)

BOOT = 40.0  # seconds a gunicorn gets to answer its first request
GUNICORNC = str(Path(sys.executable).with_name("gunicornc"))  # gunicorn's control client


def refuses_connections(url: str) -> bool:
    """Return whether nothing accepts connections at ``url`` any more."""
    try:
        http_get(url + "/ping", timeout=2.0)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def start_job(url: str, out: Path, name: str, sleep: int) -> tuple[str, str]:
    """Enqueue job ``name`` sleeping ``sleep`` s; once a worker runs it, return (job id, worker)."""
    job_id, worker = http_get(f"{url}/enqueue?id={name}&sleep={sleep}")[1].split()
    wait_for(lambda: f"started {name} {worker}" in lines(out), 10, "the job to start")
    return job_id, worker


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("target", "env", "cause"),
    [
        (
            "store_app:app",
            {"TASKRUN_TEST_STORE": "missing/dir/taskrun.db"},
            "cannot open the taskrun store",
        ),
        (
            "periodic_app:app",
            {"TASKRUN_TEST_LOCK": "missing/dir/leader.lock"},
            "leader lock directory",
        ),
    ],
)
def test_a_runner_that_cannot_start_stops_gunicorn_with_a_boot_error_logged_once(
    tmp_path: Path, target: str, env: dict[str, str], cause: str
) -> None:
    paths = {key: str(tmp_path / value) for key, value in env.items()}
    command = gunicorn_command(target, "-w", "2")
    with run_process(command, app_env(tmp_path / "o", **paths), tmp_path / "g.log") as served:
        code = served.wait_exit(timeout=BOOT)
        boots = worker_pids(served)

    log = served.log_text()
    failures = log.count(RUNNER_FAILED.split(" %s")[0])
    # 3 (WORKER_BOOT_ERROR); 1 when gunicorn's master, halting for the first
    # worker, trips over the second worker's boot error while it reaps.
    assert code in (WORKER_BOOT_ERROR, 1), log
    assert "Worker failed to boot" in log
    assert cause in log and "does not exist" in log
    # The master stopped at the first failure: no worker was booted again.
    assert 1 <= len(boots) <= 2, log
    assert 1 <= failures <= len(boots), log
    assert "Exception in worker process" not in log  # no worker traceback: one line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_with_taskrun_hooks_a_runner_that_cannot_start_is_a_boot_error_too(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from taskrun.gunicorn import post_worker_init, worker_exit, worker_int\n")
    env = app_env(tmp_path / "o", TASKRUN_TEST_STORE=str(tmp_path / "missing" / "taskrun.db"))
    command = gunicorn_command("store_app:app", "-c", str(config), "-w", "1", worker="gevent")
    with run_process(command, env, tmp_path / "g.log") as served:
        code = served.wait_exit(timeout=BOOT)
        boots = worker_pids(served)

    log = served.log_text()
    assert code == WORKER_BOOT_ERROR, log
    assert "Worker failed to boot" in log and "cannot open the taskrun store" in log
    assert len(boots) == 1 and log.count(RUNNER_FAILED.split(" %s")[0]) == 1, log
    assert "Exception in worker process" not in log


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_orphaned_worker_stops_listening_before_its_runner_drains(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    env = {**app_env(out), RECYCLE_GRACE_ENV: "30"}
    command = gunicorn_command("jobs_app:app", "-w", "1", "--graceful-timeout", "30")
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        [worker_pid] = wait_workers_ready(served, 1, BOOT)
        _, worker = start_job_held(url, out, "h")

        os.kill(served.proc.pid, signal.SIGKILL)  # the master dies; the worker is orphaned
        served.proc.wait(timeout=10)
        wait_for(lambda: "Parent changed" in served.log_text(), 15, "the orphan to notice")
        wait_for(lambda: refuses_connections(url), 15, "the orphan to stop listening")
        # The listener is closed while the job still runs: the runner drains after.
        job_running = f"finished h {worker}" not in lines(out) and pid_exists(worker_pid)

        Path(f"{out}.h.release").touch()
        wait_for(lambda: f"finished h {worker}" in lines(out), 15, "the held job to finish")
        wait_for(lambda: not pid_exists(worker_pid), 15, "the orphaned worker to exit")

    assert job_running, served.log_text()
    assert "letting jobs finish within" in served.log_text()
    assert "cancelled" not in served.log_text()


def start_job_held(url: str, out: Path, name: str) -> tuple[str, str]:
    """Enqueue a job that waits for its release file; once it runs, return (job id, worker)."""
    job_id, worker = http_get(f"{url}/hold?id={name}")[1].split()
    wait_for(lambda: f"started {name} {worker}" in lines(out), 10, "the job to start")
    return job_id, worker


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_lets_a_running_job_finish_and_every_process_exits_within_the_grace_period(
    tmp_path: Path,
) -> None:
    out = tmp_path / "jobs.txt"
    grace = 6  # seconds; the job needs 2 of them
    command = gunicorn_command("jobs_app:app", "-w", "2", "--graceful-timeout", str(grace))
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        workers = wait_workers_ready(served, 2, BOOT)
        _, worker = start_job(url, out, "a", sleep=2)

        served.signal(signal.SIGTERM)
        # A bound, not a speed test: the master SIGKILLs workers once the
        # grace period is over, so an exit observed within it was a drain.
        code = served.wait_exit(timeout=grace)
        still_running = [pid for pid in workers if pid_exists(pid)]

        assert code == 0, served.log_text()
        assert f"finished a {worker}" in lines(out), served.log_text()
        assert still_running == []
        assert "WORKER TIMEOUT" not in served.log_text()
        assert "SIGKILL" not in served.log_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_max_requests_recycle_lets_a_running_job_finish_without_a_worker_timeout(
    tmp_path: Path,
) -> None:
    out = tmp_path / "jobs.txt"
    # A 2 s heartbeat timeout: a worker draining a 4 s job without
    # heartbeats would be aborted as a timeout by the master.
    options = ["-w", "1", "--timeout", "2", "--graceful-timeout", "15"]
    options += ["--max-requests", "3", "--max-requests-jitter", "0"]
    with run_process(
        gunicorn_command("jobs_app:app", *options), app_env(out), tmp_path / "gunicorn.log"
    ) as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 1, BOOT)
        first = http_get(url + "/ping")[1]  # request 1
        _, worker = http_get(url + "/enqueue?id=a&sleep=4")[1].split()  # request 2
        http_get(url + "/ping")  # request 3: the worker recycles after it

        served.wait_log(r"Autorestarting worker", 10)
        wait_for(lambda: f"finished a {worker}" in lines(out), 15, "the job to finish")
        wait_workers_ready(served, 2, BOOT)  # the replacement too
        second = http_get(url + "/ping")[1]

        assert first.split()[1] == worker != second.split()[1]
        assert "WORKER TIMEOUT" not in served.log_text()
        assert "cancelled" not in served.log_text()
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_shutdown_kills_running_jobs_at_once(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = gunicorn_command("jobs_app:app", "-w", "1", "--graceful-timeout", "60")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 1, BOOT)
        job_id, worker = start_job(url, out, "a", sleep=60)

        served.signal(signal.SIGINT)  # the master sends SIGQUIT to its workers
        code = served.wait_exit(timeout=15)

        assert code == 0, served.log_text()
        assert f"finished a {worker}" not in lines(out)
        assert job_id in served.log_text()  # reported as cancelled


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_shutdown_during_a_graceful_drain_kills_the_jobs_at_once(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = gunicorn_command("jobs_app:app", "-w", "1", "--graceful-timeout", "60")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 1, BOOT)
        job_id, worker = start_job(url, out, "a", sleep=60)
        served.signal(signal.SIGTERM)
        served.wait_log(r"letting jobs finish within", 10)

        served.signal(signal.SIGINT)  # the master sends SIGQUIT to the draining worker
        code = served.wait_exit(timeout=15)

        assert code == 0, served.log_text()
        assert f"finished a {worker}" not in lines(out)
        assert job_id in served.log_text()  # reported as cancelled


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_preloaded_periodic_job_runs_once_per_slot_across_three_workers(tmp_path: Path) -> None:
    out = tmp_path / "ticks.txt"
    env = app_env(out, TASKRUN_TEST_LOCK=str(tmp_path / "leader.lock"))
    command = gunicorn_command("periodic_app:app", "-w", "3", "--preload")
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        gunicorn_url(served, BOOT)
        wait_workers_ready(served, 3, BOOT)
        wait_for(lambda: len(lines(out)) >= 4, 15, "four periodic runs")

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=40) == 0, served.log_text()

    slots = Counter(line.split()[1] for line in lines(out))
    assert [slot for slot, runs in slots.items() if runs > 1] == [], lines(out)
    assert {int(line.split()[0]) for line in lines(out)} <= worker_pids(served)


def control_answer(control: Path, command: str) -> dict[str, Any] | None:
    """Return the master's JSON answer to ``command`` on its control socket, or ``None``."""
    client = [GUNICORNC, "-s", str(control), "-c", command, "-j"]
    done = subprocess.run(client, capture_output=True, text=True, timeout=10, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_preloading_master_still_replaces_a_killed_worker_and_answers_its_control_socket(
    tmp_path: Path,
) -> None:
    control = tmp_path / "gunicorn.ctl"
    # A heartbeat timeout far beyond the waits: the master must learn of the
    # death from SIGCHLD, as an unpatched master does.
    options = ["-w", "2", "--preload", "--timeout", "300"]
    command = gunicorn_command("jobs_app:app", *options, control_socket=control)
    with run_process(command, app_env(tmp_path / "jobs.txt"), tmp_path / "g.log") as served:
        gunicorn_url(served, BOOT)
        victim = min(wait_workers_ready(served, 2, BOOT))

        os.kill(victim, signal.SIGKILL)

        served.wait_log(rf"Worker \(pid:{victim}\) was sent SIGKILL", BOOT)
        wait_workers_ready(served, 3, BOOT)  # its replacement
        shown = wait_for(
            lambda: control_answer(control, "show workers"), BOOT, "the control socket to answer"
        )
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0, served.log_text()

    assert sorted(worker["pid"] for worker in shown["workers"]) == sorted(
        worker_pids(served) - {victim}
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_flask_factory_app_runner_is_found_in_its_extension(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = gunicorn_command("flask_app:create_app()", "-w", "1")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 1, BOOT)
        _, worker = http_get(url + "/enqueue?id=f&sleep=0")[1].split()

        wait_for(lambda: f"finished f {worker}" in lines(out), 10, "the job to run")
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_several_workers_with_memory_store_warn_to_share_a_store(tmp_path: Path) -> None:
    command = gunicorn_command("jobs_app:app", "-w", "2")
    with run_process(command, app_env(tmp_path / "jobs.txt"), tmp_path / "g.log") as served:
        wait_workers_ready(served, 2, BOOT)  # each warned before it started its runner

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0
    advice = 'share one store between them: TaskRunner(store="sqlite:///'
    assert served.log_text().count(advice) == 2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_requests_are_served_while_a_thread_job_does_pillow_work(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = gunicorn_command("jobs_app:app", "-w", "1")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, 1, BOOT)
        _, worker = http_get(url + "/resize?id=r")[1].split()
        wait_for(lambda: f"started r {worker}" in lines(out), 10, "the job to start")

        answers = [http_get(url + "/ping")[0] for _ in range(20)]
        # The job runs until told to stop: every answer came while it ran.
        job_still_running = f"finished r {worker}" not in lines(out)
        Path(f"{out}.r.release").touch()
        wait_for(lambda: f"finished r {worker}" in lines(out), 10, "the job to finish")
        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0, served.log_text()

    assert job_still_running
    assert answers.count(200) == len(answers) > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_taskrun_hooks_on_gunicorns_gevent_worker_let_a_running_job_finish_on_sigterm(
    tmp_path: Path,
) -> None:
    out = tmp_path / "jobs.txt"
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from taskrun.gunicorn import post_worker_init, worker_exit, worker_int\n")
    options = ["-c", str(config), "-w", "1", "--graceful-timeout", "10"]
    command = gunicorn_command("jobs_app:app", *options, worker="gevent")
    with run_process(command, app_env(out), tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        [worker_pid] = wait_workers_ready(served, 1, BOOT)  # post_worker_init started the runner
        _, worker = start_job(url, out, "h", sleep=2)

        served.signal(signal.SIGTERM)
        code = served.wait_exit(timeout=10)

    assert code == 0, served.log_text()
    assert f"finished h {worker}" in lines(out), served.log_text()
    assert not pid_exists(worker_pid)
    assert "Using worker: gevent" in served.log_text()


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
