"""Sphinx extension for taskrun's docs: generated tables and completeness checks.

* ``{taskrun-options}`` renders every ``TaskRunner`` option and its ``TASKRUN_*``
  key from the code (``TaskRunner.__init__``'s signature and docstring,
  ``taskrun.flask.extension``'s key tables), so the reference cannot drift.
* ``{taskrun-flask-keys}`` renders the ``TASKRUN_*`` keys that are not runner
  options; a key the code knows and this table does not describe is a warning.
* ``{taskrun-task-options}`` renders the options of ``@runner.task`` and
  ``@runner.periodic`` from their signatures and docstrings.
* ``{taskrun-serve-help}`` and ``{taskrun-flask-cli}`` print the CLI's own help.
* A public object documented without a docstring is a warning, and so is a
  public name (in ``taskrun``'s re-exports or a module's ``__all__``) that
  no page documents.
* Every error class ``taskrun`` exports has a row on ``reference/errors.md``.
* A reference to ``taskrun.<module>.<Name>`` resolves to the re-exported
  ``taskrun.<Name>`` when both are the same object.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: The modules whose every public name (``__all__``, else those not starting with
#: ``_``) must be documented with a docstring.
PUBLIC_MODULES = (
    "taskrun",
    "taskrun.flask",
    "taskrun.signals",
    "taskrun.schedules",
    "taskrun.clock",
    "taskrun.metrics",
    "taskrun.wsgi",
    "taskrun.gunicorn",
)

#: The ``TASKRUN_*`` keys that are not runner options: type, default, what.
FLASK_KEYS: dict[str, tuple[str, str, str]] = {
    "TASKRUN_STATUS_URL_PREFIX": (
        "str",
        "DEFAULT_STATUS_URL_PREFIX",
        "where the status endpoint answers: ``<prefix>/<job id>``",
    ),
    "TASKRUN_AUTOSTART": (
        "bool",
        "True",
        "the first ``delay()`` or ``runner.job()`` in a process whose runner is not "
        "started starts it (submit-only in ``flask shell`` and other ``flask`` commands "
        "but ``run``)",
    ),
    "TASKRUN_METRICS": (
        "bool",
        "False",
        "serve Prometheus metrics (needs the ``metrics`` extra)",
    ),
    "TASKRUN_METRICS_URL": ("str", "DEFAULT_METRICS_URL", "where the metrics are served"),
    "TASKRUN_METRICS_PUBLIC": (
        "bool",
        "False",
        "serve the metrics to anyone who can reach them, not only those "
        "``@runner.dashboard_auth`` allows",
    ),
    "TASKRUN_DASHBOARD": ("bool", "False", "serve the operator dashboard"),
    "TASKRUN_DASHBOARD_URL_PREFIX": (
        "str",
        "DEFAULT_DASHBOARD_URL_PREFIX",
        "where the dashboard is mounted",
    ),
    "TASKRUN_BROKER_URL": (
        "str",
        "None",
        "another name for ``TASKRUN_BROKER`` (the name Celery users know): the broker "
        "that jobs go to (see the guide on growing past one machine)",
    ),
}


_FIELD_END = r"(?=\n\s*:(?:param|raises|returns|rtype|type)\b|\n\s*\n|\Z)"


def _params(doc: str, owner: str = "taskrun") -> dict[str, str]:
    """Return the ``:param name: text`` fields of a docstring as one-line Markdown.

    reST markup becomes MyST: ``:class:`~x.Y``` a role, double backquotes
    code; a role's target without a dot is taken as a member of ``owner``.
    """
    found: dict[str, str] = {}
    for match in re.finditer(r":param (\w+):(.*?)" + _FIELD_END, inspect.cleandoc(doc), re.S):
        found[match.group(1)] = _myst(" ".join(match.group(2).split()), owner)
    return found


def _myst(text: str, owner: str) -> str:
    """Turn a line of reST (roles, double backquotes) into MyST Markdown."""

    def role(match: re.Match[str]) -> str:
        kind, target = match.group(1), match.group(2)
        if "." not in target.lstrip("~"):
            target = f"~{owner}.{target.lstrip('~')}"
        return f"{{py:{kind}}}`{target}`"

    text = re.sub(r":(class|meth|func|mod|data|attr|exc):`([^`]+)`", role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    if type(value).__name__ == "Default":
        return "derived (see the option)"
    if isinstance(value, tuple) and value and all(inspect.isclass(v) for v in value):
        return f"``({', '.join(v.__name__ for v in value)},)``"
    return f"``{value!r}``"


def _env(key: str, default: Any) -> str:
    example = "true" if isinstance(default, bool) else "…"
    return f"``FLASK_{key}={example}``"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def options_table() -> list[str]:
    """The ``TaskRunner`` options as Markdown table lines."""
    from taskrun import TaskRunner
    from taskrun.flask.extension import RUNNER_OPTIONS

    key_of = {option: key for key, option in RUNNER_OPTIONS.items()}
    docs = _params(TaskRunner.__doc__ or "", "taskrun.TaskRunner")
    rows = []
    for name, param in inspect.signature(TaskRunner.__init__).parameters.items():
        if name in ("self", "app"):
            continue
        if name not in docs:
            logger.warning("TaskRunner option %r has no :param: in the class docstring", name)
        key = key_of.get(name)
        rows.append(
            [
                f"`{name}`",
                f"`{key}`" if key else "(none: pass it to `TaskRunner`)",
                f"`{param.annotation}`",
                _default(param.default),
                _env(key, param.default) if key else "",
                docs.get(name, ""),
            ]
        )
    return _table(["option", "Flask key", "type", "default", "env form", "what"], rows)


def flask_keys_table() -> list[str]:
    """The ``TASKRUN_*`` keys that are not runner options, as Markdown table lines."""
    from taskrun.flask import extension

    others = sorted(extension.CONFIG_KEYS - set(extension.RUNNER_OPTIONS))
    for key in others:
        if key not in FLASK_KEYS:
            logger.warning("config key %s is read by taskrun but not described in the docs", key)
    for key in FLASK_KEYS:
        if key not in extension.CONFIG_KEYS:
            logger.warning(
                "config key %s is described in the docs but taskrun does not read it", key
            )
    rows = []
    for key in others:
        kind, default, what = FLASK_KEYS.get(key, ("?", "?", "?"))
        value = getattr(extension, default) if default.startswith("DEFAULT_") else default == "True"
        rows.append([f"`{key}`", f"`{kind}`", f"``{value!r}``", _env(key, value), what])
    return _table(["key", "type", "default", "env form", "what"], rows)


def task_options_table() -> list[str]:
    """The options of ``@runner.task`` and ``@runner.periodic``, as Markdown table lines."""
    from taskrun.options import TaskOptions
    from taskrun.registry import TaskRegistry

    docs = {
        **_params(TaskOptions.__doc__ or "", "taskrun.options"),
        **_params(TaskRegistry.task.__doc__ or "", "taskrun.TaskRunner"),
    }
    periodic_docs = _params(TaskRegistry.periodic.__doc__ or "", "taskrun.TaskRunner")
    task_params = inspect.signature(TaskRegistry.task).parameters
    rows = []
    for decorator, params in (
        ("both", task_params),
        ("`periodic`", inspect.signature(TaskRegistry.periodic).parameters),
    ):
        for name, param in params.items():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            if decorator != "both" and name in task_params:
                continue
            what = docs.get(name) if decorator == "both" else periodic_docs.get(name)
            if not what:
                logger.warning("task option %r has no :param: in the code's docstrings", name)
            kind, default = f"`{param.annotation}`", _default(param.default)
            rows.append([f"`{name}`", decorator, kind, default, what or ""])
    return _table(["option", "of", "type", "default", "what"], rows)


def _literal(text: str) -> list[str]:
    return ["```text", *text.rstrip().splitlines(), "```"]


def serve_help() -> list[str]:
    """``taskrun --help``, ``taskrun serve --help`` and ``taskrun worker --help``, as printed."""
    import contextlib
    import io
    import os

    from taskrun.cli import build_parser

    lines: list[str] = []
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal: make it the same everywhere
    for argv in (["--help"], ["serve", "--help"], ["worker", "--help"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args(argv)
        lines += _literal(f"$ taskrun {' '.join(argv)}\n" + out.getvalue())
    return lines


def flask_cli_help() -> list[str]:
    """Each ``flask taskrun`` command's ``--help``, as click prints it."""
    import click

    from taskrun.flask.cli import taskrun_command

    lines: list[str] = []
    group_ctx = click.Context(taskrun_command, info_name="flask taskrun", terminal_width=88)
    for name in taskrun_command.list_commands(group_ctx):
        command = taskrun_command.get_command(group_ctx, name)
        assert command is not None
        ctx = click.Context(command, info_name=name, parent=group_ctx)
        lines += [f"### `flask taskrun {name}`", "", *_literal(command.get_help(ctx)), ""]
    return lines


class _Generated(SphinxDirective):
    """Parse generated Markdown lines in place of the directive."""

    lines: Any = staticmethod(options_table)

    def run(self) -> list[nodes.Node]:
        text = "\n".join(self.lines())
        container = nodes.container()
        self.state.nested_parse(
            StringList(text.splitlines(), self.get_source_info()[0]), 0, container
        )
        return container.children


class OptionsTable(_Generated):
    lines = staticmethod(options_table)


class FlaskKeysTable(_Generated):
    lines = staticmethod(flask_keys_table)


class TaskOptionsTable(_Generated):
    lines = staticmethod(task_options_table)


class ServeHelp(_Generated):
    lines = staticmethod(serve_help)


class FlaskCliHelp(_Generated):
    lines = staticmethod(flask_cli_help)


def _public_names(module_name: str) -> list[str]:
    """A module's ``__all__``; without one, the classes and functions it defines.

    For the ``taskrun`` package itself: every name it re-exports.
    """
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    public = [(n, v) for n, v in vars(module).items() if not n.startswith("_")]
    if module_name == "taskrun":
        return [n for n, v in public if not inspect.ismodule(v) and n != "annotations"]
    return [
        n
        for n, v in public
        if (inspect.isclass(v) or inspect.isfunction(v)) and v.__module__ == module_name
    ]


def _check_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "module" or any(part.startswith("_") for part in name.split(".")):
        return
    if not any(line.strip() for line in lines):
        logger.warning("%s %s has no docstring", what, name, location=name)


def _lookup(dotted: str) -> tuple[bool, Any]:
    """Import ``dotted`` (``module.attr.attr``); return (found, object)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


_BY_ID: dict[int, dict[int, str]] = {}


def _documented_by_identity(env: Any) -> dict[int, str]:
    """Map each documented taskrun object (by ``id``) to its documented name (once per build)."""
    index = _BY_ID.get(id(env))
    if index is None:
        index = {}
        for name, entry in env.get_domain("py").data["objects"].items():
            if name.startswith("taskrun.") and entry.objtype in (
                "class",
                "function",
                "exception",
                "method",
                "data",
                "attribute",
                "property",
            ):
                found, obj = _lookup(name)
                if found and (inspect.isclass(obj) or callable(obj)) and not isinstance(obj, str):
                    index.setdefault(id(obj), name)
        _BY_ID[id(env)] = index
    return index


def _resolve(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference autodoc or a docstring could not, or leave it a warning.

    A name is looked up as written, then in the docstring's module and class.
    An object documented under another name (``taskrun.errors.QueueFull`` is
    ``taskrun.QueueFull``) links there; a third-party one (an annotation's
    ``timedelta``) goes to intersphinx under its real name.  A taskrun
    internal that exists in the code but has no page of its own (a private
    module, a type variable) is shown as code without a link.  A name that
    does not exist stays a warning.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if ".~" in target:  # a ParamSpec as autodoc prints it: ``typing.~P``
        target = target.rpartition("~")[2]
    module, klass = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.append(f"{module}.{target}")
        if klass:
            candidates.append(f"{module}.{klass}.{target}")
    # An annotation written unqualified (``timedelta``, ``ResultStore``) in the
    # module that defines the documented object: found where exactly one
    # object of taskrun's modules goes by that name.
    head, _, rest = target.partition(".")
    owners = {
        f"{name}.{target}"
        for name, mod in list(sys.modules.items())
        if name.startswith("taskrun") and mod is not None and head in vars(mod)
    }
    found_objects = [_lookup(owner)[1] for owner in sorted(owners)]
    if len({id(obj) for obj in found_objects}) == 1:
        candidates.extend(sorted(owners)[:1])
    elif found_objects and all(
        isinstance(o, typing.TypeVar | typing.ParamSpec) for o in found_objects
    ):
        return contnode  # a type variable (``P``, ``R``): each module has its own
    for candidate in candidates:
        found, obj = _lookup(candidate)
        if not found:
            continue
        name = _documented_by_identity(env).get(id(obj))
        domain = env.get_domain("py")
        if name is not None:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
        real = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if all(real) and not str(real[0]).startswith("taskrun"):
            from sphinx.ext.intersphinx import missing_reference

            for qualified in (f"{real[0]}.{real[1]}", f"{real[0].split('.')[0]}.{real[1]}"):
                clone = node.deepcopy()
                clone["reftarget"] = qualified
                clone["reftype"] = "class" if inspect.isclass(obj) else node["reftype"]
                hit = missing_reference(app, env, clone, contnode)
                if hit is not None:
                    return hit
        if candidate.startswith("taskrun.") or isinstance(obj, typing.TypeVar | typing.ParamSpec):
            return contnode
        logger.info("reference %s exists but has no inventory; shown without a link", candidate)
        return contnode
    return None


def _check_errors_page(app: Sphinx) -> None:
    """Every error class taskrun exports has a row on the errors page."""
    import taskrun

    page = (app.srcdir / "reference" / "errors.md").read_text(encoding="utf-8")
    for name, value in vars(taskrun).items():
        if inspect.isclass(value) and issubclass(value, taskrun.TaskrunError):
            if f"| `{name}` |" not in page:
                logger.warning("error %s has no row in reference/errors.md", name)


def _check_complete(app: Sphinx, env: Any) -> None:
    _check_errors_page(app)
    _BY_ID.clear()  # the objects are all read now
    documented = set(env.get_domain("py").data["objects"])
    by_id = _documented_by_identity(env)
    for module_name in PUBLIC_MODULES:
        for name in _public_names(module_name):
            full = f"{module_name}.{name}"
            if full in documented:
                continue
            found, obj = _lookup(full)
            if found and (inspect.isclass(obj) or inspect.isfunction(obj)) and id(obj) in by_id:
                continue
            logger.warning("public name %s is not documented in any page", full)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("taskrun-options", OptionsTable)
    app.add_directive("taskrun-flask-keys", FlaskKeysTable)
    app.add_directive("taskrun-task-options", TaskOptionsTable)
    app.add_directive("taskrun-serve-help", ServeHelp)
    app.add_directive("taskrun-flask-cli", FlaskCliHelp)
    app.connect("autodoc-process-docstring", _check_docstring)
    app.connect("missing-reference", _resolve)
    app.connect("env-check-consistency", _check_complete)
    return {"parallel_read_safe": True, "version": "1"}
