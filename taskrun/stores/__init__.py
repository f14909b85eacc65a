"""Where jobs are kept: the store interface and factory, memory, and a shared SQLite file.

:mod:`~taskrun.stores.base` (the interface every store implements),
:mod:`~taskrun.stores.factory` (``make_store``), :mod:`~taskrun.stores.memory`
(this process only) and :mod:`taskrun.stores.sqlite` (durable, shared by
every process of a machine).
"""
