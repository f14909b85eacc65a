"""Who may open taskrun's operator pages (the dashboard, the metrics): closed until the app says.

Every request to them, pages and actions alike, passes :func:`check_access`
(registered as the blueprint's ``before_request`` by :func:`guard`): the
function set with ``@runner.dashboard_auth`` decides; without one, only an
app in debug mode lets requests through, and the others get a 403 page
that says how to open it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, request

if TYPE_CHECKING:  # the runner imports this package lazily (runner.init_app)
    from taskrun.runner import TaskRunner

__all__ = ["check_access", "guard"]

_HOW_TO_OPEN = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskrun: access denied</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;
color:#1f2937}code,pre{background:#f3f4f6;border-radius:4px;padding:.1rem .3rem}
pre{padding:1rem;overflow:auto}</style></head><body>
<h1>403: this taskrun page is closed</h1>
<p>taskrun's dashboard and metrics are closed until the app decides who may see them.
Set an access function on the runner:</p>
<pre>@runner.dashboard_auth
def allowed(request) -&gt; bool:
    return current_user.is_authenticated and current_user.is_admin</pre>
<p>While <code>app.debug</code> is on, they are open to anyone who can reach the server.</p>
</body></html>
"""


def check_access(runner: TaskRunner) -> Response | None:
    """Return ``None`` if the current request may pass, else the 403 response to send.

    Call it in a request of the app ``runner`` is attached to.
    """
    check = runner.dashboard_check
    if check is None:
        allowed = bool(current_app.debug)
    else:
        allowed = bool(check(request))
    if allowed:
        return None
    if check is None:
        return Response(_HOW_TO_OPEN, status=403, mimetype="text/html")
    return Response("403 Forbidden: access to this taskrun page was refused\n", status=403)


def guard(blueprint: Blueprint, runner: Callable[[], TaskRunner]) -> None:
    """Make every request to ``blueprint`` pass :func:`check_access` first.

    :param runner: returns the app's runner (looked up per request, e.g. from
        ``current_app.extensions["taskrun"]``).
    """

    @blueprint.before_request
    def _check() -> Response | None:
        return check_access(runner())
