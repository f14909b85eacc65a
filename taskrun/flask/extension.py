"""``init_app``: attach a runner to a Flask app, reading its ``TASKRUN_*`` config.

See :mod:`taskrun.flask` for what the extension does and an example.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask

from taskrun.errors import ConfigError, TaskrunError
from taskrun.flask.autostart import autostart
from taskrun.flask.status import status_blueprint

if TYPE_CHECKING:  # the runner imports this package lazily (runner.init_app)
    from taskrun.runner import TaskRunner

logger = logging.getLogger(__name__)

#: ``app.config`` keys that set a runner option, and the option each sets.
RUNNER_OPTIONS: dict[str, str] = {
    "TASKRUN_CONCURRENCY": "concurrency",
    "TASKRUN_MAX_PENDING": "max_pending",
    "TASKRUN_MAX_SCHEDULED": "max_scheduled",
    "TASKRUN_RESULT_TTL": "result_ttl",
    "TASKRUN_MAX_RESULTS": "max_results",
    "TASKRUN_THREADS": "threads",
    "TASKRUN_EAGER": "eager",
    "TASKRUN_NAME": "name",
    "TASKRUN_LOCK_PATH": "lock_path",
    "TASKRUN_STORE": "store",
    "TASKRUN_MAX_ARG_BYTES": "max_arg_bytes",
    "TASKRUN_BLOCKING_WARNING": "blocking_warning",
    "TASKRUN_BROKER": "broker",
    "TASKRUN_BROKER_VISIBILITY_TIMEOUT": "broker_visibility_timeout",
}
#: Other names of runner option keys: ``TASKRUN_BROKER_URL`` is the name Celery users
#: (and the environment variable of the same name) know.
ALIASES = {"TASKRUN_BROKER_URL": "TASKRUN_BROKER"}
#: The key for where the status endpoint lives: ``<prefix>/<job id>``.
STATUS_URL_PREFIX = "TASKRUN_STATUS_URL_PREFIX"
DEFAULT_STATUS_URL_PREFIX = "/taskrun/jobs"
#: Serve Prometheus metrics (``pip install taskrun-gevent[metrics]``), where, and to whom.
METRICS = "TASKRUN_METRICS"
METRICS_URL = "TASKRUN_METRICS_URL"
DEFAULT_METRICS_URL = "/taskrun/metrics"
METRICS_PUBLIC = "TASKRUN_METRICS_PUBLIC"
#: The keys that turn the dashboard on (a bool) and say where it lives.
DASHBOARD = "TASKRUN_DASHBOARD"
DASHBOARD_URL_PREFIX = "TASKRUN_DASHBOARD_URL_PREFIX"
DEFAULT_DASHBOARD_URL_PREFIX = "/taskrun/dashboard"
#: The key that lets the first ``delay()`` start the runner (default ``True``).
AUTOSTART = "TASKRUN_AUTOSTART"
#: Runner options whose ``None`` is a value of its own, not "keep the runner's".
_NONE_MEANS_ITSELF = frozenset({"TASKRUN_LOCK_PATH", "TASKRUN_THREADS", "TASKRUN_NAME"})
_BOOLEANS = ("TASKRUN_EAGER", AUTOSTART)
CONFIG_KEYS = frozenset(
    [*RUNNER_OPTIONS, *ALIASES, STATUS_URL_PREFIX, METRICS, METRICS_URL, METRICS_PUBLIC, AUTOSTART]
    + [DASHBOARD, DASHBOARD_URL_PREFIX]
)


def init_app(runner: TaskRunner, app: Flask) -> None:
    """Attach ``runner`` to ``app``; called by ``runner.init_app(app)`` and ``TaskRunner(app)``.

    Reads the ``TASKRUN_*`` keys of ``app.config``, one per ``TaskRunner``
    option (those absent keep the runner's own values; see
    :data:`RUNNER_OPTIONS`): ``TASKRUN_CONCURRENCY``, ``TASKRUN_MAX_PENDING``,
    ``TASKRUN_MAX_SCHEDULED``, ``TASKRUN_RESULT_TTL``, ``TASKRUN_MAX_RESULTS``,
    ``TASKRUN_THREADS``, ``TASKRUN_EAGER`` (a bool; jobs run inline, for your
    app's tests), ``TASKRUN_NAME``, ``TASKRUN_LOCK_PATH``, ``TASKRUN_STORE``
    (a relative SQLite path, ``sqlite:///taskrun.db`` or ``taskrun.db``, is
    taken from ``app.instance_path``, which is created if missing, as
    Flask-SQLAlchemy does), ``TASKRUN_MAX_ARG_BYTES`` (the largest pickled
    arguments of a job in a SQLite store), ``TASKRUN_BLOCKING_WARNING``
    (seconds; see :mod:`taskrun.monitor`); and ``TASKRUN_STATUS_URL_PREFIX``
    (default ``/taskrun/jobs``), ``TASKRUN_METRICS`` (a bool: serve
    Prometheus metrics, see :mod:`taskrun.flask.metrics`) with
    ``TASKRUN_METRICS_URL`` (default ``/taskrun/metrics``) and
    ``TASKRUN_METRICS_PUBLIC``, ``TASKRUN_DASHBOARD`` (a bool: serve the
    operator dashboard, see :mod:`taskrun.flask.dashboard`) with
    ``TASKRUN_DASHBOARD_URL_PREFIX`` (default ``/taskrun/dashboard``), and
    ``TASKRUN_AUTOSTART`` (default ``True``: the first ``delay()`` or
    ``runner.job()`` in a process whose runner is not started starts it, see
    :mod:`taskrun.flask.autostart`).  The options are applied all or nothing:
    one bad key applies none.  Then puts the runner in
    ``app.extensions["taskrun"]``, makes every job run inside
    ``app.app_context()``, registers the ``taskrun`` blueprint with the
    status endpoint (and the metrics and dashboard ones, if on), adds the
    ``flask taskrun`` commands (:mod:`taskrun.flask.cli`) and gives the runner the
    app's ``root_path`` (part of its default leader lock name).

    Starts nothing: no greenlet, thread, file or socket exists until the
    runner starts.  Calling it again with the same app does nothing.

    :raises ConfigError: for an unknown ``TASKRUN_*`` key, a ``TASKRUN``
        dict or a bad value (the message names the key); if ``app`` already
        holds another runner; if the runner is running for another app.
    """
    if not isinstance(app, Flask):
        raise ConfigError(f"init_app needs a Flask app, got {app!r}")
    held = app.extensions.get("taskrun")
    attached = attached_app(runner)
    if held is runner and attached is app:
        return
    if held is not None and held is not runner:
        raise ConfigError(
            f"app {app.name!r} already has a TaskRunner ({held!r}) in app.extensions['taskrun']; "
            "an app holds one runner: declare all its tasks on that one"
        )
    if attached is not None and attached is not app and runner.is_running:
        raise ConfigError(
            f"this runner is running jobs for app {attached.name!r}; attach it to app "
            f"{app.name!r} only after runner.stop(), or give each app its own TaskRunner"
        )
    options, prefix = read_config(app.config)
    dashboard = read_dashboard_config(app.config)
    if "TASKRUN_STORE" in options:
        options["TASKRUN_STORE"] = _instance_store(app, options["TASKRUN_STORE"])
    settings = runner._router.settings
    for key, value in options.items():  # each alone first, so that the error names its key
        try:
            settings.configured(**{RUNNER_OPTIONS[key]: value})
        except TaskrunError as error:
            raise ConfigError(f"app.config[{key!r}] = {value!r} is not usable: {error}") from None
    if options:
        try:
            runner.configure(**{RUNNER_OPTIONS[key]: value for key, value in options.items()})
        except TaskrunError as error:
            raise ConfigError(f"the TASKRUN_* config is not usable: {error}") from None
    if app.config.get(AUTOSTART) is not False:
        runner.autostart = lambda: autostart(runner)
    else:
        runner.autostart = None
    if held is None:
        app.register_blueprint(status_blueprint(prefix))
        metrics = _metrics_config(app.config)
        if metrics is not None:
            from taskrun.flask.metrics import metrics_blueprint  # prometheus_client: only if on

            app.register_blueprint(metrics_blueprint(runner, *metrics))
        if dashboard is not None:
            from taskrun.flask.dashboard import dashboard_blueprint

            app.register_blueprint(dashboard_blueprint(dashboard))
        from taskrun.flask.cli import taskrun_command

        app.cli.add_command(taskrun_command)
    app.extensions["taskrun"] = runner
    runner.set_job_context(app.app_context)
    # Two checkouts of one app on a machine must not share one leader lock.
    runner.root_path = app.root_path


def read_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Check the ``TASKRUN_*`` keys of ``config``; return (runner options by key, status prefix).

    :raises ConfigError: for an unknown key (or one in another shape, such
        as a ``TASKRUN`` dict or lower case, that would be ignored), a
        non-bool ``TASKRUN_EAGER`` or ``TASKRUN_AUTOSTART``, or a prefix that
        is not a path like ``/taskrun/jobs``.
    """
    if "TASKRUN" in config:
        raise ConfigError(
            f"app.config['TASKRUN'] = {config['TASKRUN']!r} is not read: taskrun takes one "
            "flat key per option, e.g. app.config['TASKRUN_CONCURRENCY'] = 50 and "
            "app.config['TASKRUN_STORE'] = 'sqlite:///taskrun.db'"
        )
    unknown = sorted(
        key
        for key in config
        if isinstance(key, str) and key.upper().startswith("TASKRUN") and key not in CONFIG_KEYS
    )
    if unknown:
        raise ConfigError(
            f"unknown taskrun config key(s) {unknown!r}; known (upper case, one per option): "
            f"{sorted(CONFIG_KEYS)!r}"
        )
    for alias, key in ALIASES.items():
        if alias in config and key in config and config[alias] != config[key]:
            raise ConfigError(
                f"app.config[{alias!r}] and app.config[{key!r}] name the same option with "
                f"different values ({config[alias]!r}, {config[key]!r}); keep one"
            )
    config = {**{ALIASES[key]: config[key] for key in ALIASES if key in config}, **config}
    options = {
        key: config[key]
        for key in RUNNER_OPTIONS
        if key in config and (config[key] is not None or key in _NONE_MEANS_ITSELF)
    }
    for key in _BOOLEANS:
        value = config.get(key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(
                f"app.config[{key!r}] must be True or False, got {value!r}; "
                f"with from_prefixed_env() write FLASK_{key}=true"
            )
    prefix = config.get(STATUS_URL_PREFIX, DEFAULT_STATUS_URL_PREFIX)
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise ConfigError(
            f"app.config[{STATUS_URL_PREFIX!r}] must be a URL path below the root, got "
            f"{prefix!r}; e.g. {DEFAULT_STATUS_URL_PREFIX!r}"
        )
    return options, prefix.rstrip("/")


def _metrics_config(config: Mapping[str, Any]) -> tuple[str, bool] | None:
    """Return (URL, public) if ``TASKRUN_METRICS`` is on, else ``None``.

    :raises ConfigError: for a non-bool flag, a bad URL, or prometheus_client missing.
    """
    for key in (METRICS, METRICS_PUBLIC):
        if not isinstance(config.get(key, False), bool):
            raise ConfigError(f"app.config[{key!r}] must be True or False, got {config[key]!r}")
    if not config.get(METRICS, False):
        return None
    url = config.get(METRICS_URL, DEFAULT_METRICS_URL)
    if not isinstance(url, str) or not url.startswith("/") or url.rstrip("/") == "":
        raise ConfigError(
            f"app.config[{METRICS_URL!r}] must be a URL path below the root, got {url!r}; "
            f"e.g. {DEFAULT_METRICS_URL!r}"
        )
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            f"app.config[{METRICS!r}] is True but prometheus_client is not installed; "
            "install it with: pip install 'taskrun-gevent[metrics]'"
        )
    return url, bool(config.get(METRICS_PUBLIC, False))


def read_dashboard_config(config: Mapping[str, Any]) -> str | None:
    """Return the dashboard's URL prefix if ``TASKRUN_DASHBOARD`` is on, else ``None``.

    :raises ConfigError: for a non-bool ``TASKRUN_DASHBOARD`` or a bad prefix.
    """
    enabled = config.get(DASHBOARD, False)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"app.config[{DASHBOARD!r}] must be True or False, got {enabled!r}; "
            "with from_prefixed_env() write FLASK_TASKRUN_DASHBOARD=true"
        )
    prefix = config.get(DASHBOARD_URL_PREFIX, DEFAULT_DASHBOARD_URL_PREFIX)
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.rstrip("/") == "":
        raise ConfigError(
            f"app.config[{DASHBOARD_URL_PREFIX!r}] must be a URL path below the root, got "
            f"{prefix!r}; e.g. {DEFAULT_DASHBOARD_URL_PREFIX!r}"
        )
    return prefix.rstrip("/") if enabled else None


def _instance_store(app: Flask, spec: Any) -> Any:
    """Return ``spec`` with a relative SQLite path made absolute under ``app.instance_path``."""
    if not isinstance(spec, str | os.PathLike) or os.fspath(spec) in ("memory", "memory://"):
        return spec
    from taskrun.stores.sqlite.files import store_file, store_path

    try:
        _, relative = store_file(spec)
    except ConfigError as error:
        raise ConfigError(
            f"app.config['TASKRUN_STORE'] = {spec!r} is not usable: {error}"
        ) from None
    if not relative:
        return spec
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    return store_path(spec, base=app.instance_path)


def attached_app(runner: TaskRunner) -> Flask | None:
    """Return the app whose context ``runner``'s jobs run in, or ``None``."""
    owner = getattr(runner.job_context, "__self__", None)
    return owner if isinstance(owner, Flask) else None
