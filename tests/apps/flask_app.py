"""A Flask app factory using the taskrun extension, for the serving entry points' tests.

``create_app()`` attaches a runner with ``runner.init_app(app)``, so the
entry points find it in ``app.extensions["taskrun"]``.  Jobs append
``finished <id> <pid>`` to ``$TASKRUN_TEST_OUT``.

Routes: ``/ping`` and ``/enqueue?id=ID&sleep=S`` (answers ``<job id> <pid>``).
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

from taskrun import TaskRunner


def create_app(name: str = "flask-app-test") -> Flask:
    """Build the app and its runner (started by whoever serves the app)."""
    app = Flask(name)
    runner = TaskRunner(concurrency=10, name=name, lock_path=None)
    runner.init_app(app)

    @runner.task
    def record(job_name: str, seconds: float) -> None:
        time.sleep(seconds)
        with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
            out.write(f"finished {job_name} {os.getpid()}\n")

    @app.get("/ping")
    def ping() -> str:
        return f"pong {os.getpid()}"

    @app.get("/enqueue")
    def enqueue() -> str:
        job = record.delay(request.args["id"], float(request.args.get("sleep", "0")))
        return f"{job.id} {os.getpid()}"

    return app
