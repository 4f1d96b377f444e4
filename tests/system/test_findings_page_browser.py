"""The findings page in a real browser (issue 11): Debian's chromium driven by Playwright (executable_path, never a
browser build of Playwright's own) against the app served in this process on loopback (Azurite, the emulator).

A signed-in approver (an Entra token from the loopback test issuer, sent as a header by the browser) loads the page,
filters it, opens a finding and sees its explanation, change and evidence; attacker-shaped findings run nothing;
the page passes axe-core (from npm) with no serious or critical violation. Screenshots are saved under
``.artifacts/`` (gitignored). Skips, saying why, only when chromium, Playwright or axe-core is not installed
(``make test`` installs them: tools/install_browser.sh)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediate.app import services
from tests.support.app import DEMO, ROOT, snapshot_with_rows
from tests.support.entra import API_SETTINGS, bearer, jwks_server
from tests.support.findings_page import (
    APPROVE_POLICY,
    alert_to_request,
    approver_token,
    demo_findings,
    now,
    page_authenticator,
    seed,
    tenant_assignments,
)
from tests.support.served_app import WORKSPACE, App, serve_app

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / ".artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
        "--disable-dev-shm-usage"]
XSS = '<img src=x onerror="alert(document.domain)"><script>alert(1)</script>'


def _missing() -> str | None:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        return "Debian's chromium is not installed (make test installs it: tools/install_browser.sh, as root)"
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    if not AXE.exists():
        return "axe-core is not installed in node_modules (npm install; tools/install_browser.sh)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def app(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    with jwks_server() as (url, ctx, _):
        for served in serve_app(azurite, DEMO / "tenant.json", monkeypatch, **API_SETTINGS):
            services.install(services.Runtime(page_authenticator=page_authenticator(url, ctx)))
            yield served


@pytest.fixture
def approving_app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The app under ``mode: approve`` with the audit rows the demo alert's denials are read from."""
    with jwks_server() as (url, ctx, _):
        for served in serve_app(azurite, snapshot_with_rows(tmp_path), monkeypatch,
                                KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE, KV_REMEDIATE_POLICY=json.dumps(APPROVE_POLICY),
                                **API_SETTINGS):
            services.install(services.Runtime(page_authenticator=page_authenticator(url, ctx)))
            yield served


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh chromium profile whose every request carries the approver's bearer token."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            extra_http_headers=bearer(approver_token()), viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


def _axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (the script is evaluated, not injected as a tag:
    the page's CSP allows no script)."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["html"][:200] for n in v["nodes"][:3]]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"findings-page-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_approver_loads_filters_and_opens_a_finding_in_chromium(app: App, browser: Any) -> None:
    # given the demo's findings recorded over the last day
    findings = demo_findings(app)
    seed(app, [(f, now() - timedelta(hours=i)) for i, f in enumerate(findings)])
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # when the approver opens the page
    response = page.goto(app.http.base_url + "/api/findings")
    # then it shows the findings, the summary chart and the strict policy
    assert response is not None and response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert page.get_by_role("heading", level=1).inner_text().startswith("Denied Key Vault requests")
    assert page.locator("tbody tr").count() == len(findings)
    assert page.locator("svg[role=img] rect").count() >= 2
    _shot(page, "list")
    assert _axe(page) == []
    # when they filter by a cause (the GET form, no script)
    page.get_by_label("Cause", exact=True).select_option("MISSING_ROLE_ASSIGNMENT")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"cause=MISSING_ROLE_ASSIGNMENT"))
    causes = page.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert causes and set(causes) == {"MISSING_ROLE_ASSIGNMENT"}
    # and open one finding
    page.locator("tbody tr").first.get_by_role("link", name=re.compile("Open")).click()
    page.wait_for_url(re.compile(r"id="))
    detail = page.locator("#finding")
    assert detail.get_by_role("heading", name="The exact change").is_visible()
    assert detail.get_by_role("heading", name="Fix with the Azure CLI").is_visible()
    assert "az role assignment create" in detail.locator("pre").first.inner_text()
    assert "What kv-remediate read from Azure" in detail.inner_text()
    assert page.get_by_label("Cause", exact=True).input_value() == "MISSING_ROLE_ASSIGNMENT"   # the filters are kept
    _shot(page, "finding")
    assert _axe(page) == []
    assert dialogs == []


def test_markup_in_findings_runs_nothing_in_the_browser(app: App, browser: Any) -> None:
    # given a finding whose vault, caller, error text and explanation carry markup and script
    base = demo_findings(app)[0]
    f = {**base, "explanation": XSS, "denial": {**base["denial"], "vault": {"name": XSS, "resource_id": XSS},
                                                 "message": XSS, "principal": {"upn": XSS, "object_id": XSS}}}
    (rid,) = seed(app, [(f, now())])
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # when the list and the opened finding are shown
    for path in ("/api/findings", f"/api/findings?id={rid}"):
        page.goto(app.http.base_url + path)
        # then the markup is text on the page: no alert, no image, no script element
        assert XSS in page.locator("main").inner_text()
        assert page.locator("main img").count() == 0 and page.locator("script").count() == 0
    assert dialogs == []


def test_an_approver_approves_a_request_in_chromium_and_sees_it_applied(approving_app: App, browser: Any) -> None:
    # given an alert whose plan waits for approval (mode approve), and the link its notification carries
    app = approving_app
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    page = browser.new_page()
    # when the approver follows the link: the page opens the request, and nothing is decided by opening it
    page.goto(f"{app.http.base_url}/api/findings?approval={approval_id}")
    assert page.get_by_role("heading", name=re.compile("Waiting for approval")).is_visible()
    detail = page.locator("#finding")
    assert detail.get_by_role("heading", name="The exact change").is_visible()
    assert len(tenant_assignments(principal)) == before
    _shot(page, "request")
    assert _axe(page) == []
    # and they give a reason and press Approve (a form POST with the page's token and cookie)
    detail.get_by_label("Reason (recorded with your decision)").fill("CHG-42")
    detail.get_by_role("button", name="Approve").click()
    # then the page says it is approved and applied, and the tenant holds the grant, once
    outcome = page.locator("#outcome")
    outcome.wait_for()
    assert page.get_by_role("heading", level=1).inner_text() == "Approved and applied", outcome.inner_text()
    assert len(tenant_assignments(principal)) == before + 1
    _shot(page, "approved")
    assert _axe(page) == []
    # and back on the finding its history reads requested → approved (by the approver, from the page) → applied
    page.get_by_role("link", name="Back to the finding").click()
    history = page.locator("ol.history").inner_text().lower()
    assert "requested" in history and "approved" in history and "applied" in history and "chg-42" in history
    assert page.get_by_role("button", name="Approve").count() == 0
