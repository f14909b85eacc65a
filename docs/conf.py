"""Sphinx configuration of taskrun's documentation (``bash dev.sh docs``).

Pages are MyST Markdown; the API reference comes from the docstrings
(autodoc).  Intersphinx reads its inventories from Debian's documentation
packages on this machine (``dev.sh`` installs them), never from the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import taskrun  # noqa: E402

project = "taskrun"
author = "taskrun's authors"
copyright = "taskrun's authors"
release = version = taskrun.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "taskrun_docs",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = f"taskrun {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": True}
nitpicky = True

#: Debian's documentation packages that hold each inventory (see dev.sh).
LOCAL_INVENTORIES = {
    "python": (
        "https://docs.python.org/3",
        "/usr/share/doc/python3/html/objects.inv",
        "python3-doc",
    ),
    "flask": (
        "https://flask.palletsprojects.com/en/stable",
        "/usr/share/doc/python-flask-doc/html/objects.inv",
        "python-flask-doc",
    ),
    "gevent": (
        "https://www.gevent.org",
        "/usr/share/doc/python-gevent-doc/html/objects.inv",
        "python-gevent-doc",
    ),
    "werkzeug": (
        "https://werkzeug.palletsprojects.com/en/stable",
        "/usr/share/doc/python-werkzeug-doc/html/objects.inv",
        "python-werkzeug-doc",
    ),
    "blinker": (
        "https://blinker.readthedocs.io/en/stable",
        "/usr/share/doc/python-blinker-doc/html/objects.inv",
        "python-blinker-doc",
    ),
    "celery": (
        "https://docs.celeryq.dev/en/stable",
        "/usr/share/doc/python-celery-doc/html/objects.inv",
        "python-celery-doc",
    ),
}
_missing = [pkg for _url, path, pkg in LOCAL_INVENTORIES.values() if not Path(path).is_file()]
if _missing:
    raise RuntimeError(
        "the docs link to Python, Flask, Werkzeug, blinker, gevent and Celery through "
        "inventories from Debian's documentation packages, and these are not installed: "
        f"{' '.join(_missing)}; install "
        f"them (apt-get install {' '.join(_missing)}) or build with bash dev.sh docs, which does"
    )
intersphinx_mapping = {name: (url, path) for name, (url, path, _pkg) in LOCAL_INVENTORIES.items()}
