"""A Flask app served every way a Flask app is: ``flask run``, ``app.run()``, gunicorn, shells.

The runner and its tasks live at module level, the usual Flask layout;
``create_app()`` attaches the runner with ``init_app``, so the first
``delay()`` in a process starts it, unless ``$EVERYWHERE_START=1`` asks
``create_app()`` to call ``runner.start()`` itself.  ``$TASKRUN_TEST_STORE``
names a shared store, ``$EVERYWHERE_TICK=1`` adds a periodic job every
second.  Jobs and ticks append lines to ``$TASKRUN_TEST_OUT``.

Routes: ``/pid``; ``/enqueue?x=N`` (answers the job id); ``/job/<id>``
(JSON: state, result); ``/mode`` (where the runner runs).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app, jsonify, request

from taskrun import TaskRunner, every

runner = TaskRunner(concurrency=10, name="everywhere-app")


@runner.task
def double(x: int) -> dict[str, int]:
    """Return ``2 * x`` and the pid of the process that ran the job (in the app's context)."""
    with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
        out.write(f"double {x} {os.getpid()} {current_app.name}\n")
    return {"value": 2 * x, "pid": os.getpid()}


@runner.task(retries=1, retry_delay=0.1)
def flaky(marker: str) -> str:
    """Fail on the first attempt, succeed on the second (for the log lines)."""
    path = f"{os.environ['TASKRUN_TEST_OUT']}.{marker}"
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def _tick() -> None:
    with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
        out.write(f"tick {os.getpid()}\n")


def create_app() -> Flask:
    """Build the app; attach the module's runner (started at first use unless asked now)."""
    app = Flask(__name__)
    store = os.environ.get("TASKRUN_TEST_STORE")
    if store:
        app.config["TASKRUN_STORE"] = store
    if os.environ.get("EVERYWHERE_TICK") == "1" and not runner.periodic_jobs():
        runner.periodic(every(seconds=1), name="everywhere.tick")(_tick)
    if os.environ.get("EVERYWHERE_LOCK"):
        app.config["TASKRUN_LOCK_PATH"] = os.environ["EVERYWHERE_LOCK"]
    runner.init_app(app)
    if os.environ.get("EVERYWHERE_START") == "1":
        runner.start()

    @app.get("/pid")
    def pid() -> str:
        return str(os.getpid())

    @app.get("/enqueue")
    def enqueue() -> str:
        return double.delay(int(request.args["x"])).id

    @app.get("/flaky")
    def enqueue_flaky() -> str:
        return flaky.delay(request.args["marker"]).id

    @app.get("/job/<job_id>")
    def job(job_id: str) -> Any:
        found = runner.job(job_id)
        if found is None:
            return jsonify(state=None), 404
        result = found.result if found.successful() else None
        return jsonify(state=found.state.value, result=result)

    @app.get("/mode")
    def mode() -> str:
        return type(runner._mode).__name__

    return app
