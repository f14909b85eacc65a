"""The JSON status endpoint of the Flask extension, and the ``202 Accepted`` that points at it.

``init_app`` registers the ``taskrun`` blueprint: ``GET <prefix>/<job id>``
(``TASKRUN_STATUS_URL_PREFIX``, default ``/taskrun/jobs``) answers for any
job of the app's runner, whoever submitted it (a background view,
``task.delay()``, the timer)::

    {"id": "...", "state": "SUCCESS", "result": {"rows": 3}}
    {"id": "...", "state": "STARTED", "result": null, "meta": {"current": 3, "total": 4}}
    {"id": "...", "state": "FAILURE", "result": null,
     "error": {"type": "ValueError", "message": "no such year: 1066"}}

and ``404`` with ``{"id": ..., "error": ...}`` for an id it does not know.
A view that submits a job itself answers with :func:`accepted_response`.

It shows results and error messages to anyone who has a job's id (ids are
128 random bits, unguessable, but they travel in URLs).  To restrict it, add
a ``before_request`` hook to the blueprint, also after ``init_app``::

    def check_login() -> Response | None:
        if "user_id" not in session:
            abort(401)
        return None

    app.blueprints["taskrun"].before_request(check_login)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for
from flask.sansio.scaffold import T_before_request

from taskrun.jobs import Job, JobState

logger = logging.getLogger(__name__)

#: Seconds a 202 waits for a shared store to commit the job it announces.
ACCEPT_FLUSH_TIMEOUT = 5.0
#: The endpoint name, for ``url_for(STATUS_ENDPOINT, job_id=...)``.
STATUS_ENDPOINT = "taskrun.job_status"


class StatusBlueprint(Blueprint):
    """The ``taskrun`` blueprint, whose ``before_request`` hooks may be added after registration.

    ``init_app`` registers it, so a plain blueprint would refuse a hook added
    afterwards (Flask's "can no longer be called on the blueprint"); this one
    runs its hooks, in the order added, before each of its requests.  A hook
    that returns a value (or raises, e.g. ``abort(401)``) answers instead of
    the status view, as with any ``before_request`` hook.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guards: list[Callable[[], Any]] = []
        super().before_request(self._run_guards)

    def before_request(self, f: T_before_request) -> T_before_request:
        """Run ``f`` before each request to the status endpoint; returns ``f`` (a decorator)."""
        self._guards.append(f)
        return f

    def _run_guards(self) -> Any:
        for guard in list(self._guards):
            answer = current_app.ensure_sync(guard)()
            if answer is not None:
                return answer
        return None


def status_blueprint(prefix: str) -> StatusBlueprint:
    """Return a new ``taskrun`` blueprint serving job status at ``<prefix>/<job_id>``."""
    blueprint = StatusBlueprint("taskrun", __name__, url_prefix=prefix)
    blueprint.add_url_rule("/<job_id>", "job_status", _status_view, methods=["GET"])
    return blueprint


def _status_view(job_id: str) -> Response:
    runner = current_app.extensions["taskrun"]
    job = runner.job(job_id)
    if job is None:
        response = jsonify(
            id=job_id,
            error=(
                f"unknown job id {job_id!r}: no such job, or its result has expired, or it ran "
                "in another worker process (share one store between processes to see it)"
            ),
        )
        response.status_code = 404
    else:
        response = jsonify(job_status(job))
    # Polling clients must see the state change, not a cached copy.
    response.headers["Cache-Control"] = "no-store"
    return response


def job_status(job: Job[Any]) -> dict[str, Any]:
    """Return the status document of ``job``: ``id``, ``state``, ``result``, ``error``, ``meta``.

    ``meta`` is what the job reported with ``Job.update`` (e.g. progress), in
    any state, present whenever it is not empty.

    ``result`` is the return value once the job succeeded, if the app's JSON
    provider can serialise it, else ``null``.  A failed job (or one waiting
    to retry) has ``error``: the exception's type name and message (never the
    traceback, which stays in the server's log); an exception whose ``str()``
    itself fails gets the message ``"<unprintable TypeName>"``.  Call it in an
    app context.
    """
    payload: dict[str, Any] = {"id": job.id, "state": job.state.value, "result": None}
    value = job.result
    if job.state in (JobState.FAILURE, JobState.RETRY) and value is not None:
        kind = type(value).__name__ if isinstance(value, BaseException) else None
        payload["error"] = {"type": kind, "message": _message(value)}
    elif job.state is JobState.SUCCESS and _serialisable(value):
        payload["result"] = value
    meta = job.meta
    if meta:
        payload["meta"] = meta
    return payload


def _message(value: object) -> str:
    """Return ``str(value)``, or a placeholder naming its type if that raises."""
    try:
        return str(value)
    except Exception:  # a user's __str__ may raise anything; the status still answers
        return f"<unprintable {type(value).__name__}>"


def _serialisable(value: Any) -> bool:
    try:
        current_app.json.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def status_url(job_id: str, *, external: bool = False) -> str:
    """Return the URL of the status endpoint for ``job_id`` (a path unless ``external``).

    Call it in a request, or in an app context with ``SERVER_NAME`` set.
    """
    return url_for(STATUS_ENDPOINT, job_id=job_id, _external=external)


def accepted_response(job: Job[Any], **extra: Any) -> Response:
    """Return ``202 Accepted`` for ``job``: a ``Location`` header to its status endpoint.

    The JSON body is ``{"id", "state", "status_url"}`` plus ``extra``.
    Call it in a request.  With a shared store it first waits (up to
    :data:`ACCEPT_FLUSH_TIMEOUT` seconds) for the job's row to be committed,
    so any worker can answer the status URL; if that time passes first, it
    logs a warning (another worker may answer 404 for a while) and answers 202.

    Example::

        @app.post("/images")
        def upload() -> Response:
            path = save_upload(request.files["file"])
            return accepted_response(make_thumbnail.delay(path), image=path.stem)
    """
    # With a shared store, the poll may reach another worker: the job's row
    # must be committed before the client learns the URL.
    if not current_app.extensions["taskrun"].flush(timeout=ACCEPT_FLUSH_TIMEOUT):
        logger.warning(
            "job %s (%s) was not committed to the store within %s s; answering 202 anyway: "
            "other worker processes may not see this id yet (is the store's disk slow or "
            "locked by another process?)",
            job.id,
            job.name,
            ACCEPT_FLUSH_TIMEOUT,
        )
    url = status_url(job.id)
    response = jsonify({"id": job.id, "state": job.state.value, "status_url": url, **extra})
    response.status_code = 202
    response.headers["Location"] = url
    return response
