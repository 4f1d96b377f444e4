"""End to end through the real parts: alert → POST /api/alerts on `serve` → Azurite queue → the decorated worker
(driven by serve's queue pump) → the emulator (ARM, Graph, Log Analytics) → Table `findings`, the log and the
notification receiver. Also: bad input, resolved alerts, the runbook route and poison messages."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.intake import parse_one
from tests.support.app import APP_ORDERS, APP_SIGNER, DEMO, snapshot_with_rows, variant
from tests.support.served_app import WORKSPACE, App, serve_app


@pytest.fixture
def app(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from serve_app(azurite, snapshot_with_rows(tmp_path), monkeypatch, KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE)


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    prefix = "kv-remediate finding "
    return [json.loads(r.getMessage()[len(prefix):]) for r in caplog.records
            if r.name == "kv_remediate.worker" and r.getMessage().startswith(prefix)]


def _distinct(body: bytes) -> int:
    return len({d.identity_key() for d in parse_one("alert", body).denials})


@pytest.mark.parametrize("name, payload, expect_principals", [
    ("log alert V2 with dimensions", (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes, {APP_ORDERS}),
    ("log alert V1 with rows", lambda: variant("alert_v1_searchresults_azurediagnostics.json"), {APP_ORDERS, None}),
    ("metric alert", (DEMO / "inputs" / "09_metric_alert.json").read_bytes, {None}),
])
def test_alert_becomes_findings_record_log_line_and_notification(app: App, caplog: pytest.LogCaptureFixture,
                                                                   name: str, payload: Any,
                                                                   expect_principals: set[str | None]) -> None:
    caplog.set_level(logging.INFO, logger="kv_remediate.worker")
    # given an alert the webhook receives
    body = payload()
    alert_id = json.loads(body)["data"]["essentials"]["alertId"]
    # when Azure Monitor posts it
    status, doc = app.post("/api/alerts", body)
    # then it is accepted at once, one queued denial per denial in the payload, without any ARM call
    assert status == 202 and doc == {"accepted": len(parse_one("alert", body).denials)} and doc["accepted"] >= 1
    assert not services.get().emulator_started
    # when the worker drains the queue
    app.pump.drain(timeout=60)
    # then each distinct denial has one record in `findings`, one log line and one notification
    records = [r for r in app.findings() if r["alert_id"] == alert_id]
    assert len(records) == _distinct(body), name
    assert {r["principal"] for r in records} == expect_principals
    lines = _lines(caplog)
    assert len(lines) == len(records)
    for line in lines:
        assert line["alert_id"] == alert_id and line["invocation_id"] and line["vault"] and line["cause"]
        assert any(r["invocation_id"] == line["invocation_id"] and r["cause"] == line["cause"] for r in records)
    assert len(app.notify.bodies) == len(records)
    assert all(n["text"].startswith("Key Vault denial diagnosed: ") and n["kv_remediate"]["alert_id"] == alert_id
               for n in app.notify.bodies)
    assert app.pump.failed == 0


def test_v2_alert_without_dimensions_is_diagnosed_from_its_rows(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kv_remediate.worker")
    # given a Log Alerts V2 payload whose dimensions do not name the caller (only its search link does)
    body = variant("alert_v2_no_dimensions_vault_scope.json")
    # when it is posted; then it is queued as-is (the webhook never calls Log Analytics)
    status, doc = app.post("/api/alerts", body)
    assert (status, doc) == (202, {"accepted": 1})
    assert not services.get().emulator_started
    # when the worker takes it
    app.pump.drain(timeout=60)
    # then the rows came from the emulator's Log Analytics API: only the window's denials on the alert's vault
    records = app.findings()
    assert len(records) == 1
    finding = records[0]["finding"]
    assert finding["cause"] == "MISSING_ROLE_ASSIGNMENT" and finding["occurrences"] == 2
    assert finding["denial"]["principal"]["object_id"] == APP_SIGNER
    assert finding["denial"]["operation"] == "KeySign"
    assert finding["plan"]["role_name"] == "Key Vault Crypto User"
    assert [line["principal"] for line in _lines(caplog)] == [APP_SIGNER]


def test_resolved_alert_is_accepted_with_nothing_queued(app: App, azurite: str) -> None:
    # given a resolved metric alert; when posted; then 202 with 0 accepted and the queue stays empty
    status, doc = app.post("/api/alerts", variant("alert_metric_resolved_keyvault.json"))
    assert (status, doc) == (202, {"accepted": 0})
    queue = QueueServiceClient.from_connection_string(azurite).get_queue_client(app_settings.DENIALS_QUEUE)
    assert queue.get_queue_properties().approximate_message_count == 0


@pytest.mark.parametrize("body, code", [
    (b"", "EMPTY_BODY"),
    (b"{not json", "NOT_AN_ALERT"),
    (b'{"principal_id": "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e", "operation": "SecretGet"}', "NOT_AN_ALERT"),
    (b'{"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {"monitorCondition": "Fired", '
     b'"alertTargetIDs": ["/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/st"]}, '
     b'"alertContext": {"conditionType": "LogQueryCriteria", "condition": {"allOf": [{"searchQuery": '
     b'"StorageBlobLogs"}]}}}}', "NOT_KEY_VAULT"),
])
def test_bad_alerts_get_400_with_the_error_json(app: App, body: bytes, code: str) -> None:
    # given an unusable body; when posted to the webhook; then 400 naming the problem, no stack trace
    status, doc = app.post("/api/alerts", body)
    assert status == 400 and doc["error"]["code"] == code
    assert doc["error"]["message"] and "Traceback" not in doc["error"]["message"]


def test_diagnose_answers_the_runbook_request_synchronously(app: App) -> None:
    # given a runbook request about the demo tenant
    request = {"principal_id": APP_ORDERS, "vault": "kv-payments", "operation": "SecretGet",
               "object": "secrets/db-password"}
    # when posted to /api/diagnose; then 200 with the diagnosis JSON of cli.md
    status, doc = app.post("/api/diagnose", json.dumps(request).encode())
    assert status == 200 and doc["schema"] == "kv-remediate/diagnosis@1"
    [finding] = doc["findings"]
    assert finding["cause"] == "MISSING_ROLE_ASSIGNMENT" and finding["plan"]["commands"]["az"].startswith("az role")
    assert doc["stats"]["arm_requests"] >= 1
    # and an SDK error text is accepted too
    status, doc = app.post("/api/diagnose", (DEMO / "inputs" / "02_python_sdk_error.txt").read_bytes())
    assert status == 200 and doc["findings"]
    # and a bad request names the field
    status, doc = app.post("/api/diagnose", json.dumps({**request, "principal_id": "nope"}).encode())
    assert status == 400 and "principal_id" in doc["error"]["message"]


def test_diagnose_fetches_rows_for_an_alert_without_dimensions(app: App) -> None:
    # given the alert without dimensions; when a runbook posts it to /api/diagnose
    status, doc = app.post("/api/diagnose", variant("alert_v2_no_dimensions_vault_scope.json"))
    # then the rows are read through Log Analytics with our query and counted with the other requests
    assert status == 200
    assert [f["denial"]["principal"]["object_id"] for f in doc["findings"]] == [APP_SIGNER]
    assert doc["stats"]["requests_by_api"]["log_analytics"] == 1
    # our query filters in the service: of the snapshot's 5 rows only the window's 2 denials on the alert's vault
    # come back (the link's query used to return 4 rows of the window and the app filtered them)
    assert any("read 2 audit row(s)" in n for n in doc["notes"])


def test_poison_message_is_retried_then_moved_to_the_poison_queue(app: App, azurite: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    # given a message on `denials` that is not a queued denial
    queues = QueueServiceClient.from_connection_string(azurite)
    from azure.storage.queue import TextBase64EncodePolicy

    queues.get_queue_client(app_settings.DENIALS_QUEUE, message_encode_policy=TextBase64EncodePolicy()).send_message(
        '{"schema": "something-else"}')
    # when the worker runs until the queue is empty
    app.pump.drain(timeout=60)
    # then it was tried maxDequeueCount times, the reason logged as poison, and the host moved it aside
    assert app.pump.failed == services.get().settings.max_dequeue_count == 5
    assert app.pump.poisoned == 1
    poison = queues.get_queue_client(app_settings.POISON_QUEUE)
    assert poison.get_queue_properties().approximate_message_count == 1
    [logged] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kv-remediate poison")]
    assert "attempt 5 of 5" in logged and "not a kv-remediate/queued-denial@1 message" in logged
    assert app.findings() == []


def test_findings_table_holds_the_finding_json(app: App, azurite: str) -> None:
    # given a processed alert
    app.post("/api/alerts", (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes())
    app.pump.drain(timeout=60)
    # when the Table is read directly; then the entity carries cause, vault, principal and the finding JSON
    table = TableServiceClient.from_connection_string(azurite).get_table_client(app_settings.FINDINGS_TABLE)
    [entity] = list(table.list_entities())
    assert entity["cause"] == "MISSING_ROLE_ASSIGNMENT" and entity["principal"] == APP_ORDERS
    assert json.loads(entity["finding"])["dedupe"]["key_hash"]
