"""Which leader lock file a runner uses: its ``lock_path`` option, or a default per app.

Worker processes of one app must share one lock file, and other apps of the
same user must not.  By default the file is named after the runner's
``name`` or, without one, after the app's periodic tasks
(:func:`app_lock_name`), in the user's runtime or temp directory
(:func:`default_lock_path`).  The path is resolved at ``start()``, once the
periodic tasks are declared; a bad ``name`` fails at construction
(:func:`check_lock_name`).  Pure apart from reading the environment and
the directory's permissions: no file is touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from taskrun.errors import ConfigError
from taskrun.validation import Default

__all__ = ["app_lock_name", "check_lock_name", "default_lock_path", "leader_lock_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

#: What ``TaskRunner(lock_path=...)`` accepts; ``None`` disables leader election.
LockPathOption = str | os.PathLike[str] | None | Default


def default_lock_path(name: str) -> Path:
    """Return the conventional lock file path for the app called ``name``.

    The directory is ``$XDG_RUNTIME_DIR`` when it is set, absolute and writable
    (a per-user tmpfs), else :func:`tempfile.gettempdir`.  The file name is
    ``taskrun-<name>-<uid>.lock``; characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``, and a sanitised name gets a short hash
    of the original so that distinct names stay distinct.  Touches no file.

    :param name: the app's name, shared by all its worker processes.
    :returns: an absolute path; the file need not exist yet.
    :raises ConfigError: ``name`` is not a string or is blank.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"leader lock name must be a non-empty string, got {name!r}")
    safe = _UNSAFE.sub("_", name)[:64]
    if safe != name:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        safe = f"{safe}-{digest[:8]}"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    usable = os.path.isabs(runtime) and os.path.isdir(runtime)
    directory = runtime if usable and os.access(runtime, os.W_OK | os.X_OK) else None
    return Path(directory or tempfile.gettempdir()) / f"taskrun-{safe}-{os.getuid()}.lock"


def app_lock_name(task_names: Iterable[str]) -> str:
    """Return a lock name for an app known by the names of its periodic tasks.

    Processes with the same periodic tasks get the same name, apps with other
    tasks another one: e.g. ``shop-1a2b3c4d5e6f`` for ``shop.tasks.warm_cache``
    (the first dotted part of the first name, then a hash of them all).
    """
    names = sorted(set(task_names))
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogatepass")).hexdigest()
    prefix = names[0].split(".", 1)[0][:32] if names else "app"
    return f"{prefix or 'app'}-{digest[:12]}"


def check_lock_name(name: str | None, lock_path: LockPathOption) -> None:
    """Refuse, at construction, a ``name`` that the default lock path cannot be made from.

    :raises ConfigError: ``name`` is given, ``lock_path`` is left to its
        default, and ``name`` is not a string or is blank.
    """
    if name is not None and isinstance(lock_path, Default):
        default_lock_path(name)


def leader_lock_path(
    lock_path: str | os.PathLike[str] | Default, name: str | None, task_names: Iterable[str]
) -> str | os.PathLike[str]:
    """Return the lock file of a runner: ``lock_path``, unless left to its default.

    :param name: the runner's name; without one, the app is named after
        ``task_names``, those of its periodic tasks (see :func:`app_lock_name`).
    """
    if not isinstance(lock_path, Default):
        return lock_path
    return default_lock_path(name or app_lock_name(task_names))
