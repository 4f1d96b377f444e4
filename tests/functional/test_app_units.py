"""The app's parts on their own: queue message format, the Log Analytics link check and client (against the
emulator), settings and health without values, the policy setting, notifications, and serve's key check."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import msgspec
import pytest

from remediate.app import services
from remediate.app import settings as app_settings
from remediate.app.health import health
from remediate.app.messages import QueuedDenial, decode, denial_from_dict, encode
from remediate.app.worker import finding_line, notification
from remediate.emulator import Emulator
from remediate.errors import InputError, PolicyError
from remediate.facts.loganalytics import (
    AUDIT_QUERY_BODY,
    AuditQuery,
    LinkTarget,
    LogAnalyticsClient,
    QueryResult,
    kql_string,
    link_target,
)
from remediate.intake import parse_inputs, parse_one, payload, search_results_link
from remediate.localhost.discovery import load_app
from remediate.localhost.http import HttpServer
from remediate.model import RowsLink, Signal
from tests.support.app import DEMO, app_environment, call, guard_loopback, snapshot_with_rows, variant

LINK = ("https://api.loganalytics.io/v1/workspaces/dddd3333-ee44-5555-66ff-777777aaaaaa/query?query=AzureDiagnostics"
        "%0A%7C%20where%20httpStatusCode_d%20%3D%3D%20403&timespan=2026-11-20T09%3a45%3a00Z%2f2026-11-20T10%3a00%3a00Z")


def test_every_demo_denial_survives_the_queue_message_round_trip() -> None:
    # given every denial the demo inputs hold
    inputs = sorted((f.name, f.read_bytes()) for f in (DEMO / "inputs").iterdir())
    denials = parse_inputs(inputs).denials
    assert len(denials) >= 10
    for d in denials:
        # when encoded as a queue message and decoded; then it is the same denial with its alert id
        item = decode(encode(QueuedDenial(d, "alert-1")))
        assert item.denial == d and item.alert_id == "alert-1" and item.rows_link is None
        assert denial_from_dict(d.to_dict()) == d


def test_search_link_travels_with_the_denial_that_needs_it() -> None:
    # given the alert without dimensions; then its denial needs the search and carries link and window
    data = variant("alert_v2_no_dimensions_vault_scope.json")
    parsed = parse_one("alert", data)
    [(d, link)] = parsed.with_rows_links()
    assert link is not None and link.link == search_results_link(payload(data))
    item = decode(encode(QueuedDenial(d, d.alert_id, RowsLink(LINK, ("2026-11-20T09:45:00Z", "2026-11-20T10:00:00Z")))))
    assert item.rows_link == RowsLink(LINK, ("2026-11-20T09:45:00Z", "2026-11-20T10:00:00Z"))
    # and an alert with dimensions does not
    with_dims = parse_one("alert", (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes())
    assert not any(link for _, link in with_dims.with_rows_links())


@pytest.mark.parametrize("body", [b"not json", b'{"schema": "kv-remediate/queued-denial@1"}',
                                  b'{"schema": "kv-remediate/queued-denial@1", "denial": {"source": 3}}',
                                  b'{"schema": "kv-remediate/queued-denial@1", "denial": {"source": "x", '
                                  b'"status": "403"}}'])
def test_foreign_messages_are_bad_message_errors(body: bytes) -> None:
    # given a message that is not ours; when decoded; then BAD_MESSAGE naming the problem
    with pytest.raises(InputError) as info:
        decode(body)
    assert info.value.code == "BAD_MESSAGE"


def test_the_worker_reads_the_format_the_store_writes() -> None:
    from remediate.app.messages import MESSAGE_SCHEMA
    from remediate.store.azure import DENIAL_MESSAGE_SCHEMA

    assert MESSAGE_SCHEMA == DENIAL_MESSAGE_SCHEMA


def test_signals_travel_in_the_message_and_the_hint_is_derived_from_them() -> None:
    # given a denial whose text says the firewall refused it
    body = {"error": {"code": "Forbidden", "message": "Client address is not authorized and caller is not a trusted "
                      "service.", "innererror": {"code": "ForbiddenByFirewall"}}}
    [d] = parse_one("error", json.dumps(body).encode()).denials
    assert d.signals == {Signal.NETWORK} and d.cause_hint == "NETWORK_BLOCKED"
    # when it travels as a queue message; then its signals come back, and with them its hint
    assert decode(encode(QueuedDenial(d, None))).denial == d
    # and a message whose hint its own fields do not give (an older message, or a crafted one) is BAD_MESSAGE
    body = json.loads(encode(QueuedDenial(d, None)))
    del body["denial"]["signals"]
    with pytest.raises(InputError) as info:
        decode(json.dumps(body))
    assert info.value.code == "BAD_MESSAGE" and "cause_hint" in info.value.message
    body["denial"]["signals"] = ["firewall-says-grant-everything"]
    with pytest.raises(InputError) as info:
        decode(json.dumps(body))
    assert info.value.code == "BAD_MESSAGE"


@pytest.mark.parametrize("link, problem", [
    (LINK.replace("https://", "http://"), "https link"),
    (LINK.replace("api.loganalytics.io", "evil.example"), "https link"),
    (LINK.replace("api.loganalytics.io", "169.254.0.1"), "https link"),
    ("https://api.loganalytics.io/v1/workspaces/x/../../metadata?query=x", "names neither"),
    ("https://api.loganalytics.io/v1/workspaces/dddd/query", "names neither"),
    ("https://api.loganalytics.io/v1/subscriptions/3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11/resourceGroups/rg/providers/"
     "Microsoft.Storage/storageAccounts/st/query?query=StorageBlobLogs", "names neither"),
])
def test_search_links_from_payloads_are_checked_before_any_token_is_sent(link: str, problem: str) -> None:
    # given a link an attacker could put in a webhook payload; then it is refused, naming why
    with pytest.raises(InputError, match=problem):
        link_target(link)


def test_a_link_gives_only_where_to_look_never_its_query() -> None:
    # given the alert's link with its KQL; then only the workspace is taken from it
    assert link_target(LINK + "%7C%20where%20x") == LinkTarget(workspace="dddd3333-ee44-5555-66ff-777777aaaaaa")
    vault = ("https://api.loganalytics.io/v1/subscriptions/3F1C2B7A-5d44-4e8b-9c1e-2a6f0d9b8e11/resourceGroups/rg/"
             "providers/Microsoft.KeyVault/vaults/KV-Payments/query?query=SigninLogs")
    assert link_target(vault) == LinkTarget(subscription="3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11", vault="kv-payments")


@pytest.mark.parametrize("field, value", [
    ("vault", "kv'; SigninLogs //"), ("vault", "kv\nSigninLogs"), ("vault", "a"), ("vault", "x" * 25),
    ("principal", "11111111-0000-0000-0000-00000000000'"), ("principal", "' or 1==1 or '"),
    ("operation", "SecretGet' or '1"), ("operation", "NotAnOperation"),
])
def test_audit_query_values_outside_their_alphabet_are_refused(field: str, value: str) -> None:
    # given a value an input could carry; when building the audit query; then it is refused, nothing is sent
    args: dict[str, object] = {"vault": "kv-payments", "principal": None, "operation": None, field: value}
    with pytest.raises(InputError):
        AuditQuery(start=datetime(2026, 11, 20, 9, 45, tzinfo=UTC), end=datetime(2026, 11, 20, 10, tzinfo=UTC),
                   **args)  # type: ignore[arg-type]


def test_audit_query_is_the_fixed_body_under_a_header_of_literals() -> None:
    q = AuditQuery(vault="KV-Payments", start=datetime(2026, 11, 20, 9, 45, tzinfo=UTC),
                   end=datetime(2026, 11, 20, 10, tzinfo=UTC), principal="11111111-0000-0000-0000-00000000000A",
                   operation="SecretGet")
    text = q.kql()
    assert text.endswith(AUDIT_QUERY_BODY)
    assert text.startswith("let kvStart = datetime(2026-11-20T09:45:00.0000000Z);\n"
                           "let kvEnd = datetime(2026-11-20T10:00:00.0000000Z);\nlet kvVault = 'kv-payments';\n"
                           "let kvPrincipal = '11111111-0000-0000-0000-00000000000a';\nlet kvOperation = 'SecretGet';")
    assert kql_string("a'b\\c") == "'a\\'b\\\\c'"


def test_log_analytics_client_sends_our_query_to_the_workspace_and_counts(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)
    # given the emulator serving the snapshot's log rows
    with Emulator(snapshot_with_rows(tmp_path)) as emu:
        async def run() -> tuple[QueryResult, int]:
            async with LogAnalyticsClient(emu.async_credential(), base_url=emu.base_url,
                                          connection_verify=emu.ca_file) as client:
                result = await client.audit("dddd3333-ee44-5555-66ff-777777aaaaaa", AuditQuery(
                    vault="kv-payments", start=datetime(2026, 11, 20, 9, 45, tzinfo=UTC),
                    end=datetime(2026, 11, 20, 10, tzinfo=UTC)))
                with pytest.raises(InputError):
                    await client.audit("not-a-workspace", AuditQuery(vault="kv-payments", start=datetime(
                        2026, 11, 20, 9, 45, tzinfo=UTC), end=datetime(2026, 11, 20, 10, tzinfo=UTC)))
                return result, client.requests

        before = emu.request_count
        result, requests = asyncio.run(run())
    # then one request returned the window's two denials on that vault, and the refused workspace sent nothing
    assert requests == 1 and emu.request_count - before == 1
    assert [r["OperationName"] for r in result.rows] == ["KeySign", "KeySign"] and result.partial is None


def test_settings_problems_name_settings_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # given settings that are wrong in several ways, with values that must not leak
    secret = "https://hooks.example/services/SECRET-TOKEN"
    env = {app_settings.STORAGE_CONNECTION: "not-a-connection-string-SECRET",
           app_settings.WINDOW_SETTING: "ten minutes",
           app_settings.NOTIFY_SETTING: secret.replace("https", "http"),
           app_settings.SNAPSHOT_SETTING: "/nope/SECRET.json",
           app_settings.POLICY_SETTING: "mode: yolo"}
    # when read
    settings = app_settings.Settings.from_env(env)
    # then each problem names its setting, without the value
    named = {p.setting for p in settings.problems}
    assert named == {app_settings.STORAGE_CONNECTION, app_settings.WINDOW_SETTING, app_settings.NOTIFY_SETTING,
                     app_settings.SNAPSHOT_SETTING, app_settings.POLICY_SETTING}
    text = json.dumps(msgspec.to_builtins(settings.problems))
    assert "SECRET" not in text
    # and the defaults stand in: a 10 minute window, no notifications
    assert settings.dedupe_window.total_seconds() == 600 and settings.notify_url is None


@pytest.mark.parametrize("value", ["0", "-1", "1000001", "5.0", "+5", "abc", "\u00b3", "\u0663"])
def test_an_unusable_cap_is_a_problem_and_the_default_stands(value: str) -> None:
    # given a cap setting that is not a positive integer (superscript and Arabic-Indic digits too)
    env = {app_settings.SUBSCRIPTIONS_SETTING: "s1", "KV_REMEDIATE_MAX_DENIALS": value}
    # when read; then health names the setting, and the default is used
    settings = app_settings.Settings.from_env(env)
    assert "KV_REMEDIATE_MAX_DENIALS" in {p.setting for p in settings.problems} and settings.max_denials == 100


def test_a_cold_start_loads_no_validation_library() -> None:
    # given a fresh interpreter; when the function app is imported; then msgspec is not (handlers load it)
    import subprocess
    import sys

    code = "import sys, function_app; print('msgspec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "False"


def test_openapi_request_bodies_are_the_runbook_schema() -> None:
    # given the OpenAPI document and the struct intake validates runbook requests with
    from remediate.app.openapi import document
    from remediate.intake.runbook import FIELDS, NAMING

    schemas = document()["components"]["schemas"]
    # then each request body has exactly its fields, no others, and names the principal or the operation
    for name, extra in (("RunbookRequest", set()), ("RemediateRequest", {"apply"})):
        body = schemas[name]
        assert set(body["properties"]) == FIELDS | extra and body["additionalProperties"] is False
        assert body["anyOf"] == [{"required": [field]} for field in NAMING]


def test_health_reports_version_and_problems(monkeypatch: pytest.MonkeyPatch, azurite: str) -> None:
    # given a good configuration; when /api/health is called; then ok and no problems
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        response = health(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
        doc = json.loads(response.get_body())
        assert response.status_code == 200 and doc["status"] == "ok" and doc["problems"] == [] and doc["version"]
        # given no snapshot and no subscription list; then ok: Resource Graph searches every readable subscription
        # (issue 16: AZURE_SUBSCRIPTION_IDS is an optional filter)
        monkeypatch.delenv(app_settings.SNAPSHOT_SETTING)
        monkeypatch.delenv(app_settings.SUBSCRIPTIONS_SETTING, raising=False)
        services.reset()
        doc = json.loads(health(func.HttpRequest("GET", "http://localhost/api/health", body=b"")).get_body())
        assert doc["status"] == "ok" and doc["problems"] == []
        # given a subscription list with an entry that is not a subscription id; then degraded, naming the setting
        monkeypatch.setenv(app_settings.SUBSCRIPTIONS_SETTING, "00000000-0000-0000-0000-000000000001,not-a-guid")
        services.reset()
        doc = json.loads(health(func.HttpRequest("GET", "http://localhost/api/health", body=b"")).get_body())
        assert doc["status"] == "degraded"
        assert [p["setting"] for p in doc["problems"]] == [app_settings.SUBSCRIPTIONS_SETTING]
        assert "not-a-guid" not in json.dumps(doc)


def test_policy_setting_content_or_file(tmp_path: Path) -> None:
    # given the policy as content, as a file, or unreadable; then it loads or names the setting
    assert app_settings.load_policy({app_settings.POLICY_SETTING: "mode: suggest"}).mode == "suggest"
    path = tmp_path / "policy.yaml"
    path.write_text("mode: apply\nmax_tier: 1\n")
    assert app_settings.load_policy({app_settings.POLICY_SETTING: str(path)}).mode == "apply"
    assert app_settings.load_policy({}).source == "defaults"
    with pytest.raises(PolicyError, match=app_settings.POLICY_SETTING):
        app_settings.load_policy({app_settings.POLICY_SETTING: str(tmp_path / "missing.yaml")})


def test_notification_is_a_teams_and_slack_message_with_the_facts() -> None:
    # given a finding; when turned into a notification; then `text` reads as a message and the facts ride along
    finding = {"cause": "MISSING_ROLE_ASSIGNMENT", "explanation": "app has no role.", "advice": [],
               "occurrences": 3, "plan": {"commands": {"az": "az role assignment create ..."}},
               "denial": {"operation": "SecretGet", "status": 403, "vault": {"name": "kv-payments"},
                          "principal": {"object_id": "p1"}, "object": {"kind": "secrets", "name": "db"}}}
    line = finding_line(finding, alert_id="a1", invocation_id="i1", claim=None)
    body = notification(finding, line)
    assert body["text"].splitlines()[0] == "Key Vault denial diagnosed: MISSING_ROLE_ASSIGNMENT"
    assert "Fix: `az role assignment create ...`" in body["text"] and "kv-payments (secrets/db)" in body["text"]
    assert body["kv_remediate"] == line and line["principal"] == "p1" and line["invocation_id"] == "i1"


def test_serve_checks_a_configured_function_key(monkeypatch: pytest.MonkeyPatch, azurite: str) -> None:
    # given serve with a function key
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        server = HttpServer(load_app(), port=0, function_key="k3y").start()
        try:
            base = server.base_url
            # then function-level routes need it (query or header); anonymous health does not
            assert call(base + "/api/openapi.json", method="GET")[0] == 401
            assert call(base + "/api/openapi.json?code=wrong", method="GET")[1]["error"]["code"] == "UNAUTHORIZED"
            assert call(base + "/api/openapi.json?code=k3y", method="GET")[0] == 200
            assert call(base + "/api/openapi.json", method="GET", headers={"x-functions-key": "k3y"})[0] == 200
            assert call(base + "/api/health", method="GET")[0] == 200
            # and unknown routes and methods answer with the error JSON
            assert call(base + "/api/nope?code=k3y", method="GET")[1]["error"]["code"] == "NOT_FOUND"
            status, doc = call(base + "/api/alerts?code=k3y", method="GET")
            assert status == 405 and doc["error"]["code"] == "METHOD_NOT_ALLOWED"
        finally:
            server.stop()
