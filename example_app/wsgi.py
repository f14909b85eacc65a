"""The example app as a module-level WSGI app, for servers that import one.

::

    gunicorn -k taskrun.gunicorn.GeventWorker --bind 127.0.0.1:8000 example_app.wsgi:app
    taskrun serve example_app.wsgi:app

Configure it through ``FLASK_<KEY>`` environment variables (see :mod:`example_app`).
The worker (or ``taskrun serve``) finds the runner in ``app.extensions["taskrun"]``
and starts it in the serving process.
"""

from __future__ import annotations

from example_app import create_app

app = create_app()
