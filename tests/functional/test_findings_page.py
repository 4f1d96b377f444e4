"""The findings page served by the function app (serve in-process, Azurite, the emulator): what a signed-in person
sees, the filters, one opened finding, who may look, and attacker-shaped findings rendered inert.

Findings are the app's own diagnoses of the demo inputs (POST /api/diagnose), recorded in the Table ``findings``;
the attack findings are those diagnoses with vault, principal, error and command texts replaced by markup."""

from __future__ import annotations

import base64
import copy
import json
import re
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediate.app import services
from remediate.app.approver import APPROVE_ROLE, READ_ROLE
from tests.support.app import DEMO
from tests.support.entra import API_SETTINGS, FORGED, bearer, jwks_server, operator_token
from tests.support.findings_page import (
    APPROVER_OID,
    approver_token,
    demo_findings,
    fetch,
    now,
    page_authenticator,
    reader_token,
    seed,
)
from tests.support.served_app import App, serve_app

XSS = '<script>alert("kv")</script>'
ATTR = '"><img src=x onerror=alert(1)>'
PAYLOADS = (XSS, ATTR, "</code></pre><script>alert(2)</script>", "javascript:alert(3)//", "{{ 7*7 }}")


@pytest.fixture(scope="module")
def findings_cache() -> dict[str, Any]:
    return {}


@pytest.fixture
def app(azurite: str, monkeypatch: pytest.MonkeyPatch, findings_cache: dict[str, Any]) -> Iterator[App]:
    with jwks_server() as (url, ctx, _):
        for served in serve_app(azurite, DEMO / "tenant.json", monkeypatch, **API_SETTINGS):
            services.install(services.Runtime(page_authenticator=page_authenticator(url, ctx)))
            if "demo" not in findings_cache:
                findings_cache["demo"] = demo_findings(served)
            yield served


def _attack(finding: dict[str, Any], payload: str) -> dict[str, Any]:
    """A finding whose attacker-reachable texts all carry ``payload``."""
    f = copy.deepcopy(finding)
    f["denial"]["vault"] = {"name": payload, "resource_id": f"/subscriptions/x/vaults/{payload}"}
    f["denial"]["principal"]["object_id"] = payload
    f["denial"]["principal"]["upn"] = payload
    f["denial"]["message"] = payload
    f["denial"]["object"] = {"kind": "secrets", "name": payload, "version": None}
    f["explanation"] = f"denied: {payload}"
    f["advice"] = [payload]
    f["error"] = payload
    f["cause"] = payload
    f["evidence"] = {"vault": {"name": payload, payload: payload}, "principal": {"display_name": payload},
                     "limitations": [payload]}
    f["plan"] = {"kind": "role_assignment", "principal_id": payload, "scope": payload, "role_name": payload,
                 "commands": {"az": payload, "bicep": payload}}
    return f


def _get(app: App, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    h = bearer(approver_token()) if headers is None else headers
    return fetch(app.http.base_url + "/api/findings" + (f"?{query}" if query else ""), headers=h)


def _rows(html: str) -> list[str]:
    return re.findall(r"<tr><td>.*?</tr>", html, flags=re.S)


def test_a_signed_in_approver_sees_recent_findings_a_summary_and_a_strict_policy(app: App,
                                                                                findings_cache: dict[str, Any]) -> None:
    # given the demo's findings recorded over the last two days
    demo = findings_cache["demo"]
    seed(app, [(f, now() - timedelta(hours=i)) for i, f in enumerate(demo)])
    # when an approver opens the page
    status, headers, html = _get(app)
    # then every finding is listed, with the 7-day summary and the grants in force
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert len(_rows(html)) == len(demo)
    assert f"{len(demo)} in all" in html and 'id="grants-in-force">0<' in html
    assert "MISSING_ROLE_ASSIGNMENT" in html and "kv-payments" in html
    # and the page runs no script, ever: CSP allows none, and the page has none
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "<script" not in html.lower()
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<style nonce="{nonce.group(1)}">' in html
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    # and a SameSite=Strict, HttpOnly cookie carries the form nonce
    assert re.search(r"kvr_csrf=[\w-]+; Path=/api/findings; HttpOnly; SameSite=Strict", headers["Set-Cookie"])


@pytest.mark.parametrize(("query", "expect"), [
    ("cause=MISSING_ACCESS_POLICY", lambda r: "MISSING_ACCESS_POLICY" in r),
    ("vault=kv-legacy", lambda r: "kv-legacy" in r),
    ("principal=app-signer", lambda r: "app-signer" in r),
    ("outcome=diagnosed", lambda r: "diagnosed" in r),
])
def test_filters_keep_only_the_matching_findings(app: App, findings_cache: dict[str, Any], query: str,
                                                 expect: Any) -> None:
    # given the demo's findings
    seed(app, [(f, now()) for f in findings_cache["demo"]])
    # when the page is filtered
    status, _, html = _get(app, query)
    # then only matching rows remain, and at least one does
    rows = _rows(html)
    assert status == 200 and rows and all(expect(r) for r in rows)
    assert len(rows) < len(findings_cache["demo"]) or query.startswith("outcome")


def test_the_time_filter_and_unknown_filter_values(app: App, findings_cache: dict[str, Any]) -> None:
    # given one finding from 3 days ago and one from 40 days ago
    old, older = findings_cache["demo"][:2]
    seed(app, [(old, now() - timedelta(days=3)), (older, now() - timedelta(days=40))])
    # then the last 24 hours hold none, 7 days one, any time both
    assert len(_rows(_get(app, "since=24h")[2])) == 0
    assert len(_rows(_get(app, "since=7d")[2])) == 1
    assert len(_rows(_get(app, "since=all")[2])) == 2
    # and a filter value outside the choices is dropped, not echoed
    status, _, html = _get(app, f"cause={XSS}&outcome={XSS}&since={XSS}")
    assert status == 200 and XSS not in html and len(_rows(html)) == 1


def test_opening_a_finding_shows_explanation_change_fix_evidence_and_history(app: App,
                                                                            findings_cache: dict[str, Any]) -> None:
    # given a recorded role-assignment finding
    finding = next(f for f in findings_cache["demo"] if (f.get("plan") or {}).get("kind") == "role_assignment")
    (rid,) = seed(app, [(finding, now())])
    # when it is opened
    status, _, html = _get(app, f"id={rid}")
    # then the page shows why, the exact write, the az and Bicep fix, the evidence tree and the history
    assert status == 200 and f"Finding {rid}" in html
    esc = lambda s: s.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;").replace("<", "&lt;")  # noqa: E731
    assert esc(finding["explanation"]) in html
    plan = finding["plan"]
    assert "The exact change" in html and plan["role_name"] in html and plan["scope"] in html
    assert esc(plan["commands"]["az"]) in html and esc(plan["commands"]["bicep"]) in html
    assert "What kv-remediate read from Azure" in html and finding["evidence"]["vault"]["name"] in html
    history = re.search(r'<ol class="history">(.*?)</ol>', html, flags=re.S)
    assert history and "denied" in history.group(1) and "proposed" in history.group(1)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_attacker_shaped_findings_are_rendered_as_text(app: App, findings_cache: dict[str, Any],
                                                       payload: str) -> None:
    # given a finding whose vault, principal, object, error text, evidence and commands all carry markup
    (rid,) = seed(app, [(_attack(findings_cache["demo"][0], payload), now())])
    # when the list, the opened finding and a filter echoing the payload are rendered
    for query in ("", f"id={rid}", urllib.parse.urlencode({"vault": payload, "principal": payload})):
        status, _, html = _get(app, query)
        # then the payload appears only as escaped text: no element, attribute or script of its making
        assert status == 200
        if "<" in payload or '"' in payload:
            assert payload not in html
        assert "<script" not in html.lower() and "<img" not in html.lower()
        assert 'href="javascript:' not in html.lower()
    # and a template in the data is shown as it is, never evaluated
    if payload == "{{ 7*7 }}":
        assert "denied: {{ 7*7 }}" in _get(app, f"id={rid}")[2]


@pytest.mark.parametrize("headers", [
    {},                                                             # anonymous
    {"X-MS-CLIENT-PRINCIPAL-ID": APPROVER_OID, "X-MS-CLIENT-PRINCIPAL-NAME": "mallory"},   # forged Easy Auth
])
def test_anonymous_and_forged_easy_auth_headers_get_a_sign_in_page(app: App, headers: dict[str, str]) -> None:
    # given the app without App Service Authentication; when nobody (or a forger of its headers) asks
    status, h, html = _get(app, headers=headers)
    # then 401 with a sign-in hint, and no finding shown
    assert status == 401 and "Sign in" in html and "<table" not in html and "Bearer" in h["WWW-Authenticate"]


@pytest.mark.parametrize(("tok", "reason"), [
    (lambda: approver_token(key=FORGED), "bad_signature"),
    (lambda: approver_token(exp=timedelta(minutes=-10)), "expired"),
    (lambda: approver_token(aud="api://another-app"), "wrong_audience"),
    (operator_token, "missing_role"),                     # KvRemediate.Apply is not a page role
])
def test_a_bad_bearer_token_is_refused(app: App, tok: Any, reason: str) -> None:
    status, _, html = _get(app, headers=bearer(tok()))
    assert status == 401 and reason in html and "<table" not in html


def _principal(roles: list[str]) -> str:
    claims = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
              "claims": [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": "Alice"}]}
    return base64.b64encode(json.dumps(claims).encode()).decode()


@pytest.mark.parametrize(("roles", "status", "label"), [
    ([APPROVE_ROLE], 200, "(approver)"), ([READ_ROLE], 200, "(read only)"), (["Other"], 403, "neither app role")])
def test_easy_auth_principal_headers_count_only_when_easy_auth_is_on(app: App, monkeypatch: pytest.MonkeyPatch,
                                                                     roles: list[str], status: int,
                                                                     label: str) -> None:
    # given App Service Authentication configured (the platform's setting)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    services.get().settings.env["WEBSITE_AUTH_ENABLED"] = "True"
    headers = {"X-MS-CLIENT-PRINCIPAL-ID": APPROVER_OID, "X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.example",
               "X-MS-CLIENT-PRINCIPAL": _principal(roles)}
    # when its principal headers arrive
    got, _, html = _get(app, headers=headers)
    # then they sign the person in, with the roles the principal holds
    assert got == status and label in html
    if status == 200:
        assert "alice@contoso.example" in html


def test_a_reader_sees_the_page_without_decision_forms(app: App) -> None:
    status, _, html = _get(app, headers=bearer(reader_token()))
    assert status == 200 and "(read only)" in html and 'method="post"' not in html


def test_a_post_from_another_origin_without_a_token_or_as_a_reader_changes_nothing(app: App) -> None:
    url = app.http.base_url + "/api/findings/approvals/req-1/approve"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    origin = {"Origin": app.http.base_url}
    # cross-site
    status, _, html = fetch(url, b"csrf=x", method="POST",
                            headers={**form, **bearer(approver_token()), "Origin": "https://evil.example"})
    assert status == 403
    # same origin, but no form token
    status, _, html = fetch(url, b"reason=", method="POST", headers={**form, **bearer(approver_token()), **origin})
    assert status == 403 and "nothing was changed" in html
    # a reader
    status, _, html = fetch(url, b"csrf=x", method="POST", headers={**form, **bearer(reader_token()), **origin})
    assert status == 403 and "KvRemediate.Approve" in html
    # anonymous
    status, _, html = fetch(url, b"csrf=x", method="POST", headers={**form, **origin})
    assert status == 401


def test_page_routes_answer_html_for_every_error(app: App, tmp_path: Path) -> None:
    # a GET with a malformed Authorization header is a 401 page, never a stack trace or JSON
    status, headers, html = _get(app, headers={"Authorization": "Basic abc"})
    assert status == 401 and headers["Content-Type"].startswith("text/html") and "Traceback" not in html


def test_health_says_how_people_sign_in_and_names_a_short_page_key(app: App) -> None:
    status, _, body = fetch(app.http.base_url + "/api/health")
    doc = json.loads(body)
    assert status == 200 and doc["findings_page"] == {"easy_auth": False, "bearer": True, "page_key": False}
    services.get().settings.env["KV_REMEDIATE_PAGE_KEY"] = "too-short"
    doc = json.loads(fetch(app.http.base_url + "/api/health")[2])
    assert doc["status"] == "degraded" and doc["findings_page"]["page_key"] is True
    assert any(p["setting"] == "KV_REMEDIATE_PAGE_KEY" and "too-short" not in p["problem"] for p in doc["problems"])
