"""The store's file on disk: where the setting points, created owner-only, trusted or refused.

The file holds pickles, so it is a trust boundary: whoever can write it
runs code as the app, and whoever can read it sees every job's arguments
and results.  :func:`create_file` makes a new file with mode 0600 and
refuses an existing one (or its ``-wal``/``-shm``) that another user owns
or that the group or others may read or write (:func:`check_trusted`),
with a :class:`~taskrun.errors.StoreError` naming the file, its owner and
mode, and the ``chown``/``chmod 600`` that fixes it.
"""

from __future__ import annotations

import logging
import os
import stat

from taskrun.errors import ConfigError, StoreError

__all__ = ["check_trusted", "create_file", "store_file", "store_path"]

logger = logging.getLogger(__name__)


def store_path(spec: str | os.PathLike[str], base: str | None = None) -> str:
    """Return the absolute file path named by a store setting.

    SQLAlchemy's rule: ``"sqlite:///var/taskrun.db"`` (three slashes) and
    ``"var/taskrun.db"`` are relative to ``base`` (default: the current
    directory); ``"sqlite:////var/lib/app/taskrun.db"`` (four slashes) and
    ``"/var/lib/app/taskrun.db"`` are absolute.

    :param base: the directory relative paths start from (the Flask extension
        passes ``app.instance_path``).
    :raises ConfigError: for another scheme, ``sqlite://`` without the third
        slash, an in-memory SQLite name or an empty path.
    """
    path, relative = store_file(spec)
    if relative and base is not None:
        path = os.path.join(base, path)
    return os.path.abspath(path)


def store_file(spec: str | os.PathLike[str]) -> tuple[str, bool]:
    """Return (the file path a store setting names, whether it is relative), unresolved.

    :raises ConfigError: as :func:`store_path`.
    """
    text = os.fspath(spec)
    path = text
    if "://" in text:
        scheme, _, path = text.partition("://")
        if scheme.lower() != "sqlite":
            raise ConfigError(
                f"unknown store {text!r}: use 'memory', 'sqlite:////abs/path/taskrun.db' "
                "(four slashes: absolute), 'sqlite:///relative/taskrun.db' or a file path"
            )
        if path and not path.startswith("/"):
            raise ConfigError(
                f"store {text!r} has two slashes after 'sqlite:'; as in SQLAlchemy, write "
                f"'sqlite:///{path}' (three: relative) or 'sqlite:////{path}' (four: absolute)"
            )
        path = path[1:]
    elif text.lower().startswith("sqlite:"):
        path = text[len("sqlite:") :]
    if not path.strip() or path.strip() == ":memory:" or "?" in path:
        raise ConfigError(
            f"store {text!r} does not name a file; use e.g. 'sqlite:////var/lib/app/taskrun.db' "
            "(processes share jobs through the file, so it must be a real path)"
        )
    return path, not os.path.isabs(path)


def create_file(path: str) -> None:
    """Create the store file with owner-only permissions (0600) if it does not exist.

    SQLite gives its ``-wal`` and ``-shm`` files the same permissions.

    :raises StoreError: the directory is missing or not writable, the path
        is not a regular file, an existing file cannot be read and written,
        or it (or its ``-wal``/``-shm``) is not the app user's alone
        (:func:`check_trusted`).
    """
    directory = os.path.dirname(path) or "."
    try:
        is_directory = stat.S_ISDIR(os.stat(directory).st_mode)
    except PermissionError as error:
        raise StoreError(
            f"cannot open the taskrun store {path!r}: this user (uid {os.getuid()}) may not "
            f"enter {error.filename!r}; fix the directory's permissions or point store= elsewhere"
        ) from error
    except OSError:
        is_directory = False
    if not is_directory:
        raise StoreError(
            f"cannot open the taskrun store {path!r}: the directory {directory!r} does not "
            "exist; create it (mkdir -p) or point store= at a file in an existing directory"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        _check_existing(path)
    except OSError as error:
        raise StoreError(
            f"cannot create the taskrun store {path!r}: {error.strerror}; make the directory "
            f"{directory!r} writable by this user (uid {os.getuid()}) or point store= elsewhere"
        ) from error
    else:
        os.close(fd)
        logger.info("created the taskrun store %s (mode 0600)", path)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot use the taskrun store {path!r}: its directory {directory!r} is not "
            f"writable by this user (uid {os.getuid()}), and SQLite keeps its -wal and -shm "
            "files next to the store; make the directory writable or move the store"
        )


def _check_existing(path: str) -> None:
    try:
        info = os.stat(path)
    except OSError as error:
        raise StoreError(f"cannot use the taskrun store {path!r}: {error.strerror}") from error
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(
            f"the taskrun store {path!r} is not a regular file; point store= at a file path"
        )
    check_trusted(path, info)
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"the taskrun store {path!r} is not readable and writable by this user "
            f"(uid {os.getuid()}); fix its owner or mode (e.g. chown the file to the app's "
            "user and chmod 600 it) or point store= elsewhere"
        )
    for suffix in ("-wal", "-shm"):
        try:
            side = os.stat(path + suffix)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StoreError(
                f"cannot use the taskrun store {path!r}: {path + suffix!r}: {error.strerror}"
            ) from error
        check_trusted(path + suffix, side)


def check_trusted(path: str, info: os.stat_result) -> None:
    """Refuse a store file (or its ``-wal``/``-shm``) that others could write or read.

    The file holds pickles: whoever can write it runs code as the app, and
    whoever can read it sees every job's arguments and results.

    :raises StoreError: naming the file, its owner and mode, and the fix, if
        another user owns it or its mode grants the group or others any access.
    """
    mode = stat.S_IMODE(info.st_mode)
    uid = os.getuid()
    if info.st_uid != uid:
        raise StoreError(
            f"refusing the taskrun store file {path!r}: it is owned by uid {info.st_uid}, not "
            f"by this user (uid {uid}), and it holds pickles (whoever can write it runs code "
            f"as the app); chown {uid} {path} && chmod 600 {path}, or point store= at a file "
            "of this user"
        )
    if mode & 0o077:
        access = "write" if mode & 0o022 else "read"
        raise StoreError(
            f"refusing the taskrun store file {path!r}: its mode {mode:04o} lets other users "
            f"{access} it (owner uid {info.st_uid}); it "
            "holds pickles (whoever can write it runs code as the app) and job data; "
            f"chmod 600 {path}"
        )
