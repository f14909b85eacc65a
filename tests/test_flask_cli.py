"""``flask taskrun ...`` as a subprocess against a real gunicorn (two workers, one SQLite store).

The CLI process runs no job: what it enqueues, a serving worker takes over
from the store and runs.  The same servers show that ``runner.stats()`` and
``runner.periodic_jobs()`` describe the whole machine whichever worker answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import (
    APPS,
    app_env,
    gunicorn_command,
    gunicorn_url,
    http_get,
    run_process,
    wait_for,
    wait_workers_ready,
)

BOOT = 40.0
JOB = 15.0


def flask_cli(
    env: dict[str, str], *args: str, app: str = "dash_app"
) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app APP taskrun ARGS`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", app, "taskrun", *args],
        env=env,
        cwd=APPS,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = flask_cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli_out(env: dict[str, str], *args: str) -> str:
    done = flask_cli(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], set[int]]]:
    """A gunicorn with two workers serving ``dash_app``; yields (url, CLI env, worker pids)."""
    tmp = tmp_path_factory.mktemp("cli")
    env = app_env(
        tmp / "out.txt",
        TASKRUN_TEST_STORE=str(tmp / "taskrun.db"),
        TASKRUN_TEST_LOCK=str(tmp / "leader.lock"),
    )
    command = gunicorn_command("dash_app:app", "-w", "2")
    with run_process(command, env, tmp / "gunicorn.log") as server:
        url = gunicorn_url(server, BOOT)
        pids = wait_workers_ready(server, 2, BOOT)
        yield url, env, pids


def wait_state(env: dict[str, str], job_id: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        shown: dict[str, Any] = cli_json(env, "show", job_id)
        return shown if shown["state"] == state else None

    return wait_for(check, JOB, f"job {job_id} to be {state}", step=0.2)


@pytest.mark.slow
def test_enqueued_job_runs_in_a_serving_worker_not_in_the_cli(served: Any) -> None:
    _, env, pids = served
    job_id = cli_out(env, "enqueue", "dash.add", "--args", "[2, 3]")
    shown = wait_state(env, job_id, "SUCCESS")
    assert shown["result"] == "5"
    listed = cli_json(env, "jobs", "--task", "dash.add")
    assert job_id in [job["id"] for job in listed]
    stats = cli_json(env, "stats")
    assert stats["scope"] == "machine"
    assert {p["pid"] for p in stats["processes"]} == pids
    assert "ID" in cli_out(env, "jobs", "--limit", "5")  # a human table


@pytest.mark.slow
def test_unknown_ids_and_tasks_exit_1_with_a_message(served: Any) -> None:
    _, env, _ = served
    done = flask_cli(env, "show", "no-such-job")
    assert done.returncode == 1 and "no job 'no-such-job'" in done.stderr
    done = flask_cli(env, "enqueue", "dash.nope")
    assert done.returncode == 1 and "no task named 'dash.nope'" in done.stderr
    done = flask_cli(env, "pause", "dash.nope")
    assert done.returncode == 1 and "no periodic job named 'dash.nope'" in done.stderr
    done = flask_cli(env, "cancel", "no-such-job")
    assert done.returncode == 1


@pytest.mark.slow
def test_cancel_a_scheduled_job_and_retry_a_failed_one(served: Any) -> None:
    _, env, _ = served
    scheduled = cli_out(env, "enqueue", "dash.hold", "--args", "[1]", "--countdown", "600")
    assert cli_json(env, "show", scheduled)["state"] == "SCHEDULED"
    assert "cancel" in cli_out(env, "cancel", scheduled)
    wait_state(env, scheduled, "CANCELLED")

    failed = cli_out(env, "enqueue", "dash.fail", "--args", '["from the cli"]')
    shown = wait_state(env, failed, "FAILURE")
    assert "from the cli" in shown["traceback"]
    again = cli_out(env, "retry", failed)
    assert again != failed
    retried = wait_state(env, again, "FAILURE")
    assert retried["task"] == "dash.fail" and retried["args"] == "('from the cli',)"
    assert failed in [job["id"] for job in cli_json(env, "jobs", "--state", "FAILURE")]


@pytest.mark.slow
def test_pause_resume_and_trigger_a_periodic_job(served: Any) -> None:
    _, env, pids = served
    listed = cli_json(env, "periodic")
    assert [p["name"] for p in listed] == ["dash.tick"]
    wait_for(lambda: cli_json(env, "periodic")[0]["last_run"], JOB, "a first tick", step=0.3)
    assert "paused" in cli_out(env, "pause", "dash.tick")
    assert cli_json(env, "periodic")[0]["paused"] is True
    assert "resumed" in cli_out(env, "resume", "dash.tick")
    assert cli_json(env, "periodic")[0]["paused"] is False
    job_id = cli_out(env, "trigger", "dash.tick")
    assert wait_state(env, job_id, "SUCCESS")["result"] == "'tick'"
    assert cli_json(env, "periodic")[0]["leader_pid"] in pids


@pytest.mark.slow
def test_stats_and_periodic_jobs_are_machine_wide_in_every_worker(served: Any) -> None:
    url, env, pids = served
    job_id = cli_out(env, "enqueue", "dash.add", "--args", "[1, 1]")
    wait_state(env, job_id, "SUCCESS")
    wait_for(lambda: cli_json(env, "periodic")[0]["last_run"], JOB, "a first tick", step=0.3)
    answers: dict[int, Any] = {}

    def both_answered() -> bool:
        status, body, _ = http_get(f"{url}/stats")
        assert status == 200, body
        answer = json.loads(body)
        answers[answer["pid"]] = answer
        return len(answers) == 2

    wait_for(both_answered, JOB, "both workers to answer /stats", step=0.01)
    assert set(answers) == pids
    leaders = set()
    for answer in answers.values():
        stats = answer["stats"]
        assert stats["scope"] == "machine"
        assert {p["pid"] for p in stats["processes"]} == pids
        assert stats["states"]["SUCCESS"] >= 1
        (tick,) = answer["periodic"]
        assert tick["scope"] == "machine" and tick["last_run"] is not None
        leaders.add(stats["leader"])
    assert len(leaders) == 1 and leaders <= pids


@pytest.mark.slow
def test_purge_deletes_old_finished_jobs(served: Any) -> None:
    _, env, _ = served
    job_id = cli_out(env, "enqueue", "dash.add", "--args", "[4, 4]")
    wait_state(env, job_id, "SUCCESS")
    assert cli_out(env, "purge", "--state", "SUCCESS", "--older-than", "1h") == (
        "deleted 0 SUCCESS job(s)"
    )
    out = cli_out(env, "purge", "--state", "SUCCESS", "--older-than", "0s")
    assert out.startswith("deleted ") and out != "deleted 0 SUCCESS job(s)"
    assert flask_cli(env, "show", job_id).returncode == 1
    done = flask_cli(env, "purge", "--state", "SUCCESS", "--older-than", "soon")
    assert done.returncode == 2 and "not a duration" in done.stderr


def test_with_the_memory_store_commands_say_a_shared_store_is_needed(tmp_path: Path) -> None:
    env = app_env(tmp_path / "out.txt")
    done = flask_cli(env, "jobs", app="flask_app:create_app()")
    assert done.returncode == 1
    assert "needs a shared store" in done.stderr and "TASKRUN_STORE" in done.stderr
