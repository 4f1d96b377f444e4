"""Every published sample (tests/fixtures/samples, copied from ../shared/samples) with its expected outcome.

Given a published sample, when it is parsed alone, then the denials carry exactly the fields written here
(masked or placeholder ids are null), other statuses count as skipped, and non-Key-Vault alerts and reference
documents are refused with an InputError that names the input.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.intake_expect import FIXTURES, Bad, Ok, check

SAMPLES = FIXTURES / "samples"
NOT_KV = "not a Key Vault"
NOT_INPUT = "not JSON and not a recognised error text"
NULL_PRINCIPAL = {"principal.object_id": None, "principal.app_id": None, "principal.tenant_id": None}

EXPECTED: dict[str, Ok | Bad] = {
    # --- alerts: the published payloads are about VMs, storage, workspaces' Heartbeat: not Key Vault ----------
    "alerts/common_alertcontext_activitylog_administrative_payload_samples_md.json":
        Bad("is an alert about Microsoft.Compute/virtualMachines, not a Key Vault", "NOT_KEY_VAULT"),
    "alerts/common_alertcontext_activitylog_policy_payload_samples_md.json":
        Bad("is an alert about Microsoft.Resources/subscriptions, not a Key Vault"),
    "alerts/common_alertcontext_logalerts_v2_payload_samples_md.json": Bad("Heartbeat rows, not a Key Vault"),
    "alerts/common_alertcontext_logsearch_v1_loganalytics_payload_samples_md.json": Bad("Perf rows, not a Key Vault"),
    "alerts/common_alertcontext_metric_dynamic_payload_samples_md.json":
        Bad("microsoft.storage/storageaccounts, not a Key Vault"),
    "alerts/common_alertcontext_metric_static_payload_samples_md.json":
        Bad("Microsoft.Compute/virtualMachines, not a Key Vault"),
    "alerts/common_alertcontext_simple_log_alert_common_schema_md.json": Bad("exceptions rows, not a Key Vault"),
    "alerts/common_schema_essentials_fields_table.md": Bad(NOT_INPUT),
    "alerts/common_schema_full_metric_resolved_payload_samples_md.json":
        Ok([], notes=1, note_contains="resolved"),
    "alerts/common_schema_full_metric_with_alertRuleId_customProperties_common_schema_md.json":
        Ok([], notes=1, note_contains="resolved"),
    "alerts/common_schema_full_testaction_activitylog_payload_samples_md.json":
        Bad("Microsoft.Compute/virtualMachines"),
    "alerts/common_schema_full_testaction_logalert_v1_metric_measurement_payload_samples_md.json":
        Bad("microsoft.operationalinsights/workspaces, Heartbeat rows, not a Key Vault"),
    "alerts/common_schema_full_testaction_logalert_v1_number_of_results_payload_samples_md.json": Bad(NOT_KV),
    "alerts/common_schema_full_testaction_logalert_v2_payload_samples_md.json": Bad("Heartbeat rows"),
    "alerts/common_schema_full_testaction_metric_static_payload_samples_md.json":
        Bad("Microsoft.Storage/storageAccounts"),
    "alerts/legacy_activitylog_alert_administrative_noncommon_md.json": Bad("Microsoft.Compute/virtualMachines"),
    "alerts/legacy_log_alert_v1_metric_measurement_noncommon_md.json": Bad("Heartbeat rows"),
    "alerts/legacy_log_alert_v1_numresults_noncommon_md.json": Bad("Heartbeat rows"),
    "alerts/legacy_metric_alert_AzureMonitorMetricAlert_static_noncommon_md.json":
        Bad("is an alert about Microsoft.Storage/storageAccounts, not a Key Vault"),
    # --- errors ------------------------------------------------------------------------------------------------
    "errors/azcli_403_forbiddenbyrbac_setsecret_saas_accelerator.txt": Ok([{
        "source": "error.azure_core", "status": 403, "error_code": "Forbidden", "inner_code": None,
        "principal.object_id": "9e9e51c8-f9f2-44bd-82e8-adcbed56ce1d",
        "principal.app_id": "b677c290-cf4b-4a8e-a60e-91ba650a4abe",
        "principal.tenant_id": "16b3c013-d300-468d-ac64-7eda0820b6d3", "principal.kind": None,
        "vault.name": "ashisa30058-kv",
        "vault.resource_id": "/subscriptions/37bede89-47b0-42cb-94c0-173753dcad79/resourcegroups/ashisa30058/"
                             "providers/microsoft.keyvault/vaults/ashisa30058-kv",
        "operation": "SecretSet", "data_action": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        "access_policy_permission": {"secrets": ["set"]},
        "object": {"kind": "secrets", "name": "adapplicationsecret", "version": None}, "cause_hint": None}]),
    "errors/docs_kv_common_error_codes_table.md": Bad(NOT_INPUT, "NOT_RECOGNISED"),
    "errors/docs_kv_rest_error_codes_excerpt.md": Bad(NOT_INPUT),
    "errors/kv_401_akv10000_body.json": Ok([{
        "source": "error.rest", "status": 401, "error_code": "Unauthorized",
        "message": "AKV10000: Request is missing a Bearer or PoP token.", "cause_hint": "AUTH_CHALLENGE"}]),
    "errors/kv_401_akv10000_challenge_nock_recording.txt": Ok([{
        "source": "error.log_line", "status": 401, "operation": "KeyListDeleted", "vault.name": None,
        "access_policy_permission": {"keys": ["list"]}, "cause_hint": "AUTH_CHALLENGE"}]),
    "errors/kv_403_accesspolicy_accessdenied_body_aca_blog.json": Ok([{
        "source": "error.rest", "status": 403, "error_code": "Forbidden", "inner_code": "AccessDenied",
        **NULL_PRINCIPAL, "vault.name": "someakv", "vault.resource_id": None, "operation": None,
        "access_policy_permission": {"secrets": ["get"]},
        "data_action": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "cause_hint": "PRINCIPAL_NOT_IDENTIFIED"}]),
    "errors/kv_403_forbiddenbyfirewall_body_appservice_lab.json": Ok([{
        "inner_code": "ForbiddenByFirewall", "principal.object_id": "4a09a335-0716-406d-a12f-9cafadae0325",
        "principal.app_id": "19ee0b80-40d0-4a42-b4ca-b8697c84c6a8",
        "principal.tenant_id": "68c58dc9-c7db-440f-8c32-ac672250d642", "principal.kind": "app",
        "vault.name": "labsvnetappses", "caller_ip": "20.126.176.160", "cause_hint": "NETWORK_BLOCKED"}]),
    "errors/kv_403_forbiddenbypolicy_old_operation_not_allowed_body.json": Ok([{
        "inner_code": "ForbiddenByPolicy", "principal.object_id": "01111cf6-e558-4db5-b03e-b0154730395a",
        "principal.app_id": None, "principal.tenant_id": None, "vault.name": None, "operation": "KeyDecrypt",
        "access_policy_permission": {"keys": ["decrypt"]}, "cause_hint": None}]),
    "errors/kv_403_forbiddenbyrbac_body_aca_blog.json": Ok([{
        "inner_code": "ForbiddenByRbac", **NULL_PRINCIPAL, "vault.name": "someakv", "vault.resource_id": None,
        "operation": "SecretGet", "object.name": "somesecret", "cause_hint": "PRINCIPAL_NOT_IDENTIFIED"}]),
    "errors/kv_404_secretnotfound_body_aca_blog.json": Ok([], skipped=1),
    "errors/kv_429_throttled_body_azuresigntool.json": Ok([{
        "status": 429, "error_code": "Throttled", "cause_hint": "THROTTLED"}]),
    "errors/sdk_dotnet_requestfailedexception_troubleshooting.txt": Ok([
        {"source": "error.dotnet", "status": 401, "cause_hint": "AUTH_FAILED"},
        {"source": "error.dotnet", "status": 403, "inner_code": "KeyOperationForbidden", "operation": "KeyDecrypt",
         "cause_hint": "KEY_OPERATION_NOT_PERMITTED"},
        {"source": "error.dotnet", "status": 403, "inner_code": "AccessDenied",
         "cause_hint": "TRUSTED_SERVICE_DENIED"}]),
    "errors/sdk_go_autorest_403_forbiddenbyrbac_terraform.txt": Ok([{
        "source": "error.go_autorest", "status": 403, "error_code": "Forbidden", "inner_code": "ForbiddenByRbac",
        **NULL_PRINCIPAL, "vault.name": "test-piyush-kv-1011", "vault.resource_id": None, "operation": "SecretGet",
        "object": {"kind": "secrets", "name": None, "version": None}, "cause_hint": "PRINCIPAL_NOT_IDENTIFIED"}]),
    "errors/sdk_go_azcore_responseerror_troubleshooting.txt": Ok([
        {"source": "error.go", "status": 401, "error_code": "Unauthorized", "cause_hint": "AUTH_FAILED"},
        {"source": "error.go", "status": 403, "inner_code": "KeyOperationForbidden",
         "cause_hint": "KEY_OPERATION_NOT_PERMITTED"},
        {"source": "error.go", "status": 403, "inner_code": "AccessDenied", "cause_hint": "TRUSTED_SERVICE_DENIED"}]),
    "errors/sdk_java_v2_httpresponseexception_troubleshooting.txt": Ok([{
        "source": "error.java", "status": 403, "inner_code": "KeyOperationForbidden", "operation": "KeyDecrypt",
        "data_action": "Microsoft.KeyVault/vaults/keys/decrypt/action", "cause_hint": "KEY_OPERATION_NOT_PERMITTED"}]),
    "errors/sdk_python_httpresponseerror_forbiddenbyrbac_blog.txt": Ok([{
        "source": "error.python", "status": 403, "error_code": "Forbidden", "inner_code": "ForbiddenByRbac",
        "message": "Caller is not authorized to perform action on resource."}]),
    "errors/sdk_python_troubleshooting_messages.txt": Ok([
        {"source": "error.text", "status": 401, "cause_hint": "AUTH_FAILED"},
        {"source": "error.text", "status": 403, "operation": "KeyDecrypt", "cause_hint": "KEY_OPERATION_NOT_PERMITTED"},
    ], skipped=2),
    # --- kql: queries, not inputs ------------------------------------------------------------------------------
    "kql/azkvauditlogs_example_queries.kql": Bad(NOT_INPUT),
    "kql/kusto_azurediagnostics_keyvault_docs_queries.kql": Bad(NOT_INPUT),
    "kql/kusto_keyvault_403_alert_queries_community.kql": Bad(NOT_INPUT),
    # --- logs ----------------------------------------------------------------------------------------------------
    "logs/azkvauditlogs_columns_reference.md": Bad(NOT_INPUT),
    "logs/azurediagnostics_keyvault_columns_from_workspace_schema_export.txt": Bad(NOT_INPUT),
    "logs/kv_auditevent_raw_authentication_401_google_secops.json": Ok([{
        "source": "log.audit_event", "status": 401, "operation": "Authentication", "vault.name": "EXAMPLE-VAULT",
        "vault.resource_id": None, "correlation_id": None, "caller_ip": "127.0.0.1",
        "time": "2024-02-01T10:34:54.5732801Z", "cause_hint": "AUTH_CHALLENGE"}]),
    "logs/kv_auditevent_raw_keypurge_403_accesspolicy_sekoia.json": Ok([{
        "source": "log.audit_event", "status": 403, "error_code": "Forbidden", "principal.object_id": None,
        "principal.app_id": "3686488a-04fc-4d8a-b967-61f98ec41efe", "principal.tenant_id": None,
        "principal.upn": "john.doe@dummy.onmicrosoft.com", "principal.kind": "user",
        "vault.name": "TESTPERMISSIONVAULT", "vault.resource_id": None, "operation": "KeyPurge",
        "data_action": "Microsoft.KeyVault/vaults/keys/purge/action", "access_policy_permission": {"keys": ["purge"]},
        "object": {"kind": "keys", "name": "MyFirstKey", "version": None}, "caller_ip": "147.161.0.0",
        "correlation_id": "3cff8050-bd18-4acd-94ba-c6196ffa3ad4", "cause_hint": None}]),
    "logs/kv_auditevent_raw_secretget_403_rbac_full_description_sekoia.json": Ok([{
        "status": 403, "operation": "SecretGet", "principal.object_id": None,
        "principal.app_id": "3686488a-04fc-4d8a-b967-61f98ec41efe", "principal.kind": "user",
        "vault.name": "KEYTESTINT", "object.name": "a", "time": "2024-04-02T08:20:49.2681600Z"}]),
    "logs/kv_auditevent_raw_vaultget_long_claim_uris_sekoia.json": Ok([], skipped=1),
    "logs/kv_auditevent_storage_record_docs_logging_md.json": Ok([], skipped=1),
    "logs/kv_azurediagnostics_secretget_record_google_secops.json": Ok([], skipped=1),
    "logs/kv_metrics_and_azurediagnostics_reference_excerpt.md": Bad(NOT_INPUT),
    "logs/kv_operation_names_table_logging_md.md": Bad(NOT_INPUT),
    "logs/kv_supported_metrics_dimensions_table.md": Bad(NOT_INPUT),
}


def _sample_files() -> list[str]:
    return sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*") if p.is_file() and p.name != "SOURCES.md")


def test_every_published_sample_has_an_expectation() -> None:
    # given the copied sample corpus, then each file has a row in the table (a new sample needs one)
    assert sorted(EXPECTED) == _sample_files()


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_published_sample(rel: str) -> None:
    # given a published sample, when parsed, then the outcome matches its row
    data = (SAMPLES / rel).read_bytes()
    check(Path(rel).name, data, EXPECTED[rel])
