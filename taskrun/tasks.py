"""``Task``: what ``@runner.task`` returns; call it inline, or run it as a job.

A task is the function; a job is one run of it.  ``Task`` is generic over
the function's parameters and return type, so ``send.delay("x")`` with the
wrong arguments is a type error and ``send.delay(1).get()`` has the
function's return type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from taskrun.errors import ConfigError
from taskrun.jobs import Job
from taskrun.options import TaskOptions
from taskrun.validation import as_seconds

P = ParamSpec("P")
R = TypeVar("R")


class Submitter(Protocol):
    """The part of the runner a task talks to."""

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
        """Accept one job of ``task``, due after ``countdown`` s or at POSIX time ``eta``.

        :param unique_key: return the unfinished job of ``task`` with this key, if any.
        :param expires: seconds from now, or an aware datetime, after which the
            job, if not started, never runs.
        """
        ...


class Task(Generic[P, R]):
    """A function registered with a runner.

    Created by ``@runner.task``; not instantiated directly.

    Example::

        @runner.task(retries=3, timeout=30)
        def send_welcome(user_id: int) -> None: ...

        send_welcome(42)                    # runs inline, here and now
        job = send_welcome.delay(42)        # runs in the background
        job = send_welcome.apply_async(args=(42,), countdown=60)
    """

    def __init__(
        self, fn: Callable[P, R], name: str, options: TaskOptions, runner: Submitter
    ) -> None:
        self._fn = fn
        self._name = name
        self._options = options
        self._runner = runner
        functools.update_wrapper(self, fn)

    @property
    def fn(self) -> Callable[P, R]:
        """The decorated function."""
        return self._fn

    @property
    def name(self) -> str:
        """The name jobs of this task are known by (logs, status, store)."""
        return self._name

    @property
    def runner(self) -> Submitter:
        """The runner the task is registered with; it runs and cancels the task's jobs."""
        return self._runner

    @property
    def options(self) -> TaskOptions:
        """Retries, timeout and executor of this task's jobs."""
        return self._options

    def __repr__(self) -> str:
        return f"<Task {self._name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline in the calling greenlet, as a plain call."""
        return self._fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Run the function in the background as soon as a worker is free.

        Never blocks.

        :returns: the :class:`~taskrun.jobs.Job` to follow the run.
        :raises QueueFull: if the runner's backlog is full.
        :raises RunnerNotRunning: if the runner is not started.
        """
        return self._runner.submit(self, args, kwargs or None)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
    ) -> Job[R]:
        """Run the function in the background, now or later.

        Never blocks.  Give at most one of ``countdown`` and ``eta``.

        :param countdown: seconds (or a ``timedelta``) from now, measured on
            the monotonic clock: a later step of the system clock does not
            change how long the job waits.
        :param eta: an aware datetime; a time in the past means now.  It is
            turned into a wait (``eta`` minus the wall-clock time now) when
            accepted: a later step of the system clock does not move it (the
            job runs after that wait, and ``job.eta`` keeps showing ``eta``).
        :param unique_key: while a job of this task with the same key is
            unfinished (PENDING, SCHEDULED, STARTED, RETRY), return that job
            instead of a new one (machine-wide with a shared store).  Once it
            finishes the key is free again.
        :param expires: seconds (or a ``timedelta``) from now, or an aware
            datetime: a job not started by then never runs; it ends CANCELLED
            and ``get()`` raises :class:`~taskrun.errors.JobCancelled` saying it
            expired.  Ignored in eager mode, like ``countdown``.
        :raises ConfigError: for a naive ``eta`` or ``expires``, both ``countdown``
            and ``eta``, a negative ``countdown`` or ``expires``, or a
            ``unique_key`` that is not a non-empty string.
        :raises QueueFull: if the runner's backlog is full.
        """
        if not isinstance(args, tuple | list):
            raise ConfigError(
                f"args must be a tuple or list of positional arguments, got {args!r}; "
                "e.g. args=(42,)"
            )
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(f"kwargs must be a dict, got {kwargs!r}")
        seconds, when = check_when(countdown, eta)
        if unique_key is not None and (not isinstance(unique_key, str) or not unique_key):
            raise ConfigError(
                f"unique_key must be a non-empty string, got {unique_key!r}; "
                'e.g. unique_key=f"welcome:{user_id}"'
            )
        return self._runner.submit(
            self,
            tuple(args),
            kwargs or None,
            seconds,
            when,
            unique_key=unique_key,
            expires=check_expires(expires),
        )


def check_expires(expires: float | timedelta | datetime | None) -> float | datetime | None:
    """Validate ``expires``: seconds (or a ``timedelta``) from now, or an aware datetime.

    :raises ConfigError: for a naive datetime, a negative or non-numeric value.
    """
    if expires is None:
        return None
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ConfigError(
                f"expires must be seconds, a timedelta or a timezone-aware datetime, got the "
                f"naive {expires!r}; e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return expires
    number = as_seconds(expires)
    if number is None or number < 0:
        raise ConfigError(
            f"expires must be seconds >= 0, a timedelta or an aware datetime, got {expires!r}; "
            "e.g. expires=300"
        )
    return number


def check_when(
    countdown: float | timedelta | None, eta: datetime | None
) -> tuple[float, float | None]:
    """Validate ``countdown``/``eta`` and return (countdown seconds, eta as POSIX seconds).

    :raises ConfigError: for both arguments, a naive eta or a negative countdown.
    """
    if countdown is not None and eta is not None:
        raise ConfigError(
            f"give countdown= or eta=, not both (countdown={countdown!r}, eta={eta!r})"
        )
    if eta is not None:
        if not isinstance(eta, datetime) or eta.tzinfo is None:
            raise ConfigError(
                f"eta must be a timezone-aware datetime, got {eta!r}; "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return 0.0, eta.timestamp()
    if countdown is None:
        return 0.0, None
    seconds = as_seconds(countdown)
    if seconds is None and not isinstance(countdown, int | float):
        raise ConfigError(f"countdown must be seconds or a timedelta, got {countdown!r}")
    if seconds is None or seconds < 0:
        raise ConfigError(f"countdown must be >= 0 seconds, got {countdown!r}")
    return seconds, None
