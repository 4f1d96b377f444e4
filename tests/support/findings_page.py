"""Findings page helpers (no tests here): the page's bearer-token validator on the loopback JWKS, approver and
reader tokens, HTML requests on loopback, and findings seeded into the Table ``findings`` from real diagnoses."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from remediate.app import services
from remediate.app.approver import APPROVE_ROLE, PAGE_ROLES, READ_ROLE
from remediate.app.webhook_auth import WebhookAuthenticator, WebhookAuthSettings, signing_keys
from tests.support.app import DEMO
from tests.support.entra import API_AUDIENCE, TENANT, token
from tests.support.served_app import App

APPROVER_OID = "0a1b2c3d-0000-4000-8000-0000000a5501"
READER_OID = "0a1b2c3d-0000-4000-8000-0000000a5502"
PAGE_APP = "0a1b2c3d-0000-4000-8000-0000000a55aa"


def page_authenticator(url: str, ctx: ssl.SSLContext) -> WebhookAuthenticator:
    """The page's validator (the app's audience, roles Approve/Read, any app) with the loopback JWKS."""
    settings = WebhookAuthSettings(tenant=TENANT, audiences=(API_AUDIENCE,), jwks_url=url, roles=PAGE_ROLES,
                                   app_ids=(), tenant_setting="KV_REMEDIATE_API_TENANT",
                                   audience_setting="KV_REMEDIATE_API_AUDIENCE", purpose="approver")
    return WebhookAuthenticator(settings, signing_keys(url, ssl_context=ctx))


def approver_token(**kw: Any) -> str:
    """A person's token for the app's audience holding KvRemediate.Approve."""
    base: dict[str, Any] = {"aud": API_AUDIENCE, "roles": [APPROVE_ROLE], "appid": PAGE_APP, "oid": APPROVER_OID}
    return token(**{**base, **kw})


def reader_token(**kw: Any) -> str:
    """A person's token holding only KvRemediate.Read."""
    return approver_token(**{"roles": [READ_ROLE], "oid": READER_OID, **kw})


def fetch(url: str, body: bytes | None = None, *, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    """One HTTP request on loopback: status, response headers and the body as text."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8")


def demo_findings(app: App) -> list[dict[str, Any]]:
    """Every finding the demo inputs give, diagnosed for real by the app (POST /api/diagnose on the emulator)."""
    out: list[dict[str, Any]] = []
    for path in sorted((DEMO / "inputs").iterdir()):
        status, doc = app.post("/api/diagnose", path.read_bytes(),
                               **{"Content-Type": "application/json" if path.suffix == ".json" else "text/plain"})
        assert status == 200, doc
        out += doc["findings"]
    return out


def seed(app: App, findings: list[tuple[dict[str, Any], datetime]]) -> list[str]:
    """Record ``findings`` (each with its time) in the Table ``findings`` on the app's loop; their record ids."""
    async def record() -> list[str]:
        store = await services.get().findings()
        return [await store.record(f, alert_id=None, invocation_id=None, when=when) for f, when in findings]

    ids: list[str] = app.http.loop.submit(record()).result(timeout=60)
    return ids


def now() -> datetime:
    return datetime.now(UTC)


def as_json(text: str) -> Any:
    return json.loads(text)


APPROVE_POLICY = {"mode": "approve", "scopes": ["/subscriptions/946986aa-ba68-5122-92be-d8e38bdbfa86"],
                  "principal_types": ["ServicePrincipal"], "max_tier": 3, "min_approvals": 1,
                  "approval_ttl": "PT4H"}
"""Policy ``mode: approve`` on the demo subscription: every plan the rules allow waits for one approver."""


def alert_to_request(app: App) -> dict[str, Any]:
    """The demo's log alert through the webhook and the worker under ``mode: approve``: the finding record whose
    plan waits for approval (its ``finding.approval_id``)."""
    status, _ = app.post("/api/alerts", (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes())
    assert status == 200 or status == 202  # noqa: PLR1714
    app.pump.drain(timeout=60)
    assert app.pump.failed == 0
    [record] = app.findings()
    assert record["finding"]["outcome"] == "pending_approval", record["finding"]
    return record


def tenant_assignments(principal: str) -> list[dict[str, Any]]:
    """The emulated tenant's role assignments of ``principal``."""
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"]
            if a["properties"]["principalId"].lower() == principal.lower()]


def form_of(html: str, request_id: str) -> dict[str, str]:
    """The hidden fields of a request's decision form on the page (csrf, back)."""
    import re

    form = re.search(r'<form method="post" action="/api/findings/approvals/' + re.escape(request_id)
                     + r'/approve".*?</form>', html, flags=re.S)
    assert form is not None, "no decision form on the page"
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(0)))


def cookie_of(headers: Message) -> str:
    """The ``name=value`` of the page's Set-Cookie."""
    return str(headers["Set-Cookie"]).split(";", 1)[0]
