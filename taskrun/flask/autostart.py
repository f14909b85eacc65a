"""Start a Flask app's runner at its first use in a process, the way that process needs.

With ``runner.init_app(app)`` (and ``TASKRUN_AUTOSTART`` left ``True``) the
first ``delay()``, ``apply_async()`` or ``runner.job()`` in a process whose
runner is not started starts it there:

* in a process that serves requests (``flask run``, ``app.run()``, waitress,
  gunicorn ``-k gthread`` or ``-k gevent``): it runs jobs, on a thread of its
  own if gevent has not patched the process (see :mod:`taskrun.modes`);
* in ``flask shell`` and any other ``flask`` command but ``run`` (click's
  context tells): it only submits and looks up jobs in the shared store
  (``runner.start(run_jobs=False)``), and the serving processes run them;
  with the memory store that is a :class:`~taskrun.errors.ConfigError`.

Being lazy, the start happens after any fork: a gunicorn master, which
serves no request, never starts a runner.  ``taskrun serve`` and the
gunicorn worker class start the runner themselves, as before.  A runner
that cannot start raises the start's error at that ``delay()``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the runner imports this package lazily (runner.init_app)
    from taskrun.runner import TaskRunner

__all__ = ["autostart", "cli_command"]

logger = logging.getLogger(__name__)


def cli_command() -> str | None:
    """Return the ``flask`` command running on this thread (``"flask shell"``), if not ``run``.

    ``None`` outside a click command (e.g. on a request thread, or under a
    WSGI server) and under ``flask run``, whose process serves requests.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name == "run":
        return None
    from flask.cli import AppGroup

    root = ctx.find_root().command
    if not isinstance(root, AppGroup) and os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return None
    return ctx.command_path


def autostart(runner: TaskRunner) -> None:
    """Start ``runner`` for this process: submit-only under a ``flask`` command but ``run``.

    :raises TaskrunError: the start's error (e.g. ``ConfigError`` for a
        submit-only start without a shared store).
    """
    command = cli_command()
    if command is None:
        logger.info("taskrun: starting the runner at its first use in process %d", os.getpid())
        runner.start()
        return
    logger.info(
        "taskrun: %r runs no jobs; submitting to the shared store for the serving processes",
        command,
    )
    runner.start(run_jobs=False)
