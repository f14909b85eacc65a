"""``GET /taskrun/metrics``: the runner's Prometheus metrics, behind the dashboard's access check.

``init_app`` registers it when ``TASKRUN_METRICS = True`` (at
``TASKRUN_METRICS_URL``, default ``/taskrun/metrics``).  Like the dashboard
it is closed until ``@runner.dashboard_auth`` lets a request through (or the
app is in debug mode): see :mod:`taskrun.flask.access`.  Set
``TASKRUN_METRICS_PUBLIC = True`` to serve it to anyone who can reach the
app, e.g. when only the Prometheus server can.  The series are described
in :mod:`taskrun.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app

from taskrun.flask.access import guard

if TYPE_CHECKING:  # the runner imports this package lazily (runner.init_app)
    from taskrun.runner import TaskRunner

#: The blueprint's name (its endpoint is ``taskrun_metrics.metrics``).
BLUEPRINT = "taskrun_metrics"


def metrics_blueprint(runner: TaskRunner, url: str, public: bool) -> Blueprint:
    """Return a blueprint serving ``runner``'s metrics at ``url``; connects the metrics now.

    :param public: skip the access check (see the module doc).
    """
    from taskrun.metrics import runner_metrics  # imports prometheus_client

    runner_metrics(runner)  # counting starts now, not at the first scrape
    blueprint = Blueprint(BLUEPRINT, __name__)
    blueprint.add_url_rule(url, "metrics", _metrics_view, methods=["GET"])
    if not public:
        guard(blueprint, lambda: current_app.extensions["taskrun"])
    return blueprint


def _metrics_view() -> Response:
    from taskrun.metrics import CONTENT_TYPE, runner_metrics

    text = runner_metrics(current_app.extensions["taskrun"]).render()
    response = Response(text, mimetype=None, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response
