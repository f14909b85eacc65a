"""Run pytest with gevent's monkey-patching applied before anything else is imported.

taskrun's tests run on a patched stdlib, as an app served by gevent does.
Patching must come first, so this launcher patches and only then imports
pytest::

    .venv/bin/python scripts/pytest_gevent.py -q            # the whole suite
    .venv/bin/python scripts/pytest_gevent.py tests/test_jobs.py -k cancel

The exit code is pytest's.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402 - imported after patching on purpose

import pytest  # noqa: E402 - imported after patching on purpose

if __name__ == "__main__":
    sys.exit(pytest.main(sys.argv[1:]))
