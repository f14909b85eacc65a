"""The runner's options, checked once.

``TaskRunner(...)`` keeps its pool and store options in a frozen
:class:`RunnerSettings`, which refuses an out-of-range value when it is
made; ``TaskRunner.configure(...)`` derives a new one
(:meth:`RunnerSettings.configured`).  The ``store`` option is turned into a
store by :func:`taskrun.stores.factory.make_store`.  Nothing here opens a file
or starts anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from taskrun.errors import ConfigError
from taskrun.periodic.lock_paths import LockPathOption, check_lock_name
from taskrun.stores.base import DEFAULT_MAX_ARG_BYTES, StoreSpec
from taskrun.validation import DEFAULT, Default, non_negative_int, positive_int, seconds

#: The options :meth:`RunnerSettings.configured` changes, in the order its error lists
#: them: every ``TaskRunner(...)`` option but ``clock``.
CONFIGURABLE = (
    "concurrency",
    "max_pending",
    "max_scheduled",
    "result_ttl",
    "max_results",
    "threads",
    "eager",
    "name",
    "lock_path",
    "store",
    "max_arg_bytes",
    "blocking_warning",
    "broker",
    "broker_visibility_timeout",
)
#: Redis's default visibility timeout (seconds) under Celery: an unacknowledged message
#: (a running job, a countdown waiting on a worker) is delivered again after it.
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
#: The blocking warning's threshold under ``taskrun serve`` and the gunicorn worker.
SERVING_BLOCKING_WARNING = 0.5


@dataclass(frozen=True)
class RunnerSettings:
    """A runner's pool, result and store options, each checked when the settings are made.

    :param concurrency: the most jobs running at once.
    :param max_pending: the most jobs waiting for a free slot.
    :param max_scheduled: the most jobs waiting for their eta or a retry.
    :param result_ttl: seconds (or a ``timedelta``) a finished job's result stays retrievable.
    :param max_results: the most finished jobs kept.
    :param threads: threads for ``executor="thread"`` tasks; ``None``: the CPU count.
    :param eager: run every job inline at ``delay()``.
    :param name: the app's name, for the leader lock (see :class:`~taskrun.runner.TaskRunner`).
    :param lock_path: the leader lock file, its default, or ``None`` for no leader election.
    :param store: where jobs are kept (see :func:`~taskrun.stores.factory.make_store`).
    :param max_arg_bytes: the largest pickled arguments a job may have, in
        a store that pickles them (SQLite); the memory store does not.
    :param blocking_warning: seconds a greenlet may hold the event loop before
        the job it runs is named in a warning; ``None`` (or 0, or ``False``)
        for off; ``DEFAULT``: on at :data:`SERVING_BLOCKING_WARNING` under
        ``taskrun serve`` and the gunicorn worker, off elsewhere.
    :param broker: a ``redis://`` URL: jobs run on Celery workers (``taskrun worker``);
        ``None``: in this process (or on the broker named by the environment
        variable ``TASKRUN_BROKER_URL``, read at start).
    :param broker_visibility_timeout: seconds after which Redis hands an
        unacknowledged job to another worker; countdowns, etas, retry waits
        and timeouts longer than it are refused.
    :raises ConfigError: for an out-of-range option, with an example of a good one.
    """

    concurrency: int = 100
    max_pending: int = 10_000
    max_scheduled: int = 100_000
    result_ttl: float = 3600
    max_results: int = 100_000
    threads: int | None = None
    eager: bool = False
    name: str | None = None
    lock_path: LockPathOption = DEFAULT
    store: StoreSpec = None
    max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES
    blocking_warning: float | None | Default = DEFAULT
    broker: str | None = None
    broker_visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT

    def __post_init__(self) -> None:
        if self.broker is not None and (
            not isinstance(self.broker, str)
            or not self.broker.startswith(("redis://", "rediss://"))
        ):
            raise ConfigError(
                f"broker must be a Redis URL, got {self.broker!r}; "
                "e.g. broker='redis://127.0.0.1:6379/0'"
            )
        object.__setattr__(
            self,
            "broker_visibility_timeout",
            seconds("broker_visibility_timeout", self.broker_visibility_timeout, positive=True),
        )
        positive_int("concurrency", self.concurrency, "e.g. concurrency=100")
        non_negative_int("max_pending", self.max_pending, "e.g. max_pending=10_000")
        positive_int("max_scheduled", self.max_scheduled, "e.g. max_scheduled=100_000")
        positive_int("max_results", self.max_results, "e.g. max_results=100_000")
        # Frozen: a timedelta given here is stored as float seconds.
        object.__setattr__(self, "result_ttl", seconds("result_ttl", self.result_ttl))
        positive_int("max_arg_bytes", self.max_arg_bytes, "e.g. max_arg_bytes=1_048_576")
        if self.threads is not None:
            positive_int("threads", self.threads, "e.g. threads=4")
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {self.name!r}; e.g. name='shop'")
        check_lock_name(self.name, self.lock_path)
        warning = self.blocking_warning
        if warning is None or warning is False or warning == 0:
            object.__setattr__(self, "blocking_warning", None)
        elif not isinstance(warning, Default):
            object.__setattr__(
                self, "blocking_warning", seconds("blocking_warning", warning, positive=True)
            )

    def blocking_threshold(self, serving: bool) -> float | None:
        """Return the blocking warning's threshold in seconds, or ``None`` for off.

        :param serving: whether taskrun's own server runs the runner (``DEFAULT`` is on there).
        """
        warning = self.blocking_warning
        if isinstance(warning, Default):
            return SERVING_BLOCKING_WARNING if serving else None
        return warning

    @property
    def thread_count(self) -> int:
        """The size of the thread pool: ``threads``, or the CPU count."""
        return self.threads if self.threads is not None else os.cpu_count() or 4

    def configured(self, **options: Any) -> RunnerSettings:
        """Return a copy with ``options`` changed; only those in :data:`CONFIGURABLE`.

        ``eager`` is taken as a bool.  All or nothing: an unknown or bad
        option changes none.

        :raises ConfigError: for an unknown option (the message lists the
            known ones) or an out-of-range value.
        """
        for key in options:
            if key not in CONFIGURABLE:
                raise ConfigError(
                    f"unknown runner option {key!r}; known: {', '.join(CONFIGURABLE)}"
                )
        if "eager" in options:
            options["eager"] = bool(options["eager"])
        if "result_ttl" in options:
            options["result_ttl"] = seconds("result_ttl", options["result_ttl"])
        return replace(self, **options)
