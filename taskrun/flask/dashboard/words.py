"""Words for the dashboard: schedules, times, durations and values as an operator reads them.

Pure functions (the current time is passed in); registered as Jinja filters
by :func:`taskrun.flask.dashboard.dashboard_blueprint`.
"""

from __future__ import annotations

import reprlib
from datetime import UTC, datetime
from typing import Any

from taskrun.schedules import CronSchedule, IntervalSchedule, Schedule

__all__ = ["ago", "duration", "schedule_words", "short_repr", "timestamp", "zone_of"]

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 20
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def short_repr(value: Any, limit: int = 500) -> str:
    """Return ``repr(value)`` shortened by :mod:`reprlib`, at most ``limit`` characters."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timestamp(stamp: float | None) -> str:
    """Return POSIX seconds as ``2026-12-04 09:30:05 UTC``, or an em dash for none."""
    if not stamp:
        return "—"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Return a duration as ``850 ms``, ``4.2 s``, ``3 min 5 s`` or ``2 h 10 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def ago(stamp: float | None, now: float) -> str:
    """Return how long before ``now`` ``stamp`` was (``in 5.0 s`` if after it)."""
    if not stamp:
        return "—"
    delta = now - stamp
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"


def zone_of(schedule: Schedule) -> str:
    """Return the time zone a schedule is read in (intervals count elapsed time)."""
    if isinstance(schedule, CronSchedule):
        return str(schedule.tz)
    return "elapsed time"


def schedule_words(schedule: Schedule) -> str:
    """Return a schedule in words, e.g. "every 15 minutes" or "at 03:00 every day"."""
    if isinstance(schedule, IntervalSchedule):
        words = f"every {_interval(schedule.interval.total_seconds())}"
        return f"{words}, up to {duration(schedule.jitter)} later" if schedule.jitter else words
    if isinstance(schedule, CronSchedule):
        return _cron_words(schedule.expr)
    return schedule.describe()


def _interval(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def _cron_words(expr: str) -> str:
    minute, hour, day, month, weekday = expr.split()
    if (day, month) != ("*", "*"):
        return f"cron {expr}"
    if minute.startswith("*/") and hour == "*" and weekday == "*":
        return f"every {minute[2:]} minutes"
    if minute == "*" and hour == "*" and weekday == "*":
        return "every minute"
    if minute.isdigit() and hour == "*" and weekday == "*":
        return f"every hour at :{int(minute):02d}"
    if minute.isdigit() and hour.isdigit():
        at = f"at {int(hour):02d}:{int(minute):02d}"
        if weekday == "*":
            return f"{at} every day"
        if weekday.isdigit() and int(weekday) < 7:
            return f"{at} every {_DAYS[int(weekday)]}"
        if weekday == "1-5":
            return f"{at} on weekdays"
    return f"cron {expr}"
