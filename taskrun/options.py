"""Task options and the pure policies they drive (validation, retry back-off).

Options are checked when the task is declared, so a typo fails at import
time rather than on the first run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from taskrun.errors import ConfigError
from taskrun.limits import parse_rate
from taskrun.validation import non_negative_int, positive_int, seconds

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
    :param retry_backoff_max: the longest wait before a retry, in seconds
        (or a ``timedelta``), however many attempts failed.
    :param max_running: the most jobs of the task running at once (machine-wide
        with a shared store), or ``None`` for no limit.
    :param rate_limit: the most starts of the task per second, minute or hour
        (``"10/s"``, ``"100/m"``, ``"5/h"``; machine-wide with a shared store),
        or ``None`` for no limit.
    :param ignore_result: keep state, attempts and timings but not the return value.
    :param result_ttl: seconds (or a ``timedelta``) a finished job of the task
        stays retrievable, overriding the runner's ``result_ttl``.
    :raises ConfigError: if any option is out of range.
    """

    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    executor: Executor = "greenlet"
    retry_backoff_max: float = 3600.0
    max_running: int | None = None
    rate_limit: str | None = None
    ignore_result: bool = False
    result_ttl: float | None = None
    #: ``rate_limit`` parsed: (starts, window seconds).
    rate: tuple[int, float] | None = field(default=None, init=False, compare=False)
    #: Whether a job of the task must pass admission (``max_running`` or
    #: ``rate_limit``); computed once, since every job start reads it.
    is_limited: bool = field(default=False, init=False, compare=False)

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
        object.__setattr__(
            self,
            "retry_backoff_max",
            seconds("retry_backoff_max", self.retry_backoff_max, positive=True),
        )
        if self.max_running is not None:
            positive_int("max_running", self.max_running, "use None for no limit")
        if self.rate_limit is not None:
            object.__setattr__(self, "rate", parse_rate(self.rate_limit))
        if not isinstance(self.ignore_result, bool):
            raise ConfigError(f"ignore_result must be True or False, got {self.ignore_result!r}")
        if self.result_ttl is not None:
            object.__setattr__(self, "result_ttl", seconds("result_ttl", self.result_ttl))
        limited = self.max_running is not None or self.rate is not None
        object.__setattr__(self, "is_limited", limited)


def retry_delay(options: TaskOptions, failed_attempts: int, rand: random.Random) -> float:
    """Return the seconds to wait before the next attempt.

    The delay grows as ``retry_delay * retry_backoff ** (failed_attempts - 1)``,
    capped at ``retry_backoff_max``; with jitter it is drawn uniformly from
    the upper half of that value.

    :param failed_attempts: attempts made so far (1 after the first failure).
    """
    exponent = max(failed_attempts - 1, 0)
    try:
        delay = options.retry_delay * options.retry_backoff**exponent
        delay = min(delay, options.retry_backoff_max)
    except OverflowError:
        delay = options.retry_backoff_max
    if options.retry_jitter:
        delay = rand.uniform(delay / 2, delay)
    return delay


def should_retry(options: TaskOptions, failed_attempts: int, error: BaseException) -> bool:
    """Return whether a job that raised ``error`` on attempt ``failed_attempts`` runs again.

    A :class:`Retry` always does while retries are left, whatever ``retry_on``.
    """
    if failed_attempts > options.retries:
        return False
    return isinstance(error, Retry) or isinstance(error, options.retry_on)


def retry_due(
    options: TaskOptions,
    failed_attempts: int,
    error: BaseException,
    now: float,
    rand: random.Random,
) -> float:
    """Return when (POSIX seconds) the next attempt runs: as a :class:`Retry` asks, or back-off."""
    if isinstance(error, Retry):
        if error.eta is not None:
            return max(error.eta, now)
        if error.countdown is not None:
            return now + error.countdown
    return now + retry_delay(options, failed_attempts, rand)


def final_error(error: BaseException) -> BaseException:
    """The error a job fails with: a :class:`Retry`'s ``exc`` once retries are used up."""
    if isinstance(error, Retry) and error.exc is not None:
        return error.exc
    return error


class Retry(Exception):
    """Raise from a task body to run the job again later; counts against its ``retries``.

    The job goes to RETRY at once.  Once its ``retries`` are used up it
    fails with ``exc`` (or this ``Retry`` when ``exc`` is not given).

    :param countdown: seconds (or a ``timedelta``) until the next attempt.
    :param eta: an aware datetime for the next attempt.  Without either,
        the task's back-off decides.
    :param exc: the error the job fails with once its retries are used up.
    :raises ConfigError: for both ``countdown`` and ``eta``, a negative
        countdown or a naive ``eta``.

    Example::

        @runner.task(retries=5)
        def fetch(url: str) -> bytes:
            response = requests.get(url, timeout=10)
            if response.status_code == 429:
                raise Retry(countdown=30)
            return response.content
    """

    def __init__(
        self,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        exc: BaseException | None = None,
    ) -> None:
        if countdown is not None and eta is not None:
            raise ConfigError(f"give Retry countdown= or eta=, not both ({countdown!r}, {eta!r})")
        if eta is not None and (not isinstance(eta, datetime) or eta.tzinfo is None):
            raise ConfigError(
                f"Retry eta must be a timezone-aware datetime, got {eta!r}; "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        if exc is not None and not isinstance(exc, BaseException):
            raise ConfigError(f"Retry exc must be an exception, got {exc!r}")
        super().__init__(countdown, eta, exc)
        #: Seconds until the next attempt, or ``None``.
        self.countdown = None if countdown is None else seconds("countdown", countdown)
        #: When the next attempt runs (POSIX seconds), or ``None``.
        self.eta = None if eta is None else eta.timestamp()
        self.exc = exc

    def __str__(self) -> str:
        if self.exc is not None:
            return f"retry requested after {self.exc!r}"
        if self.countdown is not None:
            return f"retry requested in {self.countdown!r} s"
        return "retry requested"
