"""``TaskRunner``: the facade users hold; it owns the store, dispatcher and scheduler.

Example::

    from taskrun import TaskRunner

    runner = TaskRunner(concurrency=100)

    @runner.task(retries=3, timeout=30)
    def send_welcome(user_id: int) -> None: ...

    with runner:                     # start(); stop(timeout=30) on exit
        job = send_welcome.delay(42)
        job.get(timeout=5)
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from taskrun.checks import warn_about_patching
from taskrun.clock import Clock, SystemClock
from taskrun.dispatcher import Dispatcher
from taskrun.errors import ConfigError, QueueFull, RunnerNotRunning
from taskrun.jobs import Job, JobState
from taskrun.leader import LeaderLock, default_lock_path
from taskrun.options import Executor, TaskOptions
from taskrun.periodic import PeriodicEntry, PeriodicInfo
from taskrun.scheduler import Scheduler
from taskrun.schedules import Schedule
from taskrun.store import MemoryStore, ResultStore
from taskrun.tasks import Task

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _positive_int(name: str, value: object, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}; {hint}")
    return value


class _Default:
    """The type of :data:`DEFAULT`, a marker for "derive this option"."""


DEFAULT = _Default()


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


class TaskRunner:
    """Runs tasks' jobs in a bounded gevent pool inside the current process.

    Construction has no side effects: no greenlets, threads, files or
    sockets exist until :meth:`start` (so a runner may live at module level
    and be imported in a gunicorn master).

    :param concurrency: the most jobs running at once.
    :param max_pending: the most jobs waiting for a free slot; past it
        ``delay`` raises :class:`~taskrun.errors.QueueFull`.
    :param max_scheduled: the most jobs waiting for their eta or a retry.
    :param result_ttl: seconds a finished job's result stays retrievable.
    :param max_results: the most finished jobs kept (oldest out first).
    :param threads: threads for ``executor="thread"`` tasks (default: CPU count).
    :param eager: run every job inline at ``delay()`` (for tests of your app).
    :param clock: the time source; pass a :class:`~taskrun.clock.ManualClock` in tests.
    :param name: the app's name; worker processes with the same name share
        one leader lock, so each periodic slot runs in one of them.
    :param lock_path: the leader lock file (default: derived from ``name``
        in the user's runtime or temp directory); it must be on a local
        filesystem.  ``None`` disables leader election: every process then
        runs the periodic jobs.
    :param store: where jobs are kept: ``None`` or ``"memory"`` (this
        process only), or a shared SQLite file, ``"sqlite:///var/lib/app/taskrun.db"``
        or a plain path, so that jobs survive crashes and deploys and every
        worker process sees every job (see :mod:`taskrun.sqlite_store`); or a
        :class:`~taskrun.store.ResultStore` object.
    :raises ConfigError: for an out-of-range option.
    """

    def __init__(
        self,
        app: Any = None,
        *,
        concurrency: int = 100,
        max_pending: int = 10_000,
        max_scheduled: int = 100_000,
        result_ttl: float = 3600,
        max_results: int = 100_000,
        threads: int | None = None,
        eager: bool = False,
        clock: Clock | None = None,
        name: str = "taskrun",
        lock_path: str | os.PathLike[str] | None | _Default = DEFAULT,
        store: str | os.PathLike[str] | ResultStore | None = None,
    ) -> None:
        _positive_int("concurrency", concurrency, "e.g. concurrency=100")
        _non_negative_int("max_pending", max_pending)
        _positive_int("max_scheduled", max_scheduled, "e.g. max_scheduled=100_000")
        _positive_int("max_results", max_results, "e.g. max_results=100_000")
        if not isinstance(result_ttl, int | float) or result_ttl < 0:
            raise ConfigError(f"result_ttl must be seconds >= 0, got {result_ttl!r}")
        if threads is None:
            threads = os.cpu_count() or 4
        threads = _positive_int("threads", threads, "e.g. threads=4")
        self.eager = eager
        self.max_scheduled = max_scheduled
        self.clock: Clock = clock or SystemClock()
        self._result_ttl = result_ttl
        self._max_results = max_results
        self.store: ResultStore = self._make_store(store)
        self._tasks: dict[str, Task[..., Any]] = {}
        self._dispatcher = Dispatcher(
            concurrency, max_pending, threads, self.store, self.clock, self._schedule
        )
        self._scheduler = Scheduler(self.clock, self._dispatcher, self.store, self)
        self.name = name
        # Only a path is resolved here: the lock is opened in start(), after fork.
        self._lock_path = default_lock_path(name) if isinstance(lock_path, _Default) else lock_path
        self._leader: LeaderLock | None = None
        self._accepting = False
        self._stopped = False
        self._submitted = 0
        if app is not None:
            self.init_app(app)

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

    def configure(self, **options: Any) -> None:
        """Change pool options before :meth:`start` (used by integrations' config).

        Accepts ``concurrency``, ``max_pending``, ``max_scheduled`` and ``eager``.

        :raises RunnerNotRunning: if the runner is already running.
        :raises ConfigError: for an unknown or out-of-range option.
        """
        if self._accepting:
            raise RunnerNotRunning("configure() must be called before start()")
        for key, value in options.items():
            if key == "concurrency":
                self._dispatcher.concurrency = _positive_int(key, value, "e.g. 100")
            elif key == "max_pending":
                self._dispatcher.max_pending = _non_negative_int(key, value)
            elif key == "max_scheduled":
                self.max_scheduled = _positive_int(key, value, "e.g. 100_000")
            elif key == "eager":
                self.eager = bool(value)
            elif key == "store":
                store = self._make_store(value)
                self.store = self._dispatcher._store = self._scheduler._store = store
            else:
                raise ConfigError(
                    f"unknown runner option {key!r}; "
                    "known: concurrency, max_pending, max_scheduled, eager, store"
                )

    def _make_store(self, spec: str | os.PathLike[str] | ResultStore | None) -> ResultStore:
        if spec is None or spec in ("memory", "memory://"):
            return MemoryStore(self.clock, self._result_ttl, self._max_results)
        if isinstance(spec, str | os.PathLike):
            from taskrun.sqlite_store import SqliteStore  # sqlite3 only when asked for

            return SqliteStore(
                spec,
                clock=self.clock,
                result_ttl=self._result_ttl,
                max_results=self._max_results,
                host=self,
            )
        return spec

    # -- declaring tasks ---------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Any:
        """Register a function as a task; use bare (``@runner.task``) or with options.

        Options are those of :class:`~taskrun.options.TaskOptions` and are
        checked here, at decoration time.

        :param name: the name jobs are known by (default: ``module.qualname``).
        :raises ConfigError: for a bad option or a name already registered.
        """
        task_options = TaskOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            retry_jitter=retry_jitter,
            retry_on=retry_on,
            timeout=timeout,
            executor=executor,
        )

        def register(func: Callable[..., Any]) -> Task[..., Any]:
            if not callable(func):
                raise ConfigError(f"@runner.task needs a function, got {func!r}")
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self._tasks:
                raise ConfigError(
                    f"a task named {task_name!r} is already registered; "
                    "pass a distinct name= to @runner.task"
                )
            task: Task[..., Any] = Task(func, task_name, task_options, self)
            self._tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        schedule: Schedule,
        *,
        name: str | None = None,
        overlap: bool = False,
        misfire_grace: float = 60.0,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Callable[[Callable[[], R]], Task[[], R]]:
        """Register a task that runs on ``schedule`` (a ``crontab`` or ``every``).

        The returned :class:`Task` can still be called or ``delay()``-ed by hand.
        With several processes sharing the leader lock, only the leader runs
        the periodic slots.

        :param overlap: run even while the previous run is unfinished
            (default: skip that slot and count it).
        :param misfire_grace: how late (seconds) a slot may still run when the
            timer wakes late; missed slots are coalesced into one run.
        :raises ConfigError: for a bad option, schedule or duplicate name.

        Example::

            @runner.periodic(crontab("*/15 * * * *", tz="Europe/Berlin"))
            def warm_cache() -> None: ...
        """
        if not callable(getattr(schedule, "next_after", None)):
            raise ConfigError(
                f"@runner.periodic needs a schedule, got {schedule!r}; "
                'use crontab("*/15 * * * *") or every(minutes=5)'
            )
        if not isinstance(misfire_grace, int | float) or misfire_grace < 0:
            raise ConfigError(f"misfire_grace must be seconds >= 0, got {misfire_grace!r}")
        register = self.task(
            name=name,
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            timeout=timeout,
            executor=executor,
        )

        def add(func: Callable[[], R]) -> Task[[], R]:
            task: Task[[], R] = register(func)
            self._scheduler.add_periodic(PeriodicEntry(task, schedule, overlap, misfire_grace))
            return task

        return add

    def periodic_jobs(self) -> list[PeriodicInfo]:
        """Return a snapshot of every periodic job: schedule, next and last run, counters."""
        leads = self._scheduler.is_leader
        return [entry.info(leads) for entry in self._scheduler.periodic]

    @property
    def tasks(self) -> dict[str, Task[..., Any]]:
        """The registered tasks by name (a copy)."""
        return dict(self._tasks)

    # -- life cycle ----------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the runner accepts jobs."""
        return self._accepting

    def start(self) -> TaskRunner:
        """Start the timer greenlet and begin accepting jobs; idempotent.

        Call it in the process that serves requests (after any fork).

        :returns: the runner, for chaining.
        """
        if self._accepting:
            return self
        if not self.eager:
            warn_about_patching()
        self.store.open()
        self._dispatcher.open()
        if not self.eager:
            if self._lock_path is not None and self._scheduler.periodic and self._leader is None:
                self._leader = LeaderLock(self._lock_path)
            self._scheduler.start(self._leader)
        self._accepting = True
        logger.info("taskrun started: concurrency=%d", self._dispatcher.concurrency)
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop in order: timer, admission, drain running jobs, kill what is left.

        Blocks the calling greenlet up to about ``timeout`` seconds while
        running and waiting jobs finish; jobs still running then are killed
        and, like scheduled jobs that never came due, marked CANCELLED and
        logged.  Idempotent.
        """
        if not self._accepting:
            return
        self._accepting = False
        self._stopped = True
        unrun = self._scheduler.stop()
        self._dispatcher.close()
        unfinished = self._dispatcher.drain(timeout)
        now = self.clock.time()
        handed_back = 0
        for job in unfinished + unrun:
            if job.ready():
                continue
            if self.store.release(job):  # a durable store keeps it for a restart
                handed_back += 1
                continue
            job._finish(JobState.CANCELLED, None, now)
            self.store.finish(job)
        if unfinished or unrun:
            logger.warning(
                "taskrun stopped with %d job(s) unfinished after %s s and %d scheduled job(s) "
                "not yet due; they were %s: %s",
                len(unfinished),
                timeout,
                len(unrun),
                "handed back to the store" if handed_back else "cancelled",
                ", ".join(f"{job.id} ({job.name})" for job in (unfinished + unrun)[:20]),
            )
        self.store.close()
        logger.info("taskrun stopped")

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
    ) -> Job[Any]:
        """Accept one job of ``task``; used by ``Task.delay``/``apply_async``. Never blocks.

        :raises RunnerNotRunning: if the runner is not started.
        :raises QueueFull: if the backlog (or the scheduled set) is full.
        """
        if not self._accepting and not self.eager:
            if self._stopped:
                raise RunnerNotRunning(
                    f"cannot run {task.name}: the runner was stopped and accepts no more jobs; "
                    "submit jobs before runner.stop(), or call runner.start() again"
                )
            raise RunnerNotRunning(
                f"cannot run {task.name}: the runner is not running; "
                "call runner.start() (or use it as a context manager) in the serving process"
            )
        now = self.clock.time()
        job: Job[Any] = Job(task, args, kwargs, self, enqueued=now)
        due = eta if eta is not None else now + countdown
        if self.eager:
            self._run_eagerly(job)
        elif due <= now:
            self.store.add(job)  # first: arguments a durable store cannot keep fail here
            try:
                self._dispatcher.submit(job)
            except QueueFull:
                self.store.discard(job)
                raise
        else:
            if len(self._scheduler) >= self.max_scheduled:
                raise QueueFull(
                    f"cannot schedule job {job.id} ({task.name}): {len(self._scheduler)} jobs "
                    f"already wait for their time (max_scheduled={self.max_scheduled}); "
                    "raise max_scheduled or schedule fewer jobs"
                )
            job.state = JobState.SCHEDULED
            job.due = due
            self.store.add(job)
            self._scheduler.add(job)
        self._submitted += 1
        return job

    def _run_eagerly(self, job: Job[Any]) -> None:
        self.store.add(job)
        while not job.ready():
            job.state = JobState.PENDING
            self._dispatcher.run(job)

    def _schedule(self, job: Job[Any]) -> None:
        """Put a retrying job back on the timer (in eager mode: run it again now)."""
        if not self.eager:
            self._scheduler.add(job)

    def job(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or aged out.

        Any greenlet may call it, e.g. a status view in a later request.
        """
        return self.store.get(job_id)

    def resume_job(self, job: Job[Any]) -> bool:
        """Queue a job taken over by a durable store from a dead or stopped process.

        A PENDING job goes to the pool, a SCHEDULED or RETRY one to the timer.

        :returns: ``False`` if there is no room (the store hands it back).
        """
        if not self._accepting:
            return False
        if job.state is JobState.PENDING:
            return self._dispatcher.try_submit(job)
        if len(self._scheduler) >= self.max_scheduled:
            return False
        self._scheduler.add(job)
        return True

    def cancel_job(self, job: Job[Any]) -> bool:
        """Cancel ``job`` (see :meth:`Job.cancel`); return whether it was unfinished."""
        if job.ready():
            return False
        if job.state is JobState.STARTED:
            # A thread job's thread runs on; its worker stops waiting for it.
            return self._dispatcher.cancel_running(job)
        waited_on_timer = job.state in (JobState.SCHEDULED, JobState.RETRY)
        job._finish(JobState.CANCELLED, None, self.clock.time())
        if waited_on_timer:
            self._scheduler.forget(job)
        self.store.finish(job)
        return True

    def stats(self) -> dict[str, Any]:
        """Return counts for monitoring: jobs per state, backlog, running, totals."""
        states = Counter(job.state.value for job in self.store)
        return {
            "states": {state.value: states.get(state.value, 0) for state in JobState},
            "backlog": self._dispatcher.backlog,
            "running": self._dispatcher.running,
            "scheduled": len(self._scheduler),
            "submitted": self._submitted,
            "completed": self._dispatcher.completed,
            "failed": self._dispatcher.failed,
            "concurrency": self._dispatcher.concurrency,
            "max_pending": self._dispatcher.max_pending,
        }
