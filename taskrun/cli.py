"""The ``taskrun`` command: ``taskrun serve module:app`` serves an app and its runner.

``taskrun worker module:app`` runs the app's jobs in a Celery gevent worker
instead, when its runner has a broker (see :mod:`taskrun.engines.celery`).

``main()`` monkey-patches the standard library with gevent *before* it
imports the app or any taskrun module that serves, so every socket, lock and
``ssl`` context the app creates is cooperative.  This module imports nothing
at load time that a late patch would break.

Example::

    taskrun serve myapp:app --bind 127.0.0.1:8000 --grace 30
    taskrun serve 'myapp:create_app()' --runner myapp.jobs:runner
    python -m taskrun serve myapp:app
    taskrun worker 'myapp:create_app()' --concurrency 100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for real only after patching, in main()
    from taskrun.runner import TaskRunner
    from taskrun.wsgi import Server

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SERVE_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``taskrun`` command."""
    parser = argparse.ArgumentParser(
        prog="taskrun",
        description="Run a WSGI app's background jobs inside its gevent web server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a WSGI app and its TaskRunner with gevent",
        description=(
            "Monkey-patch with gevent, import the app, start its runner and serve it. "
            "SIGTERM or SIGINT stops accepting, lets requests and jobs finish within "
            "--grace seconds and exits 0; a second signal kills them at once."
        ),
    )
    serve.add_argument(
        "target",
        metavar="MODULE:APP",
        help="the app, e.g. myapp:app, or a factory: myapp:create_app or "
        "'myapp:create_app(\"prod\")'",
    )
    serve.add_argument(
        "-b", "--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on (%(default)s)"
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds to finish requests and jobs on shutdown (%(default)s)",
    )
    serve.add_argument(
        "--runner",
        metavar="MODULE:ATTR",
        help="the TaskRunner, if the app does not lead to it (app.extensions['taskrun'] "
        "or a module-level taskrun_runner)",
    )
    serve.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="the most connections served at once (%(default)s)",
    )
    serve.add_argument("--no-access-log", action="store_true", help="do not log a line per request")
    _add_log_level(serve)
    worker = commands.add_parser(
        "worker",
        help="run a Celery gevent worker for the jobs of an app whose runner has a broker",
        description=(
            "Monkey-patch with gevent, import the app (its factory runs, as in the web "
            "processes), and run a Celery worker with a gevent pool that runs the app's "
            "taskrun jobs: TaskRunner(broker=...) or TASKRUN_BROKER_URL must name the Redis. "
            "SIGTERM lets running jobs finish (Celery's warm shutdown)."
        ),
    )
    worker.add_argument("target", metavar="MODULE:APP", help="the app, as for serve")
    worker.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=100,
        help="the most jobs running at once in this worker (%(default)s)",
    )
    worker.add_argument("--runner", metavar="MODULE:ATTR", help="the TaskRunner, as for serve")
    _add_log_level(worker)
    return parser


def _add_log_level(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (%(default)s)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the ``taskrun`` command line; return the process exit code.

    Patches with gevent first, then parses ``argv`` (default ``sys.argv[1:]``)
    and serves until stopped.  Blocks until the server has stopped.

    :returns: 0 after a stop by signal, 1 if serving failed to start (e.g.
        the address is in use), 2 for a bad argument, an app that cannot
        be loaded or a runner that cannot start (its store or leader lock).
    """
    from gevent import monkey

    monkey.patch_all()

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # Imported only now, on a patched stdlib.
    from taskrun.errors import ConfigError, StoreError

    if args.command == "worker":
        return _work(args)
    try:
        server = _make_server(args)
    except ConfigError as error:
        logger.error("%s", error)
        return EXIT_USAGE
    try:
        server.serve_forever()
    except (ConfigError, StoreError) as error:
        # runner.start() refused (the store, the leader lock): one line, no traceback.
        logger.error("cannot start the runner, so nothing is served: %s", error)
        return EXIT_USAGE
    except OSError as error:
        logger.error("cannot serve on %s: %s; choose another --bind", args.bind, error)
        return EXIT_SERVE_ERROR
    return EXIT_OK


def _find(args: argparse.Namespace) -> tuple[object, TaskRunner | None]:
    from taskrun.loading import find_runner, load_app, load_runner, split_target

    # Like flask and gunicorn: the app is found from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = load_app(args.target)
    if args.runner:
        return app, load_runner(args.runner)
    return app, find_runner(app, split_target(args.target)[0])


def _work(args: argparse.Namespace) -> int:
    """``taskrun worker``: run the app's jobs in a Celery gevent worker until stopped."""
    from taskrun.errors import ConfigError, StoreError
    from taskrun.loading import no_runner_message

    if args.concurrency < 1:
        logger.error("--concurrency must be 1 or more, got %d", args.concurrency)
        return EXIT_USAGE
    try:
        _, runner = _find(args)
        if runner is None:
            raise ConfigError(no_runner_message(args.target))
        if runner.broker_url is None:
            raise ConfigError(
                f"the runner of {args.target} has no broker: set TaskRunner(broker="
                "'redis://host:6379/0'), app.config['TASKRUN_BROKER_URL'] or the "
                "TASKRUN_BROKER_URL environment variable; without one, jobs run in the web "
                "processes (taskrun serve) and no worker is needed"
            )
        runner.start(run_jobs=False)  # the engine only: the web processes lead periodic jobs
    except (ConfigError, StoreError) as error:
        logger.error("%s", error)
        return EXIT_USAGE
    from taskrun.engines.celery.engine import CeleryEngine
    from taskrun.engines.celery.worker import serve

    engine = runner.engine
    assert isinstance(engine, CeleryEngine)  # start() with a broker made it
    threads = runner._router.settings.thread_count
    try:
        serve(
            engine,
            runner.tasks,
            runner.job_context,
            threads,
            runner.clock,
            args.concurrency,
            args.log_level,
        )
    finally:
        runner.stop(timeout=0)
    return EXIT_OK


def _make_server(args: argparse.Namespace) -> Server:
    from taskrun.loading import find_runner, load_app, load_runner, split_target
    from taskrun.wsgi import Server

    # Like flask and gunicorn: the app is found from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = load_app(args.target)
    if args.runner:
        runner: TaskRunner | None = load_runner(args.runner)
    else:
        runner = find_runner(app, split_target(args.target)[0])
    return Server(
        app,
        runner,
        bind=args.bind,
        grace=args.grace,
        connections=args.connections,
        access_log=not args.no_access_log,
    )
