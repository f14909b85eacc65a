"""The dashboard's pages: overview, jobs, one job, periodic jobs, processes.

Each page is a GET rendering its template; with the ``X-Taskrun-Fragment``
header (sent by the page's own refresh script) only the page's content is
rendered, for an in-place refresh without a full reload.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request

from .csrf import new_token
from .queries import job_page, jobs_page, overview_page, periodic_page, processes_page

__all__ = ["register_views"]

#: The header the refresh script sends to get a page's content only.
FRAGMENT_HEADER = "X-Taskrun-Fragment"


def _render(template: str, nav: str, **context: Any) -> str:
    return render_template(
        f"taskrun_dashboard/{template}",
        nav=nav,
        fragment=request.headers.get(FRAGMENT_HEADER) == "1",
        csrf=new_token(current_app),
        notice=request.args.get("notice", ""),
        now=time.time(),
        **context,
    )


def register_views(bp: Blueprint) -> None:
    """Add the page routes to the dashboard blueprint."""
    from taskrun.runner import TaskRunner

    def runner() -> TaskRunner:
        found: TaskRunner = current_app.extensions["taskrun"]
        return found

    @bp.get("/")
    def overview() -> str:
        return _render("overview.html", "overview", **overview_page(runner(), time.time()))

    @bp.get("/jobs")
    def jobs() -> str:
        args = request.args
        data = jobs_page(
            runner(), args.get("state"), args.get("task"), args.get("q"), args.get("after")
        )
        return _render("jobs.html", "jobs", **data)

    @bp.get("/jobs/<job_id>")
    def job(job_id: str) -> str:
        view = job_page(runner(), job_id, time.time())
        if view is None:
            abort(404, f"no job {job_id!r} is kept (unknown, or its result aged out)")
        return _render("job.html", "jobs", view=view)

    @bp.get("/periodic")
    def periodic_list() -> str:
        return _render("periodic.html", "periodic", **periodic_page(runner()))

    @bp.get("/processes")
    def processes() -> str:
        return _render("processes.html", "processes", **processes_page(runner()))
