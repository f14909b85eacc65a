"""Time sources: the real clock and a manual clock for tests.

The scheduler reads time only through a :class:`Clock`, so tests (ours and
our users') can drive delayed, retried and periodic jobs by advancing a
:class:`ManualClock` instead of sleeping.

Two readings: :meth:`Clock.time` is the wall clock (what a job's ``eta``
and a crontab mean, what the store records), :meth:`Clock.monotonic`
measures how long from now (countdowns, retry waits), and is not moved when
the wall clock is stepped (an NTP correction, an operator's ``date -s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from taskrun.errors import ConfigError


class Clock(Protocol):
    """What the scheduler needs to know about time."""

    def time(self) -> float:
        """Return the current wall-clock time as POSIX seconds."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that only moves forward, at the pace of real time.

        Only differences between two readings mean anything; a step of the
        wall clock does not move it.
        """
        ...

    def sleep_for(self, seconds: float) -> float | None:
        """Return how long to block on the event loop to let ``seconds`` pass.

        ``None`` means "until woken": a manual clock only moves when advanced.
        """
        ...

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Register ``wake`` to be called whenever time jumps (manual clocks)."""
        ...


class SystemClock:
    """The real clock: ``time.time()``; sleeping lets real time pass."""

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def sleep_for(self, seconds: float) -> float | None:
        """Return ``seconds``: real time passes while the loop waits."""
        return seconds

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Do nothing: the real clock never jumps on request."""


class ManualClock:
    """A clock that moves only when :meth:`advance`, :meth:`set` or :meth:`step_wall` is called.

    Pass it as ``TaskRunner(clock=ManualClock(...))``; after ``advance`` the
    scheduler wakes and runs whatever came due (yield to the loop, e.g. with
    ``gevent.sleep(0)``, ``runner.join()`` or by waiting on a job, to let it run).
    :meth:`advance` moves the wall and the monotonic time together;
    :meth:`step_wall` moves only the wall time, as an NTP step would.

    :param start: the initial time, an aware datetime (default: now, UTC).
    :raises ConfigError: (a ``ValueError``) if ``start`` is naive.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(UTC)
        if start.tzinfo is None or start.utcoffset() is None:
            raise ConfigError(
                f"ManualClock start must be a timezone-aware datetime, got {start!r}; "
                "pass e.g. datetime(2026, 1, 1, tzinfo=timezone.utc)"
            )
        self._now = start.timestamp()
        self._mono = 0.0
        self._subscribers: list[Callable[[], None]] = []

    def time(self) -> float:
        """Return the manual time as POSIX seconds."""
        return self._now

    def monotonic(self) -> float:
        """Return the manual monotonic time: seconds advanced since the clock was made."""
        return self._mono

    def now(self) -> datetime:
        """Return the manual time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, UTC)

    def sleep_for(self, seconds: float) -> float | None:
        """Return ``None``: only :meth:`advance` makes manual time pass."""
        return None

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` after every :meth:`advance` or :meth:`set`."""
        self._subscribers.append(wake)

    def advance(self, delta: float | timedelta) -> None:
        """Move time forward by ``delta`` seconds and wake the subscribers.

        :raises ConfigError: (a ``ValueError``) if ``delta`` is negative or not a
            finite number of seconds or a ``timedelta``.
        """
        seconds = _seconds(delta)
        if seconds is None or seconds < 0:
            raise ConfigError(
                f"ManualClock.advance needs a finite number of seconds >= 0 or a timedelta, "
                f"got {delta!r}; a ManualClock never moves backwards (make a new one instead)"
            )
        self._now += seconds
        self._mono += seconds
        self._wake()

    def step_wall(self, delta: float | timedelta) -> None:
        """Step the wall time by ``delta`` seconds (either way), leaving monotonic time alone.

        Simulates the system clock being stepped (an NTP correction, a
        manual ``date -s``): countdowns and retry waits keep their length,
        periodic slots (wall-clock times) follow the new wall time.
        """
        self._now += delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        self._wake()

    def _wake(self) -> None:
        for wake in self._subscribers:
            wake()

    def set(self, when: datetime) -> None:
        """Jump to the aware datetime ``when`` (not earlier than now).

        :raises ConfigError: if ``when`` is naive or earlier than now.
        """
        if when.tzinfo is None or when.utcoffset() is None:
            raise ConfigError(
                f"ManualClock.set needs a timezone-aware datetime, got {when!r}; "
                "pass e.g. datetime(2026, 1, 1, tzinfo=timezone.utc)"
            )
        if when.timestamp() < self._now:
            raise ConfigError(
                f"ManualClock.set cannot move back to {when!r} from {self.now()!r}; "
                "a ManualClock never moves backwards (make a new one instead)"
            )
        self.advance(when.timestamp() - self._now)


def _seconds(delta: object) -> float | None:
    # Not taskrun.validation.as_seconds: the clock sits left of it in the layering.
    number = delta.total_seconds() if isinstance(delta, timedelta) else delta
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        return float(number)
    return None
