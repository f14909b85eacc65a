"""What the Celery engine cannot carry safely, refused with the reason and the fix; pure.

Redis gives a message nobody acknowledged to another worker after the
transport's ``visibility_timeout``.  A worker holds a countdown's or an
eta's message unacknowledged until it is due, and a running job's until it
ends, so any wait or run longer than that limit would run the job twice.
taskrun refuses those at ``apply_async`` rather than leave it to chance.

``max_running``, ``rate_limit`` and ``unique_key`` are not held across
Celery workers, so they are refused too (at start, and at ``apply_async``),
never silently applied per worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskrun.errors import ConfigError
from taskrun.jobs import TaskLike
from taskrun.options import TaskOptions

__all__ = ["check_task", "check_tasks", "check_wait", "longest_retry_wait"]

SETTING = "broker_visibility_timeout (TASKRUN_BROKER_VISIBILITY_TIMEOUT)"


def longest_retry_wait(options: TaskOptions) -> float:
    """Return the longest back-off wait a job of a task with ``options`` may take."""
    if options.retries == 0:
        return 0.0
    try:
        delay = options.retry_delay * options.retry_backoff ** (options.retries - 1)
    except OverflowError:
        return options.retry_backoff_max
    return min(delay, options.retry_backoff_max)


def check_wait(task_name: str, what: str, wait: float, limit: float) -> None:
    """Refuse a wait (a countdown, an eta, a retry) longer than the visibility timeout.

    :raises ConfigError: naming the wait, the limit and the setting.
    """
    if wait > limit:
        raise ConfigError(
            f"cannot send a job of {task_name} to Celery with a {what} of {wait:.0f} s: "
            f"Redis hands a message that waits longer than its visibility timeout "
            f"({limit:.0f} s) to another worker, so the job would run more than once; "
            f"raise {SETTING} above it, or wait less"
        )


def check_task(task: TaskLike, limit: float) -> None:
    """Refuse a task whose timeout or back-off could outlast the visibility timeout.

    :raises ConfigError: naming the task, the option and the setting.
    """
    options = task.options
    if options.timeout is not None and options.timeout > limit:
        raise ConfigError(
            f"task {task.name} has timeout={options.timeout:.0f} s, longer than Redis's "
            f"visibility timeout ({limit:.0f} s): a job running that long would be given to "
            f"another worker and run twice; raise {SETTING}, or lower the timeout"
        )
    check_wait(task.name, "retry wait", longest_retry_wait(options), limit)


def check_tasks(tasks: Iterable[TaskLike]) -> None:
    """Refuse tasks with limits that Celery workers would each apply on their own.

    :raises ConfigError: naming the task and the option.
    """
    for task in tasks:
        options = task.options
        for option, value in (("max_running", options.max_running), ("rate_limit", options.rate)):
            if value is not None:
                raise ConfigError(
                    f"task {task.name} has {option}=..., which taskrun cannot hold across "
                    "Celery workers (each worker would apply it on its own); remove it, or "
                    "run the task without a broker"
                )
