"""CSRF tokens for the dashboard's actions: bound to the browser, signed with the app's key.

Every action is a POST carrying a token drawn into the page's forms.  The
first page a browser gets sets a random secret in a cookie of its own
(:data:`COOKIE`: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over
HTTPS, scoped to the dashboard's path); a token is an itsdangerous
signature (Flask ships itsdangerous) of that secret with the app's
``secret_key`` and a salt of its own, valid for :data:`MAX_AGE` seconds.
A POST passes only if its token is well signed, fresh, and names the
secret of the cookie that came with it: another site can neither read a
page to get a token nor set the cookie, and a token copied out of one
browser does nothing in another.  Without a ``secret_key`` a random key is
drawn once per process (and a warning logged): tokens then work only in
the process that drew the page, so set ``app.secret_key`` when several
worker processes serve the app.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import Flask, Response, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["COOKIE", "MAX_AGE", "is_valid", "new_token", "set_cookie"]

logger = logging.getLogger(__name__)

#: Seconds a token stays valid (a page left open for a working day still acts).
MAX_AGE = 12 * 3600
#: The cookie holding the browser's secret that its tokens sign.
COOKIE = "taskrun_dashboard_csrf"
_SALT = "taskrun-dashboard-action"
_SECRET_LENGTH = 43  # len(secrets.token_urlsafe(32))
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


def _browser_secret() -> str | None:
    """Return the secret of the request's cookie, if it has a well-formed one."""
    found = request.cookies.get(COOKIE)
    if found is None or len(found) != _SECRET_LENGTH:
        return None
    return found


def new_token(app: Flask) -> str:
    """Return a token for the forms of the page being drawn, bound to the browser's cookie.

    A request without the cookie gets a new secret, which :func:`set_cookie`
    sends with the response.
    """
    secret = _browser_secret()
    if secret is None:
        secret = g.get("taskrun_csrf_new")
        if secret is None:
            secret = secrets.token_urlsafe(32)
            g.taskrun_csrf_new = secret
    return URLSafeTimedSerializer(_key(app), salt=_SALT).dumps(secret)


def set_cookie(response: Response, path: str) -> Response:
    """Send the browser's new secret with ``response``, if this request drew one."""
    secret = g.get("taskrun_csrf_new")
    if secret is not None:
        response.set_cookie(
            COOKIE,
            secret,
            max_age=MAX_AGE,
            path=path,
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
    return response


def is_valid(app: Flask, token: str | None) -> bool:
    """Return whether ``token`` was signed for this browser's secret within :data:`MAX_AGE` s."""
    secret = _browser_secret()
    if not token or secret is None:
        return False
    try:
        signed = URLSafeTimedSerializer(_key(app), salt=_SALT).loads(token, max_age=MAX_AGE)
    except BadSignature:
        return False
    return isinstance(signed, str) and hmac.compare_digest(signed, secret)
