"""A grant needs evidence the app read itself, and an alert only says where to look (issue 15 findings 4, 5, 8, 11;
issue 18 item 6), through the real parts: `serve`, Azurite, the queue worker, the emulator's ARM and Log Analytics
routes, the SDK clients. Assertions are on what the emulator holds and what the app answered."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.app.worker import finding_line, notification
from remediate.facts.loganalytics import LogAnalyticsClient
from tests.support.app import (
    APP_ORDERS,
    APP_ORDERS_CLIENT,
    APP_SIGNER,
    DEMO,
    DEMO_SUB,
    KV_PAYMENTS,
    audit_row,
    snapshot_with_rows,
    variant,
)
from tests.support.served_app import WORKSPACE, App, serve_app

OTHER_WORKSPACE = "0a0b0c0d-1111-4222-8333-944445555666"
POLICY = {"mode": "apply", "scopes": [f"/subscriptions/{DEMO_SUB}"]}
SECRET_ALERT = ((DEMO / "inputs" / "10_log_alert_v2.json").read_text()
                .replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db"))
SIGNIN_ROW = {"Type": "SigninLogs", "TimeGenerated": "2026-11-20T09:55:00Z", "TenantId": WORKSPACE,
              "UserPrincipalName": "ceo@contoso.com",
              "ResultDescription": "ceo@contoso.com signed in from 198.51.100.1",
              "Resource": "KV-PAYMENTS", "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent",
              "httpStatusCode_d": 403, "OperationName": "SecretGet"}


def _snapshot(tmp_path: Path, rows: list[dict[str, Any]], **emulator: Any) -> Path:
    tenant = json.loads((DEMO / "tenant.json").read_text(encoding="utf-8"))
    tenant["log_rows"] = rows
    if emulator:
        tenant["emulator"] = emulator
    path = tmp_path / "tenant-evidence.json"
    path.write_text(json.dumps(tenant), encoding="utf-8")
    return path


def _orders_row(operation: str = "SecretGet", uri: str = "/secrets/orders-db", **extra: Any) -> dict[str, Any]:
    """app-orders' denial inside 10_log_alert_v2's window (08:55-09:10), held by the configured workspace."""
    return {**audit_row("2026-11-27T09:05:00Z", oid=APP_ORDERS, appid=APP_ORDERS_CLIENT, operation=operation, uri=uri),
            "TenantId": WORKSPACE, **extra}


def _assignments(principal: str) -> list[dict[str, Any]]:
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"] if a["properties"]["principalId"] == principal]


def _serve(azurite: str, snapshot: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[App]:
    settings.setdefault("KV_REMEDIATE_AUDIT_WORKSPACES", WORKSPACE)
    yield from serve_app(azurite, snapshot, monkeypatch, **settings)


# ---- an alert says where to look, never what to read --------------------------------------------------------------
@pytest.fixture
def diag(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    rows_file = snapshot_with_rows(tmp_path)
    tenant = json.loads(rows_file.read_text())
    tenant["log_rows"] = [{**r, "TenantId": WORKSPACE} for r in tenant["log_rows"]] + [SIGNIN_ROW]
    rows_file.write_text(json.dumps(tenant))
    yield from _serve(azurite, rows_file, monkeypatch, AZURE_SUBSCRIPTION_IDS=DEMO_SUB)


def _link_alert(link: str) -> bytes:
    alert = json.loads(variant("alert_v2_no_dimensions_vault_scope.json"))
    for item in alert["data"]["alertContext"]["condition"]["allOf"]:
        item["linkToSearchResultsAPI"] = item["linkToFilteredSearchResultsAPI"] = link
    return json.dumps(alert).encode()


SIGNIN_KQL = "SigninLogs%20%7C%20project%20ResultDescription%3DUserPrincipalName%2C%20httpStatusCode_d%3D403"


@pytest.mark.parametrize("link", [
    f"https://api.loganalytics.io/v1/workspaces/{WORKSPACE}/query?query={SIGNIN_KQL}",
    f"https://api.loganalytics.io/v1/workspaces/{WORKSPACE.upper()}/query?query=union%20*&timespan=P30D",
    f"https://api.loganalytics.io/v1{KV_PAYMENTS}/query?query={SIGNIN_KQL}",
])
def test_the_links_kql_never_runs_only_our_query_does(diag: App, link: str) -> None:
    # given a crafted alert whose link carries a SigninLogs (or union *) query for the audit workspace or vault
    # when a runbook posts it to /api/diagnose
    status, doc = diag.post("/api/diagnose", _link_alert(link))
    # then our audit query was what the emulator answered (it refuses any other text with a 400, which would be a
    # "reading the audit log failed" note): the alert window's denials on the vault, nothing of SigninLogs
    assert status == 200, doc
    assert [f["denial"]["principal"]["object_id"] for f in doc["findings"]] == [APP_SIGNER]
    assert doc["stats"]["requests_by_api"]["log_analytics"] == 1
    assert not any("failed" in n for n in doc["notes"]), doc["notes"]
    assert "ceo@contoso.com" not in json.dumps(doc)


@pytest.mark.parametrize("link, why", [
    (f"https://api.loganalytics.io/v1/workspaces/{OTHER_WORKSPACE}/query?query={SIGNIN_KQL}",
     "not in KV_REMEDIATE_AUDIT_WORKSPACES"),
    ("https://api.loganalytics.io/v1/subscriptions/0f0f0f0f-1111-4222-8333-944445555666/resourceGroups/rg/providers/"
     f"Microsoft.KeyVault/vaults/kv-payments/query?query={SIGNIN_KQL}", "does not search"),
    (f"https://api.loganalytics.io/v1{KV_PAYMENTS.replace('kv-payments', 'kv-legacy')}/query?query=x",
     "another vault"),
    ("https://api.loganalytics.io/v1/subscriptions/0f0f0f0f-1111-4222-8333-944445555666/resourceGroups/rg/providers/"
     "Microsoft.Storage/storageAccounts/st/query?query=StorageBlobLogs", "names neither"),
    (f"https://evil.example/v1/workspaces/{WORKSPACE}/query?query=x", "https link"),
])
def test_links_elsewhere_are_dropped_with_a_note(diag: App, link: str, why: str) -> None:
    # given a crafted alert whose link points at another workspace, subscription, vault or resource type
    status, doc = diag.post("/api/diagnose", _link_alert(link))
    # then nothing was read: the alert itself is diagnosed, and a note says why its rows were not read
    assert status == 200, doc
    assert "log_analytics" not in doc["stats"]["requests_by_api"]
    assert [f["denial"]["principal"]["object_id"] for f in doc["findings"]] == [None]
    assert any(why in n for n in doc["notes"]), doc["notes"]


def test_without_configured_workspaces_nothing_is_read(azurite: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for app in serve_app(azurite, snapshot_with_rows(tmp_path), monkeypatch):
        status, doc = app.post("/api/diagnose", variant("alert_v2_no_dimensions_vault_scope.json"))
        assert status == 200 and "log_analytics" not in doc["stats"]["requests_by_api"]
        assert any("KV_REMEDIATE_AUDIT_WORKSPACES is not set" in n for n in doc["notes"])


def test_a_partial_error_is_a_limitation_not_a_full_answer(azurite: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows = json.loads(snapshot_with_rows(tmp_path).read_text())["log_rows"]
    snap = _snapshot(tmp_path, rows, logs_partial_error="Query result set has exceeded the internal limit.")
    for app in _serve(azurite, snap, monkeypatch):
        status, doc = app.post("/api/diagnose", variant("alert_v2_no_dimensions_vault_scope.json"))
        assert status == 200
        assert [f["denial"]["principal"]["object_id"] for f in doc["findings"]] == [APP_SIGNER]
        assert any("partial error" in n and "incomplete" in n for n in doc["notes"]), doc["notes"]


# ---- mode: apply applies only on a row we read ------------------------------------------------------------------
@pytest.mark.parametrize("object_scope, scope", [
    (False, KV_PAYMENTS),
    (True, f"{KV_PAYMENTS}/secrets/orders-db"),
])
def test_worker_applies_on_an_audit_row_and_honours_object_scope(azurite: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 object_scope: bool, scope: str) -> None:
    # given `mode: apply` (object_scope as parametrised) and the denial's row in the configured workspace
    policy = json.dumps({**POLICY, "object_scope": object_scope})
    for app in _serve(azurite, _snapshot(tmp_path, [_orders_row()]), monkeypatch, KV_REMEDIATE_POLICY=policy):
        # when the alert is posted and the worker drains the queue
        assert app.post("/api/alerts", SECRET_ALERT.encode()) == (202, {"accepted": 1})
        app.pump.drain(timeout=60)
        # then the grant was applied at the policy's scope, proved by the row we read
        [record] = app.findings()
        finding = record["finding"]
        assert finding["outcome"] == "applied", finding
        assert finding["plan"]["scope"].lower() == scope.lower()
        assert [a["properties"]["scope"].lower() for a in _assignments(APP_ORDERS)] == [scope.lower()]
        proof = finding["evidence"]["audit_log"]["proof"]
        assert proof["kind"] == "audit_log"
        assert proof["source"] == f"workspace {WORKSPACE} row 2026-11-27T09:05:00Z 0c0c0c0c-0000-4000-8000-000000000001"


@pytest.mark.parametrize("rows, emulator, limitation", [
    ([], {}, "no matching row"),
    ([_orders_row(operation="SecretList", uri="/secrets")], {}, "no matching row"),          # another operation
    ([_orders_row(uri="/secrets/payroll-key")], {}, "no matching row"),                      # another secret
    ([_orders_row(TenantId=OTHER_WORKSPACE)], {}, "no matching row"),                        # another workspace
    ([_orders_row(httpStatusCode_d=200, ResultSignature="OK")], {}, "no matching row"),      # not a denial
    ([SIGNIN_ROW | {"TimeGenerated": "2026-11-27T09:05:00Z", "identity_claim_oid_g": APP_ORDERS}], {},
     "no matching row"),                                                                      # another table
    ([], {"logs_partial_error": "Query result set has exceeded the internal limit."}, "partial error"),
])
def test_without_a_row_the_guard_refuses_by_evidence_and_nothing_changes(
        *, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]],
        emulator: dict[str, Any], limitation: str) -> None:
    # given `mode: apply` and an audit log that does not hold this denial
    snap = _snapshot(tmp_path, rows, **emulator)
    for app in _serve(azurite, snap, monkeypatch, KV_REMEDIATE_POLICY=json.dumps(POLICY)):
        before = services.get().emulator
        # when the alert (which claims the denial) is posted and the worker drains the queue
        app.post("/api/alerts", SECRET_ALERT.encode())
        app.pump.drain(timeout=60)
        # then the plan is refused by the evidence rule, the finding says why, and the emulator holds no grant
        [record] = app.findings()
        finding = record["finding"]
        assert finding["applied"] is False and finding["refused_by"] == "evidence", finding
        assert limitation in finding["evidence"]["audit_log"]["limitation"]
        assert before is not None and _assignments(APP_ORDERS) == []
        assert app.pump.failed == 0


def test_an_unreachable_log_analytics_is_a_limitation_never_an_abort(azurite: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given `mode: apply` and a Log Analytics endpoint that refuses connections
    def closed(self: services.Runtime) -> LogAnalyticsClient:
        run = self.emulator
        assert run is not None
        return LogAnalyticsClient(run.emulator.async_credential(), base_url="https://127.0.0.1:9", retry_total=0)

    for app in _serve(azurite, _snapshot(tmp_path, [_orders_row()]), monkeypatch,
                      KV_REMEDIATE_POLICY=json.dumps(POLICY)):
        monkeypatch.setattr(services.Runtime, "log_analytics", closed)
        app.post("/api/alerts", SECRET_ALERT.encode())
        app.pump.drain(timeout=60)
        # then the message succeeded on its first attempt, the finding was reported, refused by evidence
        assert app.pump.failed == 0
        [record] = app.findings()
        assert record["finding"]["refused_by"] == "evidence"
        assert "not reachable" in record["finding"]["evidence"]["audit_log"]["limitation"]
        assert _assignments(APP_ORDERS) == []


# ---- control characters never reach a log line or a chat message raw --------------------------------------------
FORGED = ("alert-1\nkv-remediate finding {\"outcome\": \"applied\"}\r\x1b[2K\u2028\u202eApproved\u202c\x7f\x85 "
          "<!channel> <at>ops</at> *approved* `x`")


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f
            or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]


def test_log_line_and_notification_escape_controls_and_defuse_markup() -> None:
    # given a finding whose values carry line breaks, terminal escapes, bidi controls, mentions and markup
    finding = {"cause": "MISSING_ROLE_ASSIGNMENT", "explanation": "no role.\n\nApproved by the admin", "advice": [],
               "occurrences": 1, "plan": {"commands": {"az": "az role assignment create `rm -rf` <!here>"}},
               "denial": {"operation": "SecretGet", "status": 403, "vault": {"name": "kv\u202epayments"},
                          "principal": {"object_id": FORGED}, "object": {"kind": "secrets", "name": "db\nx"}}}
    line = finding_line(finding, alert_id=FORGED, invocation_id="i1", claim=None)
    body = notification(finding, line)
    text = json.dumps(line, ensure_ascii=False)
    # then the log line is one line with every control written as an escape
    assert "\n" not in text and not _raw_controls(text)
    assert "alert-1\\nkv-remediate finding" in line["alert_id"] and "\\u202e" in line["vault"]
    # and the chat text has no raw control, no live mention or tag, no markup a value opened
    assert not _raw_controls(body["text"])
    lines = body["text"].splitlines()
    assert not any(x.startswith("kv-remediate finding") or x.startswith("Approved") for x in lines)
    assert "<!channel>" not in body["text"] and "&lt;!channel&gt;" in body["text"] and "<at>" not in body["text"]
    assert "\\*approved\\*" in body["text"] and "`rm" not in body["text"]
    assert "<!here>" not in body["text"]


def test_a_forged_alert_id_on_the_queue_is_escaped_in_the_log_and_the_notification(
        azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kv_remediate.worker")
    for app in _serve(azurite, _snapshot(tmp_path, []), monkeypatch):
        # given a queued denial whose alert id carries a forged log line and fake approval
        from remediate.app.messages import QueuedDenial, encode
        from remediate.intake import parse_one

        [denial] = parse_one("alert", SECRET_ALERT.encode()).denials
        queue = QueueServiceClient.from_connection_string(azurite).get_queue_client(
            app_settings.DENIALS_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        queue.send_message(encode(QueuedDenial(denial, FORGED)))
        # when the worker takes it
        app.pump.drain(timeout=60)
        # then the log record is one line, and the notification holds no raw control or live mention
        messages = [r.getMessage() for r in caplog.records if r.name == "kv_remediate.worker"]
        [found] = [m for m in messages if m.startswith("kv-remediate finding ")]
        assert "\n" not in found and "\r" not in found and not _raw_controls(found)
        [note] = app.notify.bodies
        assert not _raw_controls(note["text"]) and "<!channel>" not in note["text"]
        assert not any(x.startswith("kv-remediate finding") for x in note["text"].splitlines())


def test_rows_read_for_an_alert_without_the_caller_are_their_own_proof(azurite: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # given `mode: apply` (tier 2 allowed) and the no-dimensions alert, whose rows are in the configured workspace
    rows = [{**r, "TenantId": WORKSPACE} for r in json.loads(snapshot_with_rows(tmp_path).read_text())["log_rows"]]
    policy = json.dumps({**POLICY, "max_tier": 2})
    for app in _serve(azurite, _snapshot(tmp_path, rows), monkeypatch, KV_REMEDIATE_POLICY=policy):
        # when posted and the worker drains the queue
        app.post("/api/alerts", variant("alert_v2_no_dimensions_vault_scope.json"))
        app.pump.drain(timeout=60)
        # then the caller found in the rows got the grant, proved by the row that named it
        [record] = app.findings()
        finding = record["finding"]
        assert finding["denial"]["principal"]["object_id"] == APP_SIGNER
        assert finding["outcome"] == "applied", finding
        proof = finding["evidence"]["audit_log"]["proof"]["source"]
        assert proof.startswith(f"workspace {WORKSPACE} row 2026-11-20T09:5")
        assert len(_assignments(APP_SIGNER)) == 1
