"""``TaskRunner``: the facade users hold; it owns the store, dispatcher and scheduler.

Example::

    from taskrun import TaskRunner

    runner = TaskRunner(concurrency=100)

    @runner.task(retries=3, timeout=30)
    def send_welcome(user_id: int) -> None: ...

    with runner:                     # start(); stop(timeout=30) on exit
        job = send_welcome.delay(42)
        job.get(timeout=5)

The runner makes its parts, starts and stops them in order, and answers for
them; the decorators are in :mod:`taskrun.registry`, the options in
:mod:`taskrun.settings`, and where each job goes in :mod:`taskrun.routing`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import gevent
from gevent import monkey
from gevent._hub_local import get_hub_if_exists
from gevent.hub import Hub, get_hub

from taskrun import signals, startup
from taskrun.checks import late_ssl_problem, reloader_parent_problem
from taskrun.clock import Clock, SystemClock
from taskrun.dispatcher import Dispatcher
from taskrun.engines.base import Engine
from taskrun.engines.local import LocalEngine
from taskrun.errors import ConfigError, RunnerNotRunning
from taskrun.hub_inbox import HubInbox
from taskrun.jobs import Job, JobState
from taskrun.machine import machine_periodic, machine_stats
from taskrun.modes import Mode, ThreadedMode
from taskrun.monitor import LoopMonitor
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.lock_paths import LockPathOption, leader_lock_path, lock_scope
from taskrun.periodic.policy import PeriodicInfo
from taskrun.registry import TaskRegistry
from taskrun.routing import JobRouter
from taskrun.scheduler import Scheduler
from taskrun.settings import RunnerSettings
from taskrun.stores.base import DEFAULT_MAX_ARG_BYTES, ResultStore, StoreQueries
from taskrun.stores.factory import make_store
from taskrun.tasks import Task
from taskrun.validation import DEFAULT, Default, seconds

logger = logging.getLogger(__name__)

#: The environment variable naming a broker when ``broker=`` is not given (read at start).
BROKER_ENV = "TASKRUN_BROKER_URL"
#: How often (seconds) :meth:`TaskRunner.join` looks whether the runner is idle.
JOIN_POLL = 0.001
#: What no hub is: ``TaskRunner._local_hub`` while submits do not go straight to the pool.
_NO_HUB = object()


class TaskRunner(TaskRegistry):
    """Runs tasks' jobs in a bounded gevent pool inside the current process.

    Declare tasks with :meth:`task` and :meth:`periodic`.  Construction has
    no side effects: no greenlets, threads, files or sockets exist until
    :meth:`start` (so a runner may live at module level and be imported in
    a gunicorn master).

    :param concurrency: the most jobs running at once.
    :param max_pending: the most jobs waiting for a free slot; past it
        ``delay`` raises :class:`~taskrun.errors.QueueFull`.
    :param max_scheduled: the most jobs waiting for their eta or a retry.
    :param result_ttl: seconds (or a ``timedelta``) a finished job's result stays retrievable.
    :param max_results: the most finished jobs kept (oldest out first).
    :param threads: threads for ``executor="thread"`` tasks (default: CPU count).
    :param eager: run every job inline at ``delay()`` (for tests of your app);
        needs no :meth:`start`, and keeps the jobs in memory, whatever the store.
    :param clock: the time source; pass a :class:`~taskrun.clock.ManualClock` in tests.
    :param name: the app's name; worker processes with the same name share
        one leader lock, so each periodic slot runs in one of them.  Default:
        derived at :meth:`start` from the names of the periodic tasks (which
        include their modules, e.g. ``shop.tasks.warm_cache``), so processes
        of one app share a lock and other apps of the same user do not; the
        default also tells deployments apart (:func:`~taskrun.periodic.lock_paths.lock_scope`):
        processes sharing a durable store share a leader, and without one,
        two checkouts of one app (by the app's root path) do not.  Give
        a name when the periodic tasks change between deploys, so that old
        and new workers still share one leader during a rolling restart.
    :param lock_path: the leader lock file (default:
        ``taskrun-<name>-<uid>.lock`` in ``$XDG_RUNTIME_DIR`` or in the
        private ``<tempdir>/taskrun-<uid>/``); it must be on a local
        filesystem.  ``None`` disables leader election: every process then
        runs the periodic jobs.
    :param store: where jobs are kept: ``None`` or ``"memory"`` (this
        process only), or a shared SQLite file, ``"sqlite:////var/lib/app/taskrun.db"``
        or a plain path, so that jobs survive crashes and deploys and every
        worker process sees every job (see :mod:`taskrun.stores.sqlite.store`); or a
        :class:`~taskrun.stores.base.ResultStore` object.
    :param max_arg_bytes: the largest a job's arguments may be once pickled
        (default 1 MB); past it ``delay`` raises
        :class:`~taskrun.errors.NotSerializable` naming the size.  Only a
        store that pickles arguments (the SQLite store) applies it: the
        memory store keeps the objects themselves.
    :param blocking_warning: seconds a greenlet job may hold the event loop
        before a warning names it (see :mod:`taskrun.monitor`); ``None`` for
        off.  Default: 0.5 under ``taskrun serve`` and the gunicorn worker,
        off elsewhere (your own server, tests).
    :param broker: a ``redis://`` URL: jobs then run on Celery workers started
        with ``taskrun worker`` (``pip install 'taskrun-gevent[celery]'``), and this
        process only submits and looks them up (and leads the periodic
        jobs); see :mod:`taskrun.engines.celery`.  Default: the environment
        variable ``TASKRUN_BROKER_URL`` if set (read at :meth:`start`), else none.
    :param broker_visibility_timeout: seconds after which Redis gives an
        unacknowledged job to another worker (a worker that died mid-job);
        longer countdowns, etas, retry waits and timeouts are refused.
    :raises ConfigError: for an out-of-range option.
    """

    def __init__(
        self,
        app: Any = None,
        *,
        concurrency: int = 100,
        max_pending: int = 10_000,
        max_scheduled: int = 100_000,
        result_ttl: float | timedelta = 3600,
        max_results: int = 100_000,
        threads: int | None = None,
        eager: bool = False,
        clock: Clock | None = None,
        name: str | None = None,
        lock_path: LockPathOption = DEFAULT,
        store: str | os.PathLike[str] | ResultStore | None = None,
        max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
        blocking_warning: float | None | Default = DEFAULT,
        broker: str | None = None,
        broker_visibility_timeout: float | timedelta = 3600.0,
    ) -> None:
        super().__init__()
        settings = RunnerSettings(
            concurrency=concurrency,
            max_pending=max_pending,
            max_scheduled=max_scheduled,
            result_ttl=seconds("result_ttl", result_ttl),
            max_results=max_results,
            threads=threads,
            eager=eager,
            name=name,
            lock_path=lock_path,
            store=store,
            max_arg_bytes=max_arg_bytes,
            blocking_warning=blocking_warning,
            broker=broker,
            broker_visibility_timeout=seconds(
                "broker_visibility_timeout", broker_visibility_timeout, positive=True
            ),
        )
        self.clock: Clock = clock or SystemClock()
        #: The app's directory (``app.root_path``, set by ``init_app``): part of the
        #: default leader lock name, so two deployments of one app lead apart.
        self.root_path: str | None = None
        job_store = self._make_store(settings)
        self._dispatcher = Dispatcher(
            settings.concurrency,
            settings.max_pending,
            settings.thread_count,
            job_store,
            self.clock,
            lambda job: self._router.retry_later(job),  # the router is made below
        )
        self._scheduler = Scheduler(self.clock, self._dispatcher, job_store)
        self._router = JobRouter(self._dispatcher, self._scheduler, self.clock, settings, job_store)
        #: Where every job not run inline goes: this process (or Celery workers, see start()).
        self._engine: Engine = LocalEngine(self._router)
        # Signals name the runner as their sender.
        self._dispatcher.sender = self._router.sender = self
        self._serving = False
        self._monitor: LoopMonitor | None = None
        # The default lock path is resolved in start(), once the periodic tasks
        # are declared, and the lock is opened there, after fork.
        self._leader: LeaderLock | None = None
        self._dashboard_auth: Callable[[Any], bool] | None = None
        self._accepting = False
        self._stopped = False
        #: Where the runner answers from when not the caller's hub (see taskrun.modes).
        self._mode: Mode | None = None
        #: Under gevent: the hub the runner started on, and how other threads reach it
        #: (the bodies of executor="thread" jobs); None before start and in a mode.
        self._hub: Hub | None = None
        #: That hub while jobs submitted on it go straight to the local engine, else a
        #: value no hub is: what submit() compares the caller's hub with, first.
        self._local_hub: object = _NO_HUB
        self._inbox: HubInbox | None = None
        self._other_threads: ThreadedMode | None = None
        self._start_lock = threading.RLock()
        #: Why this process must run no job (a reloader's watcher, a forked child).
        self._inert: str | None = None
        #: Set by integrations (the Flask extension): start at first use.
        self.autostart: Callable[[], None] | None = None
        startup.guard_fork(self)
        if app is not None:
            self.init_app(app)

    # -- options and integrations ----------------------------------------------

    @property
    def store(self) -> ResultStore:
        """Where jobs are kept (eager jobs excepted); change it with :meth:`configure`."""
        return self._router.store

    @property
    def name(self) -> str | None:
        """The app's name for the leader lock; set it before :meth:`start`."""
        return self._router.settings.name

    @property
    def _lock_path(self) -> LockPathOption:
        return self._router.settings.lock_path

    @property
    def eager(self) -> bool:
        """Whether jobs run inline at ``delay()``; set it before :meth:`start`."""
        return self._router.settings.eager

    @eager.setter
    def eager(self, value: bool) -> None:
        self.configure(eager=value)

    @property
    def max_scheduled(self) -> int:
        """The most jobs waiting for their eta or a retry; set it before :meth:`start`."""
        return self._router.settings.max_scheduled

    @max_scheduled.setter
    def max_scheduled(self, value: int) -> None:
        self.configure(max_scheduled=value)

    def configure(self, **options: Any) -> None:
        """Change options before :meth:`start` (used by integrations' config).

        Accepts every ``TaskRunner(...)`` option but ``clock`` (see
        :data:`taskrun.settings.CONFIGURABLE`); all or nothing: one bad
        option changes none.

        :raises ConfigError: if the runner is running, or for an unknown or
            out-of-range option.
        """
        if self._accepting:
            raise ConfigError(
                f"cannot change {', '.join(sorted(options))} of a running runner: "
                "call configure() before start(), or stop() first"
            )
        settings = self._router.settings.configured(**options)
        remake = {"store", "result_ttl", "max_results", "max_arg_bytes"}.intersection(options)
        store = self._make_store(settings) if remake else self.store
        self._router.use(settings, store)

    def _make_store(self, settings: RunnerSettings) -> ResultStore:
        return make_store(
            settings.store,
            self.clock,
            settings.result_ttl,
            settings.max_results,
            host=self,
            max_arg_bytes=settings.max_arg_bytes,
        )

    def init_app(self, app: Any) -> None:
        """Attach the runner to a Flask app (see :func:`taskrun.flask.init_app`).

        Reads ``TASKRUN_*`` config, stores state in ``app.extensions["taskrun"]``
        and runs every job inside ``app.app_context()``.  Starts nothing.
        """
        from taskrun.flask import init_app  # flask is an optional extra

        init_app(self, app)

    def set_job_context(self, factory: Callable[[], AbstractContextManager[Any]]) -> None:
        """Run every job (greenlet or thread) inside ``factory()``, e.g. an app context."""
        self._dispatcher.context = factory

    @property
    def job_context(self) -> Callable[[], AbstractContextManager[Any]]:
        """The factory every job runs inside (see :meth:`set_job_context`)."""
        return self._dispatcher.context

    def background(self, view: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Make a Flask view run as a job, answering ``202 Accepted`` with a ``Location``.

        Use as ``@runner.background`` or ``@runner.background(**task_options)``
        under ``@app.route``; see :func:`taskrun.flask.background`.
        """
        from taskrun.flask import background  # flask is an optional extra

        return background(self, view, **options)

    def dashboard_auth(self, check: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """Decide who may open the dashboard and the metrics endpoint: ``check(request)``.

        Use as a decorator on a function of the Flask request that returns
        whether to let it through; every request to those pages and their
        actions passes it.  Without one they answer 403 (a page that says
        how to set this), except while ``app.debug`` is on.

        Example::

            @runner.dashboard_auth
            def staff_only(request: flask.Request) -> bool:
                return current_user.is_authenticated and current_user.is_staff

        :returns: ``check``, unchanged.
        :raises ConfigError: if ``check`` is not callable.
        """
        if not callable(check):
            raise ConfigError(
                f"@runner.dashboard_auth needs a function of the request, got {check!r}"
            )
        self._dashboard_auth = check
        return check

    @property
    def dashboard_check(self) -> Callable[[Any], bool] | None:
        """The function set with :meth:`dashboard_auth`, or ``None``."""
        return self._dashboard_auth

    def serve_defaults(self) -> None:
        """Use the defaults of taskrun's own servers from the next :meth:`start` on.

        ``taskrun serve`` and the gunicorn worker call it: the blocking
        warning is then on at 0.5 s unless the app chose (``blocking_warning=``).
        """
        self._serving = True

    def periodic_jobs(self) -> list[PeriodicInfo]:
        """Return a snapshot of every periodic job: schedule, next and last run, counters.

        With a shared store that is open, last run, paused flag and leader
        come from the store and cover every process (``scope="machine"``);
        the counters are this process's.
        """
        leads = self._scheduler.is_leader
        infos = [entry.info(leads) for entry in self._periodic]
        store = self._views()
        return infos if store is None else machine_periodic(infos, store, leads)

    def _views(self) -> StoreQueries | None:
        """The store's operator views, once it is open (``None`` for eager or other stores)."""
        store = self.store
        if not self._accepting or self.eager or not isinstance(store, StoreQueries):
            return None
        return store

    # -- life cycle ----------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the runner accepts jobs."""
        return self._accepting

    def start(self, *, run_jobs: bool = True) -> TaskRunner:
        """Open the store, start the timer and the workers and begin accepting jobs; idempotent.

        Call it in the process that serves requests (after any fork).  All
        or nothing: a leader lock file that cannot be used fails before the
        store opens; if a later step fails (reading the periodic tasks' last
        slots from the store, starting the timer), what was started is
        stopped again (the store closed, its threads stopped and this
        process unregistered from it) and the original error raised; fix
        the cause and call it again.

        In a process that gevent has not patched (``flask run``,
        ``app.run()``, waitress, gunicorn ``-k gthread``) the runner lives on
        a thread and hub of its own (:mod:`taskrun.modes`), which any thread
        may submit to.  In the Werkzeug reloader's watcher process (``flask
        run --reload``) it starts nothing, logs why, and refuses jobs.

        :param run_jobs: ``False`` opens the shared store only to submit and
            look up jobs, for a shell, a cron script or a management command:
            no worker, timer, leader lock or process row; the jobs run in the
            serving processes.
        :returns: the runner, for chaining.
        :raises ConfigError: for a bad leader lock path, or ``run_jobs=False``
            without a shared store.
        :raises StoreError: if the store cannot be opened or read.
        """
        with self._start_lock:
            if self._accepting:
                return self
            if not run_jobs:
                broker = None if self.eager else self.broker_url
                if broker is not None:
                    self._open_broker(broker)  # jobs go to Celery; no timer, no leader
                else:
                    self._mode = startup.submit_only(self)
                self._accepting = True
                return self
            if not self.eager:
                problem = reloader_parent_problem()
                if problem is not None:
                    self._inert = problem
                    logger.warning("%s; taskrun starts nothing here", problem)
                    return self
                if (late := late_ssl_problem()) is not None:
                    logger.warning("%s", late)
                if not monkey.is_module_patched("socket"):
                    startup.threaded(self, self._start_here)
                    return self
            self._start_here()
        return self

    def _start_here(self) -> None:
        """Start the parts on the calling thread's hub (see :meth:`start`)."""
        lock_path = self._lock_path
        if not self.eager and lock_path is not None and self._periodic and self._leader is None:
            # Before the store opens: a lock that cannot be used leaves nothing open.
            self._leader = LeaderLock(self._default_leader_path(lock_path))
        broker = None if self.eager else self.broker_url
        if broker is not None:
            self._open_broker(broker)  # before the store: Redis down leaves nothing open
        self.store.open()
        try:
            self._dispatcher.open()
            if not self.eager:
                self._scheduler.start(self._engine, self._periodic, self._leader)
                self._start_monitor()
        except BaseException:
            self._undo_start()
            raise
        if self._mode is None and not self.eager:
            self._hub = get_hub()
            inbox = self._inbox = HubInbox(f"taskrun-{self.name or 'runner'}", keep_alive=False)
            self._other_threads = ThreadedMode(inbox, self._router, lambda: self._accepting)
        self._accepting = True
        self._stopped = False
        if self._hub is not None and not self._engine.is_remote:
            self._local_hub = self._hub
        logger.info("taskrun started: concurrency=%d", self._dispatcher.concurrency)
        if signals.runner_started.receivers:
            signals.send(signals.runner_started, self)

    @property
    def broker_url(self) -> str | None:
        """The broker jobs go to: ``broker=``, else ``$TASKRUN_BROKER_URL``, else ``None``."""
        return self._router.settings.broker or os.environ.get(BROKER_ENV) or None

    @property
    def engine(self) -> Engine:
        """Where jobs not run inline go: this process, or (once started with a broker) Celery."""
        return self._engine

    def _open_broker(self, url: str) -> None:
        """Make and open the Celery engine (celery is imported only here).

        :raises ConfigError: for a task option that Celery workers cannot hold
            (``max_running``, ``rate_limit``), or a bad ``TASKRUN_BROKER_URL``.
        :raises BrokerError: if Redis does not answer at ``url``.
        """
        from taskrun.engines.celery.engine import CeleryEngine, EngineConfig
        from taskrun.engines.celery.limits import check_tasks

        settings = self._router.settings.configured(broker=url)  # checks an environment URL
        check_tasks(self.tasks.values())
        config = EngineConfig(
            url,
            settings.name or "default",
            settings.result_ttl,
            settings.broker_visibility_timeout,
        )
        engine = CeleryEngine(config, self.clock, lambda: self.tasks, self)
        engine.open()
        self._engine = engine
        logger.info("taskrun sends its jobs to Celery workers on %s", engine.records.url_shown)

    @property
    def runs_jobs(self) -> bool:
        """Whether this process runs jobs (``False`` after ``start(run_jobs=False)``)."""
        return self._accepting and not startup.is_submit_only(self._mode)

    def _default_leader_path(
        self, lock_path: str | os.PathLike[str] | Default
    ) -> str | os.PathLike[str]:
        functions = [entry.task.fn for entry in self._periodic]
        scope = lock_scope(self.store, self.root_path, functions)
        names = (entry.task.name for entry in self._periodic)
        return leader_lock_path(lock_path, self.name, names, scope)

    def _start_monitor(self) -> None:
        threshold = self._router.settings.blocking_threshold(self._serving)
        if threshold is not None:
            self._monitor = LoopMonitor(
                threshold, self._dispatcher.job_running_in, self, self.clock.time
            )
            self._monitor.start()

    def _undo_start(self) -> None:
        """Stop what a failed :meth:`start` started; log, never raise, a failure to."""
        try:
            if self._monitor is not None:
                self._monitor.stop()
                self._monitor = None
            self._scheduler.stop()
            self._dispatcher.close()
            self._dispatcher.drain(0)
        finally:
            try:
                self.store.close()
            except Exception:
                logger.exception("taskrun could not close its store after a failed start")
            self._close_engine()

    def _close_engine(self) -> None:
        """Close a Celery engine's connections; jobs go to this process's pool again."""
        if self._engine.is_remote:
            engine, self._engine = self._engine, LocalEngine(self._router)
            engine.close()

    def stop(self, timeout: float | timedelta | None = 30.0) -> None:
        """Stop in order: timer, admission, drain running jobs, kill what is left.

        Blocks the calling greenlet up to about ``timeout`` seconds (or a
        ``timedelta``) while running and waiting jobs finish; jobs still
        running then are killed and, like due jobs still waiting for a free
        worker and scheduled jobs that never came due, marked CANCELLED (or
        handed back to a durable store) and logged.  A thread cannot be
        killed: a job whose body still runs in a thread is marked CANCELLED,
        never handed back (another process could then run it alongside),
        and its thread runs on; ``stop()`` does not wait for it.  The same
        goes for a job that survives being killed (it catches
        ``BaseException`` and goes on): after a bounded wait
        (:data:`~taskrun.dispatcher.KILL_WAIT` seconds) it is logged with its
        id and task, marked CANCELLED and left running; ``stop()`` returns
        and closes the store all the same.  Idempotent.

        :raises ConfigError: for a negative or non-numeric ``timeout``.
        """
        timeout = None if timeout is None else seconds("timeout", timeout)
        if not self._accepting:
            return
        mode = self._mode
        if mode is not None:
            try:
                startup.stop_mode(self, mode, self._stop_here, timeout)
            finally:
                self._mode = None
            return
        self._stop_here(timeout)

    def _stop_here(self, timeout: float | None) -> None:
        began = time.monotonic()
        self._local_hub = _NO_HUB
        self._accepting = False
        self._stopped = True
        if signals.runner_stopping.receivers:
            signals.send(signals.runner_stopping, self)
        unrun = self._scheduler.stop()
        self._dispatcher.close()
        unfinished = self._dispatcher.drain(timeout)
        left = unfinished + unrun
        # The unfinished were running (STARTED) or waited for a free worker (PENDING).
        waited = sum(job.state is JobState.PENDING for job in unfinished)
        settled = self._router.settle(left)
        if left:
            logger.warning(
                "taskrun stopped with %d job(s) unfinished after %.1f s, %d due job(s) still "
                "waiting for a free worker and %d scheduled job(s) not yet due; %d handed back "
                "to the store, %d cancelled%s: %s",
                len(unfinished) - waited,
                time.monotonic() - began,
                waited,
                len(unrun),
                settled.handed_back,
                settled.cancelled,
                f" ({settled.in_threads} still running in a thread, which runs on: cancelled, "
                "not handed back, so that no other process runs them meanwhile)"
                if settled.in_threads
                else "",
                ", ".join(f"{job.id} ({job.name})" for job in left[:20]),
            )
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        self.store.close()
        self._close_engine()
        inbox, self._inbox, self._other_threads, self._hub = self._inbox, None, None, None
        if inbox is not None:
            inbox.close()
        logger.info("taskrun stopped in %.1f s", time.monotonic() - began)
        if signals.runner_stopped.receivers:
            signals.send(signals.runner_stopped, self)

    def join(self, timeout: float | timedelta | None = None) -> bool:
        """Wait until no job is pending or running and none is due now; for tests.

        Jobs due later (a countdown, a retry, a periodic slot) do not count
        until they come due: with a :class:`~taskrun.clock.ManualClock`,
        ``clock.advance(...)`` then ``runner.join()`` runs what came due, to the end.
        Blocks the calling greenlet only; ``timeout`` is real time, whatever the clock.

        :param timeout: seconds (or a ``timedelta``) to wait; ``None``: as long as it takes.
        :returns: ``True`` once idle, ``False`` if ``timeout`` passed first.
        :raises ConfigError: for a negative or non-numeric ``timeout``.
        """
        limit = None if timeout is None else seconds("timeout", timeout)
        deadline = None if limit is None else time.monotonic() + limit
        # A thread with no hub (the runner on a thread of its own) sleeps for real.
        sleep = gevent.sleep if get_hub_if_exists() is not None else time.sleep
        is_idle = self._router.is_idle
        mode = self._away()
        if isinstance(mode, ThreadedMode):
            # Asked on the runner's own hub: from another thread a periodic slot
            # between leaving the timer and reaching the pool would look idle.
            thread, here = mode.thread, self._router.is_idle

            def is_idle() -> bool:
                return thread.call(here)

        sleep(0)  # let what was just submitted or woken start
        while not is_idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            sleep(JOIN_POLL)
        return True

    def stop_now(self) -> None:
        """Cut a :meth:`stop` in progress short: the jobs still running are killed at once.

        For a second shutdown signal while the first one's ``stop()`` drains:
        that ``stop()`` kills, cancels and logs what is left, then returns.
        Never blocks; any greenlet may call it.  While the runner is running it
        does nothing (use ``stop(timeout=0)``).
        """
        if not self._accepting:
            self._dispatcher.hurry()

    def __enter__(self) -> TaskRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- jobs ------------------------------------------------------------

    def submit(
        self,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
        eta: float | None = None,
        *,
        unique_key: str | None = None,
        expires: float | datetime | None = None,
    ) -> Job[Any]:
        """Accept one job of ``task``; used by ``Task.delay``/``apply_async``. Never blocks.

        :param unique_key: return the unfinished job of ``task`` with this key, if any.
        :param expires: seconds from now, or an aware datetime, after which the
            job, if not started, never runs.

        :raises RunnerNotRunning: if the runner is not started (and not eager).
        :raises QueueFull: if the backlog (or the scheduled set) is full.
        """
        if get_hub_if_exists() is self._local_hub:
            # The common case, kept short: the local engine's submit, on the runner's hub.
            return self._router.submit(
                task, args, kwargs, countdown, eta, unique_key=unique_key, expires=expires
            )
        mode = self._mode
        if self._accepting:
            if self._engine.is_remote:  # to remote workers, from any thread
                return self._engine.submit(
                    task, args, kwargs, countdown, eta, unique_key=unique_key, expires=expires
                )
            if mode is None:
                mode = self._other_threads  # a thread job's body, or eager (None)
        if not self._accepting and not self.eager:
            startup.start_at_first_use(self)
            mode = self._mode
        if mode is not None and self._accepting and not mode.here():
            job = self._router.new_job(task, args, kwargs, countdown, eta, unique_key, expires)
            return mode.submit(job)
        if not self._accepting and not self.eager:
            if self._inert is not None:
                why = startup.inert_message(self._inert)
                raise RunnerNotRunning(f"cannot run {task.name}: {why}")
            if self._stopped:
                raise RunnerNotRunning(
                    f"cannot run {task.name}: the runner was stopped and accepts no more jobs; "
                    "submit jobs before runner.stop(), or call runner.start() again"
                )
            raise RunnerNotRunning(f"cannot run {task.name}: {startup.not_running_message()}")
        return self._router.submit(
            task, args, kwargs, countdown, eta, unique_key=unique_key, expires=expires
        )

    def _away(self) -> Mode | None:
        """Return how the caller reaches the runner, or ``None`` if it runs on the runner's hub."""
        mode = self._mode
        if mode is None:
            mode = self._other_threads
        return mode if mode is not None and not mode.here() else None

    def job(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or aged out.

        Any greenlet or thread may call it, e.g. a status view in a later request.
        """
        if not self._accepting:
            startup.start_at_first_use(self)
        if self._engine.is_remote:
            return self._engine.get(job_id)
        mode = self._away()
        if mode is not None:
            return mode.job(job_id)
        return self._engine.get(job_id)

    def resume_job(self, job: Job[Any]) -> bool:
        """Queue a job taken over by a durable store from a dead or stopped process.

        A PENDING job goes to the pool, a SCHEDULED or RETRY one to the timer.

        :returns: ``False`` if there is no room, or the runner is not running
            or eager (the store hands the job back).
        """
        return self._accepting and self._router.resume(job)

    def cancel_job(self, job: Job[Any]) -> bool:
        """Cancel ``job`` (see :meth:`Job.cancel`); return whether it was unfinished."""
        if self._engine.is_remote:
            return self._engine.cancel(job)
        mode = self._away()
        if mode is not None:
            return bool(mode.cancel(job))
        return self._engine.cancel(job)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job accepted so far is durable and visible to other processes.

        See :meth:`ResultStore.flush`; any thread may call it.

        :returns: ``False`` if ``timeout`` seconds passed first.
        """
        mode = self._away()
        if mode is not None:
            return bool(mode.flush(timeout))
        return self.store.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Return counts for monitoring: jobs per state, backlog, running, totals.

        With a shared store, ``states`` counts every process's jobs (on the
        store's state index, no rows read), ``processes`` lists each process's pid, host,
        heartbeat age, running and waiting jobs, and ``leader`` is the pid
        leading the periodic jobs; ``scope`` says ``"machine"``.  Otherwise
        ``scope`` is ``"process"`` and the counts are this process's.
        ``backlog``, ``running``, ``scheduled`` and the totals are always this
        process's.  With a broker, ``broker`` adds what Redis can tell: its URL
        (no password), the queue, how many jobs wait in it and the workers
        whose heartbeat it holds.  Any thread may call it.
        """
        mode = self._away()
        if isinstance(mode, ThreadedMode):
            return mode.thread.call(self._stats_here)
        return self._stats_here()

    def _stats_here(self) -> dict[str, Any]:
        broker_stats = getattr(self._engine, "stats", None)  # the Celery engine's
        if broker_stats is not None:
            # Redis knows the queue and the workers; the job counts are this process's.
            return {
                **self._router.stats(),
                "scope": "process",
                "pid": os.getpid(),
                "broker": broker_stats(),
            }
        store = self._views()
        if store is None or not store.is_shared:
            return {**self._router.stats(), "scope": "process", "pid": os.getpid()}
        leads = self._scheduler.is_leader and bool(self._periodic)
        return machine_stats(self._router.stats(states={}), store, leads, self.clock.time())
