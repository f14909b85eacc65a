"""Checks shared by every option: durations, whole numbers, and the "derive it" marker.

Each public option that takes a duration or a count goes through one of
these, so every message reads the same: the option's name, the value
received and an example of a good one.  Pure: nothing here reads the
clock, the environment or a file.
"""

from __future__ import annotations

import math
from datetime import timedelta

from taskrun.errors import ConfigError

__all__ = ["DEFAULT", "Default", "as_seconds", "non_negative_int", "positive_int", "seconds"]


class Default:
    """The type of :data:`DEFAULT`."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: Marks an option left to be derived, e.g. ``TaskRunner(lock_path=DEFAULT)``.
DEFAULT = Default()


def as_seconds(value: object) -> float | None:
    """Return ``value`` as float seconds if it is a finite number (not a bool) or a ``timedelta``.

    :returns: ``None`` for anything else (callers raise their own error, naming the option).
    """
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        return float(number)
    return None


def seconds(name: str, value: float | timedelta, *, positive: bool = False) -> float:
    """Return the duration ``value`` as float seconds; every public duration goes through here.

    :param name: the option or argument, as the error message names it.
    :param value: a number of seconds (not a bool) or a ``timedelta``.
    :param positive: refuse zero too (default: refuse only negative values).
    :raises ConfigError: for another type, a negative (or zero) value, NaN or infinity.
    """
    number = as_seconds(value)
    if number is not None and (number > 0 or (not positive and number == 0)):
        return number
    bound = "> 0" if positive else ">= 0"
    raise ConfigError(
        f"{name} must be a number of seconds {bound}, got {value!r}; "
        f"pass a finite number or a timedelta, e.g. {name}=30"
    )


def positive_int(name: str, value: object, hint: str) -> int:
    """Return ``value`` if it is a whole number >= 1 (not a bool).

    :raises ConfigError: naming the option and the value, ending with ``hint``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}; {hint}")
    return value


def non_negative_int(name: str, value: object, hint: str) -> int:
    """Return ``value`` if it is a whole number >= 0 (not a bool).

    :raises ConfigError: naming the option and the value, ending with ``hint``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}; {hint}")
    return value
