"""The example app as a module-level WSGI app, for servers that import one.

::

    gunicorn -k taskrun.gunicorn.GeventWorker --bind 127.0.0.1:8000 example_app.wsgi:app
    taskrun serve example_app.wsgi:app

These serve the app alone: the SMTP sink that ``python -m example_app`` (and
``bash dev.sh demo``) starts beside it is not started, so a welcome email
retries (5 times, with back-off) and then fails unless an SMTP server listens
on ``SMTP_HOST``:``SMTP_PORT`` (default ``127.0.0.1:8025``).  Start one with
``python -m example_app.mailsink --port 8025 --dir instance/mail``.  Configure
the app through ``FLASK_<KEY>`` environment variables (see :mod:`example_app`).
The worker (or ``taskrun serve``) finds the runner in ``app.extensions["taskrun"]``
and starts it in the serving process.
"""

from __future__ import annotations

from example_app import create_app

app = create_app()
