"""The runner's options, checked once, and the job store they name.

``TaskRunner(...)`` keeps its pool and store options in a frozen
:class:`RunnerSettings`, which refuses an out-of-range value when it is
made; ``TaskRunner.configure(...)`` derives a new one
(:meth:`RunnerSettings.configured`).  :func:`make_store` turns the
``store`` option into a :class:`~taskrun.store.ResultStore`.  Nothing here
opens a file or starts anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from taskrun.clock import Clock
from taskrun.errors import ConfigError
from taskrun.options import seconds
from taskrun.store import MemoryStore, ResultStore, StoreHost

#: What the ``store`` option accepts (see :func:`make_store`).
StoreSpec: TypeAlias = str | os.PathLike[str] | ResultStore | None

#: The options :meth:`RunnerSettings.configured` changes, in the order its error lists them.
CONFIGURABLE = ("concurrency", "max_pending", "max_scheduled", "eager", "store")


class Default:
    """The type of :data:`DEFAULT`."""


#: Marks an option left to be derived, e.g. ``TaskRunner(lock_path=DEFAULT)``.
DEFAULT = Default()


def positive_int(name: str, value: object, hint: str) -> int:
    """Return ``value`` if it is a whole number >= 1 (not a bool).

    :raises ConfigError: naming the option and the value, ending with ``hint``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}; {hint}")
    return value


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


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
    :param store: where jobs are kept (see :func:`make_store`).
    :raises ConfigError: for an out-of-range option, with an example of a good one.
    """

    concurrency: int = 100
    max_pending: int = 10_000
    max_scheduled: int = 100_000
    result_ttl: float = 3600
    max_results: int = 100_000
    threads: int | None = None
    eager: bool = False
    store: StoreSpec = None

    def __post_init__(self) -> None:
        positive_int("concurrency", self.concurrency, "e.g. concurrency=100")
        _non_negative_int("max_pending", self.max_pending)
        positive_int("max_scheduled", self.max_scheduled, "e.g. max_scheduled=100_000")
        positive_int("max_results", self.max_results, "e.g. max_results=100_000")
        # Frozen: a timedelta given here is stored as float seconds.
        object.__setattr__(self, "result_ttl", seconds("result_ttl", self.result_ttl))
        if self.threads is not None:
            positive_int("threads", self.threads, "e.g. threads=4")

    @property
    def thread_count(self) -> int:
        """The size of the thread pool: ``threads``, or the CPU count."""
        return self.threads if self.threads is not None else os.cpu_count() or 4

    def configured(self, **options: Any) -> RunnerSettings:
        """Return a copy with ``options`` changed; only those in :data:`CONFIGURABLE`.

        ``eager`` is taken as a bool.

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
        return replace(self, **options)


def make_store(
    spec: StoreSpec, clock: Clock, result_ttl: float, max_results: int, host: StoreHost
) -> ResultStore:
    """Return the store ``spec`` names, not yet open (``TaskRunner.start()`` opens it).

    ``None`` or ``"memory"``: a :class:`~taskrun.store.MemoryStore` (this
    process only); a path or a ``sqlite://`` URL: a
    :class:`~taskrun.sqlite_store.SqliteStore` on that file (only then is
    ``sqlite3`` imported); any other object is taken to be a store.

    :param host: the runner, which a shared store gives the jobs it takes over.
    :raises ConfigError: for a string that names no SQLite file.
    """
    if spec is None or spec in ("memory", "memory://"):
        return MemoryStore(clock, result_ttl, max_results)
    if isinstance(spec, str | os.PathLike):
        from taskrun.sqlite_store import SqliteStore  # sqlite3 only when asked for

        return SqliteStore(
            spec, clock=clock, result_ttl=result_ttl, max_results=max_results, host=host
        )
    return spec
