"""infra/: every Bicep file parses (pycep-parser) and the deployment keeps its least-privilege promises.

Bicep cannot be compiled here, so these tests read the parsed templates: what is deployed, what is conditional on
``applyMode``, and what the ABAC condition on Role Based Access Control Administrator lets the identity assign.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from remediate.catalog import builtin_role, builtin_roles

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KV_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
# Never anywhere in infra/: roles that could grant anything, or change a vault's permission model.
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f25e0fa2-a7c8-4377-a976-54943a77a395": "Key Vault Contributor",
    "8b54135c-b56d-4d72-a534-26097cfdc8d8": "Key Vault Data Access Administrator",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@cache
def tree(rel: str) -> dict[str, Any]:
    parsed: dict[str, Any] = BicepParser().parse(text=(INFRA / rel).read_text(encoding="utf-8"))
    return parsed


def body(resource: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(condition, config) of a resource or module, whether or not it is conditional or looped."""
    config = resource["config"]
    if "config" in config and ("condition" in config or "loop_type" in config):
        return config.get("condition"), config["config"]
    return None, config


def resources_of_type(rel: str, rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tree(rel).get("resources", {}).items() if v["type"].lower() == rtype.lower()}


def role_var(rel: str, resource: dict[str, Any]) -> str:
    """The role definition GUID of a role assignment whose roleDefinitionId is subscriptionResourceId(..., var)."""
    _, cfg = body(resource)
    fn = cfg["properties"]["roleDefinitionId"]["function"]
    assert fn["type"] == "subscription_resource_id"
    name = fn["parameters"]["resource_name_1"]
    variables = tree(rel).get("variables", {})
    if name in variables:
        value: str = variables[name]["value"]
        return value
    return str(name)


# --- parsing -------------------------------------------------------------------------------------------------------


def test_the_deployment_and_its_modules_exist() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert "main.bicep" in names
    assert {p for p in names if p.startswith("modules/")}, "modules/*.bicep"
    for module in tree("main.bicep")["modules"].values():
        assert (INFRA / module["detail"]["path"]).is_file(), module["detail"]["path"]


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = BicepParser().parse(text=path.read_text(encoding="utf-8"))
    assert parsed.get("resources") or parsed.get("modules"), f"{path}: nothing deployed"


def test_check_script_is_wired_into_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "infra/check.sh" in makefile
    script = (INFRA / "check.sh").read_text()
    assert "--framework bicep" in script and "--skip-download" in script
    assert "parsing_errors" in script, "checkov exits 0 on parse errors: the script must read the count"
    assert ".tools/checkov-venv" in script and "checkov==" in script


# --- least privilege -----------------------------------------------------------------------------------------------


def test_no_broad_or_permission_model_role_anywhere() -> None:
    for path in BICEP_FILES:
        text = path.read_text(encoding="utf-8").lower()
        for guid, name in FORBIDDEN_ROLES.items():
            assert guid not in text, f"{path.name} mentions {name}"


def test_every_role_guid_in_infra_is_known_and_expected() -> None:
    allowed_outside_kv = {READER, LOG_ANALYTICS_READER, RBAC_ADMINISTRATOR, STORAGE_QUEUE_DATA_CONTRIBUTOR,
                          STORAGE_TABLE_DATA_CONTRIBUTOR,
                          "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner (host storage)
                          "3913510d-42f4-4e42-8a64-420c390055eb"}  # Monitoring Metrics Publisher (App Insights)
    kv_data_roles = {r.name for r in builtin_roles() if r.role_name.startswith("Key Vault") and r.data_actions}
    for path in BICEP_FILES:
        for guid in {g.lower() for g in GUID.findall(path.read_text(encoding="utf-8"))}:
            assert guid in allowed_outside_kv or guid in kv_data_roles, f"{path.name}: unexpected GUID {guid}"


def test_reader_log_analytics_reader_queue_and_table_roles_are_assigned() -> None:
    sub = resources_of_type("modules/target-subscription-roles.bicep", "Microsoft.Authorization/roleAssignments")
    rg = resources_of_type("modules/target-resourcegroup-roles.bicep", "Microsoft.Authorization/roleAssignments")
    for rel, assignments in (("modules/target-subscription-roles.bicep", sub),
                             ("modules/target-resourcegroup-roles.bicep", rg)):
        unconditional = [a for a in assignments.values() if body(a)[0] is None]
        assert [role_var(rel, a) for a in unconditional] == [READER], rel
    ws = resources_of_type("modules/workspace-reader.bicep", "Microsoft.Authorization/roleAssignments")
    assert [role_var("modules/workspace-reader.bicep", a) for a in ws.values()] == [LOG_ANALYTICS_READER]
    app = resources_of_type("modules/app-roles.bicep", "Microsoft.Authorization/roleAssignments")
    app_roles = {role_var("modules/app-roles.bicep", a) for a in app.values()}
    assert {STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_TABLE_DATA_CONTRIBUTOR} <= app_roles
    for rel in ("modules/target-subscription-roles.bicep", "modules/target-resourcegroup-roles.bicep",
                "modules/workspace-reader.bicep", "modules/app-roles.bicep"):
        for a in resources_of_type(rel, "Microsoft.Authorization/roleAssignments").values():
            props = body(a)[1]["properties"]
            assert props["principalType"] == "ServicePrincipal", rel
            assert props["principalId"] == "principalId", rel


@pytest.mark.parametrize("rel", ["modules/target-subscription-roles.bicep", "modules/target-resourcegroup-roles.bicep"])
def test_apply_mode_roles_are_conditional_and_the_rbac_admin_has_the_condition(rel: str) -> None:
    assignments = resources_of_type(rel, "Microsoft.Authorization/roleAssignments")
    conditional = {k: a for k, a in assignments.items() if body(a)[0] is not None}
    assert len(conditional) == 2, "RBAC administrator and access-policy writer, both apply-mode only"
    for a in conditional.values():
        assert body(a)[0] == "applyMode"
    admin = [a for a in conditional.values() if role_var(rel, a) == RBAC_ADMINISTRATOR]
    assert len(admin) == 1
    props = body(admin[0])[1]["properties"]
    assert props["condition"] == "rbacAdminCondition" and props["conditionVersion"] == "2.0"
    writer = next(a for a in conditional.values() if a is not admin[0])
    assert body(writer)[1]["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"] \
        == "accessPolicyRoleName"


def test_every_target_roles_module_gets_apply_mode_and_the_condition() -> None:
    modules = tree("main.bicep")["modules"]
    targets = [m for m in modules.values() if m["detail"]["path"].startswith("modules/target-")]
    assert len(targets) == 2
    for m in targets:
        params = body(m)[1]["params"]
        assert params["applyMode"] == "applyMode"
        assert params["rbacAdminCondition"] == "rbacAdminCondition"
    access_role = next(m for m in modules.values() if m["detail"]["path"] == "modules/accesspolicy-role.bicep")
    assert body(access_role)[0] == "applyMode"


def rendered_condition() -> str:
    """The ABAC condition as ARM receives it, for the default grantable roles."""
    main = tree("main.bicep")
    grantable = main["parameters"]["grantableRoleIds"]["default"]
    joiner = main["variables"]["grantableRoleList"]["value"]["function"]
    assert joiner["type"] == "join" and joiner["parameters"]["delimiter"] == ", "
    raw: str = main["variables"]["rbacAdminCondition"]["value"]
    return raw.replace("${grantableRoleList}", ", ".join(grantable)).replace("\\'", "'")


def test_abac_condition_allows_only_key_vault_data_roles_for_service_principals() -> None:
    condition = rendered_condition()
    # Both actions are constrained: writes by the request's attributes, deletes by the existing assignment's.
    assert "!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})" in condition
    assert "!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})" in condition
    role_sets = re.findall(r"@(Request|Resource)\[Microsoft\.Authorization/roleAssignments:RoleDefinitionId\] "
                           r"ForAnyOfAnyValues:GuidEquals \{([^}]*)\}", condition)
    assert [source for source, _ in role_sets] == ["Request", "Resource"]
    type_sets = re.findall(r"@(Request|Resource)\[Microsoft\.Authorization/roleAssignments:PrincipalType\] "
                           r"ForAnyOfAnyValues:StringEqualsIgnoreCase \{([^}]*)\}", condition)
    assert type_sets == [("Request", "'ServicePrincipal'"), ("Resource", "'ServicePrincipal'")]
    for _, ids in role_sets:
        guids = [g.strip() for g in ids.split(",")]
        assert guids and all(GUID.fullmatch(g) for g in guids)
        for g in guids:
            role = builtin_role(g)
            assert role is not None, g
            assert role.role_name.startswith("Key Vault") and role.data_actions, role.role_name
            assert not any(a.startswith("Microsoft.Authorization/") and not a.endswith("/read")
                           for a in role.actions), f"{role.role_name} could manage access"
        assert KV_ADMINISTRATOR not in guids, "privileged only when the operator adds it"
    # Balanced parentheses: a malformed condition is rejected by ARM at deployment time.
    depth = 0
    for ch in condition:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0


def test_grantable_roles_are_limited_to_key_vault_data_roles_by_the_template() -> None:
    param = tree("main.bicep")["parameters"]["grantableRoleIds"]
    allowed = next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")
    for g in allowed:
        role = builtin_role(g)
        assert role is not None and role.role_name.startswith("Key Vault") and role.data_actions, g
    assert set(param["default"]) <= set(allowed)
    assert KV_ADMINISTRATOR in allowed and KV_ADMINISTRATOR not in param["default"]


def test_access_policy_role_has_exactly_read_and_access_policy_write() -> None:
    roles = resources_of_type("modules/accesspolicy-role.bicep", "Microsoft.Authorization/roleDefinitions")
    assert len(roles) == 1
    perms = body(next(iter(roles.values())))[1]["properties"]["permissions"]
    assert perms == [{
        "actions": ["Microsoft.KeyVault/vaults/read", "Microsoft.KeyVault/vaults/accessPolicies/write"],
        "notActions": [], "dataActions": [], "notDataActions": [],
    }]


def test_apply_mode_is_off_by_default() -> None:
    assert tree("main.bicep")["parameters"]["applyMode"]["default"] is False


# --- storage, function app, monitoring -----------------------------------------------------------------------------


def test_storage_is_identity_only_tls12_and_private_blobs() -> None:
    accounts = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts")
    assert len(accounts) == 1
    props = body(next(iter(accounts.values())))[1]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    containers = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert all(body(c)[1]["properties"]["publicAccess"] == "None" for c in containers.values())


def test_denials_queue_and_the_three_tables_exist() -> None:
    queues = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert {body(q)[1]["name"] for q in queues.values()} == {"denials"}
    tables = resources_of_type("modules/storage.bicep", "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert {body(t)[1]["name"] for t in tables.values()} == {"claims", "findings", "grants"}


def test_function_app_is_flex_consumption_python_311_with_the_user_assigned_identity() -> None:
    rel = "modules/functionapp.bicep"
    plan = body(next(iter(resources_of_type(rel, "Microsoft.Web/serverfarms").values())))[1]
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = body(next(iter(resources_of_type(rel, "Microsoft.Web/sites").values())))[1]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2" and props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    auth = config["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    settings = {s["name"]: s["value"] for s in tree(rel)["variables"]["platformAppSettings"]["value"]}
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert "AzureWebJobsStorage__accountName" in settings
    assert "AzureWebJobsStorage" not in settings, "no connection string (shared key) for host storage"
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings), "not on Flex"


def test_app_settings_cover_the_function_contract() -> None:
    names = {s["name"] for s in tree("main.bicep")["variables"]["remediateAppSettings"]["value"]}
    assert names == {"AZURE_SUBSCRIPTION_IDS", "KV_REMEDIATE_POLICY", "KV_REMEDIATE_DEDUPE_WINDOW",
                     "KV_REMEDIATE_NOTIFY_URL", "KV_REMEDIATE_WEBHOOK_AUDIENCE", "KV_REMEDIATE_WEBHOOK_TENANT"}


def test_app_insights_uses_a_workspace_and_entra_only() -> None:
    comps = resources_of_type("modules/monitoring.bicep", "Microsoft.Insights/components")
    props = body(next(iter(comps.values())))[1]["properties"]
    assert props["DisableLocalAuth"] is True and props["WorkspaceResourceId"]


def test_key_vault_diagnostics_send_audit_events_to_the_resource_specific_table() -> None:
    diag = resources_of_type("modules/kv-diagnostics.bicep", "Microsoft.Insights/diagnosticSettings")
    props = body(next(iter(diag.values())))[1]["properties"]
    assert props["logAnalyticsDestinationType"] == "Dedicated"
    assert props["logs"] == [{"category": "AuditEvent", "enabled": True}]


# --- alert rule and action group -----------------------------------------------------------------------------------

DIMENSIONS = ["CallerObjectId", "AppId", "ResourceId", "OperationName", "Id", "HttpStatusCode"]


def alert_rule() -> dict[str, Any]:
    rules = resources_of_type("modules/alerting.bicep", "Microsoft.Insights/scheduledQueryRules")
    assert len(rules) == 1
    rule = next(iter(rules.values()))
    assert rule["api_version"] == "2023-03-15-preview"
    return body(rule)[1]


def test_alert_rule_query_covers_403_429_and_401_without_the_challenge() -> None:
    rule = alert_rule()
    assert rule["kind"] == "LogAlert"
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["query"] == "denialQuery"
    query = tree("modules/alerting.bicep")["variables"]["denialQuery"]["value"]
    assert query.lstrip().startswith("AZKVAuditLogs")
    assert "HttpStatusCode in (403, 429)" in query
    assert 'HttpStatusCode == 401 and OperationName != "Authentication"' in query
    by = query.rsplit(" by ", 1)[1]
    keys = [k.split("=")[0].strip() for k in by.split(",")]
    assert keys == DIMENSIONS


def test_alert_rule_splits_by_the_evidence_dimensions_and_calls_the_action_group() -> None:
    props = alert_rule()["properties"]
    criterion = props["criteria"]["allOf"][0]
    assert [d["name"] for d in criterion["dimensions"]] == DIMENSIONS
    assert all(d["operator"] == "Include" and d["values"] == ["*"] for d in criterion["dimensions"])
    assert len(criterion["dimensions"]) <= 6, "log search alerts split by at most six dimensions"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert props["actions"]["actionGroups"]


def test_the_alert_dimensions_are_read_by_the_intake() -> None:
    """A Log Alerts V2 payload carrying this rule's dimensions parses into a complete denial."""
    from remediate.intake import parse_one

    vault = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/"
             "microsoft.keyvault/vaults/kv1")
    values = {"CallerObjectId": "11111111-1111-1111-1111-111111111111",
              "AppId": "22222222-2222-2222-2222-222222222222", "ResourceId": vault, "OperationName": "SecretGet",
              "Id": "https://kv1.vault.azure.net/secrets/db-password", "HttpStatusCode": "403"}
    payload = {"schemaId": "azureMonitorCommonAlertSchema", "data": {
        "essentials": {"alertId": "/subscriptions/00000000-0000-0000-0000-000000000001/providers/"
                                  "Microsoft.AlertsManagement/alerts/33333333-3333-3333-3333-333333333333",
                       "alertRule": "kv-denials", "severity": "Sev2", "signalType": "Log", "monitorCondition": "Fired",
                       "monitoringService": "Log Alerts V2", "alertTargetIDs": [], "configurationItems": [],
                       "firedDateTime": "2026-01-01T00:00:00Z"},
        "alertContext": {"conditionType": "LogQueryCriteria", "condition": {
            "windowSize": "PT5M", "windowStartTime": "2025-12-31T23:55:00Z", "windowEndTime": "2026-01-01T00:00:00Z",
            "allOf": [{"searchQuery": tree("modules/alerting.bicep")["variables"]["denialQuery"]["value"],
                       "timeAggregation": "Count", "operator": "GreaterThan", "threshold": "0", "metricValue": 1,
                       "dimensions": [{"name": k, "value": v} for k, v in values.items()],
                       "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}}]}}}}
    result = parse_one("alert.json", json.dumps(payload).encode())
    assert len(result.denials) == 1
    d = result.denials[0]
    assert d.status == 403 and d.operation == "SecretGet"
    assert d.principal.object_id == values["CallerObjectId"] and d.principal.app_id == values["AppId"]
    assert d.vault.name == "kv1" and (d.vault.resource_id or "").lower() == vault
    assert d.object is not None and d.object.name == "db-password"


def test_action_group_webhook_posts_the_common_schema_to_api_alerts_with_a_function_key() -> None:
    rel = "modules/alerting.bicep"
    groups = resources_of_type(rel, "Microsoft.Insights/actionGroups")
    assert len(groups) == 1
    webhook = tree(rel)["variables"]["webhookBase"]["value"]
    assert webhook["useCommonAlertSchema"] is True
    uri = webhook["serviceUri"]
    assert "/api/alerts?code=" in uri and "listKeys(" in uri and "/host/default" in uri
    assert "functionKeys.default" in uri
    aad = tree(rel)["variables"]["webhookAad"]["value"]["operator"]["operands"]
    assert aad["true_value"]["useAadAuth"] is True and aad["false_value"] == {"useAadAuth": False}


def test_alerting_is_conditional_and_outputs_are_present() -> None:
    main = tree("main.bicep")
    alerting = next(m for m in main["modules"].values() if m["detail"]["path"] == "modules/alerting.bicep")
    assert body(alerting)[0] == "deployAlerting"
    outputs = main["outputs"]
    assert {"functionUrl", "identityPrincipalId", "alertRuleId"} <= set(outputs)
    assert "https://" in outputs["functionUrl"]["value"]


# --- parameters example --------------------------------------------------------------------------------------------


def test_example_parameters_match_main_parameters() -> None:
    example = json.loads((INFRA / "main.parameters.example.json").read_text())
    assert example["$schema"].endswith("deploymentParameters.json#")
    params = tree("main.bicep")["parameters"]
    assert set(example["parameters"]) <= set(params), set(example["parameters"]) - set(params)
