"""The Flask extension: ``TASKRUN_*`` config, an app context per job, background views.

Example::

    from flask import Flask
    from taskrun import TaskRunner
    from taskrun.flask import RequestData

    runner = TaskRunner()

    @runner.task(retries=3)
    def send_welcome(user_id: int) -> None:
        ...  # current_app, g and app.config work here

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["TASKRUN_CONCURRENCY"] = 50
        runner.init_app(app)       # or TaskRunner(app)
        app.register_blueprint(bp)
        return app

    @bp.post("/reports/<int:year>")
    @runner.background             # under the route: answers 202 + Location
    def build_report(year: int, request_data: RequestData) -> dict[str, int]:
        return {"year": year, "rows": ...}

``init_app`` starts nothing: the serving entry point (``taskrun serve``, the
gunicorn worker, or your own code) starts the runner in the process that
serves requests.

**Jobs get an app context, never the request.**  Every job, whether it was
submitted in a request, by the timer (delayed, retried, periodic) or from a
shell, runs inside ``app.app_context()``: ``current_app``, ``g`` and
extensions bound to the app work, and ``teardown_appcontext`` handlers run
after each job (closing the job's database connection, for one).  The
request is not carried into jobs: by the time a job runs, the response has
usually been sent and the request, its body stream and its session are
gone; ``copy_current_request_context`` only keeps a reference to that dead
request.  So give tasks plain data (ids, not ORM objects or files) and let
them load what they need; a background view gets a snapshot
(:class:`RequestData`).

**One app per runner.**  A runner runs its jobs in the context of the app
it was last attached to.  Calling ``init_app`` again for another app is
allowed while the runner is stopped (an app factory in tests makes a new app
per test) and refused while it runs; an app holds one runner.  To serve
several apps in one process, give each its own runner.

Background views are in :mod:`taskrun.flask_background`, the status
endpoint in :mod:`taskrun.flask_status`; their public names
(:class:`RequestData`, :func:`background`, :func:`accepted_response`,
:func:`job_status`, :func:`status_url`) are re-exported here.

The status endpoint shows any job of the
runner, by id, to anyone who has the id; ids are unguessable (128 random
bits).  To restrict it, add a ``before_request`` hook to the ``taskrun``
blueprint: ``app.blueprints["taskrun"].before_request(check_login)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from taskrun.errors import ConfigError, TaskrunError
from taskrun.flask_background import RequestData as RequestData
from taskrun.flask_background import background as background
from taskrun.flask_status import accepted_response as accepted_response
from taskrun.flask_status import job_status as job_status
from taskrun.flask_status import status_blueprint
from taskrun.flask_status import status_url as status_url
from taskrun.runner import TaskRunner

logger = logging.getLogger(__name__)

#: ``app.config`` keys that set a runner option, and the option each sets.
RUNNER_OPTIONS: dict[str, str] = {
    "TASKRUN_CONCURRENCY": "concurrency",
    "TASKRUN_MAX_PENDING": "max_pending",
    "TASKRUN_MAX_SCHEDULED": "max_scheduled",
    "TASKRUN_EAGER": "eager",
    "TASKRUN_STORE": "store",
}
#: The key for where the status endpoint lives: ``<prefix>/<job id>``.
STATUS_URL_PREFIX = "TASKRUN_STATUS_URL_PREFIX"
DEFAULT_STATUS_URL_PREFIX = "/taskrun/jobs"
CONFIG_KEYS = frozenset([*RUNNER_OPTIONS, STATUS_URL_PREFIX])


def init_app(runner: TaskRunner, app: Flask) -> None:
    """Attach ``runner`` to ``app``; called by ``runner.init_app(app)`` and ``TaskRunner(app)``.

    Reads the ``TASKRUN_*`` keys of ``app.config`` (those absent keep the
    runner's own values): ``TASKRUN_CONCURRENCY``, ``TASKRUN_MAX_PENDING``,
    ``TASKRUN_MAX_SCHEDULED``, ``TASKRUN_EAGER`` (a bool; jobs run inline,
    for your app's tests), ``TASKRUN_STORE`` (passed to the runner as its
    ``store`` option) and ``TASKRUN_STATUS_URL_PREFIX`` (default
    ``/taskrun/jobs``).  Then puts the runner in ``app.extensions["taskrun"]``,
    makes every job run inside ``app.app_context()`` and registers the
    ``taskrun`` blueprint with the status endpoint.

    Has no other side effect: no greenlet, thread, file or socket exists
    until ``runner.start()``.  Calling it again with the same app does nothing.

    :raises ConfigError: for an unknown ``TASKRUN_*`` key or a bad value
        (the message names the key); if ``app`` already holds another
        runner; if the runner is running for another app.
    """
    if not isinstance(app, Flask):
        raise ConfigError(f"init_app needs a Flask app, got {app!r}")
    held = app.extensions.get("taskrun")
    attached = attached_app(runner)
    if held is runner and attached is app:
        return
    if held is not None and held is not runner:
        raise ConfigError(
            f"app {app.name!r} already has a TaskRunner ({held!r}) in app.extensions['taskrun']; "
            "an app holds one runner: declare all its tasks on that one"
        )
    if attached is not None and attached is not app and runner.is_running:
        raise ConfigError(
            f"this runner is running jobs for app {attached.name!r}; attach it to app "
            f"{app.name!r} only after runner.stop(), or give each app its own TaskRunner"
        )
    options, prefix = read_config(app.config)
    for key, value in options.items():
        try:
            runner.configure(**{RUNNER_OPTIONS[key]: value})
        except TaskrunError as error:
            raise ConfigError(f"app.config[{key!r}] = {value!r} is not usable: {error}") from None
    if held is None:
        app.register_blueprint(status_blueprint(prefix))
    app.extensions["taskrun"] = runner
    runner.set_job_context(app.app_context)


def read_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Check the ``TASKRUN_*`` keys of ``config``; return (runner options by key, status prefix).

    :raises ConfigError: for an unknown key, a non-bool ``TASKRUN_EAGER`` or a
        prefix that is not a path like ``/taskrun/jobs``.
    """
    unknown = sorted(key for key in config if key.startswith("TASKRUN_") and key not in CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown taskrun config key(s) {unknown!r}; known: {sorted(CONFIG_KEYS)!r}"
        )
    options = {key: config[key] for key in RUNNER_OPTIONS if config.get(key) is not None}
    eager = options.get("TASKRUN_EAGER", False)
    if not isinstance(eager, bool):
        raise ConfigError(
            f"app.config['TASKRUN_EAGER'] must be True or False, got {eager!r}; "
            "with from_prefixed_env() write FLASK_TASKRUN_EAGER=true"
        )
    prefix = config.get(STATUS_URL_PREFIX, DEFAULT_STATUS_URL_PREFIX)
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise ConfigError(
            f"app.config[{STATUS_URL_PREFIX!r}] must be a URL path below the root, got "
            f"{prefix!r}; e.g. {DEFAULT_STATUS_URL_PREFIX!r}"
        )
    return options, prefix.rstrip("/")


def attached_app(runner: TaskRunner) -> Flask | None:
    """Return the app whose context ``runner``'s jobs run in, or ``None``."""
    owner = getattr(runner.job_context, "__self__", None)
    return owner if isinstance(owner, Flask) else None


# -- start-up check ------------------------------------------------------------
