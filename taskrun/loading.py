"""Find what to serve: import an app by ``"module:app"`` and find the runner that goes with it.

The serving entry points (``taskrun serve`` and the gunicorn worker) share
these rules, so an app found by one is found by the other:

* ``"module:name"`` imports ``module`` and takes its attribute ``name``
  (dotted attributes allowed); ``"module:create_app()"`` calls a factory,
  with literal arguments if any (``"module:create_app('prod')"``), as flask
  and gunicorn do.  A bare ``"module"`` means ``"module:app"``.
  :func:`load_app` also calls ``"module:create_app"`` written without
  parentheses, as ``flask --app`` does: a function that takes no required
  argument is a factory, not a WSGI app.
* The runner is, in order: the Flask extension's
  ``app.extensions["taskrun"]`` (the runner itself or a state object with a
  ``.runner``), a module-level ``taskrun_runner`` in the app's module, then
  the ``TASKRUN_RUNNER`` environment variable (``"module:attr"``).

Nothing here imports gevent or starts anything.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import sys
from typing import Any

from taskrun.errors import ConfigError
from taskrun.runner import TaskRunner

logger = logging.getLogger(__name__)

#: The module attribute a plain WSGI app's module may hold its runner in.
RUNNER_ATTRIBUTE = "taskrun_runner"
#: The environment variable naming a runner as ``"module:attr"``.
RUNNER_ENV = "TASKRUN_RUNNER"


def split_target(target: str) -> tuple[str, str]:
    """Split ``"module:expr"`` into its module name and expression (default ``"app"``).

    :raises ConfigError: if either part is empty.
    """
    module_name, _, expression = target.partition(":")
    module_name, expression = module_name.strip(), expression.strip() or "app"
    if not module_name:
        raise ConfigError(
            f"cannot load {target!r}: no module name; write it as 'package.module:app' "
            "or 'package.module:create_app()'"
        )
    return module_name, expression


def load_app(target: str) -> Any:
    """Return the WSGI app ``target`` names, calling a factory named without parentheses.

    Like :func:`load_object`, except that ``"module:create_app"`` naming a
    function that takes no required argument (a WSGI app takes two) calls
    it and returns what it made, as ``flask --app module:create_app`` does.
    A Flask app (or any object that is not a plain function) is never called.

    :raises ConfigError: as :func:`load_object` does.
    """
    found = load_object(target)
    expression = split_target(target)[1]
    if "(" not in expression and inspect.isfunction(found) and _takes_no_arguments(found):
        return _call_factory(target, found, [], {})
    return found


def _takes_no_arguments(function: Any) -> bool:
    try:
        inspect.signature(function).bind()
    except TypeError:
        return False
    return True


def _call_factory(target: str, factory: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call ``factory``; arguments that do not fit its signature are a ConfigError."""
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check (a builtin): just call it
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            name = getattr(factory, "__qualname__", repr(factory))
            given = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            raise ConfigError(
                f"cannot load {target!r}: the factory {name}{signature} cannot be called "
                f"with ({given}): {error}; pass arguments that fit its signature"
            ) from None
    return factory(*args, **kwargs)


def load_object(target: str) -> Any:
    """Import ``"module:attr"`` or call ``"module:factory(...)"`` and return the result.

    Blocks while the module imports (and the factory runs).

    :param target: ``"module:name"``, ``"module:name.attr"``, ``"module:factory()"``
        or ``"module:factory('literal', key=1)"``; a bare ``"module"`` means
        ``"module:app"``.
    :raises ConfigError: if the module cannot be imported, the attribute is
        missing, the expression is neither a name nor a call with literal
        arguments, or the arguments do not fit the factory's signature.
        Errors raised inside the imported module (or the factory) propagate.
    """
    module_name, expression = split_target(target)
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise ConfigError(
            f"cannot load {target!r}: {expression!r} is not a name or a call; "
            "write 'module:app' or 'module:create_app()'"
        ) from None
    call = tree if isinstance(tree, ast.Call) else None
    path = _dotted(call.func if call is not None else tree)
    if path is None:
        raise ConfigError(
            f"cannot load {target!r}: {expression!r} is not a name or a call; "
            "write 'module:app' or 'module:create_app()'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(
                f"cannot load {target!r}: no module named {error.name!r}; run from the "
                f"project directory or add it to PYTHONPATH (sys.path[0]={sys.path[0]!r})"
            ) from None
        raise
    found: Any = module
    for part in path:
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(
                f"cannot load {target!r}: module {module_name!r} has no attribute "
                f"{'.'.join(path)!r}; check the name after the colon"
            ) from None
    if call is None:
        return found
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except ValueError:
        raise ConfigError(
            f"cannot load {target!r}: a factory's arguments must be literals "
            "(strings, numbers, lists...), e.g. 'module:create_app(\"prod\")'"
        ) from None
    return _call_factory(target, found, args, kwargs)


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def find_runner(app: Any, module_name: str | None = None) -> TaskRunner | None:
    """Return the :class:`TaskRunner` that serves ``app``'s jobs, or ``None``.

    Looks, in order, at ``app.extensions["taskrun"]`` (the runner or an
    object with a ``runner`` attribute), at ``taskrun_runner`` in the
    module ``module_name``, then at ``$TASKRUN_RUNNER`` (``"module:attr"``).
    Reads the environment when called, never at import.

    :raises ConfigError: if ``$TASKRUN_RUNNER`` is set but does not name a runner.
    """
    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, dict) and "taskrun" in extensions:
        state = extensions["taskrun"]
        candidate = state if isinstance(state, TaskRunner) else getattr(state, "runner", None)
        if isinstance(candidate, TaskRunner):
            return candidate
    module = sys.modules.get(module_name) if module_name else None
    candidate = getattr(module, RUNNER_ATTRIBUTE, None)
    if isinstance(candidate, TaskRunner):
        return candidate
    target = os.environ.get(RUNNER_ENV, "").strip()
    if target:
        return load_runner(target, f"${RUNNER_ENV}")
    return None


def load_runner(target: str, source: str = "--runner") -> TaskRunner:
    """Import the runner named by ``"module:attr"``.

    :param source: where the name came from, for the error message.
    :raises ConfigError: if the object found is not a :class:`TaskRunner`.
    """
    found = load_object(target)
    if not isinstance(found, TaskRunner):
        raise ConfigError(
            f"{source}={target!r} names {type(found).__name__} {found!r}, not a TaskRunner; "
            "point it at the module attribute holding your TaskRunner(...)"
        )
    return found


def no_runner_message(target: str) -> str:
    """Say how to tell the serving entry points which runner goes with ``target``."""
    return (
        f"found no TaskRunner for {target!r}: call runner.init_app(app), or set a module-level "
        f"{RUNNER_ATTRIBUTE} = runner next to the app, or name it with --runner / "
        f"${RUNNER_ENV}=module:attr"
    )
