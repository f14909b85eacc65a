"""A Flask app with the dashboard on, its runner on the SQLite store ``$TASKRUN_TEST_STORE``.

For the dashboard's and ``flask taskrun``'s end-to-end tests: served by
``taskrun serve`` or gunicorn (two workers share the store and the leader
lock ``$TASKRUN_TEST_LOCK``), driven by Chromium and by the CLI run as
``flask --app dash_app taskrun ...``.  The dashboard lets in requests from
127.0.0.1 only.

``/stats`` answers this worker's ``runner.stats()`` and ``runner.periodic_jobs()``.

Tasks: ``dash.add(a, b)``, ``dash.fail(message)`` (raises), ``dash.hold(seconds)``
and the periodic ``dash.tick`` (every 2 s).  Routes: ``/ping``;
``/enqueue?task=T&arg=A`` submits a job and answers ``<id> <pid>`` once committed.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Request, request

from taskrun import TaskRunner
from taskrun.schedules import every

runner = TaskRunner(
    concurrency=20,
    name="dash-app-test",
    store=os.environ["TASKRUN_TEST_STORE"],
    lock_path=os.environ.get("TASKRUN_TEST_LOCK"),
)


@runner.dashboard_auth
def loopback_only(req: Request) -> bool:
    """Let the dashboard answer local requests only."""
    return req.remote_addr == "127.0.0.1"


@runner.task(name="dash.add")
def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


@runner.task(name="dash.fail")
def fail(message: str) -> None:
    """Fail with ``message``."""
    raise RuntimeError(message)


@runner.task(name="dash.hold")
def hold(seconds: float) -> str:
    """Sleep ``seconds`` cooperatively."""
    time.sleep(seconds)
    return "held"


@runner.periodic(every(seconds=2), name="dash.tick")
def tick() -> str:
    """Do nothing, on schedule."""
    return "tick"


app = Flask("dash_app")
app.config.update(TASKRUN_DASHBOARD=True, SECRET_KEY="dash-app-test-secret")
runner.init_app(app)


@app.get("/ping")
def ping() -> str:
    """Answer with this worker's pid."""
    return f"pong {os.getpid()}"


@app.get("/enqueue")
def enqueue() -> str:
    """Submit a job of ``task`` with the JSON-free arguments the tests need."""
    task = request.args["task"]
    if task == "dash.add":
        job = add.delay(int(request.args.get("a", "1")), int(request.args.get("b", "2")))
    elif task == "dash.fail":
        job = fail.delay(request.args.get("arg", "boom"))
    else:
        job = hold.apply_async(
            args=(float(request.args.get("arg", "30")),),
            countdown=float(request.args.get("countdown", "0")),
        )
    runner.store.flush(timeout=5)
    return f"{job.id} {os.getpid()}"


@app.get("/stats")
def stats() -> dict[str, object]:
    """Answer ``runner.stats()`` and ``runner.periodic_jobs()`` as this worker sees them."""
    periodic = [
        {
            "name": info.name,
            "scope": info.scope,
            "last_run": info.last_run.timestamp() if info.last_run else None,
            "paused": info.paused,
            "leader_pid": info.leader_pid,
        }
        for info in runner.periodic_jobs()
    ]
    return {"pid": os.getpid(), "stats": runner.stats(), "periodic": periodic}
