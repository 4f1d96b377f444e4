"""The findings page (issue 11): ``GET /api/findings`` and the approval decisions posted from it.

- ``GET /api/findings`` (anonymous at the Functions level; a person must be signed in, see approver.py): recent
  findings with filters (``cause``, ``vault``, ``principal``, ``outcome``, ``since``), ``id`` opens one finding
  (explanation, evidence tree, exact change, az/Bicep fix, history, approval requests). Server-rendered HTML, no
  script; a GET never changes anything (chat links only open it; link scanners may follow them).
- ``POST /api/findings/approvals/{request_id}/approve`` and ``.../reject``: a form post from the page by a signed-in
  approver (app role ``KvRemediate.Approve``), with the page's CSRF token, same-origin only; the approvals core
  re-checks and applies exactly the approved write (or nothing) and records who, when and from where.

Handlers parse, call one core function and render; Jinja2, the stores and the SDKs are imported on first use.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.parse
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from ..render.page import PageInput, Viewer
    from .approver import Approver
    from .services import Runtime

bp = func.Blueprint()
log = logging.getLogger("kv_remediate.app")

PAGE_LIMIT = 1000
"""The most recent findings one page reads (the bench renders this many)."""
MAX_FORM_BYTES = 8 * 1024
HTML = "text/html"


def _headers(nonce: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    from ..render.page import SECURITY_HEADERS, content_security_policy

    return {"Content-Security-Policy": content_security_policy(nonce), **SECURITY_HEADERS, **(extra or {})}


def html_response(body: str, nonce: str, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """An HTML response with the page's Content-Security-Policy and security headers."""
    return func.HttpResponse(body, status_code=int(status), mimetype=HTML, charset="utf-8",
                             headers=_headers(nonce, headers))


def message_page(status: int, title: str, message: str, *, back: str = "/api/findings",
                 headers: dict[str, str] | None = None, ok: bool | None = None) -> func.HttpResponse:
    """A short HTML page saying what happened (errors and decision outcomes)."""
    from ..render.page import render_outcome

    nonce = secrets.token_urlsafe(16)
    good = int(status) < HTTPStatus.BAD_REQUEST if ok is None else ok
    body = render_outcome(title, message, ok=good, back=back, nonce=nonce)
    return html_response(body, nonce, status, headers)


def _error_page(exc: BaseException, route: str) -> func.HttpResponse:
    """The HTML answer for an exception (the same statuses as the JSON routes; never a stack trace)."""
    from ..errors import AzureUnavailableError, ConfigError, PolicyError, RemediateError, WebhookAuthError

    if isinstance(exc, WebhookAuthError):
        log.warning("kv-remediate %s: sign-in refused (%s)", route, exc.reason)
        return message_page(HTTPStatus.UNAUTHORIZED, "Sign-in refused", exc.message,
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if isinstance(exc, AzureUnavailableError):
        return message_page(HTTPStatus.SERVICE_UNAVAILABLE, "Storage unavailable", exc.message)
    if isinstance(exc, ConfigError | PolicyError):
        log.error("kv-remediate %s: configuration: %s", route, exc.message)
        return message_page(HTTPStatus.INTERNAL_SERVER_ERROR, "Misconfigured", f"the app is misconfigured: "
                            f"{exc.message}; nothing was changed")
    if isinstance(exc, RemediateError):
        return message_page(HTTPStatus.BAD_REQUEST, "Refused", exc.message)
    log.exception("kv-remediate %s: unexpected error", route, exc_info=exc)
    return message_page(HTTPStatus.INTERNAL_SERVER_ERROR, "Error", "unexpected error while handling the request; "
                        "see the app's logs")


def _secure(req: func.HttpRequest) -> bool:
    from .approver import header

    proto = (header(req.headers, "X-Forwarded-Proto") or urllib.parse.urlsplit(req.url).scheme).lower()
    return proto == "https"


def signed_in(rt: Runtime, headers: Any) -> Approver | None:
    """The signed-in person (Easy Auth when enabled, else a bearer token), None when anonymous. Blocking."""
    from .approver import identify

    return identify(headers, rt.settings.env, rt.page_authenticator())


def _not_signed_in(rt: Runtime) -> func.HttpResponse:
    from .approver import easy_auth_enabled

    how = ("sign in through the app's Microsoft Entra ID login (/.auth/login/aad)" if easy_auth_enabled(rt.settings.env)
           else "send an Entra ID access token for this app (Authorization: Bearer) holding the app role "
                "KvRemediate.Approve or KvRemediate.Read, or put App Service Authentication in front of the app")
    return message_page(HTTPStatus.UNAUTHORIZED, "Sign in", f"The findings page is for signed-in people: {how}.",
                        headers={"WWW-Authenticate": "Bearer"})


async def _records(rt: Runtime, since: datetime | None, opened: str) -> tuple[list[dict[str, Any]],
                                                                           dict[str, Any] | None]:
    """The list rows (at most PAGE_LIMIT, newest first) and the opened finding's whole record."""
    store = await rt.findings()
    if not opened:
        return await store.rows(PAGE_LIMIT, since=since), None
    rows, record = await asyncio.gather(store.rows(PAGE_LIMIT, since=since), store.get(opened))
    return rows, record


async def _opened_request(rt: Runtime, record: dict[str, Any] | None, approval: str,
                          csrf: Any, now: datetime) -> tuple[dict[str, Any] | None, list[Any]]:
    """The opened finding and its approval request: by ``approval`` (the request's finding at proposal), or the
    request a finding record names (``approval_id``)."""
    from . import approvals_view

    wanted = approval
    if not wanted and record is not None and isinstance(record.get("finding"), dict):
        wanted = str(record["finding"].get("approval_id") or "")
    req = await approvals_view.one(rt, wanted) if wanted else None
    if req is None:
        return record, []
    return (record if record is not None else approvals_view.request_record(req)), [
        approvals_view.view(req, csrf, now)]


def _plan_vault(record: dict[str, Any]) -> str | None:
    """The vault id whose grant records tell the opened finding's history (its plan's vault, else the denial's)."""
    from ..render.page import plan_target

    target = plan_target(record.get("finding"))
    return target[1] if target is not None else (record.get("vault") or None)


def _viewer(who: Approver) -> Viewer:
    from ..render.page import Viewer

    return Viewer(label=who.label, may_decide=who.may_decide, via=who.via)


async def page_input(rt: Runtime, params: dict[str, str], who: Approver, nonce: str,
                     csrf_nonce: str) -> PageInput:
    """Everything one page shows, read from the stores (findings, grants, approval requests)."""
    from ..catalog.causes import CAUSES
    from ..render.page import Filters, PageInput
    from . import approvals_view

    now = datetime.now(UTC)
    filters = Filters.from_params(params, CAUSES)
    since = filters.since_time(now)
    week = now - timedelta(days=7)
    csrf = approvals_view.Csrf(who, csrf_nonce, now, rt.settings.env) if who.may_decide else None
    grants = rt.grants()
    (records, record), applied, pending = await asyncio.gather(   # independent reads, at once
        _records(rt, None if since is None else min(since, week), filters.id),
        asyncio.to_thread(grants.list, outcome="applied", limit=PAGE_LIMIT),   # grants in force
        approvals_view.pending(rt, csrf, now))
    opened, requests = await _opened_request(rt, record, filters.approval, csrf, now)
    vault = _plan_vault(opened) if opened is not None else None
    history = await asyncio.to_thread(grants.list, vault=vault) if vault else []   # the opened finding's history
    return PageInput(records=records, opened=opened, grants=applied, history_grants=history, requests=requests,
                     pending=pending, viewer=_viewer(who), now=now, nonce=nonce)


@bp.function_name("findings_page")
@bp.route(route="findings", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def findings_page(req: func.HttpRequest) -> func.HttpResponse:
    """The findings page (HTML) for a signed-in person; 401 (a sign-in hint) for anyone else."""
    from ..catalog.causes import CAUSES
    from ..render.page import build, render
    from . import services
    from .approver import cookie_nonce, new_nonce, set_cookie

    try:
        rt = services.get()
        who = await asyncio.to_thread(signed_in, rt, req.headers)   # a JWKS fetch may block: off the loop
        if who is None:
            return _not_signed_in(rt)
        if not who.roles:
            return message_page(HTTPStatus.FORBIDDEN, "Not allowed", f"{who.label} holds neither app role "
                                "KvRemediate.Approve nor KvRemediate.Read of this app; ask an administrator to "
                                "assign one (Enterprise applications → Users and groups)")
        nonce = secrets.token_urlsafe(16)
        existing = cookie_nonce(req.headers)
        csrf_nonce = existing or new_nonce()
        data = await page_input(rt, dict(req.params), who, nonce, csrf_nonce)
        body = render(build(dict(req.params), data, tuple(CAUSES)))
    except Exception as exc:
        return _error_page(exc, "findings")
    extra = {} if existing else {"Set-Cookie": set_cookie(csrf_nonce, _secure(req))}
    return html_response(body, nonce, 200, extra)


def form_fields(req: func.HttpRequest) -> dict[str, str]:
    """The decision form's fields (url-encoded, at most 8 KiB; the first value of each name)."""
    from ..errors import InputError

    body = req.get_body() or b""
    if len(body) > MAX_FORM_BYTES:
        raise InputError("decision form", f"is {len(body)} bytes, over {MAX_FORM_BYTES}; use the page's form")
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InputError("decision form", "is not a form post (application/x-www-form-urlencoded); use the page's "
                         "Approve and Reject buttons")
    try:
        parsed = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError("decision form", "cannot be read as a form; use the page's buttons") from exc
    return {k: v[0] for k, v in parsed.items() if v}


def _back(fields: dict[str, str]) -> str:
    """Where the outcome page links back to: the page's own path with a query, never another site."""
    back = fields.get("back") or ""
    return back if back.startswith("/api/findings?") and "//" not in back and "\\" not in back else "/api/findings"


async def decide_route(req: func.HttpRequest, decision: str) -> func.HttpResponse:
    """One decision from the page: same origin, signed-in approver, valid CSRF token; then the core decides."""
    from . import approvals_view, services
    from .approver import check_csrf, client_address, cookie_nonce, cross_origin, page_key

    request_id = (req.route_params.get("request_id") or "").strip()
    try:
        rt = services.get()
        crossed = cross_origin(req.headers)
        if crossed:
            return message_page(HTTPStatus.FORBIDDEN, "Refused", f"{crossed}; nothing was changed")
        fields = form_fields(req)
        who = await asyncio.to_thread(signed_in, rt, req.headers)
        if who is None:
            return _not_signed_in(rt)
        if not who.may_decide:
            return message_page(HTTPStatus.FORBIDDEN, "Not allowed", f"{who.label} does not hold the app role "
                                "KvRemediate.Approve, so cannot approve or reject; nothing was changed")
        problem = check_csrf(page_key(rt.settings.env), fields.get("csrf", ""), approver=who.object_id,
                             request_id=request_id, nonce=cookie_nonce(req.headers), now=datetime.now(UTC))
        if problem:
            return message_page(HTTPStatus.FORBIDDEN, "Refused", f"{problem}; nothing was changed", back=_back(fields))
        outcome = await approvals_view.decide(rt, request_id, decision, who, where=client_address(req.headers),
                                              reason=fields.get("reason", "")[:500])
    except Exception as exc:
        return _error_page(exc, "findings decision")
    log.info("kv-remediate findings page: %s on approval request %s by %s (%s): %s", decision, request_id,
             who.object_id, who.via, outcome.title)
    return message_page(outcome.status, outcome.title, outcome.message, back=_back(fields), ok=outcome.ok)


@bp.function_name("findings_approve")
@bp.route(route="findings/approvals/{request_id}/approve", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def findings_approve(req: func.HttpRequest) -> func.HttpResponse:
    """Approve one approval request from the page (form post)."""
    return await decide_route(req, "approve")


@bp.function_name("findings_reject")
@bp.route(route="findings/approvals/{request_id}/reject", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def findings_reject(req: func.HttpRequest) -> func.HttpResponse:
    """Reject one approval request from the page (form post)."""
    return await decide_route(req, "reject")


__all__ = ["bp", "decide_route", "findings_page", "form_fields", "html_response", "message_page", "page_input"]
