"""How a runner starts where it is: its own hub thread, submit-only, at first use; fork safety.

:meth:`TaskRunner.start` picks the way (see :mod:`taskrun.modes`); this
module makes the mode, stops it, starts a runner lazily for an integration
that asked for it (:attr:`TaskRunner.autostart`), guards against a runner
inherited through ``fork()`` and words the errors of a runner that cannot
take a job here.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskrun.errors import ConfigError
from taskrun.hub_thread import HubThread
from taskrun.modes import DEV_MODE_WARNING, Mode, SubmitOnlyMode, ThreadedMode

if TYPE_CHECKING:  # the runner imports this module
    from taskrun.runner import TaskRunner

__all__ = [
    "guard_fork",
    "inert_message",
    "is_submit_only",
    "not_running_message",
    "start_at_first_use",
    "stop_mode",
    "submit_only",
    "threaded",
]

logger = logging.getLogger(__name__)

_warned_dev_mode = False


def not_running_message() -> str:
    """Say why a runner is not running in this process, and every way to start it."""
    return (
        f"the runner is not running in this process (pid {os.getpid()}); start it where "
        "requests are served: call runner.start() after any fork (under `flask run`, "
        "app.run(), waitress or gunicorn -k gthread it runs on a thread of its own), let the "
        "Flask extension start it at the first delay() (runner.init_app(app) with "
        "TASKRUN_AUTOSTART left True), serve with `taskrun serve module:app` or gunicorn "
        "-k taskrun.gunicorn.GeventWorker; in your app's tests set TASKRUN_EAGER=True "
        "(eager=True) to run jobs inline"
    )


def inert_message(reason: str) -> str:
    """Say why this process takes no job: ``reason`` (a watcher process, a forked child)."""
    return (
        f"this process (pid {os.getpid()}) runs no jobs and a job submitted here would never "
        f"run: {reason}"
    )


def threaded(runner: TaskRunner, setup: Callable[[], None]) -> None:
    """Start ``runner`` on a hub thread of its own: run ``setup`` there, install the mode.

    Warns once per process that this is a development mode (unless the jobs
    run on a broker's workers: then only the periodic timer lives there).

    :raises BaseException: what ``setup`` raised (the thread has ended; no mode is left).
    """
    global _warned_dev_mode
    thread = HubThread(f"taskrun-{runner.name or 'runner'}")
    mode = ThreadedMode(thread, runner._router, lambda: runner.is_running)
    runner._mode = mode
    try:
        thread.start(setup)
    except BaseException:
        runner._mode = None
        raise
    if runner.engine.is_remote:
        # Jobs run on the broker's workers; only the periodic timer lives on the thread.
        logger.info("taskrun keeps its periodic timer on a thread of its own (not gevent-patched)")
    elif not _warned_dev_mode:
        _warned_dev_mode = True
        logger.warning("%s", DEV_MODE_WARNING)


def submit_only(runner: TaskRunner) -> SubmitOnlyMode:
    """Open ``runner``'s shared store to submit and look up jobs only (``start(run_jobs=False)``).

    :raises ConfigError: if the runner's store is not a shared SQLite file.
    :raises StoreError: if the file cannot be opened.
    """
    from taskrun.stores.sqlite.store import SqliteStore
    from taskrun.stores.sqlite.submitter import SubmitClient  # sqlite3 only when asked for

    store = runner.store
    if not isinstance(store, SqliteStore):
        raise ConfigError(
            f"runner.start(run_jobs=False) submits jobs for the serving processes to run, so "
            f"it needs the store they share; this runner keeps its jobs in {store!r}, which "
            "no other process sees: give it the serving processes' store, "
            "TaskRunner(store='sqlite:////var/lib/app/taskrun.db') or TASKRUN_STORE "
            "(flask shell and other flask commands start the runner this way)"
        )
    max_arg_bytes = runner._router.settings.max_arg_bytes
    client = SubmitClient(store.path, runner.clock, runner.tasks.get, max_arg_bytes)
    client.open()
    return SubmitOnlyMode(client, runner._router)


def is_submit_only(mode: object) -> bool:
    """Return whether ``mode`` is the submit-only mode."""
    return isinstance(mode, SubmitOnlyMode)


def stop_mode(
    runner: TaskRunner, mode: Mode, stop_here: Callable[[float | None], None], timeout: float | None
) -> None:
    """Stop a runner that has a mode: on its hub thread (then end it), or close the store."""
    if isinstance(mode, ThreadedMode):
        thread = mode.thread
        if thread.is_current():
            stop_here(timeout)
        else:
            wait = None if timeout is None else timeout + 30.0
            thread.call(stop_here, timeout, timeout=wait)
        if isinstance(thread, HubThread):
            thread.stop()
    elif isinstance(mode, SubmitOnlyMode):
        runner._accepting = False
        runner._stopped = True
        mode.client.close()


def start_at_first_use(runner: TaskRunner) -> None:
    """Start ``runner`` if an integration asked to start it lazily and it never ran here.

    :raises TaskrunError: the start's own error, at the caller's ``delay()``.
    """
    start = runner.autostart
    if start is None or runner.eager or runner.is_running or runner._stopped or runner._inert:
        return
    with runner._start_lock:
        if not runner.is_running:
            start()


def guard_fork(runner: TaskRunner) -> None:
    """Make a child forked from a process whose runner ran on its own thread refuse jobs.

    The thread does not survive ``fork()``: without this, the child's jobs
    would wait PENDING for ever.  Start runners after fork (gunicorn's
    workers do, through the worker class, a ``post_fork`` hook or the Flask
    extension's start at first use).
    """
    _runners.add(runner)


_runners: weakref.WeakSet[TaskRunner] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    parent = os.getppid()
    for child in list(_runners):
        if not isinstance(child._mode, ThreadedMode):
            continue
        child._mode = None
        child._accepting = False
        child._inert = (
            f"its runner was started in process {parent} before that process forked, and its "
            "thread did not survive the fork; start the runner after fork (in each worker: "
            "the Flask extension starts it at the first delay(), or use gunicorn's post_fork "
            "hook or -k taskrun.gunicorn.GeventWorker)"
        )


os.register_at_fork(after_in_child=_after_fork_in_child)
