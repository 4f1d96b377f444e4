"""HTTP routes: the alert webhook, the runbook API and the OpenAPI document.

- ``POST /api/alerts`` (the ``alerts`` function key; with the secure webhook on, also an Entra ID token from the
  Action Groups application holding ``ActionGroupsSecureWebhook``): an Azure Monitor alert (common or legacy
  schema) → its denials on the queue ``denials`` → ``202 {"accepted": N}``. Fast and Azure-free: no ARM, Graph or
  Log Analytics call here.
- ``POST /api/diagnose`` (function key): anything ``kv-remediate parse`` accepts, or a runbook request →
  ``200`` with the diagnosis JSON of spec/cli.md, synchronously.
- ``POST /api/remediate`` (function key): like diagnose; ``"apply": true`` (or ``?apply=true``) also needs an Entra
  ID bearer token for the app's own audience holding the app role ``KvRemediate.Apply``: that token is the
  operator's explicit, authenticated act (the proof the guard asks for). A function key alone only diagnoses:
  apply without a valid token is 401 before anything is read from Azure or changed.
- ``GET /api/openapi.json`` (function key): the OpenAPI 3 document of the routes.

Handlers parse, call one core function, render; heavy modules are imported inside them (cold start).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from .responses import body_of, from_exception, json_response
from .settings import DENIALS_QUEUE

bp = func.Blueprint()


# What the routes read: JSON (alerts, audit records, runbook requests; also ``application/*+json``) and plain text
# (an SDK's or the CLI's error output). No Content-Type is read as either, and so is
# ``application/x-www-form-urlencoded``: it is the label curl -d, Python's urllib and PowerShell's Invoke-RestMethod put
# on a body by default, and the body is read as sent (never form-decoded). Anything else is 415.
READABLE_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_SCALAR = re.compile(r"(null|true|false|-?\d+(\.\d+)?([eE][+-]?\d+)?)")


def media_type(headers: Any, name: str) -> tuple[str, str | None]:
    """(media type, charset) of a request; UnsupportedMediaTypeError (415) for a type no route reads."""
    from email.message import Message

    from ..errors import UnsupportedMediaTypeError

    raw = (headers.get("Content-Type") or headers.get("content-type") or "").strip()
    if not raw:
        return "", None
    msg = Message()
    msg["Content-Type"] = raw
    media = msg.get_content_type().lower()
    charset = msg.get_param("charset")
    readable = media in READABLE_TYPES or (media.startswith("application/") and media.endswith("+json"))
    if not readable:
        raise UnsupportedMediaTypeError(name, f"Content-Type {media} is not read here: send application/json (an "
                                        "alert, audit-log records, a REST error body or a runbook request) or "
                                        "text/plain (the error text an SDK or the Azure CLI printed); with curl, "
                                        "-H 'Content-Type: application/json' --data-binary @FILE")
    return media, charset if isinstance(charset, str) else None


# Two UTF-16 code units: the fewest bytes that show which half of each unit is NUL.
_UTF16_SNIFF_BYTES = 4
# A body this short that is a bare JSON scalar (a number, string, true/false/null) is refused by name.
_MAX_SCALAR_BODY = 64


def _bomless_utf16(head: bytes) -> str | None:
    """"little" or "big" when ``head`` reads as ASCII text in UTF-16 without a byte-order mark (every other byte
    NUL), else None."""
    even, odd = head[0::2], head[1::2]
    if len(head) < _UTF16_SNIFF_BYTES:
        return None
    if not even.count(0) and odd.count(0) >= len(odd) - 1:
        return "little"
    if not odd.count(0) and even.count(0) >= len(even) - 1:
        return "big"
    return None


def decode_body(body: bytes, charset: str | None, name: str) -> bytes:
    """The body as UTF-8 without a byte-order mark: UTF-8, UTF-16 and UTF-32 are read by their BOM, another charset
    when Content-Type declares one; anything else that is not UTF-8 is refused with a message saying so (400
    BAD_ENCODING) or, for a charset Python does not know, 415."""
    import codecs

    from ..errors import InputError, UnsupportedMediaTypeError

    encoding = next((enc for bom, enc in _BOMS if body.startswith(bom)), None)
    if encoding is not None:
        body = body[len(next(b for b, e in _BOMS if e == encoding)):]
    elif charset:
        try:
            encoding = codecs.lookup(charset).name
        except LookupError as exc:
            raise UnsupportedMediaTypeError(name, f"charset {charset!r} is not one Python can read; send UTF-8") \
                from exc
    else:
        encoding = "utf-8"
    order = _bomless_utf16(body[:64]) if encoding == "utf-8" else None
    if order is not None:
        raise InputError(name, f"looks like UTF-16 ({order}-endian) without a byte-order mark, which cannot be told "
                               "apart from binary data; send UTF-8, or UTF-16 with its byte-order mark",
                         "BAD_ENCODING")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        what = "UTF-8" if encoding == "utf-8" else encoding
        raise InputError(name, f"is not {what} text: byte 0x{body[exc.start]:02x} at offset {exc.start} "
                               "cannot be read; send UTF-8, or UTF-16 with a byte-order mark, or declare the "
                               "charset in Content-Type", "BAD_ENCODING") from exc
    return text.encode("utf-8") if encoding != "utf-8" else body


def request_body(req: func.HttpRequest, name: str) -> bytes:
    """The body a route parses: a readable media type (415 otherwise), not empty, at most 4 MiB (413), decoded to
    UTF-8 (:func:`decode_body`), and not a bare JSON ``null``, boolean or number, which is valid JSON but no
    denial (400 NOT_A_DENIAL, instead of intake's "not JSON")."""
    from ..errors import InputError

    _, charset = media_type(req.headers, name)
    body = decode_body(body_of(req, name), charset, name)
    stripped = body.strip()
    if not stripped:
        raise InputError(name, "is empty once decoded (only a byte-order mark or white space): send the JSON (or "
                               "text) in the request body", "EMPTY_BODY")
    if len(stripped) <= _MAX_SCALAR_BODY and _SCALAR.fullmatch(stripped.decode("ascii", "replace")):
        what = "an Azure Monitor alert" if name == "alert" else \
            "a denial: send an alert, audit-log records, a REST error body, error text or a runbook request"
        raise InputError(name, f"is the JSON value {stripped.decode('ascii')}, not {what}", "NOT_A_DENIAL")
    return body


def accept_alert(headers: Any, body_reader: Any) -> int:
    """Authenticate (when the secure webhook is on), parse the alert, enqueue one message per denial."""
    from ..errors import InputError
    from ..intake import parse_one, payload
    from ..intake.alerts import is_alert
    from ..store.azure import storage_errors, target_of
    from . import services
    from .messages import QueuedDenial, encode

    rt = services.get()
    auth = rt.authenticator()
    if auth is not None:
        auth.authenticate(headers)
    body: bytes = body_reader()
    obj = payload(body)
    if not isinstance(obj, dict) or not is_alert(obj):
        raise InputError("alert", "is not an Azure Monitor alert payload (common alert schema or a legacy "
                         "metric, log or activity log webhook); send other inputs to /api/diagnose", "NOT_AN_ALERT")
    parsed = parse_one("alert", body, **rt.settings.caps)
    texts = [encode(QueuedDenial(d, d.alert_id, link)) for d, link in parsed.with_rows_links()]
    if texts:
        queue = rt.queue()
        with rt.slot(DENIALS_QUEUE), storage_errors("enqueueing denials",
                                                         target_of(queue, f"queue '{DENIALS_QUEUE}'")):
            for text in texts:
                queue.send_message(text)
    return len(texts)


@bp.function_name("alerts")
@bp.route(route="alerts", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def alerts(req: func.HttpRequest) -> func.HttpResponse:
    """Azure Monitor action group webhook → ``202 {"accepted": N}`` (resolved alerts: 0)."""
    try:
        accepted = accept_alert(req.headers, lambda: request_body(req, "alert"))
    except Exception as exc:
        return from_exception(exc, "alerts")
    return json_response({"accepted": accepted}, 202)


async def _denials_of(body: bytes) -> tuple[Any, list[Any], list[str], int]:
    """Parse one request body (in a worker thread: parsing never blocks the loop); a denial whose alert does not
    name the caller comes with a rows link, and is replaced by the denials the app reads itself in the audit log
    (alert_rows.expand: the link only says which configured workspace to read, its KQL never runs)."""
    import asyncio

    from ..intake import parse_one
    from . import alert_rows, services

    rt = services.get()
    parsed = await asyncio.to_thread(lambda: parse_one("request body", body, **rt.settings.caps))
    if not any(link for _, link in parsed.with_rows_links()):
        return parsed, list(parsed.denials), list(parsed.notes), 0
    got = await alert_rows.expand(rt, parsed, "request body")
    return parsed, list(got.denials), list(got.notes), got.requests


def _document(result: Any, parsed: Any, notes: list[str], requests: int) -> dict[str, Any]:
    doc: dict[str, Any] = result.to_dict()
    doc["notes"] = notes + list(doc.get("notes", []))
    stats = doc["stats"]
    stats["skipped"] = parsed.skipped
    if requests:
        stats["arm_requests"] = stats.get("arm_requests", 0) + requests
        by_api = stats.setdefault("requests_by_api", {})
        by_api["log_analytics"] = by_api.get("log_analytics", 0) + requests
    return doc


async def diagnose_body(body: bytes) -> dict[str, Any]:
    """The diagnosis JSON (spec/cli.md) of one request body; an alert's rows are fetched when it has none."""
    from ..service import diagnose as diagnose_batch
    from . import services

    parsed, denials, notes, requests = await _denials_of(body)
    async with services.get().facts() as facts:
        result = await diagnose_batch(denials, facts)
    return _document(result, parsed, notes, requests)


def apply_flag(req: func.HttpRequest, body: bytes) -> tuple[bool, bytes]:
    """``?apply=true`` or a top-level ``"apply": true`` in a JSON body (removed before parsing)."""
    import json

    from ..errors import InputError

    flag = (req.params.get("apply") or "").strip().lower()
    if flag and flag not in ("true", "false", "1", "0", "yes", "no"):
        raise InputError("apply", f"query parameter must be true or false, not {flag!r}", "BAD_APPLY_FLAG")
    apply = flag in ("true", "1", "yes")
    if body.lstrip().startswith(b"{"):
        try:
            obj = json.loads(body)
        except ValueError:
            return apply, body
        except RecursionError as exc:
            raise InputError("request body", "is nested too deeply to parse (JSON nesting deeper than the parser's "
                             "recursion limit); send a flat request", "BAD_INPUT") from exc
        if isinstance(obj, dict) and "apply" in obj:
            value = obj.pop("apply")
            if not isinstance(value, bool):
                raise InputError("apply", f"must be true or false, not {value!r}", "BAD_APPLY_FLAG")
            return apply or value, json.dumps(obj).encode()
    return apply, body


def operator_proof(headers: Any) -> Any:
    """The operator's proof for ``/api/remediate`` with apply: a valid Entra ID token holding ``KvRemediate.Apply``
    (WebhookAuthError → 401 otherwise, also when the apply role is not configured: nothing is applied over HTTP)."""
    import re

    from ..errors import WebhookAuthError
    from ..model import Proof
    from . import services
    from .webhook_auth import API_AUDIENCE_SETTING, API_TENANT_SETTING, APPLY_ROLE

    auth = services.get().api_authenticator()
    if auth is None:
        raise WebhookAuthError("not_configured", f"apply bearer token rejected (not_configured): applying over HTTP "
                               f"needs an Entra ID token holding the app role {APPLY_ROLE}, and the app has no "
                               f"token settings ({API_AUDIENCE_SETTING}, {API_TENANT_SETTING}); a function key alone "
                               "only diagnoses: call without apply, or use the CLI's --apply")
    claims = auth.authenticate(headers)

    def ident(name: str) -> str:  # a GUID from a signed token; anything else is shown as "?"
        value = claims.get(name)
        return value if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f-]{36}", value) else "?"

    return Proof("operator", f"token oid {ident('oid')} appid {ident('appid') if 'appid' in claims else ident('azp')}")


def _proposer(operator: Any) -> Any:
    """The operator of an authenticated apply as the proposer of the approval requests it opens (never their
    approver): the token's ``oid`` that :func:`operator_proof` wrote into the proof."""
    import re

    from ..approvals.model import Approver

    m = re.match(r"token oid ([0-9a-f-]{36}) ", getattr(operator, "source", "") or "")
    return Approver(m.group(1)) if m else None


async def remediate_body(body: bytes, apply: bool, operator: Any = None) -> dict[str, Any]:
    """Diagnose, then apply what policy allows when ``apply`` (each finding says applied, or the rule that
    refused it). ``operator`` is the proof of an authenticated apply (:func:`operator_proof`); without it, a plan
    applies only on evidence the app read itself. An invalid policy refuses the request before anything is read
    or changed."""
    from ..apply import ApplyContext
    from ..service import remediate
    from . import services

    rt = services.get()
    policy = rt.policy()
    parsed, denials, notes, requests = await _denials_of(body)
    ctx = ApplyContext(policy=policy, grants=rt.grants(), slots=await rt.claims(), now=datetime.now(UTC),
                       requested=apply, actor=rt.actor, operator=operator if apply else None, backend=rt.writes_to,
                       own_principals=rt.settings.self_object_ids, approvals=rt.approvals() if apply else None,
                       proposer=_proposer(operator))
    async with rt.facts() as facts:
        result = await remediate(denials, facts, ctx)
    return _document(result, parsed, notes, requests)


@bp.function_name("remediate")
@bp.route(route="remediate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def remediate_route(req: func.HttpRequest) -> func.HttpResponse:
    """Like /api/diagnose; with ``"apply": true`` (or ``?apply=true``) and a token holding ``KvRemediate.Apply``,
    applies the plans policy allows (without the token: 401, nothing read from Azure or changed)."""
    try:
        apply, body = apply_flag(req, request_body(req, "request body"))
        operator = await asyncio.to_thread(operator_proof, req.headers) if apply else None  # JWKS fetch: off loop
        doc = await remediate_body(body, apply, operator)
    except Exception as exc:
        return from_exception(exc, "remediate")
    return json_response(doc, 200)


@bp.function_name("diagnose")
@bp.route(route="diagnose", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def diagnose(req: func.HttpRequest) -> func.HttpResponse:
    """Runbooks: any input ``parse`` accepts, or ``{"principal_id", "vault", "operation", "object"}`` → diagnosis."""
    try:
        doc = await diagnose_body(request_body(req, "request body"))
    except Exception as exc:
        return from_exception(exc, "diagnose")
    return json_response(doc, 200)


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3 document of the app's routes and JSON schemas."""
    try:
        from .openapi import document

        return json_response(document(), 200)
    except Exception as exc:
        return from_exception(exc, "openapi")

