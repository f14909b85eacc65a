"""Every error taskrun raises is a TaskrunError: the clock's, and every raise in the package."""

from __future__ import annotations

import ast
import builtins
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import taskrun
from taskrun import ConfigError, ManualClock, TaskrunError
from taskrun import errors as taskrun_errors

PACKAGE = Path(taskrun.__file__).parent


def test_a_naive_manual_clock_start_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"must be a timezone-aware datetime, got datetime"):
        ManualClock(datetime(2026, 1, 1))


@pytest.mark.parametrize("delta", [-1, -0.5, timedelta(seconds=-1), float("nan"), "1"])
def test_manual_clock_refuses_to_move_backwards_or_by_a_non_duration(delta: object) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))

    with pytest.raises(ConfigError, match=r"advance needs a finite number of seconds >= 0"):
        clock.advance(delta)  # type: ignore[arg-type]
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_manual_clock_set_refuses_the_past_and_naive_datetimes() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))

    with pytest.raises(ConfigError, match=r"cannot move back to"):
        clock.set(datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ConfigError, match=r"needs a timezone-aware datetime"):
        clock.set(datetime(2027, 1, 1))
    clock.set(datetime(2026, 1, 2, tzinfo=UTC))
    assert clock.now() == datetime(2026, 1, 2, tzinfo=UTC)


def raised_names(path: Path) -> list[tuple[int, str]]:
    """Return ``(line, name)`` of every ``raise Name(...)`` / ``raise Name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                found.append((node.lineno, target.id))
    return found


def test_taskrun_raises_no_builtin_exception_of_its_own() -> None:
    ours = {
        name
        for name, value in vars(taskrun_errors).items()
        if isinstance(value, type) and issubclass(value, TaskrunError)
    }
    builtin_errors = {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    # Control flow, not errors: stopping a process on purpose.
    allowed = {"SystemExit"}
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: raise {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in raised_names(path)
        if name in builtin_errors - allowed and name not in ours
    ]
    assert offenders == []
