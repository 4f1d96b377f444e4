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
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from .responses import body_of, from_exception, json_response
from .settings import DENIALS_QUEUE

bp = func.Blueprint()


def accept_alert(headers: Any, body_reader: Any) -> int:
    """Authenticate (when the secure webhook is on), parse the alert, enqueue one message per denial."""
    from ..errors import InputError
    from ..intake import parse_one, payload
    from ..intake.alerts import is_alert
    from ..store.azure import storage_errors
    from . import services
    from .messages import QueuedDenial, encode

    rt = services.get()
    auth = rt.authenticator()
    if auth is not None:
        auth.authenticate(headers, datetime.now(UTC))
    body: bytes = body_reader()
    obj = payload(body)
    if not isinstance(obj, dict) or not is_alert(obj):
        raise InputError("alert", "is not an Azure Monitor alert payload (common alert schema or a legacy "
                         "metric, log or activity log webhook); send other inputs to /api/diagnose", "NOT_AN_ALERT")
    parsed = parse_one("alert", body, **rt.settings.caps)
    texts = [encode(QueuedDenial(d, d.alert_id, link)) for d, link in parsed.with_rows_links()]
    if texts:
        queue = rt.queue()
        with rt.slot(DENIALS_QUEUE), storage_errors("enqueueing denials", f"queue '{DENIALS_QUEUE}'"):
            for text in texts:
                queue.send_message(text)
    return len(texts)


@bp.function_name("alerts")
@bp.route(route="alerts", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def alerts(req: func.HttpRequest) -> func.HttpResponse:
    """Azure Monitor action group webhook → ``202 {"accepted": N}`` (resolved alerts: 0)."""
    try:
        accepted = accept_alert(req.headers, lambda: body_of(req, "alert"))
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
    claims = auth.authenticate(headers, datetime.now(UTC))

    def ident(name: str) -> str:  # a GUID from a signed token; anything else is shown as "?"
        value = claims.get(name)
        return value if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f-]{36}", value) else "?"

    return Proof("operator", f"token oid {ident('oid')} appid {ident('appid') if 'appid' in claims else ident('azp')}")


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
                       requested=apply, actor=rt.actor, operator=operator if apply else None,
                       own_principals=rt.settings.self_object_ids)
    async with rt.facts() as facts:
        result = await remediate(denials, facts, ctx)
    return _document(result, parsed, notes, requests)


@bp.function_name("remediate")
@bp.route(route="remediate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def remediate_route(req: func.HttpRequest) -> func.HttpResponse:
    """Like /api/diagnose; with ``"apply": true`` (or ``?apply=true``) and a token holding ``KvRemediate.Apply``,
    applies the plans policy allows (without the token: 401, nothing read from Azure or changed)."""
    try:
        apply, body = apply_flag(req, body_of(req, "request body"))
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
        doc = await diagnose_body(body_of(req, "request body"))
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

