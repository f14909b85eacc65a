"""Shared fixtures: a manual clock, real runners that must shut down cleanly, hub-error checks.

The suite runs on a gevent-patched stdlib, patched before pytest is imported
by ``scripts/pytest_gevent.py``; run without it, the session stops at once
and says how to run it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import gevent
import pytest
import serving_helpers
from flask import Flask
from flask.testing import FlaskClient
from gevent import monkey
from gevent.greenlet import Greenlet

from taskrun import ManualClock, TaskRunner

RUN_COMMAND = ".venv/bin/python scripts/pytest_gevent.py [pytest args]"
#: How long a fixture's runner may take to drain on teardown.
STOP_TIMEOUT = 5.0
#: The start of every manual clock: a fixed, aware instant (a Monday).
CLOCK_START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    """Stop the session before any test if gevent has not patched the stdlib."""
    if not monkey.is_module_patched("socket"):
        pytest.exit(
            "the taskrun test suite must run with gevent's monkey-patching applied before "
            f"pytest starts; run it as: {RUN_COMMAND}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Add to a per-test timeout failure how to give that test more time."""
    report = yield
    if report.failed and "from pytest-timeout" in str(report.longrepr):
        report.sections.append(
            (
                "how to raise the timeout",
                "decorate the test with @pytest.mark.timeout(SECONDS), or pass "
                "--timeout=SECONDS to the launcher (the default is in pyproject.toml)",
            )
        )
    return report


# -- errors reaching the hub ---------------------------------------------------


@pytest.fixture(autouse=True)
def fail_on_hub_error() -> Iterator[list[str]]:
    """Fail the test if an exception escapes a greenlet and reaches the gevent hub.

    taskrun must catch every job's error itself; anything the hub sees (a
    greenlet that died with an exception) is a bug.  ``GreenletExit`` (a
    greenlet killed on purpose) is not an error.  A system error raised in a
    greenlet is recorded and printed rather than thrown into the test.

    :returns: the list the errors are recorded in (a test may inspect it).
    """
    hub = gevent.get_hub()
    original = hub.handle_error
    errors: list[str] = []

    def handle_error(
        context: object,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if context is None or kind is None or issubclass(kind, gevent.GreenletExit):
            # Not an error, or one the hub throws into the test itself
            # (e.g. the per-test timeout firing while the hub runs).
            original(context, kind, value, tb)
            return
        errors.append(f"{kind.__name__}: {value!r} in {context!r}")
        if issubclass(kind, hub.SYSTEM_ERROR):
            hub.print_exception(context, kind, value, tb)
            return
        original(context, kind, value, tb)

    hub.handle_error = handle_error  # type: ignore[method-assign,assignment]
    try:
        yield errors
    finally:
        del hub.handle_error
    if errors:
        pytest.fail("an error reached the gevent hub:\n" + "\n".join(errors), pytrace=False)


# -- waiting -------------------------------------------------------------------


WaitFor = Callable[..., Any]


@pytest.fixture
def wait_for() -> WaitFor:
    """Return ``wait_for(check, what, timeout=5.0)``: yield to the loop until ``check()`` is true.

    Polls every millisecond, letting other greenlets run, and fails the test
    naming ``what`` if ``timeout`` seconds pass first.  Returns the true value.
    """

    def wait(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
        return serving_helpers.wait_for(check, timeout, what, step=0.001)

    return wait


# -- clocks and runners ----------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at a fixed instant; time moves only with ``advance``/``set``."""
    return ManualClock(CLOCK_START)


def _live_greenlets_of(*owners: object) -> list[Greenlet[..., Any]]:
    """Return the unfinished greenlets whose function is a method of one of ``owners``."""
    found = []
    for candidate in gc.get_objects():
        if isinstance(candidate, Greenlet) and not candidate.dead:
            owner = getattr(getattr(candidate, "_run", None), "__self__", None)
            if any(owner is wanted for wanted in owners):
                found.append(candidate)
    return found


def assert_stopped_cleanly(runner: TaskRunner) -> None:
    """Fail unless ``runner`` left no worker, timer greenlet or queued job behind."""
    dispatcher = runner._dispatcher
    scheduler = runner._scheduler
    leftovers = {
        "worker greenlets": len(dispatcher._workers),
        "running jobs": len(dispatcher._running),
        "idle workers": len(dispatcher._idle),
        "backlog": len(dispatcher._backlog),
        "timer greenlet": int(scheduler._greenlet is not None),
        "timer heap": len(scheduler),
    }
    leaked = {name: count for name, count in leftovers.items() if count}
    live = _live_greenlets_of(dispatcher, scheduler)
    if leaked or live:
        pytest.fail(
            f"the runner leaked after stop(timeout={STOP_TIMEOUT}): {leaked!r}, "
            f"live greenlets: {live!r}",
            pytrace=False,
        )


@pytest.fixture
def make_runner() -> Iterator[Callable[..., TaskRunner]]:
    """A factory of started runners (small pools by default), each stopped on teardown.

    ``make_runner(**options)`` passes ``options`` to :class:`TaskRunner`
    (defaults: ``concurrency=4, max_pending=8, threads=2`` and no leader lock
    file, ``lock_path=None``) and starts it.
    On teardown every runner is stopped with a timeout and the test fails if
    one leaked a worker greenlet, its timer greenlet or a queued job.
    """
    runners: list[TaskRunner] = []

    def make(**options: Any) -> TaskRunner:
        options = {"concurrency": 4, "max_pending": 8, "threads": 2, "lock_path": None, **options}
        runner = TaskRunner(**options)
        runners.append(runner)
        return runner.start()

    yield make
    for runner in runners:
        runner.stop(timeout=STOP_TIMEOUT)
    for runner in runners:
        assert_stopped_cleanly(runner)


@pytest.fixture
def runner(make_runner: Callable[..., TaskRunner]) -> TaskRunner:
    """A started, real runner: ``concurrency=4, max_pending=8``, the system clock."""
    return make_runner()


@pytest.fixture
def manual_runner(make_runner: Callable[..., TaskRunner], clock: ManualClock) -> TaskRunner:
    """A started, real runner on the ``clock`` fixture: its time moves only with ``advance``."""
    return make_runner(clock=clock)


# -- Flask -----------------------------------------------------------------------


@pytest.fixture
def app(runner: TaskRunner) -> Flask:
    """A Flask app in testing mode with the ``runner`` fixture attached (``runner.init_app``)."""
    app = Flask("taskrun_test")
    app.config["TESTING"] = True
    runner.init_app(app)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A real Flask test client of the ``app`` fixture."""
    return app.test_client()
