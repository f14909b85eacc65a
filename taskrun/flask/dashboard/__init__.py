"""The operator dashboard: server-rendered pages over the runner and its store.

Enabled with ``TASKRUN_DASHBOARD = True`` and mounted at
``TASKRUN_DASHBOARD_URL_PREFIX`` (default ``/taskrun/dashboard``):
overview (jobs per state, backlog, failures, charts of the last hour),
jobs (filter by state and task, search by id, newest first), one job
(arguments, progress, result or traceback, cancel and retry), periodic
jobs (schedule, last and next run, pause, resume, run now) and processes.
With the SQLite store every page covers every process sharing the file.

Every request, pages and actions alike, passes the access rule of
:mod:`taskrun.flask.access` (``@runner.dashboard_auth``; closed without
one unless ``app.debug``).  Actions are POSTs carrying a CSRF token bound to
the browser's cookie (:mod:`.csrf`).  All
job data is escaped by Jinja's autoescaping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, render_template

from taskrun.errors import StoreError
from taskrun.flask.access import guard

from . import words
from .actions import register_actions
from .csrf import set_cookie
from .views import register_views

if TYPE_CHECKING:
    from taskrun.runner import TaskRunner

__all__ = ["DEFAULT_URL_PREFIX", "dashboard_blueprint"]

DEFAULT_URL_PREFIX = "/taskrun/dashboard"


def _runner() -> TaskRunner:
    runner: TaskRunner = current_app.extensions["taskrun"]
    return runner


def dashboard_blueprint(prefix: str = DEFAULT_URL_PREFIX) -> Blueprint:
    """Return the dashboard blueprint (named ``taskrun_dashboard``) mounted at ``prefix``."""
    bp = Blueprint("taskrun_dashboard", __name__, url_prefix=prefix, template_folder="templates")
    guard(bp, _runner)  # first: every page and action passes the access rule
    register_actions(bp)
    register_views(bp)
    for name in ("ago", "duration", "short_repr", "timestamp"):
        bp.add_app_template_filter(getattr(words, name), f"taskrun_{name}")

    @bp.errorhandler(StoreError)
    def _store_down(error: StoreError) -> tuple[str, int]:
        page = render_template("taskrun_dashboard/error.html", message=str(error), nav="")
        return page, 503

    @bp.after_request
    def _no_cache(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        return set_cookie(response, prefix)

    return bp
