"""The shared, durable job store: one SQLite file per machine (see :mod:`.store`).

Modules: ``store`` (the store itself and its guarantee), ``schema`` (the
file, its checks and migrations), ``db`` (every SQL statement), ``codec``
(jobs to rows and back), ``writer`` (the batching writer), ``leases`` (which
process runs which job; housekeeping), ``remote`` (jobs of other processes),
``procs`` (process identity and liveness).
"""

from __future__ import annotations

from taskrun.stores.sqlite.store import SqliteStore as SqliteStore
