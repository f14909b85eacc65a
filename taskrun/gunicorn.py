"""gunicorn integration: a gevent worker that runs the app's jobs, and hooks for other workers.

The whole deployment change is the worker class::

    gunicorn -k taskrun.gunicorn.GeventWorker -w 4 --graceful-timeout 30 myapp:app

The master patches sockets, ``ssl``, ``time`` and ``select`` with gevent
before gunicorn imports a ``--preload`` app (:meth:`GeventWorker.setup`), so
``--preload`` is safe with apps that import ``requests``; each worker process
completes the patch after fork, loads the app (or inherits the preloaded
one), finds its :class:`~taskrun.runner.TaskRunner` (see
:func:`taskrun.loading.find_runner`) and starts it.  Nothing runs in the
master: no greenlet, thread or runner.  The worker installs no signal handler
of its own; it extends gunicorn's:

* ``SIGTERM`` (graceful stop, also sent by a reload): in-flight requests
  finish, then jobs drain within what is left of ``graceful_timeout``
  while the worker keeps telling the master it is alive.
* ``max_requests`` recycling: jobs drain within ``$TASKRUN_RECYCLE_GRACE``
  seconds (default 10, never beyond ``graceful_timeout``), heartbeat kept,
  so the worker is not aborted as a timeout.  The budget is short because
  a draining worker no longer accepts requests and gunicorn starts its
  replacement only once it has exited.
* ``SIGQUIT``/``SIGINT`` (quick exit): running jobs are killed at once.
* a lost master (killed, say, by ``SIGKILL``): the orphaned worker notices
  at its next heartbeat, stops accepting connections first, finishes its
  requests, then drains its jobs within ``$TASKRUN_RECYCLE_GRACE``.

Jobs still running at the deadline are killed, marked CANCELLED and logged.

A runner that cannot start (a store it cannot open, a bad ``lock_path``)
makes the worker exit with gunicorn's boot-error code
(:data:`WORKER_BOOT_ERROR`) after one log line naming the cause and the fix:
the master then stops with "Worker failed to boot" instead of booting
replacements that fail the same way, for ever.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

import gevent
from gevent import monkey
from gunicorn.arbiter import Arbiter
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from taskrun import multiproc
from taskrun.checks import shared_store_problem
from taskrun.errors import TaskrunError
from taskrun.loading import find_runner, no_runner_message, split_target
from taskrun.runner import TaskRunner

logger = logging.getLogger(__name__)

#: The environment variable giving the drain budget of a ``max_requests`` recycle.
RECYCLE_GRACE_ENV = "TASKRUN_RECYCLE_GRACE"
DEFAULT_RECYCLE_GRACE = 10.0
#: Longest pause between heartbeats while jobs drain.
HEARTBEAT = 1.0
#: Logged (through gunicorn's error log, at info level) once a worker's runner has started.
RUNNER_STARTED = "taskrun runner started in worker %s"
#: What :meth:`GeventWorker.setup` leaves unpatched in the master (``monkey.patch_all``
#: arguments): gevent's forms would stop gunicorn supervising its workers.
MASTER_UNPATCHED = ("os", "signal", "subprocess", "thread", "queue")
#: The exit code that tells gunicorn's master a worker failed to boot (it then stops).
WORKER_BOOT_ERROR: int = Arbiter.WORKER_BOOT_ERROR
#: Logged (at error level) when a worker's runner cannot start; the worker then exits.
RUNNER_FAILED = "taskrun runner cannot start in worker %s, so the worker exits: %s"


def recycle_grace(graceful_timeout: float) -> float:
    """Return the seconds a recycled worker gives its jobs: ``$TASKRUN_RECYCLE_GRACE``.

    Default 10, capped at ``graceful_timeout``; a bad value is logged and
    the default used.  Reads the environment when called.
    """
    text = os.environ.get(RECYCLE_GRACE_ENV, "").strip()
    grace = DEFAULT_RECYCLE_GRACE
    if text:
        try:
            given = float(text)
        except ValueError:
            given = math.nan
        if math.isfinite(given) and given >= 0:
            grace = given
        else:
            logger.warning(
                "%s=%r is not a number of seconds >= 0; using %s s (e.g. %s=10)",
                RECYCLE_GRACE_ENV,
                text,
                DEFAULT_RECYCLE_GRACE,
                RECYCLE_GRACE_ENV,
            )
    return min(grace, graceful_timeout)


def route_logs(log: Any) -> bool:
    """Send the ``taskrun`` loggers' records to gunicorn's error log, unless the app set up logging.

    Attaches the handlers of gunicorn's error log (its file, format and
    ``--log-level``) to the ``taskrun`` logger when neither it nor the root
    logger has a handler; otherwise leaves logging alone.  Without this,
    taskrun's INFO lines (the ``taskrun.jobs`` lifecycle, start and stop)
    were dropped and its warnings printed bare, without time, level or pid.

    :param log: the worker's ``log`` (gunicorn's ``glogging.Logger``).
    :returns: whether the handlers were attached.
    """
    ours = logging.getLogger("taskrun")
    error_log = getattr(log, "error_log", None)
    if ours.handlers or logging.getLogger().handlers or not isinstance(error_log, logging.Logger):
        return False
    for handler in error_log.handlers:
        ours.addHandler(handler)
    ours.setLevel(error_log.level)
    return True


def _find_worker_runner(worker: Any) -> TaskRunner | None:
    """Find the runner of the app a gunicorn worker has loaded, or log why there is none."""
    target = getattr(worker.app, "app_uri", None) or ""
    module_name = split_target(target)[0] if target else None
    runner = find_runner(worker.wsgi, module_name)
    if runner is None:
        logger.warning("%s; jobs will not run in this worker", no_runner_message(target))
        return None
    problem = shared_store_problem(runner.store, int(worker.cfg.workers))
    if problem is not None:
        logger.warning("%s", problem)
    return runner


def _start_worker_runner(worker: Any, runner: TaskRunner) -> None:
    """Start ``runner`` in ``worker``; if it cannot start, log why and exit as a boot error.

    :raises SystemExit: with :data:`WORKER_BOOT_ERROR`, so that the master
        stops instead of booting replacements that would fail the same way.
    """
    runner.serve_defaults()  # the blocking warning on at 0.5 s unless the app chose
    try:
        runner.start()
    except TaskrunError as error:
        # One line, through gunicorn's error log: the message names the fix.
        worker.log.error(RUNNER_FAILED, worker.pid, error)
        sys.exit(WORKER_BOOT_ERROR)
    worker.log.info(RUNNER_STARTED, worker.pid)


@contextlib.contextmanager
def _union_patch_allowed() -> Iterator[None]:
    # gevent warns when patch_all() is called again with other arguments
    # (it then patches the union of both); patching in two steps is the point.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Patching more than once", category=monkey.MonkeyPatchWarning
        )
        yield


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gevent worker, running the app's :class:`TaskRunner` in each worker process.

    Use it with ``-k taskrun.gunicorn.GeventWorker``.  The runner is found
    when the app loads (a bad ``$TASKRUN_RUNNER`` stops the worker from
    booting) and started right before serving; it is stopped after the
    last request, with the budget described in :mod:`taskrun.gunicorn`.
    """

    @classmethod
    def setup(cls) -> None:
        """Monkey-patch the master with gevent before gunicorn imports a ``--preload`` app.

        gunicorn calls this classmethod in the master, before it preloads the
        app (and again on each ``SIGHUP`` reload; a repeat is a no-op).
        gunicorn's own gevent worker patches only in each worker, after fork:
        a preloaded app has by then taken the unpatched ``ssl`` (``requests``
        through ``urllib3`` does), so its HTTPS calls may fail with
        ``RecursionError``, and names it imported from ``socket`` or ``time``
        block every greenlet.

        The master is patched in all but :data:`MASTER_UNPATCHED`: those
        would stop gunicorn supervising its workers (its master loop blocks on
        a queue made before this runs, so with gevent's ``SIGCHLD`` handling
        a dead worker went unnoticed, and its control-socket thread, turned
        into a greenlet, never ran).  :meth:`patch` completes the patch in
        each worker after fork.  Also makes the directory the workers' metrics
        are summed in (:func:`taskrun.multiproc.prepare`).  Starts nothing:
        no greenlet, thread or runner.
        """
        with _union_patch_allowed():
            monkey.patch_all(**dict.fromkeys(MASTER_UNPATCHED, False))
        multiproc.prepare()  # metrics summed over the workers (see taskrun.multiproc)

    def patch(self) -> None:
        """Complete the patch in the worker, after fork; gunicorn calls it first thing there."""
        with _union_patch_allowed():
            super().patch()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stop_asked_at: float | None = None
        self._term_at: float | None = None
        self._quick_exit = False
        #: The runner found for the app, once loaded (``None`` if there is none).
        self.runner: TaskRunner | None = None
        super().__init__(*args, **kwargs)

    @property
    def alive(self) -> bool:
        """Whether the worker keeps serving; gunicorn sets it false to stop the worker."""
        return bool(self.__dict__.get("_alive", False))

    @alive.setter
    def alive(self, value: bool) -> None:
        # gunicorn flips this for every kind of stop (signal, max_requests,
        # reload); the drain budget counts from the first flip.
        if not value and self.alive and self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
        self.__dict__["_alive"] = value

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM: stop gracefully; jobs get what is left of ``graceful_timeout``."""
        if self._term_at is None:
            self._term_at = time.monotonic()
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        """SIGQUIT/SIGINT: exit quickly; running jobs are killed at once."""
        self._quick_exit = True
        super().handle_quit(sig, frame)

    def load_wsgi(self) -> None:
        """Load the app (after patching, in the worker), then find its runner.

        taskrun's log lines go to gunicorn's error log if the app did not
        set up logging (see :func:`route_logs`).
        """
        super().load_wsgi()
        route_logs(self.log)
        self.runner = _find_worker_runner(self)

    def run(self) -> None:
        """Start the runner, serve until told to stop, then drain the jobs.

        :raises SystemExit: with :data:`WORKER_BOOT_ERROR` if the runner
            cannot start (logged once, naming the cause and the fix).
        """
        if self.runner is not None:
            multiproc.worker_started()
            _start_worker_runner(self, self.runner)
        try:
            super().run()
        finally:
            if self.runner is not None:
                self._stop_runner(self.runner)
                multiproc.worker_exited()

    def notify(self) -> None:
        """Tell the master this worker is alive; if the master is gone, stop serving.

        gunicorn's own gevent worker exits from here at once when its parent
        changes, while still listening and with its jobs running.  This one
        only asks the serving loop to stop: the listening sockets close first,
        requests in flight finish, then the jobs drain (within
        ``$TASKRUN_RECYCLE_GRACE``).
        """
        # Skip gunicorn's GeventWorker.notify (it calls sys.exit); keep the heartbeat.
        super(_GunicornGeventWorker, self).notify()
        if self.ppid != os.getppid() and self.alive:
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False

    def drain_budget(self) -> float:
        """Return the seconds left for jobs to finish, from now.

        After SIGTERM: what is left of ``graceful_timeout`` (less a moment to
        exit before the master's SIGKILL); after any other stop (e.g.
        ``max_requests``): :func:`recycle_grace` from when it was asked.
        """
        now = time.monotonic()
        graceful = float(self.cfg.graceful_timeout)
        if self._term_at is not None:
            deadline = self._term_at + graceful - min(1.0, graceful * 0.2)
        else:
            deadline = (self._stop_asked_at or now) + recycle_grace(graceful)
        return max(0.0, deadline - now)

    def _stop_runner(self, runner: TaskRunner) -> None:
        if self._quick_exit:
            runner.stop(timeout=0)
            return
        budget = self.drain_budget()
        logger.info("worker %s: letting jobs finish within %.1f s", self.pid, budget)
        beat = min(HEARTBEAT, self.timeout / 2) if self.timeout else HEARTBEAT
        stopper = gevent.spawn(runner.stop, round(budget, 2))
        try:
            while not stopper.ready():
                self.notify()  # the master aborts a worker that stays silent
                stopper.join(timeout=beat)
        except BaseException:
            # A quick exit (SIGQUIT) while draining: kill now.
            runner.stop_now()
            stopper.join(timeout=10)
            raise


# -- hooks, for users who keep their own worker class ---------------------------


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: start the app's runner in a worker that has loaded the app.

    For a gevent-based worker class of your own; put in ``gunicorn.conf.py``::

        from taskrun.gunicorn import post_worker_init, worker_exit, worker_int

    Limits compared with :class:`GeventWorker`: ``worker_exit`` runs after
    the worker's heartbeat has stopped and without knowing how much of
    ``graceful_timeout`` the requests used, so its drain is capped at
    ``min($TASKRUN_RECYCLE_GRACE, graceful_timeout, timeout - 1)`` and may
    still be cut short by the master's SIGKILL.
    """
    route_logs(worker.log)
    runner = _find_worker_runner(worker)
    worker.taskrun_runner = runner
    if runner is not None:
        _start_worker_runner(worker, runner)


def worker_int(worker: Any) -> None:
    """gunicorn hook: on SIGINT/SIGQUIT kill the worker's running jobs at once."""
    runner = getattr(worker, "taskrun_runner", None)
    if isinstance(runner, TaskRunner):
        runner.stop(timeout=0)


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: let the worker's jobs finish within a capped budget, then kill them.

    Blocks up to ``min($TASKRUN_RECYCLE_GRACE, graceful_timeout, timeout - 1)``
    seconds (see :func:`post_worker_init` for why it is capped).
    """
    runner = getattr(worker, "taskrun_runner", None)
    if isinstance(runner, TaskRunner):
        cfg = worker.cfg
        budget = recycle_grace(float(cfg.graceful_timeout))
        if cfg.timeout:
            budget = min(budget, max(0.0, float(cfg.timeout) - 1.0))
        runner.stop(timeout=budget)
