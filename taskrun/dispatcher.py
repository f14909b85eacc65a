"""The bounded pool that runs jobs: admit or refuse, run, record the outcome, drain.

At most ``concurrency`` jobs run at once, each in one of up to
``concurrency`` long-lived worker greenlets that pull from a FIFO backlog of
at most ``max_pending`` jobs.  Reusing workers instead of spawning a greenlet
per job makes enqueueing cheaper than a bare ``gevent.spawn``.  Admission
never blocks: a full backlog raises :class:`~taskrun.errors.QueueFull` (or
returns ``False`` from :meth:`Dispatcher.try_submit`).

Where a job's body runs (the worker greenlet, or a pool thread for
``executor="thread"`` tasks) and how its ``timeout`` is kept is
:mod:`taskrun.executors`'s business.

At shutdown (:meth:`Dispatcher.drain`) the workers still running past the
grace period are killed and their jobs returned as unfinished, for the
runner to hand back to a durable store or cancel.  A job whose body still
runs in a thread then is the exception (:meth:`Dispatcher.runs_in_thread`):
handing it back would let another process run it while this thread still
does, so the runner cancels it instead.  It runs at most once, and may be
cut short if the process exits first.  Shutdown never waits for such
threads.

Due jobs (a delayed job or a retry whose time came) are never refused:
:meth:`Dispatcher.admit_due` admits one if there is room, else queues it
in the *overdue* FIFO behind the backlog, which the workers drain in order
as they, or places in the backlog, free up.  So the timer never blocks on a
full pool, and nothing polls.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet
from gevent.hub import Waiter, get_hub

from taskrun import lifecycle, signals
from taskrun.admission import Admission
from taskrun.clock import Clock
from taskrun.errors import JobCancelled, QueueFull, TaskrunError
from taskrun.executors import ContextFactory, JobExecutor
from taskrun.jobs import Job, JobState
from taskrun.options import final_error, retry_due, should_retry
from taskrun.stores.base import ResultStore

logger = logging.getLogger(__name__)
_job_log = lifecycle.logger
_INFO = logging.INFO

#: A worker that ran jobs for longer than this (seconds) without the loop
#: running yields to it before its next job.
FAIR_SLICE = 0.001
#: How long :meth:`Dispatcher.cancel_running` waits for a killed job to end.
CANCEL_WAIT = 1.0
#: How long :meth:`Dispatcher.drain` waits for killed workers to exit.
KILL_WAIT = 2.0


job_started = signals.job_started  # local names: the hot path checks them per job
#: The signal sent when a job ends in each final state.
_FINISHED_SIGNALS = {
    JobState.SUCCESS: signals.job_succeeded,
    JobState.FAILURE: signals.job_failed,
    JobState.CANCELLED: signals.job_cancelled,
}


class _Cancelled(gevent.GreenletExit):
    """Thrown into a worker to stop the job it is running (not the worker)."""


class Dispatcher:
    """Runs admitted jobs on a bounded set of worker greenlets.

    Only the runner calls it, from greenlets of the hub's thread.

    :param concurrency: the most jobs running at once.
    :param max_pending: the most jobs waiting behind them.
    :param threads: size of the thread pool for ``executor="thread"`` jobs.
    :param store: told about every start and finish.  Kept as :attr:`store`,
        which the runner may replace before it starts (eager jobs are kept in memory).
    :param clock: stamps start and finish times.
    :param schedule: called with a job whose ``due`` is set, to run it again later.
    """

    def __init__(
        self,
        concurrency: int,
        max_pending: int,
        threads: int,
        store: ResultStore,
        clock: Clock,
        schedule: Callable[[Job[Any]], None],
    ) -> None:
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.store = store
        self._clock = clock
        self._schedule = schedule
        #: Wraps every run, e.g. a Flask app context; set by integrations.
        self.context: ContextFactory = nullcontext
        self._backlog: deque[Job[Any]] = deque()
        self._idle: list[Waiter[Job[Any] | None]] = []
        self._workers: set[Greenlet[..., None]] = set()
        self._running: dict[Job[Any], Greenlet[..., None]] = {}
        # Jobs whose worker survived drain()'s kill: they run on, unowned.
        self._undying: set[Job[Any]] = set()
        self._executor = JobExecutor(threads)
        # Due jobs that found no room, oldest first (see admit_due).
        self._overdue: deque[Job[Any]] = deque()
        self._overdue_since = 0.0  # when the overdue queue last started
        self._overdue_count = 0  # how many jobs went through it since then
        self._closing = False
        # drain() is killing the workers: a GreenletExit in a job is not the task's own.
        self._killing = False
        # hurry(): a drain in progress (or the next one) kills at once.
        self._hurried = False
        self._hurry: Event | None = None
        self._rand = random.Random()
        # max_running and rate_limit: parked jobs and held slots.
        self.admission = Admission(self.admit_due, schedule)
        self.completed = 0
        self.failed = 0
        #: What the job signals name as their sender: the runner, which sets it.
        self.sender: object = self

    @property
    def threads(self) -> int:
        """The size of the pool of threads for ``executor="thread"`` jobs (set before start)."""
        return self._executor.threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._executor.threads = value

    # -- admission ---------------------------------------------------------

    @property
    def backlog(self) -> int:
        """How many admitted jobs wait for a free worker."""
        return len(self._backlog)

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        return len(self._running)

    @property
    def overdue(self) -> int:
        """How many due jobs wait for room behind the backlog (see :meth:`admit_due`)."""
        return len(self._overdue)

    def has_room(self) -> bool:
        """Return whether :meth:`try_submit` would admit a job now."""
        return (
            bool(self._idle)
            or len(self._workers) < self.concurrency
            or len(self._backlog) < self.max_pending
        )

    @property
    def busy(self) -> int:
        """How many workers hold a job: running, or handed one and about to start it."""
        return len(self._workers) - len(self._idle)

    def try_submit(self, job: Job[Any]) -> bool:
        """Admit ``job`` if there is room; never blocks.

        :returns: ``False`` if the pool and the backlog are full.
        """
        if self._idle:
            # LIFO: the most recently idle worker is the warmest.
            waiter = self._idle.pop()
            get_hub().loop.run_callback(waiter.switch, job)
        elif len(self._workers) < self.concurrency:
            worker: Greenlet[..., None] = Greenlet(self._work, job)
            self._workers.add(worker)
            worker.start()
        elif len(self._backlog) < self.max_pending:
            self._backlog.append(job)
        else:
            return False
        return True

    def submit(self, job: Job[Any]) -> None:
        """Admit ``job`` or refuse it at once.

        :raises QueueFull: if ``concurrency`` jobs run and ``max_pending`` wait.
        """
        if not self.try_submit(job):
            raise QueueFull(
                f"cannot accept job {job.id} ({job.name}): {self.busy} jobs running "
                f"(concurrency={self.concurrency}) and {len(self._backlog)} waiting "
                f"(max_pending={self.max_pending}); raise max_pending or concurrency, "
                "or shed load and retry later"
            )

    def admit_due(self, job: Job[Any]) -> None:
        """Admit a job whose time came (the timer calls it); never refuses, never blocks.

        Behind due jobs already waiting, or when the pool and backlog are
        full, the job waits in the overdue FIFO, which the workers drain in
        due order as room frees up, ahead of later ``delay()`` calls.  One
        warning when that queue starts, one info line when it empties.
        """
        job._run_record().due_at = self._clock.time()
        if not self._overdue and self.try_submit(job):
            return
        if not self._overdue:
            logger.warning(
                "job %s (%s) is due but the pool and backlog are full; it and any due "
                "after it wait, in due order, for a free worker (raise concurrency or "
                "max_pending if this recurs)",
                job.id,
                job.name,
            )
            self._overdue_since = self._clock.time()
            self._overdue_count = 0
        self._overdue.append(job)
        self._overdue_count += 1

    def _next_overdue(self) -> Job[Any] | None:
        """Return the oldest due job waiting for room (cancelled ones are dropped), or ``None``."""
        overdue = self._overdue
        while overdue:
            job = overdue.popleft()
            if not overdue:
                logger.info(
                    "the %d due job(s) that waited for a free worker are all admitted, %.2f s "
                    "after the pool and backlog filled",
                    self._overdue_count,
                    self._clock.time() - self._overdue_since,
                )
            if not job.ready():
                return job
        return None

    # -- running -------------------------------------------------------------

    def _work(self, job: Job[Any] | None) -> None:
        """A worker's life: run jobs until the dispatcher closes.

        Between two jobs the worker yields to the loop if it has held it for
        more than :data:`FAIR_SLICE` seconds (jobs that never block would
        otherwise starve requests and timers, while a job that re-enqueues
        itself would starve them forever); no-op jobs still run by the
        hundred between yields.
        """
        worker = gevent.getcurrent()
        clock = time.perf_counter
        since = clock()  # when this worker last came back from the loop
        try:
            while job is not None:
                self.run(job, worker)  # type: ignore[arg-type]
                if clock() - since > FAIR_SLICE:
                    gevent.sleep(0)
                    since = clock()
                if self._backlog:
                    job = self._backlog.popleft()
                    if self._overdue:
                        refill = self._next_overdue()  # into the place just freed
                        if refill is not None:
                            self._backlog.append(refill)
                elif self._closing:
                    job = None
                else:
                    job = self._next_overdue() if self._overdue else None
                    if job is None:
                        waiter: Waiter[Job[Any] | None] = Waiter()
                        self._idle.append(waiter)
                        job = waiter.get()
                        since = clock()
        finally:
            self._workers.discard(worker)

    def run(self, job: Job[Any], worker: Greenlet[..., None] | None = None) -> None:
        """Run one attempt of ``job`` in the calling greenlet and record its outcome.

        Workers call this; eager mode calls it inline.  Never raises except
        ``GreenletExit`` when :meth:`drain` kills the calling worker (the job
        stays STARTED, for :meth:`drain` to report).  Any other
        ``GreenletExit`` (raised by the task itself, or thrown in by anyone
        but :meth:`drain` and :meth:`cancel_running`) is the job's failure, so
        no job is left STARTED with its waiters hanging; run inline, it is
        then re-raised, since the caller's own greenlet may be being killed.
        """
        if job.state is not JobState.PENDING:
            return  # cancelled while it waited
        try:
            may_run = self.store.before_run(job)
        except TaskrunError as error:  # its row cannot be written: fail it visibly
            logger.error("job %s (%s) cannot start: %s", job.id, job.name, error)
            job._run_record().traceback = "".join(traceback.format_exception(error))
            self.failed += 1
            self._record(job, JobState.FAILURE, error)
            return
        if not may_run or job.state is not JobState.PENDING:
            return  # owned by another process now, or cancelled while its row was written
        runs = job._runs
        if runs is not None and runs.expires is not None and worker is not None:
            # Only a first start expires: a job that started in time runs its retries.
            if runs.attempts == 0 and self._clock.time() >= runs.expires:
                self._expire(job, runs.expires)
                return
        options = job.task.options
        limited = worker is not None and options.is_limited  # eager jobs pass
        start = self._clock.time()
        if limited:
            admitted = self.admission.admit(job, self.store, start)
            if admitted is None:
                return  # parked for a running slot, or on the timer for its rate window
            start = admitted  # the start its rate window recorded
        job._mark_started(start, self.store)
        self.store.update(job)
        if worker is not None:
            self._running[job] = worker
        if job_started.receivers:
            signals.send(job_started, self.sender, job=job)
        log_info = _job_log.isEnabledFor(_INFO)  # once per run: a cached check
        if log_info:
            lifecycle.started(job)
        try:
            value = self._executor.call(job, options, self.context)
        except _Cancelled:
            self._record(job, JobState.CANCELLED, None)
        except gevent.GreenletExit as error:
            if self._killing:
                # drain() kills the worker (shutdown past its grace period):
                # the job stays STARTED and drain() reports it.
                raise
            self._failed(job, error)
            if worker is None:
                raise
        except BaseException as error:  # noqa: B036 - a job must never take a worker down
            self._failed(job, error)
        else:
            self._record(job, JobState.SUCCESS, None if options.ignore_result else value)
            if log_info:
                lifecycle.succeeded(job, self._clock.time() - start)
        finally:
            self._running.pop(job, None)
            if self._undying:
                self._undying.discard(job)
            if limited:
                self.admission.finished(job, self.store)

    def _expire(self, job: Job[Any], expires: float) -> None:
        logger.warning("job %s (%s) expired before it started; it never runs", job.id, job.name)
        stamp = datetime.fromtimestamp(expires, UTC).isoformat()
        self._record(
            job,
            JobState.CANCELLED,
            JobCancelled(
                f"job {job.id} ({job.name}) expired: it had not started by {stamp} "
                "(apply_async(expires=...)); submit it again, or give it a later expiry"
            ),
        )

    def runs_in_thread(self, job: Job[Any]) -> bool:
        """Return whether a body of ``job`` runs in a pool thread now (see the module doc)."""
        return self._executor.runs_in_thread(job)

    def would_not_die(self, job: Job[Any]) -> bool:
        """Return whether ``job`` survived :meth:`drain`'s kill and still runs in its greenlet."""
        return job in self._undying

    def _give_up_on(self, workers: list[Greenlet[..., None]]) -> None:
        """Forget workers that survived being killed; log each one's job."""
        jobs = {worker: job for job, worker in self._running.items()}
        for worker in workers:
            self._workers.discard(worker)
            job = jobs.get(worker)
            if job is None:
                logger.error("a taskrun worker would not die when killed at shutdown: %r", worker)
                continue
            self._running.pop(job, None)
            self._undying.add(job)
            logger.error(
                "job %s (%s) would not die: it caught the kill at shutdown (an `except "
                "BaseException` or bare `except:` in the task swallows GreenletExit) and runs "
                "on; it is marked CANCELLED, not handed back; let GreenletExit propagate",
                job.id,
                job.name,
            )

    def _failed(self, job: Job[Any], error: BaseException) -> None:
        options = job.task.options
        runs = job._run_record()
        runs.traceback = "".join(traceback.format_exception(error))
        if should_retry(options, job.attempts, error):
            now = self._clock.time()
            delay = retry_due(options, job.attempts, error, now, self._rand) - now
            if self._closing:
                # Shutting down: only a durable store can keep the retry.
                if self._keep_retry(job, error, delay):
                    return
            else:
                self._retry(job, error, delay)
                return
        error = final_error(error)
        lifecycle.failed(job, error)
        self.failed += 1
        self._record(job, JobState.FAILURE, error)

    def _retry(self, job: Job[Any], error: BaseException, delay: float) -> None:
        lifecycle.retrying(job, error, delay)
        job.state = JobState.RETRY
        job._run_record().value = error
        job.due = self._clock.time() + delay
        self.store.update(job)
        self._schedule(job)
        if signals.job_retrying.receivers:
            signals.send(signals.job_retrying, self.sender, job=job, exc=error)

    def _keep_retry(self, job: Job[Any], error: BaseException, delay: float) -> bool:
        """While closing: hand a job with retries left back to a durable store, as RETRY.

        :returns: ``False`` if the store cannot keep it (memory): it fails now.
        """
        state, runs = job.state, job._run_record()
        job.state = JobState.RETRY
        runs.value = error
        job.due = self._clock.time() + delay
        if not self.store.release(job):
            job.state = state
            return False
        logger.warning(
            "job %s (%s) failed on attempt %d during shutdown (%r); its retry is kept in the "
            "store, due in %.2f s, for a live process or the next start",
            job.id,
            job.name,
            job.attempts,
            error,
            delay,
        )
        if signals.job_retrying.receivers:
            signals.send(signals.job_retrying, self.sender, job=job, exc=error)
        return True

    def _record(self, job: Job[Any], state: JobState, value: Any) -> None:
        if job.ready():
            return  # cancelled while a thread ran: the late outcome is dropped
        self.completed += 1
        job._finish(state, value, self._clock.time())
        self.store.finish(job)
        signal = _FINISHED_SIGNALS[state]
        if signal.receivers:
            if state is JobState.FAILURE:
                signals.send(signal, self.sender, job=job, exc=value)
            else:
                signals.send(signal, self.sender, job=job)

    def job_running_in(self, greenlet: object) -> Job[Any] | None:
        """Return the job the worker ``greenlet`` runs now, or ``None``.

        Any thread may call it (the loop monitor's does): it copies the map
        of running jobs in one step, which the GIL keeps whole.
        """
        for job, worker in list(self._running.items()):
            if worker is greenlet:
                return job
        return None

    # -- cancellation ------------------------------------------------------

    def cancel_running(self, job: Job[Any]) -> bool:
        """Stop ``job`` if a worker is running it; return whether it has ended (CANCELLED).

        Throws the cancel into the worker and waits up to :data:`CANCEL_WAIT`
        seconds for the job to end.  A thread job ends at once (its thread
        runs on; its late result is dropped).  A job that catches the cancel
        and goes on has not ended: ``False``.  Called from the job's own
        greenlet, the cancel is raised there and then.
        """
        worker = self._running.get(job)
        if worker is None:
            return False
        if gevent.getcurrent() is worker:
            raise _Cancelled()
        get_hub().loop.run_callback(self._throw_cancel, job, worker)
        runs = job._run_record()
        if runs.done is None:
            runs.done = Event()
        runs.done.wait(CANCEL_WAIT)
        return job.state is JobState.CANCELLED

    def _throw_cancel(self, job: Job[Any], worker: Greenlet[..., None]) -> None:
        # Runs in the hub: the worker is suspended, so the check cannot race.
        if self._running.get(job) is worker:
            worker.throw(_Cancelled())

    # -- shutdown ----------------------------------------------------------

    def open(self) -> None:
        """Run and retry jobs again after :meth:`close` (a runner started anew)."""
        self._closing = False
        self._killing = False
        self._hurried = False
        self.admission.closing = False

    def hurry(self) -> None:
        """Make the :meth:`drain` in progress, or the next one, kill what runs at once.

        Never blocks; any greenlet may call it (e.g. on a second shutdown signal).
        """
        self._hurried = True
        if self._hurry is not None:
            self._hurry.set()

    def close(self) -> None:
        """Stop admitting; idle workers exit, busy ones finish the backlog."""
        self._closing = True
        self.admission.closing = True
        idle, self._idle = self._idle, []
        for waiter in idle:
            get_hub().loop.run_callback(waiter.switch, None)

    def drain(self, timeout: float | None) -> list[Job[Any]]:
        """Wait up to ``timeout`` s for the backlog and running jobs, then kill the rest.

        Call :meth:`close` first.  Never waits for a thread past ``timeout``:
        a job whose body still runs in a thread is returned like the others
        (check :meth:`runs_in_thread`), and its thread runs on.

        :returns: the jobs that did not finish: killed while running, or never
            started (in the backlog, then the due jobs that waited for room).
        """
        workers = list(self._workers)
        if workers and not self._hurried:
            self._hurry = hurry = Event()
            waitables: list[Greenlet[..., None] | Event] = [*workers, hurry]
            finished = 0
            try:
                with gevent.iwait(waitables, timeout=timeout) as ready_ones:
                    for ready in ready_ones:
                        finished += 1
                        if ready is hurry or finished == len(workers):
                            break
            finally:
                self._hurry = None
        left = list(self._running) + list(self._backlog)
        left += [job for job in self._overdue if not job.ready()]
        left += self.admission.take_parked()
        self._backlog.clear()
        self._overdue.clear()
        if self._workers:
            self._killing = True
            workers = list(self._workers)
            gevent.killall(workers, block=False)
            gevent.joinall(workers, timeout=KILL_WAIT)
            self._give_up_on([worker for worker in workers if not worker.dead])
        self._executor.close()
        return left
