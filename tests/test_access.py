"""Operator pages (dashboard, metrics) are closed until ``@runner.dashboard_auth`` opens them."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask, Request

from taskrun import ConfigError, TaskRunner
from taskrun.flask.access import guard


def make_app(runner: TaskRunner, *, debug: bool = False) -> Flask:
    app = Flask("access_test")
    app.debug = debug
    pages = Blueprint("pages", __name__)
    guard(pages, lambda: runner)
    pages.add_url_rule("/page", "page", lambda: "the page")
    app.register_blueprint(pages)
    return app


def test_pages_are_closed_without_an_access_function_and_say_how_to_open_them() -> None:
    response = make_app(TaskRunner()).test_client().get("/page")

    assert response.status_code == 403
    assert "@runner.dashboard_auth" in response.get_data(as_text=True)


def test_debug_mode_opens_pages_when_no_access_function_is_set() -> None:
    response = make_app(TaskRunner(), debug=True).test_client().get("/page")

    assert (response.status_code, response.get_data(as_text=True)) == (200, "the page")


@pytest.mark.parametrize(("debug", "token", "status"), [(False, "s3cret", 200), (True, "", 403)])
def test_the_access_function_decides_whatever_the_debug_mode(
    debug: bool, token: str, status: int
) -> None:
    runner = TaskRunner()
    seen: list[str] = []

    @runner.dashboard_auth
    def allowed(request: Request) -> bool:
        seen.append(request.path)
        return request.headers.get("X-Token") == "s3cret"

    response = make_app(runner, debug=debug).test_client().get("/page", headers={"X-Token": token})

    assert response.status_code == status
    assert seen == ["/page"]


def test_an_access_function_must_be_callable() -> None:
    with pytest.raises(ConfigError, match=r"dashboard_auth needs a function of the request, got 3"):
        TaskRunner().dashboard_auth(3)  # type: ignore[arg-type]
