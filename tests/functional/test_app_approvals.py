"""Approval in the function app, end to end: alert → POST /api/alerts → Azurite queue → the worker (mode
approve) → a request in Table ``approvals`` and a notification whose link only opens the findings page → a
person approves (the entry point the page and Slack/Teams endpoints call) → the emulated tenant holds the grant,
once; the timer ends requests past their expiry."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from remediate.app import approvals as appr
from remediate.app import services
from remediate.approvals.model import Act, Approver
from tests.support.app import DEMO, DEMO_SUB, snapshot_with_rows
from tests.support.served_app import WORKSPACE, App, serve_app

T = TypeVar("T")
POLICY = {"mode": "approve", "scopes": [f"/subscriptions/{DEMO_SUB}"], "principal_types": ["ServicePrincipal"],
          "max_tier": 3, "min_approvals": 1, "approval_ttl": "PT4H"}
ALICE = Approver("aaaaaaaa-1111-4111-8111-111111111111", "Alice")
BOB = Approver("bbbbbbbb-2222-4222-8222-222222222222", "Bob")


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from serve_app(azurite, snapshot_with_rows(tmp_path), monkeypatch, KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE,
                         KV_REMEDIATE_POLICY=json.dumps(POLICY), KV_REMEDIATE_PUBLIC_URL="https://kvr.example.net/")


def on_loop(app: App, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on the app's event loop (its async table clients live there)."""
    got: T = app.http.loop.submit(make()).result(timeout=120)
    return got


def tenant_assignments(principal: str) -> list[dict[str, Any]]:
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"]
            if a["properties"]["principalId"].lower() == principal.lower()]


def alert_to_request(app: App) -> dict[str, Any]:
    """The demo's log alert through the webhook and the worker: the one finding record (waiting for approval)."""
    status, _ = app.post("/api/alerts", (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes())
    assert status == 202
    app.pump.drain(timeout=60)
    assert app.pump.failed == 0
    [record] = app.findings()
    finding: dict[str, Any] = record["finding"]
    return finding


def test_alert_request_notification_then_approval_applies_once(app: App) -> None:
    # given an alert under mode approve
    finding = alert_to_request(app)
    principal = finding["denial"]["principal"]["object_id"]
    # then the finding waits for approval and nothing was written
    assert (finding["outcome"], finding["refused_by"]) == ("pending_approval", "approval")
    approval_id = finding["approval_id"]
    before = len(tenant_assignments(principal))
    # and the notification carries the request and a link that only opens the page
    [note] = app.notify.bodies
    link = f"https://kvr.example.net/api/findings?approval={approval_id}"
    assert note["approval"] == {"id": approval_id, "link": link} and link in note["text"]
    # and the request is listed as pending in Table `approvals`
    pending = on_loop(app, lambda: appr.pending(services.get()))
    assert [r.id for r in pending] == [approval_id] and pending[0].grantee == principal
    # when two people approve at the same moment (a double click on the page and a Slack button)
    async def both() -> list[Any]:
        import asyncio

        rt = services.get()
        return list(await asyncio.gather(
            appr.decide(rt, approval_id, Act("approve", ALICE, "page", origin="198.51.100.7")),
            appr.decide(rt, approval_id, Act("approve", BOB, "slack", origin="T0123"))))
    got = on_loop(app, both)
    # then exactly one applies it, the other sees the outcome; the tenant holds one new assignment
    assert sorted(d.status for d in got) == ["applied", "refused"]
    assert len(tenant_assignments(principal)) == before + 1
    stored = on_loop(app, lambda: appr.get(services.get(), approval_id))
    assert stored is not None and stored.state == "applied" and stored.grant_id
    grant = services.get().grants().get(stored.grant_id)
    assert grant is not None and grant.outcome == "applied" and grant.finding is not None
    assert grant.finding["proof"]["kind"] == "approval"
    # and when the page's approval was the one that applied, the receiver that announced the request is told how it
    # ended (a Slack click replaces its own Slack message instead)
    if got[0].status == "applied":
        [_, end] = app.notify.bodies
        assert end["kv_remediate"]["kind"] == "approval_outcome" and end["kv_remediate"]["request_id"] == approval_id
        assert end["kv_remediate"]["state"] == "applied" and link in end["text"]
    else:
        assert len(app.notify.bodies) == 1


def test_a_page_rejection_is_told_to_the_receiver_that_announced_the_request(app: App) -> None:
    # given a request announced on the notification receiver
    finding = alert_to_request(app)
    # when a person rejects it on the findings page
    got = on_loop(app, lambda: appr.decide(services.get(), finding["approval_id"],
                                           Act("reject", ALICE, "page", reason="not this vault")))
    # then it is rejected and the receiver is told so, with the page link
    assert got.status == "rejected"
    [_, end] = app.notify.bodies
    assert (end["kv_remediate"]["state"], end["kv_remediate"]["request_id"]) == ("rejected", finding["approval_id"])
    assert "rejected" in end["text"] and "/api/findings?approval=" in end["text"]


def test_timer_expires_requests(app: App) -> None:
    finding = alert_to_request(app)
    later = datetime.now(UTC) + timedelta(hours=5)
    expired, finished = on_loop(app, lambda: appr.settle_due(now=later))
    assert [r.id for r in expired] == [finding["approval_id"]] and finished == []
    # and the receiver that announced it is told it expired (default-deny)
    [_, end] = app.notify.bodies
    assert (end["kv_remediate"]["state"], end["kv_remediate"]["request_id"]) == ("expired", finding["approval_id"])
    late = on_loop(app, lambda: appr.decide(services.get(), finding["approval_id"],
                                            Act("approve", ALICE, "page"), now=later))
    assert (late.status, late.refused) == ("refused", "not_pending")
    assert late.request is not None and late.request.state == "expired"


def test_the_grantee_cannot_approve_itself(app: App) -> None:
    finding = alert_to_request(app)
    principal = finding["denial"]["principal"]["object_id"]
    before = tenant_assignments(principal)
    got = on_loop(app, lambda: appr.decide(services.get(), finding["approval_id"],
                                           Act("approve", Approver(principal), "page")))
    assert (got.status, got.refused) == ("refused", "self_approval")
    assert tenant_assignments(principal) == before


def test_an_authenticated_apply_opens_a_request_its_operator_may_not_approve(
        azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.functional.test_app_apply_auth import APPLY, _serve
    from tests.support.entra import OPERATOR_OID, bearer, operator_token

    monkeypatch.setattr("tests.functional.test_app_apply_auth.POLICY", POLICY)
    for app in _serve(azurite, tmp_path, monkeypatch):
        # given an operator's POST /api/remediate with apply under mode approve
        status, doc = app.post("/api/remediate", APPLY, **bearer(operator_token()))
        [finding] = doc["findings"]
        approval_id = str(finding["approval_id"])
        # then it opens a request (nothing applied), proposed by the token's oid
        assert status == 200 and (finding["outcome"], finding["refused_by"]) == ("pending_approval", "approval")
        req = on_loop(app, lambda: appr.get(services.get(), approval_id))  # noqa: B023 (run at once)
        assert req is not None and req.requested_by is not None and req.requested_by.object_id == OPERATOR_OID
        # and that operator may not approve it too
        got = on_loop(app, lambda: appr.decide(services.get(), approval_id,  # noqa: B023
                                               Act("approve", Approver(OPERATOR_OID), "page")))
        assert (got.status, got.refused) == ("refused", "requester")
        got = on_loop(app, lambda: appr.decide(services.get(), approval_id, Act("approve", ALICE, "page")))  # noqa: B023
        assert got.status == "applied"
