"""The Celery engine's worker side: run each carried job through taskrun's own executor.

``taskrun worker APP`` loads the app (which makes its runner, as the web
processes do), then runs a Celery worker with a gevent pool whose one task,
``taskrun.run``, runs a job exactly as the in-process pool would: the same
:class:`~taskrun.dispatcher.Dispatcher` attempt (its ``timeout`` as
:class:`~taskrun.errors.JobTimeout`, the thread executor, the app context
of ``init_app``, ``current_job()``), taskrun's retry formula (back-off,
jitter, ``retry_on``, ``Retry``), and its records in Redis.

A retry is published again with its eta and the message acknowledged: a
worker never sleeps through a retry wait.  A job is at least once: its
message is acknowledged only when the attempt ends, so a worker killed
mid-job leaves it for another (after Redis's visibility timeout).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import gevent
from gevent.greenlet import Greenlet

from taskrun.clock import Clock
from taskrun.dispatcher import KILL_WAIT, Dispatcher
from taskrun.engines.celery.app import RUN_TASK
from taskrun.engines.celery.codec import record_of
from taskrun.engines.celery.engine import CeleryEngine, UnknownTask
from taskrun.engines.celery.heartbeat import beat_forever
from taskrun.engines.celery.limits import check_wait
from taskrun.errors import ConfigError, JobLost, NotSerializable
from taskrun.executors import ContextFactory
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.stores.memory import MemoryStore
from taskrun.supervision import Supervisor, guarded

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["WorkerBody", "serve", "worker_argv"]

logger = logging.getLogger(__name__)


class _Records(MemoryStore):
    """The dispatcher's store on a worker: each transition of a job goes to its Redis record.

    Keeps nothing in memory.  The STARTED record is written together with
    the cancel check, in one round trip, before the body starts.
    """

    def __init__(self, engine: CeleryEngine, clock: Clock) -> None:
        super().__init__(clock, engine.config.result_ttl, 1)
        self._engine = engine
        self._clock = clock

    def _record_ttl(self, job: Job[Any]) -> float:
        if job.ready():
            ttl = job.task.options.result_ttl
            return self._engine.config.result_ttl if ttl is None else ttl
        return self._engine._ttl(job)

    def before_run(self, job: Job[Any]) -> bool:
        """Write STARTED unless the job's tombstone exists; ``False`` (never run it) if it does."""
        record = record_of(job)
        record.update(
            state=JobState.STARTED.value, attempts=job.attempts + 1, started=self._clock.time()
        )
        return self._engine.records.start(job.id, record, self._record_ttl(job))

    def update(self, job: Job[Any]) -> None:
        """Write a RETRY (STARTED was written by :meth:`before_run`)."""
        if job.state is not JobState.STARTED:
            self._engine.records.write(job.id, record_of(job), self._record_ttl(job))

    def save_meta(self, job: Job[Any]) -> None:
        """Write the job's record with its new meta, unless it was cancelled."""
        self._engine.records.write(job.id, record_of(job), self._record_ttl(job))

    def finish(self, job: Job[Any]) -> None:
        """Write the outcome, unless the job was cancelled; a non-JSON result fails it."""
        try:
            record = record_of(job)
        except NotSerializable as error:
            logger.error("job %s (%s) failed: %s", job.id, job.name, error)
            job._run_record().value = error
            job.state = JobState.FAILURE
            record = record_of(job)
        self._engine.records.write(job.id, record, self._record_ttl(job))


class WorkerBody:
    """What a ``taskrun.run`` message runs on a worker: one attempt of one job.

    :param engine: the runner's Celery engine (its records and its app).
    :param tasks: the runner's tasks by name.
    :param context: what every body runs inside (the Flask app context).
    :param threads: the size of the pool for ``executor="thread"`` tasks.
    :param clock: stamps jobs.
    """

    def __init__(
        self,
        engine: CeleryEngine,
        tasks: Mapping[str, TaskLike],
        context: ContextFactory,
        threads: int,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._tasks = tasks
        self._clock = clock
        self._records = _Records(engine, clock)
        # concurrency and backlog are Celery's: this dispatcher only runs attempts.
        self._dispatcher = Dispatcher(1, 0, threads, self._records, clock, self._retry_later)
        self._dispatcher.context = context

    @property
    def running(self) -> int:
        """How many jobs run in this worker now."""
        return self._dispatcher.running

    def run(
        self,
        task_name: str,
        job_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        attempts: int,
        enqueued: float,
        expires: float | None,
        traceback: str | None = None,
    ) -> None:
        """Run one attempt of the job (the ``taskrun.run`` task's body); never raises.

        But for the kill of ``revoke(terminate=True)`` (or of a worker's
        shutdown), which ends the greenlet once the attempt is stopped.  A job
        not started by its ``expires`` ends CANCELLED without running.
        """
        task = self._tasks.get(task_name)
        if task is None:
            self._lost(task_name, job_id, enqueued)
            return
        job: Job[Any] = Job(
            task, tuple(args), kwargs or None, None, job_id=job_id, enqueued=enqueued
        )
        runs = job._run_record()
        runs.attempts = attempts
        runs.expires = expires
        runs.traceback = traceback  # of the attempt before, for a retry

        # The attempt runs in a greenlet of its own, so that a kill from Celery's
        # revoke(terminate=True) reaches it as taskrun's own cancel: the job ends
        # CANCELLED, not FAILURE, and no failure is logged.
        def run_attempt() -> None:
            self._dispatcher.run(job, attempt)

        attempt: Greenlet[[], None] = Greenlet(run_attempt)
        attempt.start()
        try:
            attempt.join()
        except gevent.GreenletExit:
            if self._engine.records.is_cancelled(job.id):
                self._dispatcher.cancel_running(job)  # CANCELLED, as in-process
            else:
                # The worker is going down (a cold shutdown): the job stays STARTED and,
                # its message unacknowledged, runs again on another worker.
                self._dispatcher._killing = True
            attempt.kill(block=True, timeout=KILL_WAIT)
            raise

    def _lost(self, task_name: str, job_id: str, enqueued: float) -> None:
        logger.error("job %s: task %r is not registered in this worker", job_id, task_name)
        job: Job[Any] = Job(
            UnknownTask(task_name), (), None, None, job_id=job_id, enqueued=enqueued
        )
        job._finish(
            JobState.FAILURE,
            JobLost(
                f"task {task_name!r} is not registered in the worker's app; start `taskrun "
                "worker` on the same app as the web processes"
            ),
            self._clock.time(),
        )
        self._records.finish(job)

    def _retry_later(self, job: Job[Any]) -> None:
        """Publish the job's next attempt with its eta (the dispatcher recorded RETRY)."""
        wait = job.due - self._clock.time()
        try:
            check_wait(job.name, "retry wait", wait, self._engine.config.visibility_timeout)
        except ConfigError as error:
            job._finish(JobState.FAILURE, error, self._clock.time())
            self._records.finish(job)
            return
        runs = job._run_record()
        message = [
            job.name,
            job.id,
            list(job.args),
            job.kwargs or {},
            job.attempts,
            job.enqueued_at.timestamp() if job.enqueued_at else 0.0,
            runs.expires,
            runs.traceback,
        ]
        self._engine.publish(job.id, message, job.due)


def register(engine: CeleryEngine, body: WorkerBody) -> None:
    """Register ``taskrun.run`` on the engine's Celery app, running ``body``."""
    engine.app.task(name=RUN_TASK, ignore_result=True, acks_late=True, typing=False)(body.run)


def worker_argv(engine: CeleryEngine, concurrency: int, log_level: str) -> list[str]:
    """Return the ``celery worker`` arguments: a gevent pool on the runner's queue."""
    return [
        "worker",
        "--pool",
        "gevent",
        "--concurrency",
        str(concurrency),
        "--queues",
        engine._queue,
        "--loglevel",
        log_level.upper(),
        "--hostname",
        f"taskrun-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def serve(
    engine: CeleryEngine,
    tasks: Mapping[str, TaskLike],
    context: ContextFactory,
    threads: int,
    clock: Clock,
    concurrency: int,
    log_level: str = "info",
) -> None:
    """Run a Celery gevent worker for the runner's jobs until it is stopped (SIGTERM, SIGINT).

    Call it in a gevent-patched process, after the app and its tasks are loaded.
    """
    body = WorkerBody(engine, tasks, context, threads, clock)
    register(engine, body)
    sweeper = gevent.spawn(_restore_unacked, engine)
    beats = gevent.spawn(beat_forever, engine.records, clock, concurrency, lambda: body.running)
    try:
        engine.app.worker_main(worker_argv(engine, concurrency, log_level))
    finally:
        sweeper.kill(block=False)
        beats.kill(block=True, timeout=2)  # its last act removes the heartbeat


def _restore_unacked(engine: CeleryEngine) -> None:
    """Every few seconds, put the messages of dead workers back on the queue.

    kombu's Redis transport sweeps for messages left unacknowledged past the
    visibility timeout only when a poll comes back empty, which a gevent
    worker's loop never sees (its ``BRPOP`` always answers); so a job whose
    worker was killed would wait for a worker restart.  This greenlet does
    the sweep (kombu's own, under its Redis mutex) on a timer of its own.
    """
    every = max(1.0, min(10.0, engine.config.visibility_timeout / 3))
    supervisor = Supervisor("the unacknowledged-message sweep", logger)

    def sweep() -> None:
        with engine.app.connection_for_read() as connection:
            connection.default_channel.qos.restore_visible(num=None, interval=1)

    while True:
        gevent.sleep(every + guarded(supervisor, "sweeping Redis", sweep))
