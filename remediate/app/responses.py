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
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from ..errors import RemediateError

log = logging.getLogger("kv_remediate.app")

JSON = "application/json"
MAX_BODY_BYTES = 4 * 1024 * 1024


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON response (UTF-8)."""
    return func.HttpResponse(json.dumps(body, ensure_ascii=False, default=str), status_code=status,
                             mimetype=JSON, charset="utf-8", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """The error JSON every route answers with."""
    return json_response({"error": {"code": code, "message": message}}, int(status), headers)


def from_exception(exc: BaseException, route: str) -> func.HttpResponse:
    """The response for an exception raised while handling ``route``."""
    from ..errors import RemediateError

    if isinstance(exc, RemediateError):
        return _domain_error_response(exc, route)
    if isinstance(exc, RecursionError):
        name = "alert" if route == "alerts" else "request body"
        return error_response(HTTPStatus.BAD_REQUEST, "BAD_INPUT", f"{name}: is nested too deeply to parse (deeper "
                              "than the parser's recursion limit); send a flat document")
    log.exception("kv-remediate %s: unexpected error", route, exc_info=exc)
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL",
                          "unexpected error while handling the request; see the app's logs")


def _domain_error_response(exc: RemediateError, route: str) -> func.HttpResponse:
    """The response for one of our own errors: its status by kind, its code and its remedy."""
    from ..errors import AzureUnavailableError, ConfigError, InputError, PolicyError, WebhookAuthError

    if isinstance(exc, InputError):
        given = getattr(exc, "status", None)
        too_large = given == HTTPStatus.REQUEST_ENTITY_TOO_LARGE or exc.code in ("TOO_LARGE", "BODY_TOO_LARGE")
        status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if too_large \
            else HTTPStatus.UNSUPPORTED_MEDIA_TYPE if given == HTTPStatus.UNSUPPORTED_MEDIA_TYPE \
            else HTTPStatus.BAD_REQUEST
        return error_response(status, exc.code, exc.message)
    if isinstance(exc, WebhookAuthError):
        log.warning("kv-remediate %s: request refused (%s)", route, exc.reason)
        return error_response(HTTPStatus.UNAUTHORIZED, exc.code, exc.message,
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if isinstance(exc, AzureUnavailableError):
        log.warning("kv-remediate %s: %s", route, exc.message)
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, exc.code, exc.message)
    if isinstance(exc, ConfigError | PolicyError):
        log.error("kv-remediate %s: configuration: %s", route, exc.message)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, exc.code, f"the app is misconfigured: {exc.message}")
    log.error("kv-remediate %s: %s", route, exc.message)
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, exc.code, exc.message)


def body_of(req: func.HttpRequest, name: str) -> bytes:
    """The request body, refused when empty (400) or over 4 MiB (413)."""
    from ..errors import InputError

    body = req.get_body() or b""
    if not body.strip():
        raise InputError(name, "is empty: send the JSON (or text) in the request body", "EMPTY_BODY")
    if len(body) > MAX_BODY_BYTES:
        raise InputError(name, f"is {len(body)} bytes, over the 4 MiB limit; split the batch", "BODY_TOO_LARGE")
    return body
