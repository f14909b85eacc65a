"""``python -m taskrun``: the same as the ``taskrun`` command (see :mod:`taskrun.cli`)."""

from __future__ import annotations

import sys

from taskrun.cli import main

if __name__ == "__main__":
    sys.exit(main())
