"""CSRF tokens for the dashboard's actions: signed with the app's secret key.

Every action is a POST carrying a token drawn into the page's forms; a
token is an itsdangerous signature (Flask ships itsdangerous) with the
app's ``secret_key`` and a salt of its own, valid for :data:`MAX_AGE`
seconds.  Another site cannot read a page of the dashboard, so it cannot
get a token for a forged POST.  Without a ``secret_key`` a random key is
drawn once per process (and a warning logged): tokens then work only in
the process that drew the page, so set ``app.secret_key`` when several
worker processes serve the app.
"""

from __future__ import annotations

import logging
import secrets

from flask import Flask
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["MAX_AGE", "is_valid", "new_token"]

logger = logging.getLogger(__name__)

#: Seconds a token stays valid (a page left open for a working day still acts).
MAX_AGE = 12 * 3600
_SALT = "taskrun-dashboard-action"
_process_key: str | None = None


def _key(app: Flask) -> str | bytes:
    global _process_key
    if app.secret_key:
        return app.secret_key
    if _process_key is None:
        _process_key = secrets.token_hex(32)
        logger.warning(
            "the taskrun dashboard signs its action tokens with a random per-process key, "
            "since app.secret_key is not set: with several worker processes, actions fail "
            "in a process other than the one that drew the page; set app.secret_key"
        )
    return _process_key


def new_token(app: Flask) -> str:
    """Return a fresh token for the forms of a page of ``app``."""
    return URLSafeTimedSerializer(_key(app), salt=_SALT).dumps(secrets.token_hex(8))


def is_valid(app: Flask, token: str | None) -> bool:
    """Return whether ``token`` was signed for ``app``'s dashboard within :data:`MAX_AGE` s."""
    if not token:
        return False
    try:
        URLSafeTimedSerializer(_key(app), salt=_SALT).loads(token, max_age=MAX_AGE)
    except BadSignature:
        return False
    return True
