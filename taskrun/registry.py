"""Declaring tasks: ``@runner.task`` and ``@runner.periodic``, checked at decoration time.

:class:`TaskRegistry` is the base class of :class:`~taskrun.runner.TaskRunner`,
as Flask's ``Scaffold`` is of ``Flask``: it holds the decorators and what
they declared, the tasks by name and the periodic entries.  Running jobs is
the runner's: a declared task's ``delay()`` calls the runner's ``submit``,
and the runner hands the periodic entries to its timer at ``start()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from taskrun.errors import ConfigError
from taskrun.options import Executor, TaskOptions
from taskrun.periodic import PeriodicEntry
from taskrun.schedules import Schedule
from taskrun.tasks import Submitter, Task

P = ParamSpec("P")
R = TypeVar("R")


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

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: bool = True,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Any:
        """Register a function as a task; use bare (``@runner.task``) or with options.

        Options are those of :class:`~taskrun.options.TaskOptions` and are
        checked here, at decoration time.

        :param name: the name jobs are known by (default: ``module.qualname``).
        :raises ConfigError: for a bad option or a name already registered.
        """
        task_options = TaskOptions(
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            retry_jitter=retry_jitter,
            retry_on=retry_on,
            timeout=timeout,
            executor=executor,
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
        misfire_grace: float = 60.0,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        timeout: float | None = None,
        executor: Executor = "greenlet",
    ) -> Callable[[Callable[[], R]], Task[[], R]]:
        """Register a task that runs on ``schedule`` (a ``crontab`` or ``every``).

        The returned :class:`Task` can still be called or ``delay()``-ed by hand.
        With several processes sharing the leader lock, only the leader runs
        the periodic slots.  A task declared after ``start()`` is timed from
        the next ``start()`` on.

        :param overlap: run even while the previous run is unfinished
            (default: skip that slot and count it).
        :param misfire_grace: how late (seconds) a slot may still run when the
            timer wakes late; missed slots are coalesced into one run.
        :raises ConfigError: for a bad option, schedule or duplicate name.

        Example::

            @runner.periodic(crontab("*/15 * * * *", tz="Europe/Berlin"))
            def warm_cache() -> None: ...
        """
        if not callable(getattr(schedule, "next_after", None)):
            raise ConfigError(
                f"@runner.periodic needs a schedule, got {schedule!r}; "
                'use crontab("*/15 * * * *") or every(minutes=5)'
            )
        if not isinstance(misfire_grace, int | float) or misfire_grace < 0:
            raise ConfigError(f"misfire_grace must be seconds >= 0, got {misfire_grace!r}")
        register = self.task(
            name=name,
            retries=retries,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            timeout=timeout,
            executor=executor,
        )

        def add(func: Callable[[], R]) -> Task[[], R]:
            task: Task[[], R] = register(func)
            self._periodic.append(PeriodicEntry(task, schedule, overlap, misfire_grace))
            return task

        return add
