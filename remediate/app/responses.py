"""HTTP responses of the app: JSON bodies, and every failure as ``{"error": {"code", "message"}}``.

Domain errors map to statuses (bad input 400, bearer token 401, an input over a size cap 413 (``TOO_LARGE``,
``BODY_TOO_LARGE``), a body in a media type or charset the app does not read 415, Azure or storage unavailable
503, a broken configuration 500); a body nested too deeply to
parse (``RecursionError``) is a 400 naming the body; anything unexpected is logged with its traceback and answered
500 with a generic message: a response never carries a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

log = logging.getLogger("kv_remediate.app")

JSON = "application/json"
MAX_BODY_BYTES = 4 * 1024 * 1024


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON response (UTF-8)."""
    return func.HttpResponse(json.dumps(body, ensure_ascii=False, default=str), status_code=status,
                             mimetype=JSON, charset="utf-8", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """The error JSON every route answers with."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def from_exception(exc: BaseException, route: str) -> func.HttpResponse:
    """The response for an exception raised while handling ``route``."""
    from ..errors import (
        AzureUnavailableError,
        ConfigError,
        InputError,
        PolicyError,
        RemediateError,
        WebhookAuthError,
    )

    if isinstance(exc, InputError):
        too_large = getattr(exc, "status", None) == 413 or exc.code in ("TOO_LARGE", "BODY_TOO_LARGE")
        status = 413 if too_large else 415 if getattr(exc, "status", None) == 415 else 400
        return error_response(status, exc.code, exc.message)
    if isinstance(exc, RecursionError):
        name = "alert" if route == "alerts" else "request body"
        return error_response(400, "BAD_INPUT", f"{name}: is nested too deeply to parse (deeper than the parser's "
                              "recursion limit); send a flat document")
    if isinstance(exc, WebhookAuthError):
        log.warning("kv-remediate %s: request refused (%s)", route, exc.reason)
        return error_response(401, exc.code, exc.message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if isinstance(exc, AzureUnavailableError):
        log.warning("kv-remediate %s: %s", route, exc.message)
        return error_response(503, exc.code, exc.message)
    if isinstance(exc, ConfigError | PolicyError):
        log.error("kv-remediate %s: configuration: %s", route, exc.message)
        return error_response(500, exc.code, f"the app is misconfigured: {exc.message}")
    if isinstance(exc, RemediateError):
        log.error("kv-remediate %s: %s", route, exc.message)
        return error_response(500, exc.code, exc.message)
    log.exception("kv-remediate %s: unexpected error", route, exc_info=exc)
    return error_response(500, "INTERNAL", "unexpected error while handling the request; see the app's logs")


def body_of(req: func.HttpRequest, name: str) -> bytes:
    """The request body, refused when empty (400) or over 4 MiB (413)."""
    from ..errors import InputError

    body = req.get_body() or b""
    if not body.strip():
        raise InputError(name, "is empty: send the JSON (or text) in the request body", "EMPTY_BODY")
    if len(body) > MAX_BODY_BYTES:
        raise InputError(name, f"is {len(body)} bytes, over the 4 MiB limit; split the batch", "BODY_TOO_LARGE")
    return body
