"""``taskrun serve``, end to end: the command in a subprocess, real signals, real HTTP.

The command is run as ``python -m taskrun`` and as the ``taskrun`` console
script; it logs ``serving on http://HOST:PORT`` once it listens (port 0
picks a free port), which the tests read from its log.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import gevent
import pytest
from serving_helpers import Served, app_env, http_get, lines, run_process, wait_for

#: Every test here runs real subprocesses end to end; deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

PYTHON_M = [sys.executable, "-m", "taskrun"]
CONSOLE_SCRIPT = [str(Path(sys.executable).with_name("taskrun"))]
BOOT = 40.0


def serving_url(served: Served) -> str:
    """Wait for the 'serving on' line and return the URL it names."""
    return served.wait_log(r"serving on (http://\S+)", BOOT)[1]


@pytest.mark.timeout(120)
def test_sigterm_finishes_in_flight_request_and_running_job_then_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [*PYTHON_M, "serve", "jobs_app:app", "--bind", "127.0.0.1:0", "--grace", "20"]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = serving_url(served)
        http_get(url + "/enqueue?id=a&sleep=2")
        wait_for(lambda: any(line.startswith("started a") for line in lines(out)), 10, "job start")
        slow = gevent.spawn(http_get, url + "/slow?sleep=1.5")
        wait_for(lambda: any(ln.startswith("request slow") for ln in lines(out)), 10, "request")

        served.signal(signal.SIGTERM)
        code = served.wait_exit(timeout=20 + 5)

        status, body, headers = slow.get(timeout=10)
    assert code == 0, served.log_text()
    assert (status, body.split()[0]) == (200, "slept")
    assert headers.get("connection") == "close"
    assert any(line.startswith("finished a") for line in lines(out)), served.log_text()


@pytest.mark.timeout(120)
def test_second_signal_kills_running_job_at_once_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [*PYTHON_M, "serve", "jobs_app", "--bind", "127.0.0.1:0", "--grace", "60"]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = serving_url(served)
        job_id = http_get(url + "/enqueue?id=b&sleep=60")[1].split()[0]
        wait_for(lambda: any(line.startswith("started b") for line in lines(out)), 10, "job start")

        served.signal(signal.SIGTERM)
        served.wait_log(r"SIGTERM received: stopping within 60", 10)
        served.signal(signal.SIGINT)
        code = served.wait_exit(timeout=15)

    assert code == 0, served.log_text()
    assert not any(line.startswith("finished b") for line in lines(out))
    assert "SIGINT received again: killing requests and jobs now" in served.log_text()
    assert job_id in served.log_text()  # reported as cancelled


@pytest.mark.timeout(120)
def test_console_script_serves_a_flask_factory_and_finds_its_runner(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [*CONSOLE_SCRIPT, "serve", "flask_app:create_app('cli-test')", "-b", "127.0.0.1:0"]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = serving_url(served)
        http_get(url + "/enqueue?id=f&sleep=0")
        wait_for(lambda: any(line.startswith("finished f") for line in lines(out)), 10, "the job")

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0, served.log_text()
    assert "found no TaskRunner" not in served.log_text()


@pytest.mark.timeout(120)
def test_explicit_runner_option_names_the_runner(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [
        *PYTHON_M,
        "serve",
        "jobs_app:app",
        "--runner",
        "jobs_app:runner",
        "-b",
        "127.0.0.1:0",
    ]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = serving_url(served)
        http_get(url + "/enqueue?id=r&sleep=0")
        wait_for(lambda: any(line.startswith("finished r") for line in lines(out)), 10, "the job")

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0, served.log_text()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("jobs_app:nope", "module 'jobs_app' has no attribute 'nope'"),
        ("no_such_module:app", "no module named 'no_such_module'"),
        ("jobs_app:app[0]", "is not a name or a call"),
        (
            "flask_app:create_app('a', 'b')",
            "the factory create_app(name: 'str' = 'flask-app-test') -> 'Flask' cannot be "
            "called with ('a', 'b'): too many positional arguments",
        ),
        (
            "flask_app:create_app(nme='x')",
            "cannot be called with (nme='x'): got an unexpected keyword argument 'nme'",
        ),
    ],
)
def test_an_app_that_cannot_be_loaded_exits_2_and_says_why(
    tmp_path: Path, target: str, message: str
) -> None:
    with run_process(
        [*PYTHON_M, "serve", target], app_env(tmp_path / "o"), tmp_path / "serve.log"
    ) as served:
        code = served.wait_exit(timeout=30)

    assert code == 2
    assert message in served.log_text()
    assert "Traceback" not in served.log_text()


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
def test_a_runner_that_cannot_start_exits_2_with_one_line_naming_cause_and_fix(
    tmp_path: Path, target: str, env: dict[str, str], cause: str
) -> None:
    paths = {key: str(tmp_path / value) for key, value in env.items()}
    command = [*PYTHON_M, "serve", target, "--bind", "127.0.0.1:0"]
    with run_process(command, app_env(tmp_path / "o", **paths), tmp_path / "serve.log") as served:
        code = served.wait_exit(timeout=30)

    log = served.log_text()
    [line] = [line for line in log.splitlines() if "ERROR" in line]
    assert code == 2, log
    assert "cannot start the runner, so nothing is served:" in line
    assert cause in line and "does not exist" in line
    assert "Traceback" not in log
    assert "serving on" not in log


@pytest.mark.timeout(120)
def test_a_factory_named_without_parentheses_is_called_as_flask_does(tmp_path: Path) -> None:
    out = tmp_path / "jobs.txt"
    command = [*PYTHON_M, "serve", "flask_app:create_app", "-b", "127.0.0.1:0"]
    with run_process(command, app_env(out), tmp_path / "serve.log") as served:
        url = serving_url(served)
        status, body, _ = http_get(url + "/ping")
        http_get(url + "/enqueue?id=p&sleep=0")
        wait_for(lambda: any(line.startswith("finished p") for line in lines(out)), 10, "the job")

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=20) == 0, served.log_text()
    assert (status, body.split()[0]) == (200, "pong")
    assert "found no TaskRunner" not in served.log_text()


def test_a_bound_port_exits_1_and_says_to_choose_another(tmp_path: Path) -> None:
    with gevent.socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [*PYTHON_M, "serve", "jobs_app:app", "--bind", f"127.0.0.1:{port}"]
        with run_process(command, app_env(tmp_path / "o"), tmp_path / "serve.log") as served:
            code = served.wait_exit(timeout=30)

    assert code == 1
    assert f"cannot serve on 127.0.0.1:{port}" in served.log_text()
    assert "choose another --bind" in served.log_text()
