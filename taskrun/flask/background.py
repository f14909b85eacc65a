"""Background views: a Flask view that runs as a job and answers ``202 Accepted`` at once.

``@runner.background`` (see :func:`background`) under ``@app.route`` turns
the view into a task.  Per request it captures the view's URL arguments
and, if the view asks for it, a :class:`RequestData` snapshot of the
request, submits the job and answers ``202`` with a ``Location`` header to
the job's status (:mod:`taskrun.flask.status`).  The view body then runs in
an app context but outside any request (see :mod:`taskrun.flask` for why).
Both names are re-exported by :mod:`taskrun.flask`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from flask import Response, jsonify, request
from werkzeug.datastructures import ImmutableMultiDict

from taskrun.errors import ConfigError, QueueFull, RunnerNotRunning
from taskrun.flask.status import accepted_response

if TYPE_CHECKING:  # the runner imports this package lazily (runner.background)
    from taskrun.runner import TaskRunner

logger = logging.getLogger(__name__)

#: The parameter a background view declares to receive a :class:`RequestData`.
REQUEST_DATA_PARAMETER = "request_data"
#: Seconds a client is asked to wait when the backlog is full or the runner is not running.
RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class RequestData:
    """A snapshot of the request that started a background view: plain data only.

    A background view that declares a ``request_data`` parameter receives
    one.  It holds the query string, the form fields and the JSON body as
    they were when the request came; not files, headers or the session
    (save an upload in a normal view and pass its path to a task).
    """

    #: The HTTP method, e.g. ``"POST"``.
    method: str
    #: The request path, e.g. ``"/reports/2026"``.
    path: str
    #: The query string, as ``request.args`` (``.get(key, type=int)`` works).
    args: ImmutableMultiDict[str, str] = field(default_factory=ImmutableMultiDict)
    #: The form fields, as ``request.form``.
    form: ImmutableMultiDict[str, str] = field(default_factory=ImmutableMultiDict)
    #: The JSON body as ``request.get_json(silent=True)`` returned it, or ``None``.
    json: Any = None

    @classmethod
    def capture(cls) -> RequestData:
        """Snapshot the current request; call it inside a request.

        :raises RuntimeError: outside a request (Flask's "working outside of request context").
        """
        return cls(
            method=request.method,
            path=request.path,
            args=ImmutableMultiDict(request.args),
            form=ImmutableMultiDict(request.form),
            json=request.get_json(silent=True),
        )

    def to_plain(self) -> dict[str, Any]:
        """Return the snapshot as a dict of plain values (how a job carries it)."""
        return {
            "method": self.method,
            "path": self.path,
            "args": self.args.to_dict(flat=False),
            "form": self.form.to_dict(flat=False),
            "json": self.json,
        }

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> RequestData:
        """Rebuild a snapshot from :meth:`to_plain`'s dict."""
        return cls(
            method=plain["method"],
            path=plain["path"],
            args=ImmutableMultiDict(plain["args"]),
            form=ImmutableMultiDict(plain["form"]),
            json=plain["json"],
        )


ViewFunction = Callable[..., Any]


@overload
def background(runner: TaskRunner, view: ViewFunction, /) -> Callable[..., Response]: ...


@overload
def background(
    runner: TaskRunner, view: None = None, /, **options: Any
) -> Callable[[ViewFunction], Callable[..., Response]]: ...


def background(runner: TaskRunner, view: ViewFunction | None = None, /, **options: Any) -> Any:
    """Make a view run as a job of ``runner``; the request gets ``202 Accepted`` at once.

    Used as ``@runner.background`` (or ``@runner.background(timeout=60)``,
    any option of ``@runner.task``) *under* ``@app.route``.  The view is
    registered as a task at decoration time (named ``module.qualname``
    unless ``name=`` is given).  Per request, the view's URL arguments, and
    a :class:`RequestData` snapshot if the view declares a ``request_data``
    parameter, are captured; the view then runs as a job, inside an app
    context but outside any request: its body must not touch
    ``flask.request`` or ``session`` (see :mod:`taskrun.flask` for why).
    With a durable store the URL arguments are pickled with the job, as any
    job's arguments are.  Decorators that need the request (a login check,
    a rate limit) go *above* ``@runner.background``, so they run in the request.

    The response is ``202`` with a JSON body ``{"id", "state", "status_url"}``
    and a ``Location`` header to the status endpoint, which serves the view's
    return value as the job's ``result`` once it succeeds; return plain
    JSON-serialisable data (a dict, a list, a string, a number), not a response.
    When the backlog is full, or the runner is not running (not started yet,
    or stopping), the response is ``503`` with ``Retry-After``, never a 500.

    :raises ConfigError: at decoration time, for a bad option or a name in use.

    Example::

        @app.post("/reports/<int:year>")
        @runner.background
        def build_report(year: int, request_data: RequestData) -> dict[str, Any]:
            fmt = request_data.args.get("format", "csv")
            return {"year": year, "url": make_report(year, fmt)}
    """

    def decorate(view: ViewFunction) -> Callable[..., Response]:
        if not callable(view):
            raise ConfigError(f"@runner.background needs a view function, got {view!r}")
        wants_request = REQUEST_DATA_PARAMETER in inspect.signature(view).parameters
        name = options.get("name") or f"{view.__module__}.{view.__qualname__}"

        def run_view(view_args: dict[str, Any], snapshot: dict[str, Any] | None) -> Any:
            kwargs = dict(view_args)
            if snapshot is not None:
                kwargs[REQUEST_DATA_PARAMETER] = RequestData.from_plain(snapshot)
            return view(**kwargs)

        task = runner.task(**{**options, "name": name})(run_view)

        @functools.wraps(view)
        def respond(**view_args: Any) -> Response:
            snapshot = RequestData.capture().to_plain() if wants_request else None
            try:
                job = task.delay(view_args, snapshot)
            except (QueueFull, RunnerNotRunning) as error:
                logger.warning("background view %s refused a request: %s", name, error)
                response = jsonify(error="the server is busy; try again later")
                response.status_code = 503
                response.headers["Retry-After"] = str(RETRY_AFTER)
                return response
            return accepted_response(job)

        return respond

    return decorate(view) if view is not None else decorate
