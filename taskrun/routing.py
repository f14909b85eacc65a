"""Where a job goes: inline (eager mode), to the pool, or to the timer; and how it leaves.

Every job enters here, whoever submits it (``delay()``, ``apply_async()``,
the periodic timer, a background view).  :class:`JobRouter` carries the
runner's jobs between its store, its pool (the dispatcher) and its timer
(the scheduler): it records a new job in the
store before the pool or the timer sees it, queues the jobs a durable store
takes over, cancels a job wherever it waits or runs, and at shutdown hands
each unfinished job back to the store or cancels it (always cancels one
whose body still runs in a thread, so no other process runs it meanwhile).
When a job runs is the scheduler's business, how it runs the dispatcher's.

Eager jobs run inline and are kept in memory, never in the runner's store:
they need no durability, and eager mode must work without ``start()``,
before which a durable store is not open.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from taskrun import lifecycle, signals
from taskrun.clock import Clock
from taskrun.dispatcher import Dispatcher
from taskrun.errors import QueueFull
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.scheduler import Scheduler
from taskrun.settings import RunnerSettings
from taskrun.stores.base import ResultStore
from taskrun.stores.memory import MemoryStore

job_enqueued = signals.job_enqueued
_job_log = lifecycle.logger
_INFO = logging.INFO


@dataclass(frozen=True, slots=True)
class Settled:
    """What :meth:`JobRouter.settle` did with the jobs left at shutdown."""

    handed_back: int  # to a durable store, for another process or the next start
    cancelled: int  # memory cannot keep them, or their thread still runs
    in_threads: int  # of the cancelled, those whose body still ran in a thread


class JobRouter:
    """Sends each job of a runner where it belongs, and finds it again by id.

    Only the runner calls it, from greenlets of the hub's thread; it checks
    that it accepts jobs (running, or eager) before :meth:`submit` and
    :meth:`resume`.

    :param dispatcher: the pool; due jobs go here.
    :param scheduler: the timer; jobs due later, and retries, go here.
    :param clock: stamps new and cancelled jobs.
    :param settings: the runner's options (see :meth:`use`).
    :param store: where jobs are kept (see :meth:`use`).
    """

    #: The runner's options: eager mode, the limit on scheduled jobs, the pool's size.
    settings: RunnerSettings
    #: Where jobs are kept, eager ones excepted.
    store: ResultStore

    def __init__(
        self,
        dispatcher: Dispatcher,
        scheduler: Scheduler,
        clock: Clock,
        settings: RunnerSettings,
        store: ResultStore,
    ) -> None:
        self._dispatcher = dispatcher
        self._scheduler = scheduler
        self._clock = clock
        #: Stamps new and cancelled jobs.
        self.clock = clock
        #: The jobs run in eager mode, bounded like the store's results.
        self.eager_jobs = MemoryStore(clock, settings.result_ttl, settings.max_results)
        #: How many jobs :meth:`submit` accepted.
        self.submitted = 0
        #: What the job signals name as their sender: the runner, which sets it.
        self.sender: object = self
        self.use(settings, store)

    def use(self, settings: RunnerSettings, store: ResultStore) -> None:
        """Apply new settings and store to the pool and the timer; before the runner starts."""
        self.settings = settings
        self.store = store
        self._dispatcher.concurrency = settings.concurrency
        self._dispatcher.max_pending = settings.max_pending
        self._dispatcher.threads = settings.thread_count
        if len(self.eager_jobs) == 0:  # the bounds of eager results follow the settings
            self.eager_jobs = MemoryStore(self._clock, settings.result_ttl, settings.max_results)
        # The pool records each run in the store that holds the job.
        self._dispatcher.store = self.eager_jobs if settings.eager else store
        self._scheduler.store = store

    def submit(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
        eta: float | None = None,
        *,
        unique_key: str | None = None,
        expires: float | datetime | None = None,
    ) -> Job[Any]:
        """Record a new job of ``task``, due after ``countdown`` s or at POSIX time ``eta``.

        In eager mode the job runs here, to the end (retries included, times
        and expiry ignored); otherwise it goes to the pool or the timer, never
        blocking (but for one short transaction of a shared store, with a
        ``unique_key``).

        :param unique_key: while an unfinished job of ``task`` has this key,
            return that job instead of a new one.
        :param expires: seconds from now, or an aware datetime, after which the
            job, if not started, never runs.
        :raises QueueFull: if the backlog, or the set of scheduled jobs, is full.
        """
        if (
            eta is None
            and countdown <= 0
            and unique_key is None
            and expires is None
            and not self.settings.eager
        ):
            # The common case, kept short: a job due now, to the pool.
            # No control: a job of a runner's task is cancelled through its task's runner.
            job: Job[Any] = Job(task, args, kwargs, None, enqueued=self._clock.time())
            self.store.add(job)  # first: arguments a durable store cannot keep fail here
            try:
                self._dispatcher.submit(job)
            except QueueFull:
                self.store.discard(job)
                raise
            self.submitted += 1
            if job_enqueued.receivers:  # a local name: the one check costs a few ns
                signals.send(job_enqueued, self.sender, job=job)
            if _job_log.isEnabledFor(_INFO):
                lifecycle.accepted(job)
            return job
        job = self.new_job(task, args, kwargs, countdown, eta, unique_key, expires)
        return self.admit(job)

    def new_job(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
        eta: float | None = None,
        unique_key: str | None = None,
        expires: float | datetime | None = None,
    ) -> Job[Any]:
        """Make a job of ``task`` (PENDING, or SCHEDULED with ``due`` set) without admitting it.

        Touches nothing shared: any thread may call it (see :meth:`admit`).
        """
        now = self._clock.time()
        # No control: a job of a runner's task is cancelled through its task's runner.
        job: Job[Any] = Job(task, args, kwargs, None, enqueued=now)
        if unique_key is not None or expires is not None:
            runs = job._run_record()
            runs.unique_key = unique_key
            if isinstance(expires, datetime):
                runs.expires = expires.timestamp()
            elif expires is not None:
                runs.expires = now + expires
        due = eta if eta is not None else now + countdown
        if due > now and not self.settings.eager:
            job.state = JobState.SCHEDULED
            job.due = due
        return job

    def admit(self, job: Job[Any]) -> Job[Any]:
        """Run a job made by :meth:`new_job` inline (eager), or give it to the pool or the timer.

        Only the hub's thread calls it.

        :returns: ``job``, or the unfinished job that already holds its ``unique_key``.
        :raises QueueFull: if the backlog, or the set of scheduled jobs, is full.
        """
        unique_key = job.unique_key
        if self.settings.eager:
            if unique_key is not None:
                held = self.eager_jobs.add_unique(job)
                if held is not job:
                    return held
            if job_enqueued.receivers:
                signals.send(job_enqueued, self.sender, job=job)
            self._run_inline(job)
            self.submitted += 1
            return job
        if job.state is not JobState.SCHEDULED:
            # First: arguments a durable store cannot keep fail here.
            if unique_key is not None:
                held = self.store.add_unique(job)
                if held is not job:
                    return held
            else:
                self.store.add(job)
            try:
                self._dispatcher.submit(job)
            except QueueFull:
                self.store.discard(job)
                raise
        else:
            max_scheduled = self.settings.max_scheduled
            if len(self._scheduler) >= max_scheduled:
                raise QueueFull(
                    f"cannot schedule job {job.id} ({job.name}): {len(self._scheduler)} jobs "
                    f"already wait for their time (max_scheduled={max_scheduled}); "
                    "raise max_scheduled or schedule fewer jobs"
                )
            if unique_key is not None:
                held = self.store.add_unique(job)
                if held is not job:
                    return held
            else:
                self.store.add(job)
            self._scheduler.add(job)
        self._accepted(job)
        return job

    def _accepted(self, job: Job[Any]) -> None:
        self.submitted += 1
        if job_enqueued.receivers:  # a local name: the one check costs a few ns
            signals.send(job_enqueued, self.sender, job=job)
        if _job_log.isEnabledFor(_INFO):
            lifecycle.accepted(job)

    def is_idle(self) -> bool:
        """Return whether no job is running, waiting for a worker, or due now on the timer."""
        dispatcher = self._dispatcher
        return (
            dispatcher.busy == 0
            and dispatcher.backlog == 0
            and dispatcher.overdue == 0
            and not self._scheduler.has_due()
        )

    def has_room(self) -> bool:
        """Return whether a job due now would be admitted (the pool or its backlog has room)."""
        return self._dispatcher.has_room()

    def _run_inline(self, job: Job[Any]) -> None:
        if job.unique_key is None:
            self.eager_jobs.add(job)
        while not job.ready():  # a failed attempt that will be retried leaves it in RETRY
            job.state = JobState.PENDING
            self._dispatcher.run(job)

    def retry_later(self, job: Job[Any]) -> None:
        """Put a retrying job back on the timer (in eager mode, :meth:`submit` retries it)."""
        if not self.settings.eager:
            self._scheduler.add(job)

    def resume(self, job: Job[Any]) -> bool:
        """Queue a job a durable store took over: a PENDING one to the pool, others to the timer.

        :returns: ``False`` if there is no room, or in eager mode, which runs
            only its own jobs (the store then hands the job back).
        """
        if self.settings.eager:
            return False
        if job.state is JobState.PENDING:
            return self._dispatcher.try_submit(job)
        if len(self._scheduler) >= self.settings.max_scheduled:
            return False
        self._scheduler.add(job)
        return True

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job`` where it is: running, in the backlog or on the timer.

        :returns: whether it was unfinished.
        """
        if job.ready():
            return False
        if job.state is JobState.STARTED:
            # A thread job's thread runs on; its worker stops waiting for it.
            return self._dispatcher.cancel_running(job)
        waited_on_timer = job.state in (JobState.SCHEDULED, JobState.RETRY)
        job._finish(JobState.CANCELLED, None, self._clock.time())
        if waited_on_timer:
            self._scheduler.forget(job)
        self.store.finish(job)
        if signals.job_cancelled.receivers:
            signals.send(signals.job_cancelled, self.sender, job=job)
        return True

    def settle(self, jobs: list[Job[Any]]) -> Settled:
        """At shutdown, hand each unfinished job back to the store, or else cancel it.

        A durable store keeps the jobs for another process or the next
        start; memory cannot, so those jobs end CANCELLED.  A job whose body
        still runs in a thread (which cannot be killed) ends CANCELLED
        whatever the store: handed back, it could run in another process
        while its thread here runs on.  The trade-off: such a job runs at
        most once, and is cut short if this process exits before its thread
        returns; its late result is dropped, as for a cancelled thread job.
        The same goes for a job whose greenlet would not die when killed.

        :param jobs: the jobs the pool and the timer gave up on.
        :returns: how many jobs were handed back and how many cancelled.
        """
        now = self._clock.time()
        handed_back = cancelled = in_threads = 0
        for job in jobs:
            if job.ready():
                continue
            in_thread = self._dispatcher.runs_in_thread(job)
            runs_on = in_thread or self._dispatcher.would_not_die(job)
            if not runs_on and self.store.release(job):
                handed_back += 1
                continue
            cancelled += 1
            in_threads += in_thread
            job._finish(JobState.CANCELLED, None, now)
            self.store.finish(job)
            if signals.job_cancelled.receivers:
                signals.send(signals.job_cancelled, self.sender, job=job)
        return Settled(handed_back, cancelled, in_threads)

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, run eagerly or kept in the store, or ``None``."""
        job = self.eager_jobs.get(job_id)
        return job if job is not None else self.store.get(job_id)

    def stats(self, states: dict[str, int] | None = None) -> dict[str, Any]:
        """Return this process's counts: jobs per state, backlog, running, totals.

        ``parked`` counts jobs waiting for a ``max_running`` slot of their task.

        :param states: jobs per state if known already (e.g. kept by a shared
            store); else this process's jobs are counted.
        """
        if states is None:
            counts = Counter(job.state.value for job in chain(self.eager_jobs, self.store))
            states = {state.value: counts.get(state.value, 0) for state in JobState}
        dispatcher = self._dispatcher
        return {
            "states": states,
            "backlog": dispatcher.backlog,
            "overdue": dispatcher.overdue,
            "running": dispatcher.running,
            "parked": dispatcher.admission.parked,
            "scheduled": len(self._scheduler),
            "submitted": self.submitted,
            "completed": dispatcher.completed,
            "failed": dispatcher.failed,
            "concurrency": dispatcher.concurrency,
            "max_pending": dispatcher.max_pending,
        }
