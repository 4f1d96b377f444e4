"""Function discovery: the app's decorated functions as the Functions host indexes them (``get_functions()``),
their HTTP routes and queue triggers, and the settings ``func start`` reads from local.settings.json."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where function_app.py and host.json live when run from a checkout)."""


def load_app() -> func.FunctionApp:
    """The FunctionApp of ``function_app.py`` (the repository root is put on ``sys.path`` when needed).

    Installed without the repository (no function_app.py next to the package), the same blueprints are
    registered on a FunctionApp built the way function_app.py builds it.
    """
    if (ROOT / "function_app.py").exists():
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import function_app

        found: func.FunctionApp = function_app.app
        return found
    return _installed_app()


@functools.cache
def _installed_app() -> func.FunctionApp:
    """The blueprints' app, built once per process (registering them twice would fail)."""
    return blueprint_app()


def blueprint_app() -> func.FunctionApp:
    """A new FunctionApp with the app's blueprints, built exactly as function_app.py builds it."""
    from ..app.registry import build_app

    return build_app()


def load_local_settings(path: Path = Path("local.settings.json")) -> list[str]:
    """Put ``Values`` of local.settings.json into the environment (existing variables win); returns the names."""
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    except (OSError, ValueError, AttributeError):
        return []
    added = []
    for k, v in values.items():
        if isinstance(v, str) and v and k not in os.environ:
            os.environ[k] = v
            added.append(k)
    return added


# --- the functions of the app -----------------------------------------------------------------------------------

_FUNCTIONS: dict[int, list[Any]] = {}
_FUNCTIONS_LOCK = threading.Lock()


def app_functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()``, indexed once per app as the Functions host does.

    azure-functions remembers the names it has seen in ``functions_bindings`` and refuses a second call (every
    name would look duplicated); it is cleared around our call so other callers (tests, tools) still can.
    """
    with _FUNCTIONS_LOCK:
        found = _FUNCTIONS.get(id(app))
        if found is None:
            app.functions_bindings = None
            try:
                found = _FUNCTIONS[id(app)] = list(app.get_functions())
            finally:
                app.functions_bindings = None
        return found


def _params(fn: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(fn).parameters)


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP-triggered function: where it listens and who may call it."""

    name: str
    methods: frozenset[str]
    route: str
    pattern: re.Pattern[str]
    auth_level: str
    fn: Callable[..., Any]
    arg: str


@dataclass(frozen=True)
class QueueTrigger:
    """One queue-triggered function: the queue, its connection setting and the argument names."""

    name: str
    queue_name: str
    connection: str
    fn: Callable[..., Any]
    arg: str
    wants_context: bool


def _route_regex(template: str) -> re.Pattern[str]:
    """A Functions route template (``items/{id}``, ``{id:int}``, ``{rest?}``) as a regex with named groups."""
    out = []
    for part in re.split(r"(\{[^}]+\})", template.strip("/")):
        if part.startswith("{"):
            name = part[1:-1].split(":")[0].rstrip("?")
            out.append(f"(?P<{name}>[^/]*)" if part.endswith("?}") else f"(?P<{name}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def http_routes(app: func.FunctionApp) -> list[HttpRoute]:
    """Every HTTP-triggered function of ``app``."""
    out = []
    for f in app_functions(app):
        trig = f.get_trigger().get_dict_repr()
        if trig.get("type") != "httpTrigger":
            continue
        template = str(trig.get("route") or f.get_function_name())
        methods = frozenset(_value(m).upper() for m in (trig.get("methods") or ["GET", "POST"]))
        out.append(HttpRoute(f.get_function_name(), methods, template, _route_regex(template),
                             _value(trig.get("authLevel") or "function").lower(), f.get_user_function(),
                             str(trig["name"])))
    return out


def queue_triggers(app: func.FunctionApp) -> list[QueueTrigger]:
    """Every queue-triggered function of ``app``."""
    out = []
    for f in app_functions(app):
        trig = f.get_trigger().get_dict_repr()
        if trig.get("type") != "queueTrigger":
            continue
        fn = f.get_user_function()
        out.append(QueueTrigger(f.get_function_name(), str(trig["queueName"]),
                                str(trig.get("connection") or "AzureWebJobsStorage"), fn, str(trig["name"]),
                                "context" in _params(fn)))
    return out
