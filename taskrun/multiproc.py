"""Metrics across gunicorn workers: prometheus-client's multiprocess directory, made and cleaned.

Each gunicorn worker is a process with its own runner, so its counters are
its own; a scrape lands on one worker.  prometheus-client's multiprocess
mode makes any worker answer for the machine: every process writes its
values to files in ``$PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them.

:class:`taskrun.gunicorn.GeventWorker` does the bookkeeping that mode needs:

* in the master, before any app is loaded (:func:`prepare`): a fresh
  directory, owner-only (0700), named in ``PROMETHEUS_MULTIPROC_DIR`` for
  the workers it forks, removed when the master exits;
* in a worker, before its runner starts (:func:`worker_started`): the live
  gauges of workers that died without saying so (killed) are dropped;
* in a worker, when it exits (:func:`worker_exited`): its own live gauges
  are dropped (``mark_process_dead``).  Counters and histograms of exited
  workers stay: a machine's totals never go down.

An app that sets ``PROMETHEUS_MULTIPROC_DIR`` itself keeps its directory
(taskrun neither creates nor removes it, but still drops dead workers'
gauges).  Nothing here imports prometheus_client unless the app did.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile

__all__ = ["MULTIPROC_ENV", "prepare", "worker_exited", "worker_started"]

logger = logging.getLogger(__name__)

#: prometheus-client reads its multiprocess directory from this variable (when imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def prepare() -> str | None:
    """In gunicorn's master: make the multiprocess directory if none is set; return its path.

    Does nothing (returns ``None``) when ``PROMETHEUS_MULTIPROC_DIR`` is
    already set (by the app, or a previous call: a reload), when
    prometheus-client is not installed, or when it is already imported
    (too late: it chose single-process mode, so a warning says so).
    """
    if os.environ.get(MULTIPROC_ENV) or importlib.util.find_spec("prometheus_client") is None:
        return None
    if "prometheus_client" in sys.modules:
        logger.warning(
            "prometheus_client was imported before the gunicorn worker class set %s, so each "
            "worker's metrics will show that worker only; set %s to an empty directory "
            "before starting gunicorn",
            MULTIPROC_ENV,
            MULTIPROC_ENV,
        )
        return None
    path = tempfile.mkdtemp(prefix="taskrun-metrics-")  # mode 0700
    os.environ[MULTIPROC_ENV] = path
    atexit.register(_remove, path, os.getpid())
    return path


def _remove(path: str, owner: int) -> None:
    # Workers inherit the master's atexit handlers: only the master removes it,
    # and not while a live process still writes there (a re-executed master).
    if os.getpid() != owner or _live_pids(path) - {owner}:
        return
    shutil.rmtree(path, ignore_errors=True)


def _live_pids(path: str) -> set[int]:
    return {pid for pid in _pids(path) if _alive(pid)}


def _pids(path: str) -> set[int]:
    try:
        names = os.listdir(path)
    except OSError:
        return set()
    return {int(found[1]) for name in names if (found := _PID_FILE.match(name))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_started() -> None:
    """In a worker: drop the live gauges of processes that are gone (a killed worker's)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or "prometheus_client" not in sys.modules:
        return
    from prometheus_client import multiprocess

    for pid in _pids(path):
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def worker_exited() -> None:
    """In a worker that is exiting: drop its live gauges from the machine's sums."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or "prometheus_client" not in sys.modules:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
