"""The Celery engine's web side: publish jobs to Redis, look them up, cancel them, claim slots.

A runner with a broker (``TaskRunner(broker="redis://...")``) hands every
job to :class:`CeleryEngine`: it writes the job's record (PENDING, or
SCHEDULED with its eta) and publishes one ``taskrun.run`` message that a
``taskrun worker`` process runs through taskrun's own executor
(:mod:`.worker`).  ``delay()`` is then a network call: it raises
:class:`~taskrun.errors.BrokerError` naming the URL when Redis is down, and
never ``QueueFull`` (Redis is the backlog).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import gevent
from gevent._hub_local import get_hub_if_exists

from taskrun import lifecycle, signals
from taskrun.clock import Clock
from taskrun.engines.celery.app import RUN_TASK, make_app, queue_name
from taskrun.engines.celery.codec import apply_record, check_arguments, envelope_of, record_of
from taskrun.engines.celery.limits import check_task, check_wait
from taskrun.engines.celery.records import Records
from taskrun.errors import ConfigError, JobLost
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.options import TaskOptions

__all__ = ["CeleryEngine", "EngineConfig", "UnknownTask"]

logger = logging.getLogger(__name__)

#: The first and the longest pause (seconds) between two reads of a waited-on job.
POLL_FIRST = 0.002
POLL_MAX = 0.1


@dataclass(frozen=True)
class EngineConfig:
    """What the Celery engine needs to know of its runner.

    :param url: the Redis URL.
    :param name: the runner's name: its key prefix and queue.
    :param result_ttl: seconds a finished job's record is kept.
    :param visibility_timeout: Redis's visibility timeout (see :mod:`.limits`).
    """

    url: str
    name: str
    result_ttl: float
    visibility_timeout: float


@dataclass(frozen=True)
class UnknownTask:
    """The task of a job seen in a process that does not register it (its name only)."""

    name: str
    options: TaskOptions = field(default_factory=TaskOptions)

    def fn(self, *args: Any, **kwargs: Any) -> Any:
        raise JobLost(f"task {self.name!r} is not registered in this process")


class CeleryEngine:
    """Sends a runner's jobs to Celery workers through Redis; any thread may call it.

    :param config: the URL, the runner's name and the limits.
    :param clock: stamps jobs.
    :param tasks: the runner's registered tasks by name.
    :param sender: what signals name as their sender (the runner).
    """

    is_remote = True

    def __init__(
        self,
        config: EngineConfig,
        clock: Clock,
        tasks: Callable[[], Mapping[str, TaskLike]],
        sender: object,
    ) -> None:
        self.config = config
        self.sender = sender
        self._clock = clock
        self._tasks = tasks
        self.records = Records(config.url, f"taskrun:{config.name}:")
        self.app = make_app(config.url, config.name, config.visibility_timeout)
        self._queue = queue_name(config.name)
        self._origin = f"taskrun@{socket.gethostname()}:{os.getpid()}"
        self._checked: set[str] = set()  # tasks whose options passed check_task

    def open(self) -> None:
        """Check that Redis answers.

        :raises BrokerError: naming the URL, if it does not.
        """
        self.records.ping()

    def close(self) -> None:
        """Close the connections to Redis."""
        self.records.close()
        self.app.close()

    def has_room(self) -> bool:
        """Always ``True``: Redis is the backlog, and taskrun does not bound it."""
        return True

    def _ttl(self, job: Job[Any]) -> float:
        """How long the record of an unfinished job is kept: past its due time and a redelivery."""
        return (
            self.config.result_ttl
            + max(job.due - self._clock.time(), 0.0)
            + (self.config.visibility_timeout)
        )

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
        """Record the job in Redis, then publish it; one or two round trips.

        :raises ConfigError: for a ``unique_key``, or a wait longer than the
            visibility timeout (see :mod:`.limits`).
        :raises NotSerializable: naming the argument that is not JSON.
        :raises BrokerError: naming the URL, if Redis cannot be reached.
        """
        name = task.name
        if unique_key is not None:
            raise ConfigError(
                f"cannot send a job of {name} with unique_key={unique_key!r}: taskrun does not "
                "hold unique keys across Celery workers; drop unique_key, or run without a broker"
            )
        limit = self.config.visibility_timeout
        if name not in self._checked:
            check_task(task, limit)
            self._checked.add(name)
        now = self._clock.time()
        due = eta if eta is not None else now + countdown
        check_wait(name, "countdown" if eta is None else "eta", due - now, limit)
        plain_args, plain_kwargs = check_arguments(name, args, kwargs)
        job: Job[Any] = Job(task, args, kwargs, None, enqueued=now)
        runs = job._run_record()
        runs.poll = self.poll
        if isinstance(expires, datetime):
            runs.expires = expires.timestamp()
        elif expires is not None:
            runs.expires = now + expires
        if due > now:
            job.state = JobState.SCHEDULED
            job.due = due
        message = [name, job.id, plain_args, plain_kwargs, 0, now, runs.expires]
        # The record and the message in one round trip, atomically: a job is in Redis
        # with its record, or not at all.
        self.publish(job.id, message, job.due or None, (record_of(job), self._ttl(job)))
        if signals.job_enqueued.receivers:
            signals.send(signals.job_enqueued, self.sender, job=job)
        if lifecycle.info_enabled():
            lifecycle.accepted(job)
        return job

    def publish(
        self,
        job_id: str,
        message: list[Any],
        due: float | None,
        record: tuple[dict[str, Any], float] | None = None,
    ) -> None:
        """Publish one ``taskrun.run`` message for the job, due now or at POSIX time ``due``.

        The message is Celery's own (protocol 2, made by ``app.amqp``), pushed
        onto the runner's queue in the envelope of kombu's Redis transport, in
        one transaction with the job's ``record`` (and its ttl) if given: one
        round trip, and a job is in Redis with its record or not at all.

        :raises BrokerError: naming the URL, if Redis cannot be reached.
        """
        when = None if due is None else datetime.fromtimestamp(due, UTC)
        task = self.app.amqp.as_task_v2(
            job_id,
            RUN_TASK,
            message,
            {},
            eta=when,
            argsrepr=f"[{message[0]!r}, {job_id!r}]",
            kwargsrepr="{}",
            origin=self._origin,
            # Explicit: the message's flag overrides the task's, and Celery must store
            # nothing (taskrun's record is the job's state).
            ignore_result=True,
        )
        envelope = envelope_of(task.headers, task.properties, task.body, self._queue)
        self.records.push(self._queue, envelope, job_id, record)

    def snapshot(self, record: dict[str, Any]) -> Job[Any]:
        """Return a :class:`Job` showing ``record``; waiting on it polls Redis."""
        name = record["task"]
        task = self._tasks().get(name) or UnknownTask(name)
        job: Job[Any] = Job(
            task,
            tuple(record.get("args") or ()),
            record.get("kwargs") or None,
            None,
            job_id=record["id"],
            enqueued=float(record.get("enqueued") or 0.0),
        )
        apply_record(job, record)
        job._run_record().poll = self.poll
        return job

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job's latest state from Redis, or ``None`` if unknown or expired."""
        record = self.records.read(job_id)
        return None if record is None else self.snapshot(record)

    def poll(self, job: Job[Any], timeout: float | None) -> None:
        """Refresh ``job`` from Redis until it is finished or ``timeout`` s have passed."""
        sleep = gevent.sleep if get_hub_if_exists() is not None else time.sleep
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            record = self.records.read(job.id)
            if record is not None:
                apply_record(job, record)
                if job.ready():
                    return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, POLL_MAX)

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job``: a tombstone every worker checks before it starts the job, then revoke.

        The tombstone outlives any worker being offline; a running job is
        killed (``revoke(terminate=True)`` kills its greenlet under ``-P
        gevent``).  A running thread job's thread runs on; its result is dropped.

        :returns: whether the job was unfinished (it is CANCELLED now).
        """
        ttl = (
            self.config.result_ttl
            + self.config.visibility_timeout
            + max(job.due - self._clock.time(), 0.0)
        )
        outcome = self.records.cancel(job.id, self._clock.time(), ttl)
        if outcome == 1:
            try:
                self.app.control.revoke(job.id, terminate=True)
            except Exception as error:  # the tombstone holds: a worker will not start it
                logger.warning(
                    "job %s (%s): could not broadcast its revoke: %s", job.id, job.name, error
                )
        record = self.records.read(job.id)
        if record is not None:
            apply_record(job, record)
        if outcome == 1 and signals.job_cancelled.receivers:
            signals.send(signals.job_cancelled, self.sender, job=job)
        return outcome == 1

    def stats(self) -> dict[str, Any]:
        """Return what Redis tells: the URL (no password), the queue, its length, the workers.

        ``workers`` lists the ``taskrun worker`` processes whose heartbeat Redis
        holds (see :data:`~taskrun.engines.celery.worker.BEAT`): ``host``,
        ``pid``, ``concurrency``, ``running`` (jobs running now), ``started`` and
        ``seen`` (POSIX times).

        :raises BrokerError: naming the URL, if Redis cannot be reached.
        """
        return {
            "url": self.records.url_shown,
            "queue": self._queue,
            "queued": self.records.length(self._queue),
            "workers": sorted(self.records.workers(), key=lambda w: (w["host"], w["pid"])),
        }

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim a periodic slot in Redis (``SET NX``): it runs once across all machines."""
        return self.records.claim_slot(task_name, slot)
