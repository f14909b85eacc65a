"""A Flask app serving taskrun metrics, its workers sharing one SQLite store (gunicorn test).

The store file is ``$TASKRUN_TEST_STORE``.  Routes (GET), each answering
with the pid of the worker that served it:

* ``/enqueue?n=N``: enqueues ``N`` no-op jobs; ``<pid>``
* ``/block``: enqueues a job that blocks the event loop for 1.5 s; ``<job id> <pid>``
* ``/dir``: ``<PROMETHEUS_MULTIPROC_DIR> <pid>``
* ``/taskrun/metrics``: the Prometheus text (public here; ``X-Worker`` names the pid)
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from gevent import monkey

from taskrun import TaskRunner

runner = TaskRunner(concurrency=10, name="metrics-app-test", store=os.environ["TASKRUN_TEST_STORE"])


@runner.task(name="metrics_app.noop")
def noop(n: int) -> int:
    """Do nothing much."""
    return n


@runner.task(name="metrics_app.stuck")
def stuck() -> None:
    """Block the event loop, as code holding an unpatched socket would."""
    monkey.get_original("time", "sleep")(1.5)


def create_app() -> Flask:
    """Build the app; the gunicorn worker starts the runner."""
    app = Flask("metrics-app-test")
    app.config.update(TASKRUN_METRICS=True, TASKRUN_METRICS_PUBLIC=True)
    runner.init_app(app)

    @app.get("/enqueue")
    def enqueue() -> str:
        for n in range(int(request.args["n"])):
            noop.delay(n)
        return str(os.getpid())

    @app.get("/block")
    def block() -> str:
        return f"{stuck.delay().id} {os.getpid()}"

    @app.get("/dir")
    def directory() -> str:
        return f"{os.environ.get('PROMETHEUS_MULTIPROC_DIR')} {os.getpid()}"

    @app.after_request
    def name_the_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    return app
