"""The taskrun exception hierarchy.

Every error taskrun raises derives from :class:`TaskrunError`, mixed with the
builtin whose meaning matches, so callers may catch either.  Messages say what
was wrong, show the offending value and say how to fix it.
"""

from __future__ import annotations


class TaskrunError(Exception):
    """Base class of every error raised by taskrun itself."""


class ConfigError(TaskrunError, ValueError):
    """An option given to a runner, task or schedule is invalid."""


class InvalidSchedule(ConfigError):
    """A cron expression or interval cannot be parsed or is out of range."""


class QueueFull(TaskrunError):
    """The backlog is full; the job was not accepted.

    Raised at once by ``delay``/``apply_async``: the caller is never blocked.
    """


class RunnerNotRunning(TaskrunError, RuntimeError):
    """A job was submitted to a runner that is not started or already stopped."""


class JobTimeout(TaskrunError, TimeoutError):
    """A job ran past its task's ``timeout`` and was stopped (or abandoned)."""


class WaitTimeout(TaskrunError, TimeoutError):
    """``Job.get(timeout=...)`` gave up waiting; the job itself goes on."""


class JobCancelled(TaskrunError):
    """The job was cancelled; raised by ``Job.get()`` for a cancelled job."""


class JobLost(TaskrunError):
    """The job's result is no longer available (evicted or never recorded)."""


class NotSerializable(TaskrunError, TypeError):
    """A job's arguments cannot be stored in a durable store."""


class StoreError(TaskrunError):
    """The durable job store cannot be opened or used."""


class NoCurrentJob(TaskrunError, RuntimeError):
    """``current_job()`` was called outside a task body."""


class JobNotFinished(TaskrunError, RuntimeError):
    """``Job.retry()`` was called on a job that has not finished yet."""


class BrokerError(StoreError, ConnectionError):
    """The broker (Redis, for the Celery engine) cannot be reached or refused a command."""
