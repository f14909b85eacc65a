"""Task options and the pure policies they drive (validation, retry back-off).

Options are checked when the task is declared, so a typo fails at import
time rather than on the first run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from taskrun.errors import ConfigError
from taskrun.validation import non_negative_int, seconds

Executor = Literal["greenlet", "thread"]
EXECUTORS: tuple[Executor, ...] = ("greenlet", "thread")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How jobs of one task run, retry and time out.

    :param retries: extra attempts after the first failure (0: none).
    :param retry_delay: seconds before the first retry (or a ``timedelta``).
    :param retry_backoff: factor applied to the delay for each later retry.
    :param retry_jitter: randomise each delay within its upper half, so
        jobs that failed together do not retry together.
    :param retry_on: exception types that trigger a retry; others fail at once.
    :param timeout: seconds (or a ``timedelta``) one attempt may take, counted
        from when its body starts (a thread job's wait for a free thread does
        not count), or ``None`` for no limit.
    :param executor: ``"greenlet"`` (the event loop) or ``"thread"`` (a
        dedicated thread pool, for blocking or CPU-bound work).
    :raises ConfigError: if any option is out of range.
    """

    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    executor: Executor = "greenlet"

    def __post_init__(self) -> None:
        non_negative_int("retries", self.retries, "use retries=0 for no retries")
        # Frozen: normalise through object.__setattr__ (a timedelta becomes float seconds).
        object.__setattr__(self, "retry_delay", seconds("retry_delay", self.retry_delay))
        if not isinstance(self.retry_backoff, int | float) or self.retry_backoff < 1:
            raise ConfigError(
                f"retry_backoff must be a number >= 1, got {self.retry_backoff!r}; "
                "use 1 for a constant delay, 2 to double it each time"
            )
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise ConfigError(
                f"retry_on must be a tuple of exception classes, got {self.retry_on!r}; "
                "e.g. retry_on=(ConnectionError, TimeoutError)"
            )
        if self.timeout is not None:
            object.__setattr__(self, "timeout", seconds("timeout", self.timeout, positive=True))
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"executor must be one of {EXECUTORS!r}, got {self.executor!r}; "
                'use "thread" for blocking or CPU-bound work'
            )


def retry_delay(options: TaskOptions, failed_attempts: int, rand: random.Random) -> float:
    """Return the seconds to wait before the next attempt.

    The delay grows as ``retry_delay * retry_backoff ** (failed_attempts - 1)``;
    with jitter it is drawn uniformly from the upper half of that value.

    :param failed_attempts: attempts made so far (1 after the first failure).
    """
    delay = options.retry_delay * options.retry_backoff ** max(failed_attempts - 1, 0)
    if options.retry_jitter:
        delay = rand.uniform(delay / 2, delay)
    return delay


def should_retry(options: TaskOptions, failed_attempts: int, error: BaseException) -> bool:
    """Return whether a job that raised ``error`` on attempt ``failed_attempts`` runs again."""
    return failed_attempts <= options.retries and isinstance(error, options.retry_on)
