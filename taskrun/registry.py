"""Declaring tasks: ``@runner.task`` and ``@runner.periodic``, checked at decoration time.

:class:`TaskRegistry` is the base class of :class:`~taskrun.runner.TaskRunner`,
as Flask's ``Scaffold`` is of ``Flask``: it holds the decorators and what
they declared, the tasks by name and the periodic entries.  Running jobs is
the runner's: a declared task's ``delay()`` calls the runner's ``submit``,
and the runner hands the periodic entries to its timer at ``start()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from taskrun.errors import ConfigError
from taskrun.options import Executor, TaskOptions
from taskrun.periodic.policy import PeriodicEntry
from taskrun.schedules import Schedule
from taskrun.tasks import Submitter, Task
from taskrun.validation import seconds

P = ParamSpec("P")
R = TypeVar("R")

#: What to write instead of a task option taskrun does not have (Celery's names among
#: them): one line per option; a name that becomes a real option leaves this table.
OPTION_HINTS: dict[str, str] = {
    "max_retries": "taskrun calls it retries=",
    "autoretry_for": "taskrun calls it retry_on= (a tuple of exception types)",
    "time_limit": "taskrun calls it timeout= (seconds per attempt; the job is stopped)",
    "soft_time_limit": "taskrun has one limit per attempt: timeout=",
    "default_retry_delay": "taskrun calls it retry_delay=",
    "bind": "taskrun never passes the task to its function; call taskrun.current_job() in "
    "the body for the running job (its .id, .update(**meta) for progress)",
    "queue": "taskrun has one queue per runner; use another TaskRunner for separate work",
    "serializer": "there is nothing to choose: arguments stay in memory, or are pickled "
    "with the SQLite store",
}


class PeriodicDecorator(Protocol):
    """What ``@runner.periodic(...)`` returns: a decorator of a function of no argument.

    With ``pass_slot=True``, the function takes one: the slot it runs for.
    """

    @overload
    def __call__(self, func: Callable[[], R], /) -> Task[[], R]: ...

    @overload
    def __call__(self, func: Callable[[datetime], R], /) -> Task[[datetime], R]: ...


class TaskRegistry(Submitter):
    """The decorators that declare a runner's tasks, and the tasks they declared.

    Not used alone: the subclass implements :meth:`~taskrun.tasks.Submitter.submit`,
    which the declared tasks call.  Declaring creates no greenlet, file or
    socket.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task[..., Any]] = {}
        self._periodic: list[PeriodicEntry] = []

    @property
    def tasks(self) -> dict[str, Task[..., Any]]:
        """The registered tasks by name (a copy)."""
        return dict(self._tasks)

    @property
    def periodic_entries(self) -> tuple[PeriodicEntry, ...]:
        """The declared periodic jobs (their task, schedule and this process's counters)."""
        return tuple(self._periodic)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float | timedelta = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | timedelta | None = None,
        executor: Executor = "greenlet",
        retry_backoff_max: float | timedelta = 3600.0,
        max_running: int | None = None,
        rate_limit: str | None = None,
        ignore_result: bool = False,
        result_ttl: float | timedelta | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float | timedelta = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | timedelta | None = None,
        executor: Executor = "greenlet",
        retry_backoff_max: float | timedelta = 3600.0,
        max_running: int | None = None,
        rate_limit: str | None = None,
        ignore_result: bool = False,
        result_ttl: float | timedelta | None = None,
        **unknown: Any,
    ) -> Any:
        """Register a function as a task; use bare (``@runner.task``) or with options.

        Options are those of :class:`~taskrun.options.TaskOptions` and are
        checked here, at decoration time: ``retries``, ``retry_delay``,
        ``retry_backoff`` (capped at ``retry_backoff_max``), ``retry_jitter``,
        ``retry_on``, ``timeout``, ``executor``, ``max_running`` (jobs at once),
        ``rate_limit`` (``"N/s"``, ``"N/m"``, ``"N/h"`` starts), ``ignore_result``
        and ``result_ttl`` (overrides the runner's for this task's jobs).

        :param name: the name jobs are known by (default: ``module.qualname``).
        :param unknown: refused: an option taskrun does not have, e.g.
            Celery's ``max_retries=`` (the message names taskrun's ``retries=``).
        :raises ConfigError: for an unknown or bad option, or a name already registered.
        """
        _refuse_unknown_options(unknown, TaskRegistry.task)
        task_options = TaskOptions(
            retries=retries,
            retry_delay=seconds("retry_delay", retry_delay),
            retry_backoff=retry_backoff,
            retry_jitter=retry_jitter,
            retry_on=retry_on,
            timeout=None if timeout is None else seconds("timeout", timeout, positive=True),
            executor=executor,
            retry_backoff_max=seconds("retry_backoff_max", retry_backoff_max, positive=True),
            max_running=max_running,
            rate_limit=rate_limit,
            ignore_result=ignore_result,
            result_ttl=None if result_ttl is None else seconds("result_ttl", result_ttl),
        )

        def register(func: Callable[..., Any]) -> Task[..., Any]:
            if not callable(func):
                raise ConfigError(f"@runner.task needs a function, got {func!r}")
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self._tasks:
                raise ConfigError(
                    f"a task named {task_name!r} is already registered; "
                    "pass a distinct name= to @runner.task"
                )
            task: Task[..., Any] = Task(func, task_name, task_options, self)
            self._tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        schedule: Schedule,
        *,
        name: str | None = None,
        overlap: bool = False,
        misfire_grace: float | timedelta = 60.0,
        retries: int = 0,
        retry_delay: float | timedelta = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | timedelta | None = None,
        executor: Executor = "greenlet",
        retry_backoff_max: float | timedelta = 3600.0,
        max_running: int | None = None,
        rate_limit: str | None = None,
        ignore_result: bool = False,
        result_ttl: float | timedelta | None = None,
        pass_slot: bool = False,
        **unknown: Any,
    ) -> PeriodicDecorator:
        """Register a task that runs on ``schedule`` (a ``crontab`` or ``every``).

        Takes every option of :meth:`task`, and those below.
        The returned :class:`Task` can still be called or ``delay()``-ed by hand.
        With several processes sharing the leader lock, only the leader runs
        the periodic slots.  A task declared after ``start()`` is timed from
        the next ``start()`` on.

        :param overlap: run even while the previous run is unfinished
            (default: skip that slot and count it).
        :param misfire_grace: how late (seconds or a ``timedelta``) a slot may still run when the
            timer wakes late; missed slots are coalesced into one run.
        :param pass_slot: call the function with the slot it runs for, an aware
            UTC datetime (the scheduled time, not when the run started: a
            report "for 02:00" stays so when it runs late, as a catch-up or on
            another process after a takeover).
        :raises ConfigError: for an unknown or bad option, schedule or duplicate name, or
            a function that cannot be called with no argument (with its slot,
            given ``pass_slot=True``).

        Example::

            @runner.periodic(crontab("*/15 * * * *", tz="Europe/Berlin"))
            def warm_cache() -> None: ...

            @runner.periodic(crontab("0 2 * * *"), pass_slot=True)
            def nightly_report(slot: datetime) -> None: ...
        """
        if not callable(getattr(schedule, "next_after", None)):
            raise ConfigError(
                f"@runner.periodic needs a schedule, got {schedule!r}; "
                'use crontab("*/15 * * * *") or every(minutes=5)'
            )
        _refuse_unknown_options(unknown, TaskRegistry.periodic)
        grace = seconds("misfire_grace", misfire_grace)
        register = self.task(
            name=name,
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            retry_jitter=retry_jitter,
            retry_on=retry_on,
            timeout=timeout,
            executor=executor,
            retry_backoff_max=retry_backoff_max,
            max_running=max_running,
            rate_limit=rate_limit,
            ignore_result=ignore_result,
            result_ttl=result_ttl,
        )

        def add(func: Callable[..., Any]) -> Task[..., Any]:
            _check_periodic_function(func, pass_slot)
            task: Task[..., Any] = register(func)
            self._periodic.append(PeriodicEntry(task, schedule, overlap, grace, pass_slot))
            return task

        return add


def _refuse_unknown_options(unknown: dict[str, Any], decorator: Callable[..., Any]) -> None:
    """Raise a ConfigError naming every option in ``unknown`` and what to write instead.

    :param decorator: ``TaskRegistry.task`` or ``.periodic``, whose keyword-only
        parameters are the options the message lists.
    :raises ConfigError: if ``unknown`` is not empty.
    """
    if not unknown:
        return
    known = [
        parameter.name
        for parameter in inspect.signature(decorator).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    problems = []
    for option, value in unknown.items():
        hint = OPTION_HINTS.get(option, "not a taskrun option")
        problems.append(f"{option}={value!r} ({hint})")
    raise ConfigError(
        f"@runner.{decorator.__name__} got unknown option(s): {'; '.join(problems)}; "
        f"its options are: {', '.join(known)}"
    )


def _check_periodic_function(func: Callable[..., Any], pass_slot: bool) -> None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # no signature to check (a builtin): a wrong one fails at its first run
    try:
        signature.bind(*([None] if pass_slot else []))
    except TypeError as exc:
        wanted = "one argument, its slot" if pass_slot else "no argument"
        hint = (
            "give it one parameter, e.g. def report(slot: datetime)"
            if pass_slot
            else "give its parameters defaults, or pass pass_slot=True to receive the slot"
        )
        what = getattr(func, "__qualname__", func)
        raise ConfigError(
            f"periodic task {what!r} cannot be called with {wanted} ({exc}); {hint}"
        ) from None
