"""taskrun runs wherever a Flask app runs: ``flask run``, ``app.run()``, gunicorn, shells, cron.

Each scenario starts the real server in a subprocess (killed by pid at the
end), drives it over HTTP on 127.0.0.1 and reads what its jobs wrote.
The app is ``tests/apps/everywhere_app.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from serving_helpers import (
    Served,
    app_env,
    gunicorn_command,
    gunicorn_url,
    http_get,
    lines,
    run_process,
    try_get,
    wait_for,
)

pytestmark = pytest.mark.slow

TARGET = "everywhere_app:create_app()"
BOOT = 40.0
FLASK = [sys.executable, "-m", "flask", "--app", TARGET]


def flask_url(served: Served) -> str:
    """Wait for Werkzeug's ``Running on http://127.0.0.1:PORT`` line; return the URL."""
    served.url = served.wait_log(r"Running on (http://127\.0\.0\.1:\d+)", BOOT)[1]
    wait_for(lambda: try_get(served.url + "/pid"), BOOT, "the server to answer /pid")
    return served.url


def run_job(url: str, x: int) -> dict[str, int]:
    """Submit ``double(x)`` over HTTP and poll its status to SUCCESS; return its result."""
    status, job_id, _ = http_get(f"{url}/enqueue?x={x}")
    assert status == 200, job_id

    def finished() -> dict[str, int] | None:
        status, body, _ = http_get(f"{url}/job/{job_id}")
        assert status == 200, body
        document = json.loads(body)
        assert document["state"] in ("PENDING", "STARTED", "SUCCESS"), document
        return document["result"] if document["state"] == "SUCCESS" else None

    return wait_for(finished, 20, f"job {job_id} to succeed")


def ticks(out: Path) -> list[int]:
    """Return the pids that ran the periodic job, one per run."""
    return [int(line.split()[1]) for line in lines(out) if line.startswith("tick ")]


@pytest.mark.parametrize(
    ("flags", "extra"),
    [
        (["--reload"], {"EVERYWHERE_START": "1"}),  # runner.start() in create_app()
        (["--debug"], {}),  # started by the first delay()
    ],
    ids=["reload-explicit-start", "debug-lazy-start"],
)
def test_flask_run_with_the_reloader_runs_jobs_and_periodic_ones_in_the_serving_child(
    tmp_path: Path, flags: list[str], extra: dict[str, str]
) -> None:
    out = tmp_path / "out.txt"
    env = app_env(out, EVERYWHERE_TICK="1", EVERYWHERE_LOCK=str(tmp_path / "lock"), **extra)
    env.pop("WERKZEUG_RUN_MAIN", None)
    with run_process([*FLASK, "run", "--port", "0", *flags], env, tmp_path / "log") as served:
        url = flask_url(served)
        child = int(http_get(url + "/pid")[1])
        served.extra_pids.add(child)
        assert child != served.proc.pid  # the watcher forks a serving child

        assert run_job(url, 21) == {"value": 42, "pid": child}
        assert http_get(url + "/mode")[1] == "ThreadedMode"
        wait_for(lambda: len(ticks(out)) >= 3, 20, "three runs of the periodic job")

    assert set(ticks(out)) == {child}  # never in the watcher
    log = served.log_text()
    assert log.count("taskrun runs its jobs on a thread of its own") == 1
    if "EVERYWHERE_START" in extra:
        assert "Werkzeug reloader's watcher process" in log


def test_app_run_serves_jobs_from_its_request_threads(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = "import everywhere_app; everywhere_app.create_app().run(port=0)"
    with run_process([sys.executable, "-c", script], app_env(out), tmp_path / "log") as served:
        url = flask_url(served)
        pid = int(http_get(url + "/pid")[1])

        results = [run_job(url, x) for x in range(3)]

    assert results == [{"value": 2 * x, "pid": pid} for x in range(3)]
    assert pid == served.proc.pid


def test_waitress_serves_jobs_from_its_worker_threads(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = (
        "import logging, waitress, everywhere_app; logging.basicConfig(level=logging.INFO); "
        "waitress.serve(everywhere_app.create_app(), host='127.0.0.1', port=0, threads=4)"
    )
    with run_process([sys.executable, "-c", script], app_env(out), tmp_path / "log") as served:
        served.url = served.wait_log(r"Serving on (http://127\.0\.0\.1:\d+)", BOOT)[1]
        wait_for(lambda: try_get(served.url + "/pid"), BOOT, "waitress to answer /pid")

        assert run_job(served.url, 7) == {"value": 14, "pid": served.proc.pid}
        assert http_get(served.url + "/mode")[1] == "ThreadedMode"


@pytest.mark.parametrize(
    ("worker", "mode"), [("gevent", "NoneType"), ("gthread", "ThreadedMode")], ids=str
)
def test_stock_gunicorn_workers_start_the_runner_at_the_first_delay(
    tmp_path: Path, worker: str, mode: str
) -> None:
    out = tmp_path / "out.txt"
    command = gunicorn_command(TARGET, "--threads", "4", worker=worker)
    with run_process(command, app_env(out), tmp_path / "log") as served:
        url = gunicorn_url(served, BOOT)
        wait_for(lambda: try_get(url + "/pid"), BOOT, "a worker to answer /pid")
        pid = int(http_get(url + "/pid")[1])
        served.extra_pids.add(pid)

        assert run_job(url, 5) == {"value": 10, "pid": pid}
        # gevent: on the worker's own (patched) hub; gthread: on a thread of its own.
        assert http_get(url + "/mode")[1] == mode

    assert "Booting worker" in served.log_text()


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Served, Path, Path]:
    """``taskrun serve`` on a shared SQLite store: (the server, the store, the out file)."""
    tmp = tmp_path_factory.mktemp("served_store")
    out, store = tmp / "out.txt", tmp / "taskrun.db"
    env = app_env(out, TASKRUN_TEST_STORE=f"sqlite:///{store}")
    command = [sys.executable, "-m", "taskrun", "serve", TARGET, "--bind", "127.0.0.1:0"]
    with run_process(command, env, tmp / "log") as served:
        served.url = served.wait_log(r"serving on (http://\S+)", BOOT)[1]
        yield served, store, out


def submitter_env(served_store: tuple[Served, Path, Path]) -> dict[str, str]:
    served, store, out = served_store
    return app_env(out, TASKRUN_TEST_STORE=f"sqlite:///{store}")


def test_a_cron_script_submits_and_the_server_runs_the_job(
    served_store: tuple[Served, Path, Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    served = served_store[0]
    script = textwrap.dedent(
        """
        import json, os
        import everywhere_app
        everywhere_app.create_app()
        runner = everywhere_app.runner.start(run_jobs=False)
        job = everywhere_app.double.delay(4)
        result = job.get(timeout=20)
        latency = (job.started_at - job.enqueued_at).total_seconds()
        runner.stop()
        print(json.dumps({"result": result, "me": os.getpid(), "latency": latency}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=submitter_env(served_store),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["result"] == {"value": 8, "pid": served.proc.pid}
    assert out["me"] != served.proc.pid
    # taskrun serve's own log format: time, pid, level, logger; the job by its id.
    job_line = (
        r"\d{4}-\d\d-\d\d [\d:,]+ \[\d+\] INFO taskrun\.jobs: job \S+ \(everywhere_app\.double\)"
    )
    served.wait_log(job_line + " succeeded in", 10)
    record_property("submit-to-start latency (ms)", round(out["latency"] * 1000))


def test_flask_shell_submits_and_the_server_runs_the_job(
    served_store: tuple[Served, Path, Path], tmp_path: Path
) -> None:
    served = served_store[0]
    typed = textwrap.dedent(
        """
        import json, os
        from everywhere_app import double, runner
        job = double.delay(6)
        print("RESULT", json.dumps({"result": job.get(timeout=20), "me": os.getpid()}))
        print("RUNS_JOBS", runner.runs_jobs)
        print("LOOKED_UP", runner.job(job.id).state.value)
        """
    )
    done = subprocess.run(
        [*FLASK, "shell"],
        input=typed,
        env=submitter_env(served_store),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"RESULT (\{.*\})", done.stdout)
    assert found, done.stdout + done.stderr
    out = json.loads(found[1])

    assert out["result"] == {"value": 12, "pid": served.proc.pid}
    assert out["me"] != served.proc.pid
    assert "RUNS_JOBS False" in done.stdout
    assert "LOOKED_UP SUCCESS" in done.stdout


def test_job_lifecycle_lines_reach_gunicorn_s_error_log(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with run_process(gunicorn_command(TARGET), app_env(out), tmp_path / "log") as served:
        url = gunicorn_url(served, BOOT)
        wait_for(lambda: try_get(url + "/pid"), BOOT, "a worker to answer /pid")
        served.extra_pids.add(int(http_get(url + "/pid")[1]))
        status, job_id, _ = http_get(f"{url}/flaky?marker=log")
        assert status == 200
        line = rf"\[\d+\] \[{{level}}\] job {re.escape(job_id)} \(everywhere_app\.flaky\) "
        served.wait_log(line.format(level="INFO") + "succeeded in", 20)

    log = served.log_text()
    for level, what in [("INFO", "accepted"), ("INFO", "started \\(attempt 1\\)")]:
        assert re.search(line.format(level=level) + what, log), log
    assert re.search(line.format(level="WARNING") + r"failed on attempt 1 .*retrying in", log)
    assert re.search(r"\[INFO\] taskrun started: concurrency=10", log)
