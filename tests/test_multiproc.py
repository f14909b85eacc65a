"""taskrun.multiproc: the bookkeeping of prometheus-client's multiprocess directory.

The directory's creation and removal by a real gunicorn master are in
``tests/test_metrics_gunicorn.py``; here, the pieces a worker runs, against
files written by real processes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from taskrun import multiproc

WRITE_GAUGE = """
from prometheus_client import Counter, Gauge
Gauge("taskrun_jobs_running", "", multiprocess_mode="livesum").set(3)
Counter("taskrun_jobs", "").inc(5)
"""


def write_like_a_worker(directory: Path) -> None:
    """Run a process that writes a live gauge and a counter there, then exits."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", WRITE_GAUGE], env=env, check=True, timeout=60)


def test_a_starting_worker_drops_the_live_gauges_of_dead_processes_and_keeps_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_like_a_worker(tmp_path)
    assert any(path.name.startswith("gauge_livesum_") for path in tmp_path.iterdir())
    monkeypatch.setenv(multiproc.MULTIPROC_ENV, str(tmp_path))
    import prometheus_client  # noqa: F401 - as an app with metrics has

    multiproc.worker_started()

    names = sorted(path.name for path in tmp_path.iterdir())
    assert not [name for name in names if name.startswith("gauge_livesum_")]
    assert [name for name in names if name.startswith("counter_")]


def test_prepare_leaves_a_directory_the_app_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(multiproc.MULTIPROC_ENV, str(tmp_path))
    assert multiproc.prepare() is None


def test_prepare_after_prometheus_client_was_imported_says_it_is_too_late(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import prometheus_client  # noqa: F401 - imported before prepare() on purpose

    monkeypatch.delenv(multiproc.MULTIPROC_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="taskrun.multiproc"):
        assert multiproc.prepare() is None
    assert "each worker's metrics will show that worker only" in caplog.text
