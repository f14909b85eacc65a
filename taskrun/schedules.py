"""When periodic jobs fire: ``crontab`` and ``every`` schedules.

Schedules are pure values: ``next_after(dt)`` is the first fire time strictly
after the aware ``dt``; nothing here reads the clock.  cronsim matches cron
expressions, after our own validation (errors name the field, value and range).
Besides the standard syntax, cronsim's ``L``/``LW`` (day) and ``5L``/``fri#2``
(day_of_week) are allowed; ``?``, seconds, ``@daily`` and oversized steps are not.

DST follows Debian cron.  What cronsim 2.8 does (pinned by the tests):

* A fixed time (minute and hour fields not starting with ``*``) is matched on
  naive wall-clock time: a skipped time fires at the end of the gap, a repeated
  one at its first occurrence.  cronsim ignores ``fold``: from inside the second
  occurrence it returns the earlier first one, so we skip results <= ``dt``.
* Other expressions cronsim steps in UTC, but its minute and hour jumps assume
  whole-hour offset changes: around Lord Howe's 30-minute shift it loses real
  slots (``45 * * * *`` skips the second 01:45).  So we run cronsim on naive
  wall-clock time within each stretch of constant UTC offset instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import islice
from typing import NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskrun.errors import InvalidSchedule
from taskrun.validation import as_seconds

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "crontab", "every"]

_SECOND = timedelta(seconds=1)
_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_MAX_STEPS = 10_000  # bounds every search loop; real schedules need a handful
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FORMS = "a number, a range '1-5', a list '1,15' or a step '*/15'"
# cronsim's extras: last (week)day of the month; last Friday '5L'; second Friday 'fri#2'
_EXTENSIONS = {"day": "lw?", "day_of_week": "[0-7]l|([0-7]|sun|mon|tue|wed|thu|fri|sat)#[1-5]"}


class _Field(NamedTuple):
    name: str
    lo: int
    hi: int
    allowed: str
    names: tuple[str, ...] = ()

    def error(self, text: str, expr: str, problem: str) -> InvalidSchedule:
        return InvalidSchedule(
            f"invalid {self.name} field {text!r} in crontab {expr!r}: {problem}; "
            f"{self.name} takes {self.allowed} as {_FORMS}"
        )

    def value(self, token: str, text: str, expr: str) -> int:
        if token in self.names:
            return self.names.index(token) + (self.name == "month")
        if not (token.isascii() and token.isdigit()):
            kind = "a name or a number" if self.names else "a number"
            raise self.error(text, expr, f"{token!r} is not {kind}")
        if not self.lo <= int(token) <= self.hi:
            raise self.error(text, expr, f"{token} is out of range {self.lo}-{self.hi}")
        return int(token)

    def check(self, text: str, expr: str) -> None:
        """Raise :class:`InvalidSchedule` unless ``text`` is a valid value of this field."""
        for item in text.lower().split(","):
            if self.name in _EXTENSIONS and re.fullmatch(_EXTENSIONS[self.name], item):
                continue
            base, slash, step = item.partition("/")
            span = self.hi - self.lo
            if slash and not (step.isascii() and step.isdigit() and 0 < int(step) <= span):
                raise self.error(text, expr, f"step {step!r} must be 1-{span}")
            if base != "*":
                start, dash, end = base.partition("-")
                if self.value(start, text, expr) > self.value(end if dash else start, text, expr):
                    raise self.error(text, expr, f"range {base!r} runs backwards")


_FIELDS = (
    _Field("minute", 0, 59, "0-59"),
    _Field("hour", 0, 23, "0-23"),
    _Field("day", 1, 31, "1-31"),
    _Field("month", 1, 12, "1-12 or jan-dec", _MONTHS),
    _Field("day_of_week", 0, 7, "0-7 or sun-sat (0 and 7 are Sunday)", _DAYS),
)


@runtime_checkable
class Schedule(Protocol):
    """When a periodic job fires; implementations are pure and immutable."""

    def next_after(self, dt: datetime) -> datetime:
        """Return the first fire time strictly after the aware datetime ``dt``."""
        ...

    def describe(self) -> str:
        """Return a human-readable description, e.g. ``"every(minutes=5)"``."""
        ...


def _utc(dt: datetime) -> datetime:
    if not isinstance(dt, datetime) or dt.utcoffset() is None:
        raise InvalidSchedule(
            f"a timezone-aware datetime is needed, got {dt!r}; pass e.g. datetime.now(timezone.utc)"
        )
    return dt.astimezone(UTC)


def _first_change(tz: tzinfo, start: datetime, end: datetime, offset: timedelta) -> datetime | None:
    """Return the first instant in (start, end] whose UTC offset is not ``offset``."""
    # probe a day at a time (no zone changes twice in a day), then bisect
    probe = start
    while probe < end:
        later = min(probe + timedelta(days=1), end)
        if later.astimezone(tz).utcoffset() != offset:
            while later - probe > _SECOND:
                middle = probe + (later - probe) / 2
                changed = middle.astimezone(tz).utcoffset() != offset
                probe, later = (probe, middle) if changed else (middle, later)
            return probe.replace(microsecond=0) + _SECOND  # offsets change on whole seconds
        probe = later
    return None


@dataclass(frozen=True, repr=False)
class CronSchedule:
    """A cron expression evaluated in a time zone; build it with :func:`crontab`.

    :param expr: a valid 5-field expression (validated again here).
    :param tz: the zone whose wall-clock time the expression describes.
    :raises InvalidSchedule: if ``expr`` is not valid.
    """

    expr: str
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        object.__setattr__(self, "expr", _validate(self.expr))
        object.__setattr__(self, "tz", _zone(self.tz))

    def describe(self) -> str:
        """Return e.g. ``"crontab('*/15 * * * *', tz='Europe/Berlin')"``."""
        return f"crontab({self.expr!r}, tz={str(self.tz)!r})"

    __repr__ = describe

    def next_after(self, dt: datetime) -> datetime:
        """Return the first fire time strictly after ``dt``, in the schedule's zone.

        :param dt: any aware datetime; it is compared as an instant.
        :returns: an aware datetime in ``tz``, later than ``dt`` as an instant.
        :raises InvalidSchedule: if ``dt`` is naive, or the expression has no
            fire time in the 50 years after ``dt`` (cronsim's search limit).
        """
        after, (minute, hour) = _utc(dt), self.expr.split()[:2]
        fixed_time = not minute.startswith("*") and not hour.startswith("*")
        candidates = self._fixed_times(after) if fixed_time else self._wall_times(after)
        for fire in islice(candidates, _MAX_STEPS):
            if fire > after:
                return fire.astimezone(self.tz)
        raise InvalidSchedule(f"{self!r} never fires in the 50 years after {dt}")

    def _fixed_times(self, after: datetime) -> Iterator[datetime]:
        # cronsim's own DST handling; it may yield a first occurrence before ``after``
        return (fire.astimezone(UTC) for fire in CronSim(self.expr, after.astimezone(self.tz)))

    def _wall_times(self, after: datetime) -> Iterator[datetime]:
        # Within a stretch of constant offset, wall time is UTC plus that offset: match
        # naive wall time; if the match lies past an offset change, go on from there.
        start, back = after, timedelta()
        for _ in range(_MAX_STEPS):
            offset = start.astimezone(self.tz).utcoffset() or timedelta()
            match = next(CronSim(self.expr, (start + offset).replace(tzinfo=None) - back), None)
            if match is None:
                return
            fire = (match - offset).replace(tzinfo=UTC)
            change = _first_change(self.tz, start, fire, offset)
            if change is None:
                yield fire
                return
            start, back = change, _SECOND  # from the change itself, inclusive


def _validate(expr: object) -> str:
    if not isinstance(expr, str):
        raise InvalidSchedule(
            f"crontab expression must be a str such as '*/15 * * * *', "
            f"got {expr!r} ({type(expr).__name__})"
        )
    fields = expr.split()
    if len(fields) != 5:
        hint = "; seconds are not supported, use every()" if len(fields) == 6 else ""
        raise InvalidSchedule(
            f"crontab expression {expr!r} has {len(fields)} field{'s' * (len(fields) != 1)}; 5 "
            f"are needed: minute hour day month day_of_week, e.g. '*/15 * * * *'{hint}"
        )
    for field, text in zip(_FIELDS, fields, strict=True):
        field.check(text, expr)
    normal = " ".join(fields)
    try:
        CronSim(normal, datetime(2000, 1, 1))
    except CronSimError as exc:  # only day-vs-month conflicts should get this far
        raise InvalidSchedule(
            f"crontab {normal!r} never fires: day {fields[2]!r} does not occur in month "
            f"{fields[3]!r}; choose a day that exists in those months, or 'L' for the last day"
        ) from exc
    return normal


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None or isinstance(tz, tzinfo):
        return tz or UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        msg = f"unknown time zone {tz!r}; pass an IANA name such as 'Europe/Berlin' or a tzinfo"
        raise InvalidSchedule(msg) from exc


def crontab(
    expr: str | None = None,
    *,
    minute: str | int = "*",
    hour: str | int = "*",
    day: str | int = "*",
    month: str | int = "*",
    day_of_week: str | int = "*",
    tz: str | tzinfo | None = None,
) -> CronSchedule:
    """Build a cron schedule from a 5-field expression or from keyword fields.

    Example: ``crontab("*/15 * * * *", tz="Europe/Berlin")`` or
    ``crontab(minute=0, hour=3, day_of_week="mon-fri")``.

    :param expr: ``"minute hour day month day_of_week"``; omit it to use the keywords.
    :param tz: an IANA zone name or a tzinfo; ``None`` means UTC.
    :returns: a validated, immutable :class:`CronSchedule`.
    :raises InvalidSchedule: naming the field, the value and the allowed range;
        also if both ``expr`` and keyword fields are given, or ``tz`` is unknown.
    """
    keywords = (minute, hour, day, month, day_of_week)
    if expr is None:
        expr = " ".join(str(value) for value in keywords)
        for field, value in zip(_FIELDS, keywords, strict=True):
            if isinstance(value, bool) or not isinstance(value, str | int) or " " in str(value):
                raise field.error(str(value), expr, "give one str or int field, without spaces")
            field.check(str(value), expr)
    elif any(value != "*" for value in keywords):
        raise InvalidSchedule(
            f"crontab() got the expression {expr!r} and keyword fields; pass one or the other"
        )
    return CronSchedule(expr, _zone(tz))


def _seconds(name: str, value: object) -> float:
    number = as_seconds(value)
    if number is None:
        raise InvalidSchedule(f"{name} must be a finite number of seconds, got {value!r}")
    return number


def _plain(number: float) -> int | float:
    return int(number) if number.is_integer() else number


@dataclass(frozen=True, repr=False)
class IntervalSchedule:
    """Fire every ``interval``; build it with :func:`every`.

    :param interval: a positive duration.
    :param jitter: up to this many extra seconds per run; ``0 <= jitter < interval``.
        The scheduler derives each run's delay from the task name and the slot
        (:func:`taskrun.periodic.policy.jitter_delay`), so every process agrees on it.
    :raises InvalidSchedule: if either value is out of range.
    """

    interval: timedelta
    jitter: float = 0.0

    def __post_init__(self) -> None:
        seconds = _seconds("interval", self.interval)
        if seconds <= 0:
            raise InvalidSchedule(
                f"interval must be positive, got {_plain(seconds)!r} seconds; "
                "pass e.g. every(minutes=5) or every(30)"
            )
        jitter = _seconds("jitter", self.jitter)
        if not 0 <= jitter < seconds:
            raise InvalidSchedule(
                f"jitter must be at least 0 and less than the interval ({_plain(seconds)} "
                f"seconds), got {self.jitter!r}; e.g. jitter=10 delays each run up to 10 s"
            )
        object.__setattr__(self, "interval", timedelta(seconds=seconds))
        object.__setattr__(self, "jitter", jitter)

    def describe(self) -> str:
        """Return e.g. ``"every(minutes=5, jitter=10)"``."""
        seconds = self.interval.total_seconds()
        unit, size = next((unit, n) for unit, n in _UNITS.items() if seconds % n == 0 or n == 1)
        jitter = f", jitter={_plain(self.jitter)}" if self.jitter else ""
        return f"every({unit}={_plain(seconds / size)}{jitter})"

    __repr__ = describe

    def next_after(self, dt: datetime) -> datetime:
        """Return ``dt`` plus the interval in elapsed time (not wall-clock), in ``dt``'s zone.

        :raises InvalidSchedule: if ``dt`` is naive.  Jitter is not applied here.
        """
        return (_utc(dt) + self.interval).astimezone(dt.tzinfo)


def every(
    interval: timedelta | float | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
    jitter: float | timedelta = 0,
) -> IntervalSchedule:
    """Build a schedule that fires at a fixed interval.

    Example: ``every(minutes=5, jitter=10)``, ``every(timedelta(hours=1))``, ``every(30)``.

    :param interval: a timedelta or seconds; or give the keyword parts instead.
    :param jitter: delay each run by up to this many seconds, spread over the
        runs and the same in every process of the app (derived from the task
        name and the slot); must be smaller than the interval.
    :returns: a validated, immutable :class:`IntervalSchedule`.
    :raises InvalidSchedule: if the interval is not positive, both forms are
        given, or jitter is negative or not smaller than the interval.
    """
    parts = {"days": days, "hours": hours, "minutes": minutes, "seconds": seconds}
    if interval is not None and any(value != 0 for value in parts.values()):
        raise InvalidSchedule(f"every() got {interval!r} and keyword parts; pass one or the other")
    if interval is None:
        total = sum(_seconds(unit, value) * _UNITS[unit] for unit, value in parts.items())
    else:
        total = _seconds("interval", interval)
    try:
        return IntervalSchedule(timedelta(seconds=total), _seconds("jitter", jitter))
    except OverflowError as exc:
        raise InvalidSchedule(f"interval of {total} seconds is too large") from exc
