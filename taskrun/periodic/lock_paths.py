"""Which leader lock file a runner uses: its ``lock_path`` option, or a default per app.

Worker processes of one app must share one lock file; other apps of the
same user, and other deployments of the same app (two checkouts on one
machine), must not.  By default the file is named after the runner's
``name`` or, without one, after the app's periodic tasks and where the app
lives (:func:`app_lock_name`, :func:`lock_scope`); processes sharing a
durable store share one leader whatever else differs.  It lives in a
directory only this user can write (:func:`default_lock_path`): another
local user must not be able to create the file first and so keep the app's
periodic jobs from running.

The path is resolved at ``start()``, once the periodic tasks are declared
(:func:`leader_lock_path`, which also creates the private directory); a bad
``name`` fails at construction (:func:`check_lock_name`).  Apart from that
directory, no file is touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from taskrun.errors import ConfigError
from taskrun.validation import Default

__all__ = [
    "app_lock_name",
    "check_lock_name",
    "default_lock_path",
    "ensure_private_directory",
    "leader_lock_path",
    "lock_scope",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_FIX = "or pass lock_path= a file in a directory only this user can write"

#: What ``TaskRunner(lock_path=...)`` accepts; ``None`` disables leader election.
LockPathOption = str | os.PathLike[str] | None | Default


def _is_private(info: os.stat_result) -> bool:
    """Whether a directory is this user's and nobody else may write to it."""
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _runtime_directory() -> str | None:
    """Return ``$XDG_RUNTIME_DIR`` if it is absolute, this user's, private and writable."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime):
        return None
    try:
        info = os.stat(runtime)
    except OSError:
        return None
    usable = stat.S_ISDIR(info.st_mode) and _is_private(info)
    return runtime if usable and os.access(runtime, os.W_OK | os.X_OK) else None


def private_temp_directory() -> Path:
    """Return ``<tempdir>/taskrun-<uid>``: this user's lock directory without a runtime dir."""
    return Path(tempfile.gettempdir()) / f"taskrun-{os.getuid()}"


def default_lock_path(name: str) -> Path:
    """Return the conventional lock file path for the app called ``name``.

    The directory is ``$XDG_RUNTIME_DIR`` when it is set, absolute, owned by
    this user and writable by nobody else (a per-user tmpfs), else
    :func:`private_temp_directory` (``<tempdir>/taskrun-<uid>``, made by
    :func:`ensure_private_directory`).  The file name is
    ``taskrun-<name>-<uid>.lock``; characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``, and a sanitised name gets a short hash
    of the original so that distinct names stay distinct.  Touches no file.

    :param name: the app's name, shared by all its worker processes.
    :returns: an absolute path; neither it nor its directory need exist yet.
    :raises ConfigError: ``name`` is not a string or is blank.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"leader lock name must be a non-empty string, got {name!r}")
    safe = _UNSAFE.sub("_", name)[:64]
    if safe != name:
        safe = f"{safe}-{_digest(name)[:8]}"
    directory = _runtime_directory()
    parent = Path(directory) if directory else private_temp_directory()
    return parent / f"taskrun-{safe}-{os.getuid()}.lock"


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if it is missing; refuse one another user could write.

    A directory that exists must be a real directory (not a symlink) owned
    by this user, with no group or other write permission: anyone who can
    write to it can create the lock file first and hold it for ever, and
    then no process of the app would run a periodic job.

    :raises ConfigError: naming the directory, what is wrong and the fix.
    """
    where = os.fspath(directory)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise ConfigError(
            f"cannot create the leader lock directory {where!r}: {error.strerror}; "
            f"make its parent writable, {_FIX}"
        ) from error
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symlink or a file)"
    elif info.st_uid != os.geteuid():
        problem = f"is owned by uid {info.st_uid}, not by this process's uid {os.geteuid()}"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"can be written by other users (mode {stat.S_IMODE(info.st_mode):o})"
    else:
        return
    raise ConfigError(
        f"the leader lock directory {where!r} {problem}, so another local user could take "
        "the lock and keep this app's periodic jobs from running; remove it (it is "
        f"recreated, mode 0700, at the next start) or chmod 700 it if it is yours, {_FIX}"
    )


def app_lock_name(task_names: Iterable[str], scope: str | None = None) -> str:
    """Return a lock name for an app known by the names of its periodic tasks.

    Processes with the same periodic tasks and ``scope`` get the same name,
    apps with other tasks another one: e.g. ``shop-1a2b3c4d5e6f`` for
    ``shop.tasks.warm_cache`` (the first dotted part of the first name, then
    a hash of them all and of ``scope``).

    :param scope: what tells two deployments of the app apart (see :func:`lock_scope`).
    """
    names = sorted(set(task_names))
    text = "\n".join(names) + ("" if scope is None else f"\n@{scope}")
    prefix = names[0].split(".", 1)[0][:32] if names else "app"
    return f"{prefix or 'app'}-{_digest(text)[:12]}"


def lock_scope(
    store: object, root_path: str | None, functions: Iterable[Callable[..., Any]]
) -> tuple[str, str] | None:
    """Return what tells this deployment's processes from another's: ``(kind, path)``, or ``None``.

    In order: the file of a shared store (``store.path``: processes sharing
    a store share a leader), the app's root path (``app.root_path`` for a
    Flask app, given by ``init_app``), else the directory of the module of
    the first periodic function, e.g. ``/srv/shop-staging/shop`` (two
    checkouts of one app differ there).

    :param store: the runner's store; a store with a ``path`` (the SQLite store) is shared.
    :param root_path: the app's root directory, if known.
    :param functions: the periodic tasks' functions, in declaration order.
    """
    store_path = getattr(store, "path", None)
    if isinstance(store_path, str) and store_path:
        return "store", os.path.abspath(store_path)
    if root_path:
        return "root", os.path.abspath(root_path)
    for function in functions:
        module = sys.modules.get(getattr(function, "__module__", "") or "")
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            return "root", os.path.dirname(os.path.abspath(filename))
    return None


def check_lock_name(name: str | None, lock_path: LockPathOption) -> None:
    """Refuse, at construction, a ``name`` that the default lock path cannot be made from.

    :raises ConfigError: ``name`` is given, ``lock_path`` is left to its
        default, and ``name`` is not a string or is blank.
    """
    if name is not None and isinstance(lock_path, Default):
        default_lock_path(name)


def leader_lock_path(
    lock_path: str | os.PathLike[str] | Default,
    name: str | None,
    task_names: Iterable[str],
    scope: tuple[str, str] | None = None,
) -> str | os.PathLike[str]:
    """Return the lock file of a runner: ``lock_path``, unless left to its default.

    The default is :func:`default_lock_path` of a name made from ``name``, or
    without one from ``task_names`` (see :func:`app_lock_name`), and the
    ``scope`` (:func:`lock_scope`).  A given ``name`` takes only a store's
    path into account, not the root path: old and new releases of an app,
    in two directories, share one leader during a rolling restart.  Creates
    the default's directory if need be (see :func:`ensure_private_directory`).

    :raises ConfigError: the default directory is not this user's alone.
    """
    if not isinstance(lock_path, Default):
        return lock_path
    kind, where = scope if scope is not None else ("", "")
    if name is not None:
        full = f"{name}-{_digest(where)[:8]}" if kind == "store" else name
    else:
        full = app_lock_name(task_names, f"{kind}:{where}" if kind else None)
    path = default_lock_path(full)
    ensure_private_directory(path.parent)
    return path


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
