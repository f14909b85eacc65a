"""Make the store a runner's ``store`` option names; nothing is opened here.

``TaskRunner.start()`` opens it.
"""

from __future__ import annotations

import os

from taskrun.clock import Clock
from taskrun.stores.base import DEFAULT_MAX_ARG_BYTES, ResultStore, StoreHost, StoreSpec
from taskrun.stores.memory import MemoryStore

__all__ = ["make_store"]


def make_store(
    spec: StoreSpec,
    clock: Clock,
    result_ttl: float,
    max_results: int,
    host: StoreHost,
    max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
) -> ResultStore:
    """Return the store ``spec`` names, not yet open (``TaskRunner.start()`` opens it).

    ``None`` or ``"memory"``: a :class:`~taskrun.stores.memory.MemoryStore`
    (this process only); a path or a ``sqlite://`` URL: a
    :class:`~taskrun.stores.sqlite.SqliteStore` on that file (only then is
    ``sqlite3`` imported); any other object is taken to be a store.

    :param host: the runner, which a shared store gives the jobs it takes over.
    :param max_arg_bytes: the largest pickled arguments a job may have; only
        the SQLite store pickles arguments, so only it applies the limit.
    :raises ConfigError: for a string that names no SQLite file.
    """
    if spec is None or spec in ("memory", "memory://"):
        return MemoryStore(clock, result_ttl, max_results)
    if isinstance(spec, str | os.PathLike):
        from taskrun.stores.sqlite.store import SqliteStore  # sqlite3 only when asked for

        return SqliteStore(
            spec,
            clock=clock,
            result_ttl=result_ttl,
            max_results=max_results,
            host=host,
            max_arg_bytes=max_arg_bytes,
        )
    return spec
