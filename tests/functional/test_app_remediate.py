"""Remediation in the function app, through the real parts (serve, Azurite, the emulator, the SDK):
POST /api/remediate, the queue worker applying under `mode: apply`, the revocation timer, an invalid policy.

Applying over HTTP is an operator's act: the requests that apply carry an Entra ID token for the app's audience
holding KvRemediate.Apply (keys from a loopback JWKS); tests/functional/test_app_apply_auth.py covers the refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediate.app import services
from remediate.app.timer import revoke_due
from remediate.store.grants import GrantRecord
from tests.support.app import APP_ORDERS, APP_ORDERS_CLIENT, DEMO, DEMO_SUB, audit_row, call
from tests.support.entra import API_SETTINGS, api_authenticator, bearer, jwks_server, operator_token
from tests.support.served_app import WORKSPACE, App, serve_app

POLICY = {"mode": "apply", "scopes": [f"/subscriptions/{DEMO_SUB}"], "grant_ttl": "PT8H"}
REQUEST = {"principal_id": APP_ORDERS, "vault": "kv-payments", "operation": "SecretGet",
           "object": "secrets/db-password"}


def _app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> Iterator[App]:
    # the worker applies only on a denial it read itself in the audit log: the demo alert's two denials are rows
    # of the configured workspace (inside 10_log_alert_v2's window)
    tenant = json.loads((DEMO / "tenant.json").read_text())
    tenant["log_rows"] = [{**audit_row("2026-11-27T09:05:00Z", oid=APP_ORDERS, appid=APP_ORDERS_CLIENT,
                                       operation=op, uri=uri), "TenantId": WORKSPACE}
                          for op, uri in (("KeySign", "/keys/orders-signing/sign"),
                                          ("SecretGet", "/secrets/orders-db"))]
    snapshot = tmp_path / "tenant.json"
    snapshot.write_text(json.dumps(tenant))
    with jwks_server() as (url, ctx, _):
        for app in serve_app(azurite, snapshot, monkeypatch, KV_REMEDIATE_POLICY=policy,
                             KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE, **API_SETTINGS):
            services.install(services.Runtime(api_authenticator=api_authenticator(url, ctx)))
            yield app


OPERATOR = bearer(operator_token())


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _app(azurite, tmp_path, monkeypatch, json.dumps(POLICY))


def _assignments_for(principal: str) -> list[dict[str, object]]:
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"] if a["properties"]["principalId"] == principal]


def test_remediate_suggests_unless_apply_is_asked(app: App) -> None:
    # given a runbook request; when posted without apply, then nothing changes
    status, doc = app.post("/api/remediate", json.dumps(REQUEST).encode())
    assert status == 200 and doc["findings"][0]["applied"] is False
    assert doc["findings"][0]["refused_by"] == "apply" and _assignments_for(APP_ORDERS) == []


def test_remediate_applies_once_and_records_it(app: App) -> None:
    # given `mode: apply`; when the runbook asks to apply twice
    status, first = app.post("/api/remediate", json.dumps({**REQUEST, "apply": True}).encode(), **OPERATOR)
    _, second = app.post("/api/remediate?apply=true", json.dumps(REQUEST).encode(), **OPERATOR)
    # then one role assignment exists, recorded with its expiry; the second run finds it granted and, the grant
    # being ours, reports it as that same grant (adopted), never a second write
    assert status == 200 and first["findings"][0]["outcome"] == "applied"
    assert second["findings"][0]["cause"] == "ALREADY_GRANTED"
    assert second["findings"][0]["outcome"] == "applied" and second["findings"][0]["adopted"] is True
    assert second["findings"][0]["grant_id"] == first["findings"][0]["grant_id"]
    assert len(_assignments_for(APP_ORDERS)) == 1
    [record] = services.get().grants().list()
    assert record.outcome == "applied" and record.expires_at is not None and record.actor


def test_worker_applies_under_mode_apply_and_refuses_by_rule(app: App) -> None:
    # given two alerts about app-orders on kv-payments: KeySign (needs a tier-2 role; policy allows tier 1)
    # and SecretGet (tier 1)
    alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
    secret = alert.replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db")
    app.post("/api/alerts", alert.encode())
    app.post("/api/alerts", secret.encode())
    # when the worker drains the queue
    app.pump.drain(timeout=60)
    # then the SecretGet plan was applied, the KeySign plan refused by its rule, both recorded and reported
    outcomes = {f["finding"]["denial"]["operation"]: f["finding"] for f in app.findings()}
    assert outcomes["SecretGet"]["outcome"] == "applied"
    assert outcomes["KeySign"]["refused_by"] == "max_tier" and outcomes["KeySign"]["applied"] is False
    assert sorted(r.outcome for r in services.get().grants().list()) == ["applied", "refused"]
    assert [a["properties"]["scope"] for a in _assignments_for(APP_ORDERS)] == [
        outcomes["SecretGet"]["plan"]["scope"]]
    assert any(b["kv_remediate"]["outcome"] == "applied" and "Applied" in b["text"] for b in app.notify.bodies)


def test_timer_revokes_expired_grants(app: App) -> None:
    # given an applied grant whose time limit has passed
    app.post("/api/remediate", json.dumps({**REQUEST, "apply": True}).encode(), **OPERATOR)
    grants = services.get().grants()
    [record] = grants.list()
    past = datetime.now(UTC) - timedelta(minutes=1)
    grants.add(GrantRecord(**{**record.__dict__, "id": "expired-" + record.id, "expires_at": past}))
    grants.mark_revoked(record.id, datetime.now(UTC), "test: superseded by the expired copy")
    # when the timer runs
    results = asyncio.run(revoke_due())
    # then the assignment we created is gone and the revocation is recorded
    assert [r.revoked for r in results] == [True]
    assert _assignments_for(APP_ORDERS) == []
    assert "revoked" in {r.outcome for r in grants.list()}


@pytest.fixture
def broken(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _app(azurite, tmp_path, monkeypatch, "mode: apply\nmax_tier: 9\n")


def test_invalid_policy_refuses_to_act_and_health_says_why(broken: App) -> None:
    status, doc = broken.post("/api/remediate", json.dumps({**REQUEST, "apply": True}).encode(), **OPERATOR)
    assert status == 500 and doc["error"]["code"] == "BAD_POLICY" and "max_tier" in doc["error"]["message"]
    status, health = call(broken.http.base_url + "/api/health", method="GET")
    assert status == 200 and health["status"] == "degraded"
    assert any(p["setting"] == "KV_REMEDIATE_POLICY" and "max_tier" in p["problem"] for p in health["problems"])
    assert _assignments_for(APP_ORDERS) == []



def _secret_alert() -> bytes:
    alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
    return alert.replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db").encode()


def _failing_write(monkeypatch: pytest.MonkeyPatch, times: int) -> dict[str, int]:
    """ARM answers the role assignment PUT with a 503 ``times`` times (the write never takes effect), then serves."""
    from remediate.errors import AzureUnavailableError
    from remediate.facts.writes import ArmWriter

    original = ArmWriter.create_role_assignment
    seen = {"calls": 0}

    async def flaky(self: ArmWriter, *args: Any, **kwargs: Any) -> Any:
        seen["calls"] += 1
        if seen["calls"] <= times:
            raise AzureUnavailableError("creating a role assignment: ARM answered 503 ServiceUnavailable (injected)")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(ArmWriter, "create_role_assignment", flaky)
    return seen


def test_a_failed_write_fails_the_invocation_and_the_retry_applies_exactly_once(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # given ARM refusing the first role assignment PUT (503), then serving
    seen = _failing_write(monkeypatch, times=1)
    # when the SecretGet alert is queued and the worker drains it
    app.post("/api/alerts", _secret_alert())
    app.pump.drain(timeout=60)
    # then the first invocation failed (the host retried the message), the retry applied, nothing was poisoned
    assert (app.pump.failed, app.pump.processed, app.pump.poisoned) == (1, 1, 0) and seen["calls"] == 2
    # and exactly one assignment exists, with one applied record (the failed attempt kept as failed)
    assert len(_assignments_for(APP_ORDERS)) == 1
    outcomes = sorted(r.outcome for r in services.get().grants().list())
    assert outcomes == ["applied", "failed"]
    # and both attempts were reported
    assert sorted(f["finding"]["outcome"] for f in app.findings()) == ["applied", "failed"]


def test_a_write_that_keeps_failing_is_poisoned_and_still_recorded(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # given ARM refusing every role assignment PUT
    seen = _failing_write(monkeypatch, times=1000)
    # when the alert is queued and the worker drains it
    app.post("/api/alerts", _secret_alert())
    app.pump.drain(timeout=120)
    # then every attempt failed, the message went to the poison queue after maxDequeueCount attempts
    attempts = app.pump.max_dequeue_count
    assert (app.pump.failed, app.pump.processed, app.pump.poisoned) == (attempts, 0, 1) and seen["calls"] == attempts
    # and nothing was granted, every attempt is recorded as failed (no intent left pending), and reported
    assert _assignments_for(APP_ORDERS) == []
    records = services.get().grants().list()
    assert len(records) == attempts and {r.outcome for r in records} == {"failed"}
    assert all("503" in (r.detail or "") for r in records)
    assert [f["finding"]["outcome"] for f in app.findings()] == ["failed"] * attempts


def test_refused_and_already_granted_findings_complete_the_message(app: App) -> None:
    # given the KeySign alert (refused by max_tier), the SecretGet alert (applied), then SecretGet on another secret
    # of the vault (already granted, by that grant of ours: reported as it, adopted)
    alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
    app.post("/api/alerts", alert.encode())
    app.post("/api/alerts", _secret_alert())
    app.pump.drain(timeout=60)
    app.post("/api/alerts", _secret_alert().replace(b"/secrets/orders-db", b"/secrets/orders-cache"))
    app.pump.drain(timeout=60)
    # then each message completed on its first attempt: refusals and granted access are decisions, not failures
    outcomes = sorted((str(f["finding"]["cause"]), str(f["finding"]["outcome"]), bool(f["finding"].get("adopted")))
                      for f in app.findings())
    assert outcomes == [("ALREADY_GRANTED", "applied", True), ("MISSING_ROLE_ASSIGNMENT", "applied", False),
                        ("MISSING_ROLE_ASSIGNMENT", "refused", False)], outcomes
    assert app.pump.failed == 0 and app.pump.poisoned == 0 and app.pump.processed == 3
