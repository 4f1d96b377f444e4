"""Realistic Key Vault variants the published samples do not cover (tests/fixtures/variants).

Given a variant (alert dimensions from the KQL samples' columns, query results, SDK texts, CRLF, markdown
escaping, truncation, masked ids, UTF-16), when it is parsed, then the denials carry the fields written here.
"""

from __future__ import annotations

import pytest

from tests.support.intake_expect import FIXTURES, Bad, Ok, check

VARIANTS = FIXTURES / "variants"
T = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUB = "3f1c2b7a-5d44-4e8b-9c1e-2a6f0d9b8e11"
OID = "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e"
APP = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
UOID = "c0ffee00-1234-4abc-9def-0123456789ab"
CLI_APP = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
KV = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments-prod"
KV_LOWER = KV.lower()
ALERT_ID = f"/subscriptions/{SUB}/providers/Microsoft.AlertsManagement/alerts/0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
APP_PRINCIPAL = {"principal.object_id": OID, "principal.app_id": APP, "principal.tenant_id": T}
SECRET_DB = {"kind": "secrets", "name": "db-password", "version": None}
AD_ROW_403 = {"status": 403, "error_code": "Forbidden", **APP_PRINCIPAL, "principal.kind": "app",
              "vault.name": "kv-payments-prod", "vault.resource_id": KV_LOWER, "operation": "SecretGet",
              "object": SECRET_DB, "caller_ip": "203.0.113.7", "time": "2026-11-20T09:58:12.301Z",
              "correlation_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "cause_hint": None}
AD_ROW_401 = {"status": 401, "operation": "Authentication", "principal.object_id": None,
              "cause_hint": "AUTH_CHALLENGE"}

EXPECTED: dict[str, Ok | Bad] = {
    "alert_v2_azurediagnostics_dimensions.json": Ok([{
        "source": "alert.log_search_v2", "status": 403, "principal.object_id": OID, "principal.app_id": APP,
        "vault.name": "kv-payments-prod", "vault.resource_id": KV_LOWER, "operation": "SecretGet",
        "data_action": "Microsoft.KeyVault/vaults/secrets/getSecret/action", "object": SECRET_DB,
        "caller_ip": "203.0.113.7", "alert_id": ALERT_ID, "time": "2026-11-20T10:00:41.123Z"}]),
    "alert_v2_azkvauditlogs_dimensions_vault_scope.json": Ok([{
        "source": "alert.log_search_v2", "status": 403, "error_code": "Forbidden", "principal.object_id": UOID,
        "principal.app_id": CLI_APP, "principal.tenant_id": T, "principal.upn": "dana@contoso.com",
        "principal.kind": "user", "vault.resource_id": KV, "operation": "KeyUnwrap",
        "access_policy_permission": {"keys": ["unwrapKey"]},
        "object": {"kind": "keys", "name": "cmk-storage", "version": "8f3b2a1c9d7e4f6a8b0c1d2e3f4a5b6c"},
        "caller_ip": "198.51.100.24"}]),
    "alert_v2_no_dimensions_vault_scope.json": Ok([{
        "source": "alert.log_search_v2", "status": 403, "principal.object_id": None, "vault.name": "kv-payments-prod",
        "vault.resource_id": KV, "operation": None, "cause_hint": "PRINCIPAL_NOT_IDENTIFIED", "alert_id": ALERT_ID}],
        notes=1, note_contains="linkToSearchResultsAPI: https://api.loganalytics.io/v1/workspaces/"),
    "alert_v2_callerip_only_workspace.json": Ok([{
        "status": 403, "vault.name": None, "caller_ip": "192.0.2.55", "time": "2026-11-20T10:15:02.5Z"}],
        notes=1, note_contains="must be fetched"),
    "alert_v1_searchresults_azurediagnostics.json": Ok(
        [{"source": "alert.log_search_v1", **AD_ROW_403, "alert_id": ALERT_ID}, {**AD_ROW_401}], skipped=1),
    "alert_legacy_log_v1_searchresult_azurediagnostics.json": Ok(
        [{"source": "alert.legacy_log_v1", **AD_ROW_403, "alert_id": None}, AD_ROW_401], skipped=1),
    "alert_metric_serviceapiresult_403.json": Ok([{
        "source": "alert.metric", "status": 403, "principal.object_id": None, "vault.resource_id": KV_LOWER,
        "operation": None, "cause_hint": "PRINCIPAL_NOT_IDENTIFIED", "alert_id": ALERT_ID}], notes=1),
    "alert_metric_resolved_keyvault.json": Ok([], notes=1, note_contains="resolved"),
    "alert_legacy_metric_keyvault_429.json": Ok([{
        "source": "alert.legacy_metric", "status": 429, "vault.resource_id": KV, "cause_hint": "THROTTLED",
        "time": "2026-11-20T10:00:09.1234567Z"}], notes=1),
    "alert_simple_log_event_azkvauditlogs.json": Ok([{
        "source": "alert.simple_log", "status": 403, **APP_PRINCIPAL, "principal.kind": "app",
        "operation": "KeySign", "object.name": "signer", "caller_ip": "198.51.100.9", "cause_hint": "NETWORK_BLOCKED",
        "time": "2026-11-20T09:51:03.5Z"}]),
    "alert_activity_log_keyvault_forbidden.json": Ok([{
        "source": "alert.activity_log", "status": 403, "error_code": "AuthorizationFailed", "principal.object_id": UOID,
        "principal.upn": "dana@contoso.com", "principal.tenant_id": T, "principal.kind": "user",
        "vault.resource_id": KV, "operation": None, "correlation_id": "6f5e4d3c-2b1a-4c0d-9e8f-7a6b5c4d3e2f"}]),
    "logs_query_api_azurediagnostics.json": Ok(
        [{"source": "log.query_api", **AD_ROW_403, "alert_id": None}, AD_ROW_401], skipped=1),
    "logs_query_api_legacy_casing.json": Ok([{"source": "log.query_api", **AD_ROW_403}, AD_ROW_401], skipped=1),
    "logs_azkvauditlogs_rows_az_cli.json": Ok([{
        "source": "log.azkv_audit_logs", "status": 403, "principal.object_id": UOID, "principal.kind": "user",
        "operation": "CertificateGet", "access_policy_permission": {"certificates": ["get"]},
        "object": {"kind": "certificates", "name": "tls-frontend", "version": None}, "correlation_id": None}],
        skipped=1),
    "logs_auditevent_eventhub_records.json": Ok([
        {"source": "log.audit_event", "status": 403, "operation": "KeySign", "caller_ip": "198.51.100.200",
         "vault.resource_id": KV.upper(), "cause_hint": "NETWORK_BLOCKED"},
        {"status": 429, "error_code": "TooManyRequests", "cause_hint": "THROTTLED"},
        {"status": 403, "operation": "SecretPurge",
         "object": {"kind": "secrets", "name": "old-api-key", "version": None},
         "access_policy_permission": {"secrets": ["purge"]}, "cause_hint": None}], skipped=1),
    "logs_auditevent_storage_json_lines.json": Ok([{"operation": "KeySign"}, {"status": 429}], skipped=1),
    "error_java_v1_httpresponseexception.txt": Ok([{
        "source": "error.java", "status": 403, "inner_code": "AccessDenied", **APP_PRINCIPAL,
        "vault.name": "kv-payments-prod", "access_policy_permission": {"secrets": ["get"]}}]),
    "error_javascript_resterror.txt": Ok([{
        "source": "error.javascript", "status": 403, "error_code": "Forbidden", **APP_PRINCIPAL,
        "operation": "SecretGet", "object.name": "stripe-key"}]),
    "error_python_legacy_keyvaulterrorexception.txt": Ok([{
        "source": "error.python_legacy", "status": 403, "vault.name": "kv-legacy-app",
        "cause_hint": "PRINCIPAL_NOT_IDENTIFIED"}]),
    "error_python_azure_core_traceback.txt": Ok([{
        "source": "error.python", "status": 403, "error_code": "Forbidden", "inner_code": "AccessDenied",
        **APP_PRINCIPAL, "vault.name": "kv-legacy-app", "access_policy_permission": {"secrets": ["get"]}}]),
    "error_azcli_markdown_escaped.md": Ok([{
        "source": "error.azure_cli", "status": 403, "inner_code": "ForbiddenByRbac", "principal.object_id": UOID,
        "principal.app_id": CLI_APP, "vault.name": "kv-payments-prod", "operation": "SecretGet", "object": SECRET_DB}]),
    "error_azcli_crlf.txt": Ok([{"status": 403, "operation": "SecretSet", "object.name": "adapplicationsecret",
                                 "principal.object_id": "9e9e51c8-f9f2-44bd-82e8-adcbed56ce1d"}]),
    "error_azcli_blank_line_separated.txt": Ok([{
        "status": 403, "operation": "SecretSet", "vault.name": "ashisa30058-kv",
        "principal.tenant_id": "16b3c013-d300-468d-ac64-7eda0820b6d3"}]),
    "error_dotnet_crlf_message_then_content.txt": Ok([{
        "source": "error.dotnet", "status": 403, "inner_code": "ForbiddenByRbac", **APP_PRINCIPAL,
        "operation": "KeyDecrypt", "object.name": "cmk-app"}]),
    "error_go_azcore_with_request_line.txt": Ok([{
        "source": "error.go", "status": 403, "operation": "SecretGet", "object": SECRET_DB, **APP_PRINCIPAL}]),
    "error_body_truncated.json": Ok([{
        "source": "error.rest", "status": 403, "error_code": "Forbidden", **APP_PRINCIPAL, "operation": "KeySign",
        "object": None, "vault.name": None}]),
    "error_log_lines_embedded_bodies.txt": Ok([
        {"source": "error.log_line", "status": 403, "inner_code": "ForbiddenByFirewall", "caller_ip": "198.51.100.200",
         "cause_hint": "NETWORK_BLOCKED", "vault.name": "kv-payments-prod"},
        {"source": "error.log_line", "status": 429, "error_code": "Throttled", "cause_hint": "THROTTLED"}]),
    "error_body_utf16_powershell.json": Ok([{"status": 401, "cause_hint": "AUTH_FAILED"}]),
    "error_body_in_code_fence.md": Ok([{
        "status": 403, "operation": "KeySign", "cause_hint": "KEY_OPERATION_NOT_PERMITTED"}]),
    "error_body_inner_error_camelcase.json": Ok([{
        "inner_code": "ForbiddenByRbac", "operation": "KeyWrap",
        "data_action": "Microsoft.KeyVault/vaults/keys/wrap/action",
        "object.name": "cmk-sql"}]),
    "error_body_masked_ids.json": Ok([{
        "principal.object_id": None, "principal.app_id": None, "principal.tenant_id": None, "vault.name": None,
        "access_policy_permission": {"keys": ["sign"]}, "operation": "KeySign",
        "cause_hint": "PRINCIPAL_NOT_IDENTIFIED"}]),
    "error_body_secret_disabled.json": Ok([{
        "status": 403, "cause_hint": "OBJECT_DISABLED", "object.kind": "secrets",
        "access_policy_permission": {"secrets": ["get"]}}]),
    "error_body_public_network_disabled.json": Ok([{
        "inner_code": "ForbiddenByConnection", "cause_hint": "NETWORK_BLOCKED", **APP_PRINCIPAL}]),
    "runbook_request.json": Ok([{
        "source": "runbook", "status": None, "principal.object_id": OID, "vault.resource_id": KV,
        "vault.name": "kv-payments-prod", "operation": "SecretGet", "object": SECRET_DB,
        "access_policy_permission": {"secrets": ["get"]}}]),
    "runbook_request_unknown_operation.json": Bad("operation 'ReadSecret' is not a Key Vault operation name"),
}


def test_every_variant_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in VARIANTS.iterdir() if p.is_file())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variant(name: str) -> None:
    # given a variant, when parsed, then the outcome matches its row
    check(name, (VARIANTS / name).read_bytes(), EXPECTED[name])
