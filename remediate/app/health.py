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
    """``200 {"status": "ok"|"degraded", "version", "problems": [{"setting", "problem"}], "own_identity":
    {"setting", "set", "refused"}, "tokens": {"webhook_token", "apply_token"}}`` (whether set, never values)."""
    try:
        import msgspec

        from . import services
        from .settings import SELF_SETTING

        settings = services.get().settings
        problems = msgspec.to_builtins(settings.problems)
        env = settings.env
        own = {"setting": SELF_SETTING, "set": bool(settings.self_object_ids),
               "refused": "the app's own identity is never a grantee (refused by the guard, rule principals.self)"
                          + ("" if settings.self_object_ids else "; not set, so the guard cannot recognise it")}
        auth = {"webhook_token": bool((env.get("KV_REMEDIATE_WEBHOOK_AUDIENCE") or "").strip()),
                "apply_token": bool((env.get("KV_REMEDIATE_API_AUDIENCE") or "").strip())}
    except Exception as exc:
        return from_exception(exc, "health")
    return json_response({"status": "degraded" if problems else "ok", "version": __version__,
                          "problems": problems, "own_identity": own, "tokens": auth})
