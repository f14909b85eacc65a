"""The app the shared end-to-end tests run, in-process and on Celery workers.

``create_app()`` makes a fresh runner and app each time.  A ``taskrun
worker 'e2e_app:create_app()'`` subprocess and the test process build the
same app: the worker finds the broker in ``TASKRUN_BROKER_URL`` and the
rest in ``E2E_NAME`` (the runner's name: its Redis keys and queue),
``E2E_MARKS`` (a directory where tasks leave marks) and ``E2E_VISIBILITY``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gevent
from flask import Flask, current_app

from taskrun import TaskRunner, crontab, current_job

#: The periodic job's schedule: on the spring-forward day in Berlin, 02:30 does not exist.
DAILY = crontab("30 2 * * *", tz="Europe/Berlin")


def declare(runner: TaskRunner, periodic: bool = False) -> SimpleNamespace:
    """Declare the test tasks on ``runner``, under names both processes share.

    :param periodic: make ``e2e.tick`` a periodic job on :data:`DAILY` (a web
        process); else a plain task (a worker runs it all the same).
    """

    def tick(slot: datetime) -> None:
        """Leave one line per run: the slot it ran for and this pid."""
        with (Path(os.environ["E2E_MARKS"]) / "ticks").open("a") as out:
            out.write(f"{slot.isoformat()} {os.getpid()}\n")

    if periodic:
        runner.periodic(DAILY, name="e2e.tick", pass_slot=True)(tick)
    else:
        runner.task(name="e2e.tick")(tick)

    @runner.task(name="e2e.add")
    def add(a: int, b: int) -> int:
        return a + b

    @runner.task(name="e2e.nap")
    def nap(seconds: float, mark: str = "") -> str:
        """Sleep cooperatively; first leave a line (this pid) in the file ``mark``."""
        if mark:
            with (Path(os.environ["E2E_MARKS"]) / mark).open("a") as out:
                out.write(f"{os.getpid()}\n")
        gevent.sleep(seconds)
        return "rested"

    @runner.task(name="e2e.flaky", retries=3, retry_delay=0.05, retry_backoff=2.0)
    def flaky(succeed_on: int) -> int:
        """Fail until attempt ``succeed_on``; return the attempt that succeeded."""
        attempt = current_job().attempts
        if attempt < succeed_on:
            raise ConnectionError(f"attempt {attempt} failed")
        return attempt

    @runner.task(name="e2e.overrun", timeout=0.3)
    def overrun() -> None:
        gevent.sleep(30)

    @runner.task(name="e2e.refuse")
    def refuse(word: str, code: int) -> None:
        raise LookupError(word, code)

    @runner.task(name="e2e.app_label")
    def app_label() -> str:
        """What the Flask app context says (on a worker, the worker made the app)."""
        current_job().update(step="context")
        return str(current_app.config["E2E_LABEL"])

    @runner.task(name="e2e.make_set")
    def make_set() -> set[int]:
        return {1, 2}

    @runner.task(name="e2e.in_thread", executor="thread")
    def in_thread(value: int) -> int:
        return value * 2

    return SimpleNamespace(**{task.name.split(".")[1]: task for task in runner.tasks.values()})


def create_app(broker: str | None = None) -> Flask:
    """Make the app and its runner (the broker from ``broker=`` or ``TASKRUN_BROKER_URL``)."""
    runner = TaskRunner(name=os.environ.get("E2E_NAME", "e2e"), lock_path=None)
    tasks = declare(runner)
    app = Flask(__name__)
    app.config["E2E_LABEL"] = "made-by-create_app"
    app.config["E2E_TASKS"] = tasks
    if broker is not None:
        app.config["TASKRUN_BROKER_URL"] = broker
    if "E2E_VISIBILITY" in os.environ:  # a short one, so a killed worker's job comes back soon
        app.config["TASKRUN_BROKER_VISIBILITY_TIMEOUT"] = float(os.environ["E2E_VISIBILITY"])
    app.config["TASKRUN_DASHBOARD"] = True
    runner.init_app(app)
    runner.dashboard_auth(lambda request: request.headers.get("X-Staff") == "yes")

    @app.post("/report/<int:year>")
    @runner.background(name="e2e.report")
    def report(year: int) -> dict[str, Any]:
        return {"year": year, "label": current_app.config["E2E_LABEL"]}

    return app
