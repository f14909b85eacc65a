"""The dashboard's actions: cancel and retry a job; pause, resume and run a periodic job now.

Each is a POST with a CSRF token (see :mod:`.csrf`); none is reachable by
GET.  Each redirects (303) back to the page it came from with a notice.
The same operations serve the ``flask taskrun`` commands where they run in
a serving process.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, redirect, request, url_for

from taskrun.errors import TaskrunError
from taskrun.jobs import FINISHED, Job, JobState

from .csrf import is_valid
from .queries import views_of

if TYPE_CHECKING:
    from taskrun.runner import TaskRunner

__all__ = ["UnknownName", "register_actions", "retry_job", "trigger_periodic"]

logger = logging.getLogger(__name__)


class UnknownName(TaskrunError, LookupError):
    """No task or periodic job of that name is registered in this process."""


def retry_job(runner: TaskRunner, job: Job[Any]) -> Job[Any]:
    """Enqueue a new job of ``job``'s task with the same arguments; return it.

    Uses ``job.retry()`` where jobs have it, else ``task.apply_async``.

    :raises UnknownName: if this process has no task of that name.
    """
    retry = getattr(job, "retry", None)
    if callable(retry):
        again: Job[Any] = retry()
        return again
    task = runner.tasks.get(job.name)
    if task is None:
        raise UnknownName(
            f"task {job.name!r} is not registered in this process; declare it with "
            "@runner.task under that name to retry its jobs here"
        )
    return task.apply_async(args=job.args, kwargs=job.kwargs)


def trigger_periodic(runner: TaskRunner, name: str) -> Job[Any]:
    """Run periodic job ``name`` now, once, outside its schedule; return the job.

    :raises UnknownName: if the runner has no periodic job of that name.
    """
    entry = next((e for e in runner.periodic_entries if e.task.name == name), None)
    if entry is None:
        known = sorted(e.task.name for e in runner.periodic_entries)
        raise UnknownName(f"no periodic job named {name!r}; known: {known!r}")
    return runner.tasks[name].apply_async(args=entry.job_args(time.time()))


def _runner() -> TaskRunner:
    runner: TaskRunner = current_app.extensions["taskrun"]
    return runner


def _back(endpoint: str, notice: str, **values: Any) -> Response:
    target = url_for(f".{endpoint}", notice=notice, **values)
    return redirect(target, code=303)  # type: ignore[return-value]


def register_actions(bp: Blueprint) -> None:
    """Add the action routes (POST only) to the dashboard blueprint."""

    @bp.before_request
    def _check_token() -> None:
        if request.method == "POST" and not is_valid(current_app, request.form.get("csrf")):
            abort(400, "the form's token is missing or expired; reload the page and try again")

    @bp.post("/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> Response:
        job = _runner().job(job_id)
        if job is None:
            abort(404)
        if job.state in FINISHED:
            return _back("job", f"job was already {job.state.value}", job_id=job_id)
        done = job.cancel()
        logger.info("job %s (%s): cancel from the dashboard: %s", job.id, job.name, done)
        return _back("job", "cancelled" if done else "cancel requested", job_id=job_id)

    @bp.post("/jobs/<job_id>/retry")
    def retry(job_id: str) -> Response:
        runner = _runner()
        job = runner.job(job_id)
        if job is None:
            abort(404)
        if job.state not in (JobState.FAILURE, JobState.CANCELLED):
            return _back("job", "only failed or cancelled jobs are retried", job_id=job_id)
        try:
            again = retry_job(runner, job)
        except UnknownName as error:
            return _back("job", str(error), job_id=job_id)
        logger.info("job %s (%s): retried from the dashboard as %s", job.id, job.name, again.id)
        return _back("job", f"retried as {again.id}", job_id=again.id)

    @bp.post("/periodic/<name>/<action>")
    def periodic(name: str, action: str) -> Response:
        runner = _runner()
        if name not in {e.task.name for e in runner.periodic_entries}:
            abort(404)
        if action == "trigger":
            job = trigger_periodic(runner, name)
            logger.info("periodic job %s: run now from the dashboard (job %s)", name, job.id)
            return _back("periodic_list", f"{name}: started job {job.id}")
        if action not in ("pause", "resume"):
            abort(404)
        views_of(runner).set_paused(name, action == "pause")
        logger.info("periodic job %s: %s from the dashboard", name, action)
        return _back("periodic_list", f"{name}: {action}d")
