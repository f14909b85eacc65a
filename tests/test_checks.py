"""Start-up checks: a missing or late monkey-patch and unshared job stores are named with the fix.

The patching checks run in fresh interpreters (this suite's own process is
patched first by its launcher).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from taskrun import ManualClock, TaskRunner
from taskrun.checks import late_ssl_modules, shared_store_problem, unpatched_problem
from taskrun.stores.memory import MemoryStore


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return its stderr (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_patched_process_has_no_patching_problem() -> None:
    assert unpatched_problem() is None
    assert late_ssl_modules() == []


def test_starting_a_runner_unpatched_warns_once_that_it_is_a_development_mode() -> None:
    stderr = run_python(
        """
        from taskrun import TaskRunner
        runner = TaskRunner(lock_path=None).start()
        runner.stop(timeout=1)
        """
    )

    assert stderr.count("taskrun runs its jobs on a thread of its own") == 1
    assert "a development mode" in stderr
    assert "taskrun serve module:app" in stderr


def test_an_eager_runner_does_not_warn_about_patching() -> None:
    stderr = run_python(
        """
        from taskrun import TaskRunner
        TaskRunner(eager=True, lock_path=None).start().stop(timeout=1)
        """
    )

    assert "monkey-patched" not in stderr


def test_patching_after_requests_imported_ssl_warns_naming_the_modules() -> None:
    stderr = run_python(
        """
        import warnings
        warnings.simplefilter("ignore")  # gevent's own warning; taskrun's is checked
        import requests
        from gevent import monkey
        monkey.patch_all()
        from taskrun import TaskRunner
        TaskRunner(lock_path=None).start().stop(timeout=1)
        """
    )

    assert "gevent patched ssl after [" in stderr
    assert "'urllib3.util.ssl_'" in stderr
    assert "before any other import" in stderr


def test_several_workers_with_memory_stores_are_told_to_share_one() -> None:
    store = MemoryStore(ManualClock(), 60, 10)

    problem = shared_store_problem(store, workers=4)

    assert problem is not None
    assert problem.startswith("4 worker processes each keep their jobs in memory")
    assert 'TaskRunner(store="sqlite:///path/to/taskrun.db")' in problem


@pytest.mark.parametrize("workers", [0, 1])
def test_one_worker_needs_no_shared_store(workers: int) -> None:
    assert shared_store_problem(TaskRunner(lock_path=None).store, workers) is None
