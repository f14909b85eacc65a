"""An example Flask app whose background work runs on taskrun, inside the web server process.

It signs people up and emails them (SMTP, retried, sent once), makes
thumbnails of uploaded images (Pillow, on a thread), warms a cache every
five minutes (requests), and builds a report in the background while the
page polls for it.  Try it with ``python -m example_app``, which also runs
an SMTP server that saves the emails to a folder.  Serve it otherwise with::

    taskrun serve 'example_app:create_app()'
    gunicorn -k taskrun.gunicorn.GeventWorker example_app.wsgi:app

which do not start the SMTP server: run ``python -m example_app.mailsink
--port 8025 --dir instance/mail`` beside them, or the welcome emails retry
(5 times, with back-off) and then fail.

Configuration (``create_app(config)``, or ``FLASK_<KEY>`` environment
variables, e.g. ``FLASK_SMTP_PORT=2525`` or ``FLASK_TASKRUN_CONCURRENCY=50``):

``DATA_DIR``
    where the database, the uploads and (for ``python -m example_app``) the
    saved emails live; default: the app's instance folder.
``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_TIMEOUT``, ``MAIL_FROM``
    the SMTP server welcome emails go through (default ``127.0.0.1:8025``).
``THUMBNAIL_SIZE``
    the longest side of a thumbnail, in pixels (default 128).
``WARM_URLS``, ``BASE_URL``
    the pages the cache warmer fetches: ``WARM_URLS``, else the app's own
    pages under ``BASE_URL`` (its own address, when known), else none.
``REPORT_DELAY``
    seconds the report pretends to compute (default 2).
``TASKRUN_*``
    the runner's options, read by ``runner.init_app`` (see :mod:`taskrun.flask`);
    ``TASKRUN_STORE`` defaults to ``taskrun.db`` in ``DATA_DIR``, shared by
    every worker process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

DEFAULTS: dict[str, Any] = {
    "DATA_DIR": None,
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": 8025,
    "SMTP_TIMEOUT": 10.0,
    "MAIL_FROM": "welcome@example.test",
    "THUMBNAIL_SIZE": 128,
    "WARM_URLS": None,
    "BASE_URL": None,
    "REPORT_DELAY": 2.0,
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the app: config, database tables, folders, the runner, the views.

    Blocks briefly to create the SQLite tables and the data folders if they
    are missing.  Starts no runner, greenlet or socket: the serving entry
    point starts the runner in the process that serves requests.

    :param config: settings that win over the defaults and the environment.
    """
    # Imported here so that ``python -m example_app.mailsink`` stays light.
    from example_app import db
    from example_app.tasks import runner
    from example_app.views import bp

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env()
    app.config.update(config or {})
    data_dir = app.config["DATA_DIR"] or app.instance_path
    app.config["DATA_DIR"] = data_dir
    app.config.setdefault("DATABASE", os.path.join(data_dir, "example.db"))
    app.config.setdefault("UPLOAD_FOLDER", os.path.join(data_dir, "uploads"))
    app.config.setdefault("MAIL_DIR", os.path.join(data_dir, "mail"))
    # Jobs in a file every worker process shares: a status polled through any
    # worker is found, and jobs left unfinished at a restart run again.
    app.config.setdefault("TASKRUN_STORE", os.path.join(data_dir, "taskrun.db"))
    os.makedirs(app.config["UPLOAD_FOLDER"], exist_ok=True)

    db.init_app(app)
    runner.init_app(app)
    app.register_blueprint(bp)
    return app
