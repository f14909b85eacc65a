"""Type-checked only (by mypy, never run): every public duration takes a ``timedelta``.

Each ``# type: ignore[...]`` below must match a real error (``--strict``
warns about unused ones).
"""

from __future__ import annotations

from datetime import timedelta

from taskrun import TaskRunner, every

runner = TaskRunner(result_ttl=timedelta(hours=1))


@runner.task(timeout=timedelta(seconds=30), retry_delay=timedelta(seconds=5))
def export(name: str) -> str:
    return name


@runner.periodic(every(minutes=5), misfire_grace=timedelta(minutes=1), timeout=timedelta(10))
def warm_cache() -> None: ...


export.delay("report").get(timeout=timedelta(seconds=5))
runner.stop(timeout=timedelta(seconds=30))
runner.stop(timeout="30")  # type: ignore[arg-type]


def serve_app(app: object) -> None:
    """Serving takes a timedelta grace too (never called: type-checked only)."""
    from taskrun.wsgi import Server, serve

    server = Server(app, runner, grace=timedelta(seconds=30))
    server.stop(grace=timedelta(seconds=10))
    serve(app, runner, grace=timedelta(seconds=30))
    Server(app, runner, grace="30")  # type: ignore[arg-type]
