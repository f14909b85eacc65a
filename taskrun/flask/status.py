"""The JSON status endpoint of the Flask extension, and the ``202 Accepted`` that points at it.

``init_app`` registers the ``taskrun`` blueprint: ``GET <prefix>/<job id>``
(``TASKRUN_STATUS_URL_PREFIX``, default ``/taskrun/jobs``) answers for any
job of the app's runner, whoever submitted it (a background view,
``task.delay()``, the timer)::

    {"id": "...", "state": "SUCCESS", "result": {"rows": 3}}
    {"id": "...", "state": "FAILURE", "result": null,
     "error": {"type": "ValueError", "message": "no such year: 1066"}}

and ``404`` with ``{"id": ..., "error": ...}`` for an id it does not know.
A view that submits a job itself answers with :func:`accepted_response`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for

from taskrun.jobs import Job, JobState

#: Seconds a 202 waits for a shared store to commit the job it announces.
ACCEPT_FLUSH_TIMEOUT = 5.0
#: The endpoint name, for ``url_for(STATUS_ENDPOINT, job_id=...)``.
STATUS_ENDPOINT = "taskrun.job_status"


def status_blueprint(prefix: str) -> Blueprint:
    """Return a new ``taskrun`` blueprint serving job status at ``<prefix>/<job_id>``."""
    blueprint = Blueprint("taskrun", __name__, url_prefix=prefix)
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
    """Return the status document of ``job``: ``id``, ``state``, ``result`` and maybe ``error``.

    ``result`` is the return value once the job succeeded, if the app's JSON
    provider can serialise it, else ``null``.  A failed job (or one waiting
    to retry) has ``error``: the exception's type name and message (never the
    traceback, which stays in the server's log).  Call it in an app context.
    """
    payload: dict[str, Any] = {"id": job.id, "state": job.state.value, "result": None}
    value = job.result
    if job.state in (JobState.FAILURE, JobState.RETRY) and value is not None:
        if isinstance(value, BaseException):
            payload["error"] = {"type": type(value).__name__, "message": str(value)}
        else:
            payload["error"] = {"type": None, "message": str(value)}
    elif job.state is JobState.SUCCESS and _serialisable(value):
        payload["result"] = value
    return payload


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
    Call it in a request.  With a shared store it first waits (briefly) for
    the job's row to be committed, so any worker can answer the status URL.

    Example::

        @app.post("/images")
        def upload() -> Response:
            path = save_upload(request.files["file"])
            return accepted_response(make_thumbnail.delay(path), image=path.stem)
    """
    # With a shared store, the poll may reach another worker: the job's row
    # must be committed before the client learns the URL.
    current_app.extensions["taskrun"].store.flush(timeout=ACCEPT_FLUSH_TIMEOUT)
    url = status_url(job.id)
    response = jsonify({"id": job.id, "state": job.state.value, "status_url": url, **extra})
    response.status_code = 202
    response.headers["Location"] = url
    return response
