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
serves requests, or else the first ``delay()`` there does (submit-only in
``flask shell`` and other ``flask`` commands; see
:mod:`taskrun.flask.autostart`; ``TASKRUN_AUTOSTART = False`` turns it off).

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

The package: :mod:`taskrun.flask.extension` (``init_app`` and the
``TASKRUN_*`` config), :mod:`taskrun.flask.background` (background views)
and :mod:`taskrun.flask.status` (the status endpoint); their public names
are re-exported here.

The status endpoint shows any job of the
runner, by id, to anyone who has the id; ids are unguessable (128 random
bits).  To restrict it, add a ``before_request`` hook to the ``taskrun``
blueprint: ``app.blueprints["taskrun"].before_request(check_login)``.
"""

from __future__ import annotations

from taskrun.flask.background import RequestData as RequestData
from taskrun.flask.background import background as background
from taskrun.flask.extension import init_app as init_app
from taskrun.flask.extension import read_config as read_config
from taskrun.flask.status import accepted_response as accepted_response
from taskrun.flask.status import job_status as job_status
from taskrun.flask.status import status_url as status_url
