"""Start-up checks of how the process serves: each returns what is wrong and how to fix it.

The runner and the serving entry points call these once at start and log
each problem as a warning; none of them raises, patches or changes state.

* gevent's monkey-patching is missing: blocking calls (sockets, ``time.sleep``,
  locks) in jobs and views then stall every greenlet of the process.
* it came after modules had imported ``ssl`` names directly (``requests``
  through ``urllib3`` does): their HTTPS calls may fail with ``RecursionError``.
* several worker processes keep their jobs in memory each: a job's status
  polled through another worker is not found.
* the runner starts in the Werkzeug reloader's watcher process (``flask run
  --debug``), which serves nothing: its periodic jobs would run twice
  (``TaskRunner.start()`` then starts nothing there and refuses jobs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gevent import monkey

from taskrun.stores.memory import MemoryStore

logger = logging.getLogger(__name__)

_PATCH_FIX = (
    "serve the app with `taskrun serve module:app` or gunicorn "
    "`-k taskrun.gunicorn.GeventWorker`, or call "
    "gevent.monkey.patch_all() first thing in your entry point, before any other import"
)
#: Modules allowed to hold the original ``ssl.SSLContext``.
_SSL_OWNERS = frozenset({"ssl", "gevent.ssl", "gevent._ssl3", "gevent._sslgte279"})


def unpatched_problem() -> str | None:
    """Return why the process is not monkey-patched, or ``None`` if ``socket`` is patched."""
    if monkey.is_module_patched("socket"):
        return None
    return (
        "gevent has not monkey-patched this process (socket is unpatched), so a blocking "
        f"call in a job or a view stalls every other job and request; {_PATCH_FIX}"
    )


def late_ssl_modules() -> list[str]:
    """Return the modules that took ``ssl.SSLContext`` before gevent patched ``ssl``.

    Such a module (``urllib3.util.ssl_`` when ``requests`` was imported
    first) keeps the unpatched class.  Empty if ``ssl`` is not patched.
    Scans the loaded modules once: call it at start-up, not per request.
    """
    if not monkey.is_module_patched("ssl"):
        return []
    original = monkey.get_original("ssl", "SSLContext")
    found = []
    for name, module in list(sys.modules.items()):
        if name in _SSL_OWNERS or module is None:
            continue
        namespace: dict[str, Any] = getattr(module, "__dict__", {})
        if any(value is original for value in list(namespace.values())):
            found.append(name)
    return sorted(found)


def late_ssl_problem() -> str | None:
    """Return why ``ssl`` was patched too late, or ``None`` (see :func:`late_ssl_modules`)."""
    modules = late_ssl_modules()
    if not modules:
        return None
    return (
        f"gevent patched ssl after {modules!r} had imported it, so their HTTPS calls may "
        f"fail (RecursionError) or block; {_PATCH_FIX}"
    )


def shared_store_problem(store: object, workers: int) -> str | None:
    """Return why ``workers`` processes cannot share job status through ``store``, or ``None``.

    :param store: the runner's result store.
    :param workers: how many worker processes serve the app.
    """
    if workers <= 1 or not isinstance(store, MemoryStore):
        return None
    return (
        f"{workers} worker processes each keep their jobs in memory, so a job's status "
        "polled through another worker is not found; share one store between them: "
        'TaskRunner(store="sqlite:///path/to/taskrun.db")'
    )


def warn_about_patching() -> None:
    """Log a warning for a missing or late monkey-patch, or the reloader's watcher process.

    Called by ``TaskRunner.start()``.
    """
    for problem in (unpatched_problem(), late_ssl_problem(), reloader_parent_problem()):
        if problem is not None:
            logger.warning("%s", problem)


def reloader_parent_problem(
    environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None
) -> str | None:
    """Return why a runner must not start in this process, or ``None`` if it may.

    Under ``flask run --debug`` (or ``--reload``) the first process only
    watches files and restarts a child that serves (``WERKZEUG_RUN_MAIN=true``
    there); both import the app.  A runner started in the watcher runs every
    periodic job a second time and never serves a job's status.  Detected
    from flask's and werkzeug's environment variables and the ``flask run``
    command line; ``app.run(debug=True)`` starts the reloader only after
    your code ran, so there it cannot be told in advance.

    :param environ: the environment to inspect (default ``os.environ``).
    :param argv: the command line (default ``sys.argv``).
    """
    env = os.environ if environ is None else environ
    args = list(sys.argv if argv is None else argv)[1:]
    if env.get("WERKZEUG_RUN_MAIN") == "true" or env.get("FLASK_RUN_FROM_CLI") != "true":
        return None
    debug = env.get("FLASK_DEBUG", "").lower() not in {"", "0", "false", "no"}
    debug = debug or "--debug" in args
    reloads = "--reload" in args or (debug and "--no-reload" not in args)
    if "run" not in args or not reloads:
        return None
    return (
        "the runner is starting in the Werkzeug reloader's watcher process, which serves no "
        "requests: its periodic jobs would run twice and its jobs' status is never seen; start "
        "the runner only in the serving child (if os.environ.get('WERKZEUG_RUN_MAIN') == 'true'), "
        "run `flask run --no-reload`, or serve with `taskrun serve module:create_app()`"
    )
