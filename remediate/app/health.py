"""Health route: the version and configuration problems (missing or unusable settings, an unreadable policy,
storage that cannot be used), naming the settings but never revealing their values. One network call at most: a
cheap storage query (2 s timeout, no retry) whose answer is reused for 15 s, so it answers fast, anonymously."""

from __future__ import annotations

from typing import Any

import azure.functions as func

from .. import __version__
from .responses import from_exception, json_response

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """``200 {"status": "ok"|"degraded", "version", "problems": [{"setting", "problem"}], "own_identity":
    {"setting", "set", "refused"}, "tokens": {"webhook_token", "apply_token"}, "findings_page": {"easy_auth",
    "bearer", "page_key"}, "parts": [{"part", "instance", "state", "detail"}]}`` (whether set, never values).
    ``parts``: under ``kv-remediate serve``, its queue-worker (and extra HTTP) processes (one not ``running`` makes
    the status ``degraded``); empty on Azure."""
    try:
        import msgspec

        from . import services
        from .parts import read_parts
        from .settings import SELF_SETTING

        settings = services.get().settings
        rt = services.get()
        problems = list(msgspec.to_builtins(settings.problems))
        storage = rt.storage_problem()
        if storage is not None:
            problems.append(msgspec.to_builtins(storage))
        env = settings.env
        own = {"setting": SELF_SETTING, "set": bool(settings.self_object_ids),
               "refused": "the app's own identity is never a grantee (refused by the guard, rule principals.self)"
                          + ("" if settings.self_object_ids else "; not set, so the guard cannot recognise it")}
        auth = {"webhook_token": bool((env.get("KV_REMEDIATE_WEBHOOK_AUDIENCE") or "").strip()),
                "apply_token": bool((env.get("KV_REMEDIATE_API_AUDIENCE") or "").strip())}
        parts = read_parts(env)
        page, page_problem = _page_sign_in(env)
        if page_problem is not None:
            problems.append(page_problem)
    except Exception as exc:
        return from_exception(exc, "health")
    degraded = bool(problems) or not all(p.healthy for p in parts)
    return json_response({"status": "degraded" if degraded else "ok", "version": __version__,
                          "problems": problems, "own_identity": own, "tokens": auth,
                          "findings_page": page, "parts": msgspec.to_builtins(parts)})


def _page_sign_in(env: Any) -> tuple[dict[str, bool], dict[str, str] | None]:
    """How people sign in to the findings page (whether each way is configured, never values), and the problem
    with its form-token key, if any."""
    from ..errors import ConfigError
    from .approver import PAGE_KEY_SETTING, easy_auth_enabled, page_key

    page = {"easy_auth": easy_auth_enabled(env), "bearer": bool((env.get("KV_REMEDIATE_API_AUDIENCE") or "").strip()),
            "page_key": bool((env.get(PAGE_KEY_SETTING) or "").strip())}
    try:
        page_key(env)
    except ConfigError as exc:
        return page, {"setting": PAGE_KEY_SETTING, "problem": exc.message.split(": ", 1)[-1]}
    return page, None
