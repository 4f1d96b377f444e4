"""Deciding from the findings page (issue 11), through the real parts: alert → worker under ``mode: approve`` → a
request in Table ``approvals`` → the page (GET) → Approve or Reject (a form POST with the page's CSRF token and
cookie, same origin, a signed-in approver) → the core re-checks and applies exactly once; the page says what
happened and the request records who, when and from where. Each refusal changes nothing."""

from __future__ import annotations

import html as htmllib
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediate.app import approvals as appr
from remediate.app import services
from tests.support.app import snapshot_with_rows
from tests.support.entra import API_SETTINGS, bearer, jwks_server
from tests.support.findings_page import (
    APPROVE_POLICY,
    APPROVER_OID,
    alert_to_request,
    approver_token,
    cookie_of,
    fetch,
    form_of,
    page_authenticator,
    tenant_assignments,
)
from tests.support.served_app import WORKSPACE, App, serve_app

FORM = "application/x-www-form-urlencoded"
GROUP = "9f1c0000-0000-4000-8000-00000000beef"


def _serve(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **policy: Any) -> Iterator[App]:
    with jwks_server() as (url, ctx, _):
        for served in serve_app(azurite, snapshot_with_rows(tmp_path), monkeypatch,
                                KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE,
                                KV_REMEDIATE_POLICY=json.dumps({**APPROVE_POLICY, **policy}),
                                KV_REMEDIATE_PUBLIC_URL="https://kvr.example.net/", **API_SETTINGS):
            services.install(services.Runtime(page_authenticator=page_authenticator(url, ctx)))
            yield served


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _serve(azurite, tmp_path, monkeypatch)


@pytest.fixture
def app_two(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Two distinct approvers needed."""
    yield from _serve(azurite, tmp_path, monkeypatch, min_approvals=2)


@pytest.fixture
def app_group(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Only members of one group may approve (policy ``approvers`` names the group)."""
    yield from _serve(azurite, tmp_path, monkeypatch, approvers=[GROUP])


@pytest.fixture
def app_short(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Requests expire after one second."""
    yield from _serve(azurite, tmp_path, monkeypatch, approval_ttl="PT1S")


def _open(app: App, approval_id: str, token: str | None = None) -> tuple[str, dict[str, str], str]:
    """GET the page on one request as a person: (cookie, form fields, html)."""
    status, headers, html = fetch(f"{app.http.base_url}/api/findings?approval={approval_id}",
                                  headers=bearer(token or approver_token()))
    assert status == 200, html
    return cookie_of(headers), form_of(html, approval_id), html


def _post(app: App, approval_id: str, verb: str, fields: dict[str, str], cookie: str, *,
          token: str | None = None, origin: str | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode({**fields, "decision": verb, "reason": "ticket CHG-1"}).encode()
    headers = {"Content-Type": FORM, "Cookie": cookie, "Origin": origin or app.http.base_url,
               "X-Forwarded-For": "198.51.100.7", **bearer(token or approver_token())}
    status, _, html = fetch(f"{app.http.base_url}/api/findings/approvals/{approval_id}/{verb}", body,
                            method="POST", headers=headers)
    return status, htmllib.unescape(html)


def _request(app: App, approval_id: str) -> Any:
    return app.http.loop.submit(appr.get(services.get(), approval_id)).result(timeout=30)


def test_an_approver_approves_from_the_page_and_the_grant_is_applied_once(app: App) -> None:
    # given a finding waiting for approval, opened on the page (the link the notification carries)
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    cookie, fields, html = _open(app, approval_id)
    assert "Waiting for approval (1)" in html and "The exact change" in html and "Approve</button>" in html
    # when the approver presses Approve
    status, page = _post(app, approval_id, "approve", fields, cookie)
    # then the page says it is applied, and the tenant holds the grant once
    assert status == 200 and "Approved and applied" in page, page
    assert len(tenant_assignments(principal)) == before + 1
    req = _request(app, approval_id)
    assert req.state == "applied"
    [entry] = [d for d in req.decisions if d.refused is None]
    assert (entry.approver.object_id, entry.channel, entry.origin, entry.reason) == (
        APPROVER_OID, "page", "198.51.100.7", "ticket CHG-1")
    # and the page's history shows requested → approved → applied
    _, _, after = fetch(f"{app.http.base_url}/api/findings?approval={approval_id}", headers=bearer(approver_token()))
    history = after.split('<ol class="history">', 1)[1].split("</ol>", 1)[0]
    assert [s in history for s in ("requested", "approved", "applied", "verified")] == [True] * 4
    assert "Approve</button>" not in after
    # when the same form is posted again (a double click, a replay)
    status, page = _post(app, approval_id, "approve", fields, cookie)
    # then nothing more is applied
    assert status == 409 and "nothing was changed" in page
    assert len(tenant_assignments(principal)) == before + 1


def test_rejecting_from_the_page_ends_the_request_and_writes_nothing(app: App) -> None:
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    cookie, fields, _ = _open(app, approval_id)
    status, page = _post(app, approval_id, "reject", fields, cookie)
    assert status == 200 and "Rejected" in page
    assert _request(app, approval_id).state == "rejected" and len(tenant_assignments(principal)) == before


@pytest.mark.parametrize("forgery", ["no_cookie", "other_cookie", "other_request", "other_person", "no_token",
                                     "cross_origin", "tampered"])
def test_a_forged_decision_changes_nothing(app: App, forgery: str) -> None:
    # given a pending request and the approver's genuine page
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    cookie, fields, _ = _open(app, approval_id)
    token, origin, target = None, None, approval_id
    other = approver_token(oid="0a1b2c3d-0000-4000-8000-0000000a5599")
    if forgery == "no_cookie":
        cookie = ""
    elif forgery == "other_cookie":
        cookie = _open(app, approval_id, other)[0]        # another browser's cookie
    elif forgery == "other_request":
        target = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    elif forgery == "other_person":
        token = other                                     # the form was made for the approver, not them
    elif forgery == "no_token":
        fields = {k: v for k, v in fields.items() if k != "csrf"}
    elif forgery == "cross_origin":
        origin = "https://evil.example"
    else:
        when, _, mac = fields["csrf"].partition(".")
        fields = {**fields, "csrf": f"{int(when) + 1}.{mac}"}
    # when it is posted
    status, page = _post(app, target, "approve", fields, cookie, token=token, origin=origin)
    # then it is refused and nothing is applied or decided
    # (serve refuses another origin before the route does, as the route itself would: tests/unit/test_approver.py)
    assert status == 403 and ("nothing was changed" in page or "CROSS_ORIGIN" in page), page
    assert len(tenant_assignments(principal)) == before and _request(app, approval_id).state == "pending"


def test_the_grantee_itself_cannot_approve_from_the_page(app: App) -> None:
    # given the request's grantee signed in with the approver role (self-approval)
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    grantee = record["finding"]["denial"]["principal"]["object_id"]
    token = approver_token(oid=grantee)
    cookie, fields, _ = _open(app, approval_id, token)
    status, page = _post(app, approval_id, "approve", fields, cookie, token=token)
    assert status == 403 and "nothing was changed" in page
    assert _request(app, approval_id).state == "pending"


def test_a_get_of_the_notification_link_only_reads(app: App) -> None:
    # given the link the notification carries, followed by a link scanner (any GET, even signed in)
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    link = f"{app.http.base_url}/api/findings?approval={approval_id}&decision=approve"
    for _ in range(3):
        fetch(link, headers=bearer(approver_token()))
        fetch(link)
    # then the request is still pending and nothing was decided
    req = _request(app, approval_id)
    assert req.state == "pending" and req.decisions == ()


def test_two_approvers_are_needed_and_the_second_applies(app_two: App) -> None:
    app = app_two
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    second = approver_token(oid="0a1b2c3d-0000-4000-8000-0000000a5503")
    # when the first approver approves: recorded, nothing applied yet, the page says 1 of 2
    cookie, fields, _ = _open(app, approval_id)
    status, page = _post(app, approval_id, "approve", fields, cookie)
    assert status == 200 and "Approval recorded" in page and len(tenant_assignments(principal)) == before
    # and the same person approving again does not count twice
    cookie, fields, html = _open(app, approval_id)
    assert "1 of 2 approvals so far" in html
    status, page = _post(app, approval_id, "approve", fields, cookie)
    assert status == 200 and len(tenant_assignments(principal)) == before and _request(app, approval_id).state == \
        "pending"
    # when a second, different approver approves: applied, once
    cookie, fields, _ = _open(app, approval_id, second)
    status, page = _post(app, approval_id, "approve", fields, cookie, token=second)
    assert status == 200 and "Approved and applied" in page, page
    assert len(tenant_assignments(principal)) == before + 1


def test_an_expired_request_shows_no_buttons_and_cannot_be_approved(app_short: App) -> None:
    import time

    app = app_short
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    cookie, fields, _ = _open(app, approval_id)     # the form, taken while it was pending
    time.sleep(1.5)
    # when the page is opened after the request's expiry: shown expired, no buttons (and the GET changed nothing)
    status, _, html = fetch(f"{app.http.base_url}/api/findings?approval={approval_id}",
                            headers=bearer(approver_token()))
    assert status == 200 and "expired</span> approval request" in html and "Approve</button>" not in html
    assert _request(app, approval_id).state == "pending"
    # when the old form is posted: refused as expired, nothing applied
    status, page = _post(app, approval_id, "approve", fields, cookie)
    assert status == 409 and "nothing was changed" in page and len(tenant_assignments(principal)) == before
    assert _request(app, approval_id).state == "expired"


def test_an_approvers_group_admits_its_members_only(app_group: App) -> None:
    # given a policy whose approvers are one group
    app = app_group
    record = alert_to_request(app)
    approval_id = record["finding"]["approval_id"]
    principal = record["finding"]["denial"]["principal"]["object_id"]
    before = len(tenant_assignments(principal))
    # when an approver outside the group approves: refused, nothing applied
    cookie, fields, _ = _open(app, approval_id)
    status, page = _post(app, approval_id, "approve", fields, cookie)
    assert status == 403 and "nothing was changed" in page and len(tenant_assignments(principal)) == before
    # when a member (the token's groups claim) approves: applied
    member = approver_token(oid="0a1b2c3d-0000-4000-8000-0000000a5504", extra={"groups": [GROUP]})
    cookie, fields, _ = _open(app, approval_id, member)
    status, page = _post(app, approval_id, "approve", fields, cookie, token=member)
    assert status == 200 and "Approved and applied" in page, page
    assert len(tenant_assignments(principal)) == before + 1
