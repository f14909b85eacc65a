"""Tests for taskrun.schedules: cron and interval schedules, pure functions of time.

Expectations are instants written in UTC.  The DST tables cover spring-forward
and fall-back in five zones, one of them (Lord Howe) with a 30-minute shift.
Aware datetimes are compared in UTC only: same-zone comparison ignores ``fold``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from taskrun.errors import ConfigError, InvalidSchedule, TaskrunError
from taskrun.schedules import CronSchedule, IntervalSchedule, Schedule, crontab, every


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local_midnight(zone: str, day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def walk(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Return the fire times in (start, end] as UTC instants, chaining next_after."""
    fires: list[datetime] = []
    fire = schedule.next_after(start).astimezone(UTC)
    while fire <= end and len(fires) < 1000:
        fires.append(fire)
        fire = schedule.next_after(fire).astimezone(UTC)
    return fires


def real_slots(
    zone: str, start: datetime, end: datetime, matches: Callable[[datetime], bool]
) -> list[datetime]:
    """Return every UTC minute in (start, end] whose local time matches: the oracle."""
    tz, slots = ZoneInfo(zone), []
    instant = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while instant <= end:
        if matches(instant.astimezone(tz)):
            slots.append(instant)
        instant += timedelta(minutes=1)
    return slots


# zone, spring-forward day, fall-back day (2024)
DST_ZONES = [
    ("America/New_York", date(2024, 3, 10), date(2024, 11, 3)),
    ("Europe/London", date(2024, 3, 31), date(2024, 10, 27)),
    ("Europe/Berlin", date(2024, 3, 31), date(2024, 10, 27)),
    ("Australia/Sydney", date(2024, 10, 6), date(2024, 4, 7)),
    ("Australia/Lord_Howe", date(2024, 10, 6), date(2024, 4, 7)),
]
TRANSITION_DAYS = [(zone, day) for zone, *days in DST_ZONES for day in days]
FALL_BACK_DAYS = [(zone, fall) for zone, _, fall in DST_ZONES]


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        ("*/15 * * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 30)]),
        ("30 * * * *", datetime(2024, 1, 1, 0, 30, 0, 500, UTC), [utc(2024, 1, 1, 1, 30)]),
        ("0 0 * * *", utc(2024, 1, 31, 12), [utc(2024, 2, 1), utc(2024, 2, 2)]),
        (
            "*/20 9-17/4 * * *",
            utc(2024, 1, 1, 17, 50),
            [utc(2024, 1, 2, 9), utc(2024, 1, 2, 9, 20)],
        ),
        ("5/20 * * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 25)]),
        # month ends and leap years
        ("0 12 31 * *", utc(2024, 1, 31, 13), [utc(2024, 3, 31, 12), utc(2024, 5, 31, 12)]),
        ("0 0 30 * *", utc(2024, 1, 30), [utc(2024, 3, 30), utc(2024, 4, 30)]),
        ("0 0 29 2 *", utc(2023, 6, 1), [utc(2024, 2, 29), utc(2028, 2, 29)]),
        ("0 0 29 2 *", utc(2024, 2, 29), [utc(2028, 2, 29)]),
        ("0 0 * 2 *", utc(2100, 2, 28), [utc(2101, 2, 1)]),  # 2100 is not a leap year
        ("0 0 L * *", utc(2024, 2, 1), [utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30)]),
        ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), [utc(2025, 12, 31, 23, 59)]),
        # Vixie cron: day and day_of_week are OR-ed when neither starts with '*'
        ("0 0 13 * fri", utc(2024, 9, 1), [utc(2024, 9, 6), utc(2024, 9, 13), utc(2024, 9, 20)]),
        ("0 0 13 * fri", utc(2024, 10, 10), [utc(2024, 10, 11), utc(2024, 10, 13)]),
        ("0 0 1-3 * mon", utc(2024, 6, 28), [utc(2024, 7, 1), utc(2024, 7, 2), utc(2024, 7, 3)]),
        ("0 0 1-3 * mon", utc(2024, 7, 3), [utc(2024, 7, 8), utc(2024, 7, 15)]),
        ("0 0 13 * *", utc(2024, 9, 13), [utc(2024, 10, 13)]),
        ("0 0 * * fri", utc(2024, 9, 13), [utc(2024, 9, 20)]),
        # names, and 0 and 7 both Sunday (2024-01-01 is a Monday)
        ("0 9 * jan,jul mon-fri", utc(2024, 6, 28), [utc(2024, 7, 1, 9), utc(2024, 7, 2, 9)]),
        ("0 9 * JAN,JUL MON-FRI", utc(2024, 7, 31, 9), [utc(2025, 1, 1, 9)]),
        ("0 0 * * 0", utc(2024, 1, 1), [utc(2024, 1, 7), utc(2024, 1, 14)]),
        ("0 0 * * 7", utc(2024, 1, 1), [utc(2024, 1, 7), utc(2024, 1, 14)]),
        ("0 0 * * sun", utc(2024, 1, 1), [utc(2024, 1, 7), utc(2024, 1, 14)]),
        ("0 0 * * 5-7", utc(2024, 1, 1), [utc(2024, 1, 5), utc(2024, 1, 6), utc(2024, 1, 7)]),
        ("0 0 * * sun-sat/6", utc(2024, 1, 1), [utc(2024, 1, 6), utc(2024, 1, 7)]),
        # cronsim extensions we allow: second Friday, last Friday, last weekday
        ("0 0 * * fri#2", utc(2024, 1, 1), [utc(2024, 1, 12), utc(2024, 2, 9)]),
        ("0 0 * * 5L", utc(2024, 1, 1), [utc(2024, 1, 26), utc(2024, 2, 23)]),
        ("0 0 LW * *", utc(2024, 8, 1), [utc(2024, 8, 30), utc(2024, 9, 30)]),
    ],
)
def test_crontab_fires_on_expected_instants(
    expr: str, start: datetime, expected: list[datetime]
) -> None:
    assert walk(crontab(expr), start, expected[-1]) == expected


def test_keyword_fields_build_the_same_schedule_as_an_expression() -> None:
    by_keywords = crontab(minute=0, hour="3", day_of_week="mon-fri", tz="Europe/Berlin")
    assert by_keywords == crontab("0   3 * *  mon-fri", tz="Europe/Berlin")
    assert hash(by_keywords) == hash(crontab("0 3 * * mon-fri", tz="Europe/Berlin"))
    assert crontab() == crontab("* * * * *")


def test_crontab_is_a_readable_frozen_schedule() -> None:
    berlin = crontab("*/15 * * * *", tz="Europe/Berlin")
    assert repr(berlin) == berlin.describe() == "crontab('*/15 * * * *', tz='Europe/Berlin')"
    assert crontab("0 * * * *").describe() == "crontab('0 * * * *', tz='UTC')"
    assert isinstance(berlin, Schedule) and isinstance(berlin, CronSchedule)
    assert berlin != crontab("*/15 * * * *", tz="Europe/London")
    with pytest.raises(dataclasses.FrozenInstanceError):
        berlin.expr = "0 * * * *"  # type: ignore[misc]


def test_result_is_in_the_schedules_zone_whatever_the_input_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 1, 1, 12, tzinfo=ZoneInfo("America/New_York"))  # 18:00 in Berlin
    fire = crontab("0 9 * * *", tz=berlin).next_after(start)
    assert fire.tzinfo is berlin
    assert fire.astimezone(UTC) == utc(2024, 1, 2, 8)


def test_tz_accepts_a_tzinfo_object() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert crontab("0 9 * * *", tz=plus_two).next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 7)


# --- DST -------------------------------------------------------------------------

SKIPPED_TIME = [
    # zone, expression in the skipped hour, day: fires once at the end of the gap
    ("America/New_York", "30 2 * * *", date(2024, 3, 10), ["03-10 07:00", "03-11 06:30"]),
    ("Europe/London", "30 1 * * *", date(2024, 3, 31), ["03-31 01:00", "04-01 00:30"]),
    ("Europe/Berlin", "30 2 * * *", date(2024, 3, 31), ["03-31 01:00", "04-01 00:30"]),
    ("Europe/Berlin", "0,30 2 * * *", date(2024, 3, 31), ["03-31 01:00", "04-01 00:00"]),
    ("Australia/Sydney", "30 2 * * *", date(2024, 10, 6), ["10-05 16:00", "10-06 15:30"]),
    ("Australia/Lord_Howe", "15 2 * * *", date(2024, 10, 6), ["10-05 15:30", "10-06 15:15"]),
]
REPEATED_TIME = [
    # zone, expression in the repeated hour, day: fires once, at the first occurrence
    ("America/New_York", "30 1 * * *", date(2024, 11, 3), ["11-03 05:30", "11-04 06:30"]),
    ("Europe/London", "30 1 * * *", date(2024, 10, 27), ["10-27 00:30", "10-28 01:30"]),
    ("Europe/Berlin", "30 2 * * *", date(2024, 10, 27), ["10-27 00:30", "10-28 01:30"]),
    ("Australia/Sydney", "30 2 * * *", date(2024, 4, 7), ["04-06 15:30", "04-07 16:30"]),
    ("Australia/Lord_Howe", "45 1 * * *", date(2024, 4, 7), ["04-06 14:45", "04-07 15:15"]),
]


@pytest.mark.parametrize(("zone", "expr", "day", "expected_utc"), SKIPPED_TIME + REPEATED_TIME)
def test_fixed_time_fires_once_on_dst_days(
    zone: str, expr: str, day: date, expected_utc: list[str]
) -> None:
    expected = [datetime.fromisoformat(f"2024-{text}Z") for text in expected_utc]
    schedule = crontab(expr, tz=zone)
    assert walk(schedule, local_midnight(zone, day), expected[-1]) == expected


def test_fixed_time_from_inside_the_second_occurrence_waits_for_the_next_day() -> None:
    new_york = ZoneInfo("America/New_York")
    second_0120 = datetime(2024, 11, 3, 1, 20, tzinfo=new_york, fold=1)  # 06:20 UTC
    fire = crontab("30 1 * * *", tz=new_york).next_after(second_0120)
    assert fire.astimezone(UTC) == utc(2024, 11, 4, 6, 30)


@pytest.mark.parametrize(("zone", "day"), TRANSITION_DAYS)
def test_every_15_minutes_fires_on_every_real_quarter_hour(zone: str, day: date) -> None:
    start = local_midnight(zone, day)
    fires = walk(crontab("*/15 * * * *", tz=zone), start, start + timedelta(hours=6))
    assert fires == [start + timedelta(minutes=15 * n) for n in range(1, 25)]
    offsets = {fire.astimezone(ZoneInfo(zone)).utcoffset() for fire in fires}
    assert len(offsets) == 2  # the walk crossed the transition


@pytest.mark.parametrize(("zone", "day"), TRANSITION_DAYS)
def test_hourly_fires_on_every_real_hour(zone: str, day: date) -> None:
    start = local_midnight(zone, day)
    end = start + timedelta(hours=6)
    fires = walk(crontab("0 * * * *", tz=zone), start, end)
    assert fires == real_slots(zone, start, end, lambda local: local.minute == 0)
    if zone != "Australia/Lord_Howe":
        assert {later - earlier for earlier, later in pairwise(fires)} == {timedelta(hours=1)}


@pytest.mark.parametrize(
    ("day", "expected"),
    [  # Lord Howe moves by 30 minutes: local hours are 1.5 hours apart around the change
        (date(2024, 4, 7), [utc(2024, 4, 6, 14), utc(2024, 4, 6, 15, 30), utc(2024, 4, 6, 16, 30)]),
        (date(2024, 10, 6), [utc(2024, 10, 5, 14, 30), utc(2024, 10, 5, 16), utc(2024, 10, 5, 17)]),
    ],
)
def test_hourly_on_lord_howe(day: date, expected: list[datetime]) -> None:
    zone = "Australia/Lord_Howe"
    assert walk(crontab("0 * * * *", tz=zone), local_midnight(zone, day), expected[-1]) == expected


@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("45 * * * *", lambda local: local.minute == 45),
        ("*/15 */2 * * *", lambda local: local.minute % 15 == 0 and local.hour % 2 == 0),
        ("*/10 1-2 * * *", lambda local: local.minute % 10 == 0 and local.hour in (1, 2)),
    ],
)
@pytest.mark.parametrize(("zone", "day"), TRANSITION_DAYS)
def test_wildcard_hour_or_minute_fires_on_every_real_matching_instant(
    zone: str, day: date, expr: str, matches: Callable[[datetime], bool]
) -> None:
    # cronsim alone loses slots here around Lord Howe's 30-minute shift
    start = local_midnight(zone, day)
    end = start + timedelta(hours=6)
    assert walk(crontab(expr, tz=zone), start, end) == real_slots(zone, start, end, matches)


@pytest.mark.parametrize(
    "expr", ["*/15 * * * *", "0 * * * *", "30 1 * * *", "30 2 * * *", "0,20,40 1-2 * * *"]
)
@pytest.mark.parametrize(("zone", "day"), FALL_BACK_DAYS)
def test_next_after_is_strictly_later_across_a_fall_back_night(
    zone: str, day: date, expr: str
) -> None:
    tz, schedule = ZoneInfo(zone), crontab(expr, tz=zone)
    start = local_midnight(zone, day) - timedelta(hours=2)
    for step in range(0, 8 * 60, 7):
        local = (start + timedelta(minutes=step, seconds=step % 3)).astimezone(tz)
        for dt in (local, local.replace(fold=1 - local.fold)):
            fire = schedule.next_after(dt)
            assert fire.astimezone(UTC) > dt.astimezone(UTC), (dt, fire)
            assert fire.tzinfo is tz


# --- every ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "interval", "text"),
    [
        (every(minutes=5), timedelta(minutes=5), "every(minutes=5)"),
        (every(30), timedelta(seconds=30), "every(seconds=30)"),
        (every(1.5), timedelta(seconds=1.5), "every(seconds=1.5)"),
        (every(timedelta(hours=2)), timedelta(hours=2), "every(hours=2)"),
        (every(seconds=90), timedelta(seconds=90), "every(seconds=90)"),
        (every(days=1, hours=12), timedelta(hours=36), "every(hours=36)"),
        (every(days=7), timedelta(weeks=1), "every(days=7)"),
        (every(minutes=5, jitter=10), timedelta(minutes=5), "every(minutes=5, jitter=10)"),
    ],
)
def test_every_builds_a_readable_interval(
    schedule: IntervalSchedule, interval: timedelta, text: str
) -> None:
    assert schedule.interval == interval
    assert repr(schedule) == schedule.describe() == text
    assert isinstance(schedule, Schedule)


def test_every_forms_are_equal() -> None:
    assert every(30) == every(seconds=30) == every(timedelta(seconds=30)) == every(30.0)
    assert hash(every(minutes=1)) == hash(every(60))
    assert every(30) != every(30, jitter=1)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (utc(2024, 1, 31, 23, 30), utc(2024, 2, 1, 0, 30)),
        # elapsed time, not wall-clock: 00:30 EDT + 1 h is 01:30 EDT, then 01:30 EST
        (
            datetime(2024, 11, 3, 0, 30, tzinfo=ZoneInfo("America/New_York")),
            utc(2024, 11, 3, 5, 30),
        ),
        (
            datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York")),
            utc(2024, 11, 3, 6, 30),
        ),
        (
            datetime(2024, 3, 10, 1, 30, tzinfo=ZoneInfo("America/New_York")),
            utc(2024, 3, 10, 7, 30),
        ),
    ],
)
def test_every_adds_elapsed_time_in_the_callers_zone(start: datetime, expected: datetime) -> None:
    fire = every(hours=1, jitter=600).next_after(start)
    assert fire.astimezone(UTC) == expected
    assert fire.tzinfo is start.tzinfo


def test_jitter_is_kept_as_seconds() -> None:
    assert (
        every(minutes=5, jitter=10).jitter == 10.0
        and every(60, jitter=timedelta(seconds=5)).jitter == 5.0
    )


# --- errors -----------------------------------------------------------------------


def pattern(*parts: str) -> str:
    """Match each literal part, in order, anywhere in the message."""
    return ".*".join(re.escape(part) for part in parts)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("60 * * * *", pattern("minute", "'60'", "out of range 0-59", "minute takes 0-59")),
        ("1,60 * * * *", pattern("minute", "'1,60'", "60 is out of range 0-59")),
        ("* 24 * * *", pattern("hour", "'24'", "0-23")),
        ("* * 0 * *", pattern("day", "'0'", "1-31")),
        ("* * 32 * *", pattern("day", "'32'", "1-31")),
        ("* * * 13 *", pattern("month", "'13'", "1-12 or jan-dec")),
        ("* * * foo *", pattern("month", "'foo'", "not a name or a number", "jan-dec")),
        ("* * * * 8", pattern("day_of_week", "'8'", "0-7 or sun-sat", "0 and 7 are Sunday")),
        ("* * * * mon-funday", pattern("day_of_week", "'mon-funday'", "sun-sat")),
        ("*/0 * * * *", pattern("minute", "'*/0'", "step '0' must be 1-59")),
        ("*/60 * * * *", pattern("minute", "'*/60'", "step '60' must be 1-59")),
        ("* */x * * *", pattern("hour", "'*/x'", "step 'x' must be 1-23")),
        ("abc * * * *", pattern("minute", "'abc'", "not a number", "0-59")),
        ("5-1 * * * *", pattern("minute", "'5-1'", "runs backwards", "0-59")),
        ("? * * * *", pattern("minute", "'?'", "0-59")),
        ("* * ? * *", pattern("day", "'?'", "1-31")),
        ("* * * * 5#6", pattern("day_of_week", "'5#6'")),
        ("* * * * fril", pattern("day_of_week", "'fril'")),
        ("* * 1,,2 * *", pattern("day", "'1,,2'", "'' is not a number")),
        ("0 0 31 2 *", pattern("'0 0 31 2 *' never fires", "day '31'", "month '2'")),
        ("0 0 30 feb *", pattern("never fires", "day '30'", "month 'feb'")),
        (
            "* * * *",
            pattern("'* * * *' has 4 fields", "5 are needed", "minute hour day month day_of_week"),
        ),
        ("0 * * * * *", pattern("has 6 fields", "5 are needed", "seconds are not supported")),
        ("", pattern("'' has 0 fields", "5 are needed")),
        ("   ", pattern("'   ' has 0 fields", "5 are needed")),
        ("@daily", pattern("'@daily' has 1 field;", "minute hour day month day_of_week")),
    ],
)
def test_bad_expression_is_rejected_naming_field_value_and_range(expr: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        crontab(expr)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": 60}, pattern("minute", "'60'", "0-59")),
        ({"hour": "1 2"}, pattern("hour", "'1 2'", "without spaces", "0-23")),
        ({"day": ""}, pattern("day", "''", "1-31")),
        ({"day": True}, pattern("day", "'True'", "one str or int field")),
        ({"month": 1.5}, pattern("month", "'1.5'", "one str or int field")),
        (
            {"expr": "* * * * *", "minute": 5},
            pattern("'* * * * *' and keyword fields", "one or the other"),
        ),
        ({"expr": 5}, pattern("must be a str", "'*/15 * * * *'", "got 5 (int)")),
        ({"expr": b"* * * * *"}, pattern("must be a str", "got b'* * * * *' (bytes)")),
        ({"tz": "Mars/Olympus"}, pattern("unknown time zone 'Mars/Olympus'", "'Europe/Berlin'")),
        ({"tz": "europe/berlin"}, pattern("unknown time zone 'europe/berlin'", "'Europe/Berlin'")),
        ({"tz": ""}, pattern("unknown time zone ''", "'Europe/Berlin'")),
        ({"tz": 3}, pattern("unknown time zone 3", "'Europe/Berlin'")),
    ],
)
def test_bad_crontab_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        crontab(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0,), {}, pattern("interval must be positive, got 0 seconds", "every(minutes=5)")),
        ((-5,), {}, pattern("interval must be positive, got -5 seconds")),
        ((timedelta(0),), {}, pattern("interval must be positive, got 0 seconds")),
        ((), {}, pattern("interval must be positive, got 0 seconds")),
        ((), {"minutes": -1}, pattern("interval must be positive, got -60 seconds")),
        ((float("nan"),), {}, pattern("interval must be a finite number of seconds, got nan")),
        ((float("inf"),), {}, pattern("interval must be a finite number of seconds, got inf")),
        (("5",), {}, pattern("interval must be a finite number of seconds, got '5'")),
        ((True,), {}, pattern("interval must be a finite number of seconds, got True")),
        ((), {"hours": None}, pattern("hours must be a finite number of seconds, got None")),
        ((1e300,), {}, pattern("interval of 1e+300 seconds is too large")),
        ((5,), {"minutes": 1}, pattern("every() got 5 and keyword parts", "one or the other")),
        (
            (60,),
            {"jitter": 60},
            pattern("jitter must be at least 0 and less than the interval (60 seconds)", "got 60"),
        ),
        ((60,), {"jitter": -1}, pattern("jitter must be at least 0", "got -1")),
        (
            (60,),
            {"jitter": float("nan")},
            pattern("jitter must be a finite number of seconds, got nan"),
        ),
    ],
)
def test_bad_interval_is_rejected(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        every(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda: crontab("* * * * *").next_after(datetime(2024, 1, 1)),
        lambda: every(60).next_after(datetime(2024, 1, 1)),
    ],
)
def test_naive_datetime_is_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(
        InvalidSchedule, match=r"timezone-aware datetime.*datetime\.now\(timezone\.utc\)"
    ):
        call()


def test_invalid_schedule_is_a_value_error_and_a_taskrun_error() -> None:
    with pytest.raises(ValueError) as caught:
        crontab("61 * * * *")
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, TaskrunError)
