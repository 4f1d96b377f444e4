"""Health route: the version and configuration problems (missing or unusable settings, an unreadable policy),
naming the settings but never revealing their values. No network call: it answers at once, anonymously."""

from __future__ import annotations

import azure.functions as func

from .. import __version__
from .responses import from_exception, json_response

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """``200 {"status": "ok"|"degraded", "version", "problems": [{"setting", "problem"}]}``."""
    try:
        from . import runtime

        problems = [p.to_dict() for p in runtime.get().settings.problems]
    except Exception as exc:
        return from_exception(exc, "health")
    return json_response({"status": "degraded" if problems else "ok", "version": __version__,
                          "problems": problems})
