"""Write the bundled demo tenant (remediate/demo/tenant.json) and its batch of denials (remediate/demo/inputs/).

Run by hand; the output is committed. Ids are UUID5s of readable names so the files stay reviewable.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "remediate" / "demo"
NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")


def gid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


TENANT = gid("tenant")
SUB = gid("subscription-prod")
OTHER_SUB = gid("subscription-unknown")
RG = f"/subscriptions/{SUB}/resourceGroups"
ROLE = {  # built-in role GUIDs (from Microsoft's role definitions)
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "Key Vault Crypto User": "12338af0-0e69-4776-bea7-57ae8d297424",
}

P = {n: gid(n) for n in ["app-orders", "app-billing", "alice", "app-reporting", "app-batch", "app-partner",
                         "bob", "portal-app", "app-signer", "mi-web", "app-audit", "grp-payments-readers",
                         "app-legacy"]}


def vault(name: str, rg: str, rbac: bool | None, policies: list[dict[str, object]] | None = None, *,
          network: dict[str, object] | None = None, public: str = "Enabled") -> dict[str, object]:
    props: dict[str, object] = {"tenantId": TENANT, "sku": {"family": "A", "name": "standard"},
                                "accessPolicies": policies or [], "vaultUri": f"https://{name}.vault.azure.net/",
                                "networkAcls": network or {"defaultAction": "Allow", "bypass": "AzureServices",
                                                           "ipRules": [], "virtualNetworkRules": []},
                                "publicNetworkAccess": public, "enableSoftDelete": True}
    if rbac is not None:
        props["enableRbacAuthorization"] = rbac
    return {"id": f"{RG}/{rg}/providers/Microsoft.KeyVault/vaults/{name}", "name": name,
            "type": "Microsoft.KeyVault/vaults", "location": "westeurope", "properties": props}


def policy(oid: str, app: str | None = None, **perms: list[str]) -> dict[str, object]:
    entry: dict[str, object] = {"tenantId": TENANT, "objectId": oid,
                                "permissions": {k: perms.get(k, []) for k in ("keys", "secrets", "certificates")}}
    if app:
        entry["applicationId"] = app
    return entry


def assignment(name: str, scope: str, role: str, principal: str, ptype: str, *,
               condition: str | None = None) -> dict[str, object]:
    aid = gid("ra-" + name)
    return {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{aid}", "name": aid,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"scope": scope,
                           "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/"
                                               f"roleDefinitions/{ROLE[role]}",
                           "principalId": principal, "principalType": ptype, "condition": condition,
                           "conditionVersion": "2.0" if condition else None,
                           "createdOn": "2026-11-20T10:00:00Z"}}


PAY = vault("kv-payments", "rg-payments", True)
LEGACY = vault("kv-legacy", "rg-legacy", False, [
    policy(P["alice"], secrets=["get", "list"]),
    policy(P["app-legacy"], keys=["get"], secrets=["get"]),
])
EDGE = vault("kv-edge", "rg-edge", True, network={
    "defaultAction": "Deny", "bypass": "None", "ipRules": [{"value": "198.51.100.0/24"}], "virtualNetworkRules": []})
DEFAULT = vault("kv-default", "rg-legacy", None, [
    policy(P["bob"], P["portal-app"], secrets=["get"]),
])
SHARED = vault("kv-shared", "rg-shared", True)

CONDITION = ("((!(ActionMatches{'Microsoft.KeyVault/vaults/secrets/getSecret/action'})) OR "
             "(@Resource[Microsoft.KeyVault/vaults/secrets:name] StringStartsWith 'batch-'))")

TENANT_DOC = {
    "tenant_id": TENANT,
    "subscriptions": [SUB],
    "management_groups": [{"id": "/providers/Microsoft.Management/managementGroups/contoso-root",
                           "subscriptions": [SUB]}],
    "vaults": [PAY, LEGACY, EDGE, DEFAULT, SHARED],
    "role_assignments": [
        assignment("billing-readers", str(PAY["id"]), "Key Vault Secrets User", P["grp-payments-readers"], "Group"),
        assignment("reporting-on-legacy", str(LEGACY["id"]), "Key Vault Secrets User", P["app-reporting"],
                   "ServicePrincipal"),
        assignment("batch-conditional", str(PAY["id"]), "Key Vault Secrets User", P["app-batch"],
                   "ServicePrincipal", condition=CONDITION),
        assignment("audit-at-mg", "/providers/Microsoft.Management/managementGroups/contoso-root",
                   "Key Vault Reader", P["app-audit"], "ServicePrincipal"),
        assignment("partner-on-shared", str(SHARED["id"]), "Key Vault Secrets User", P["app-partner"],
                   "ServicePrincipal"),
    ],
    "role_definitions": [],
    "deny_assignments": [{
        "id": f"{SHARED['id']}/providers/Microsoft.Authorization/denyAssignments/{gid('deny-partner')}",
        "name": gid("deny-partner"), "type": "Microsoft.Authorization/denyAssignments",
        "properties": {"denyAssignmentName": "managed-app-lockdown", "description": "Managed application lock",
                       "permissions": [{"actions": [], "notActions": [],
                                        "dataActions": ["Microsoft.KeyVault/vaults/secrets/*"],
                                        "notDataActions": []}],
                       "scope": SHARED["id"], "doNotApplyToChildScopes": False,
                       "principals": [{"id": "00000000-0000-0000-0000-000000000000", "type": "SystemDefined"}],
                       "excludePrincipals": [{"id": P["app-orders"], "type": "ServicePrincipal"}],
                       "isSystemProtected": True}}],
    "principals": [
        {"id": P["app-orders"], "type": "ServicePrincipal", "display_name": "app-orders (managed identity)",
         "app_id": gid("appid-orders"), "member_of": []},
        {"id": P["app-billing"], "type": "ServicePrincipal", "display_name": "app-billing",
         "app_id": gid("appid-billing"), "member_of": [P["grp-payments-readers"]]},
        {"id": P["alice"], "type": "User", "display_name": "Alice Doe", "member_of": []},
        {"id": P["app-reporting"], "type": "ServicePrincipal", "display_name": "app-reporting",
         "app_id": gid("appid-reporting"), "member_of": []},
        {"id": P["app-batch"], "type": "ServicePrincipal", "display_name": "app-batch",
         "app_id": gid("appid-batch"), "member_of": []},
        {"id": P["app-partner"], "type": "ServicePrincipal", "display_name": "app-partner",
         "app_id": gid("appid-partner"), "member_of": []},
        {"id": P["bob"], "type": "User", "display_name": "Bob Roe", "member_of": []},
        {"id": P["app-signer"], "type": "ServicePrincipal", "display_name": "app-signer",
         "app_id": gid("appid-signer"), "member_of": []},
        {"id": P["mi-web"], "type": "ServicePrincipal", "display_name": "mi-web (managed identity)",
         "app_id": gid("appid-web"), "member_of": []},
        {"id": P["app-audit"], "type": "ServicePrincipal", "display_name": "app-audit",
         "app_id": gid("appid-audit"), "member_of": []},
        {"id": P["app-legacy"], "type": "ServicePrincipal", "display_name": "app-legacy",
         "app_id": gid("appid-legacy"), "member_of": []},
        {"id": P["grp-payments-readers"], "type": "Group", "display_name": "grp-payments-readers", "member_of": []},
    ],
    "log_rows": [],
}


def caller(name: str) -> str:
    return f"appid={gid('appid-' + name.removeprefix('app-').removeprefix('mi-'))};oid={P[name]};" \
           f"iss=https://sts.windows.net/{TENANT}/"


CALLER_IP = "203.0.113.7"   # every demo denial comes from this documentation address (RFC 5737)


@dataclass(frozen=True)
class Caller:
    """Who was denied, as the audit record's identity claim names them (a user when ``upn`` is set)."""
    oid: str
    appid: str | None = None
    upn: str | None = None


def audit(op: str, vault_doc: dict[str, object], status: int, caller: Caller, *, path: str = "",
          when: str = "2026-11-27T09:00:00Z") -> dict[str, object]:
    """A raw AuditEvent record as diagnostic settings write it (storage account / Event Hub)."""
    name, oid = str(vault_doc["name"]), caller.oid
    claim: dict[str, object] = {"oid": oid, "appid": caller.appid or gid("appid-x"), "tid": TENANT}
    if caller.upn:
        claim.update({"upn": caller.upn, "scp": "user_impersonation", "idtyp": "user"})
    else:
        claim["idtyp"] = "app"
    sig = {401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests"}[status]
    return {"time": when, "category": "AuditEvent", "operationName": op, "resultType": "Success",
            "resultSignature": sig, "resultDescription": "", "correlationId": gid(f"corr-{op}-{oid}-{path}"),
            "callerIpAddress": CALLER_IP, "identity": {"claim": claim},
            "properties": {"id": f"https://{name}.vault.azure.net{path}", "httpStatusCode": status,
                           "requestUri": f"https://{name}.vault.azure.net{path}?api-version=7.4",
                           "clientInfo": "azsdk-python-keyvault-secrets/4.8.0"},
            "resourceId": str(vault_doc["id"]).upper(), "operationVersion": "7.4", "durationMs": "12"}


RECORDS = {"records": [
    # MISSING_ROLE_ASSIGNMENT: a managed identity reads a secret on an RBAC vault with no role (three times).
    *[audit("SecretGet", PAY, 403, Caller(P["app-orders"], gid("appid-orders")), path="/secrets/db-password",
            when=f"2026-11-27T09:00:0{i}Z") for i in range(3)],
    # ALREADY_GRANTED: app-billing is in a group that holds Key Vault Secrets User (propagation delay).
    audit("SecretGet", PAY, 403, Caller(P["app-billing"], gid("appid-billing")), path="/secrets/stripe-key"),
    # MISSING_ACCESS_POLICY: alice may get/list but not set on the access-policy vault.
    audit("SecretSet", LEGACY, 403, Caller(P["alice"], gid("appid-cli"), upn="alice@contoso.example"),
          path="/secrets/feature-flags"),
    # WRONG_PERMISSION_MODEL: app-reporting holds an RBAC role on a vault that uses access policies.
    audit("SecretGet", LEGACY, 403, Caller(P["app-reporting"], gid("appid-reporting")), path="/secrets/report-db"),
    # CONDITION_NOT_MET: app-batch's role is conditioned on secrets named batch-*.
    audit("SecretGet", PAY, 403, Caller(P["app-batch"], gid("appid-batch")), path="/secrets/db-password"),
    # DENY_ASSIGNMENT: a managed application's deny assignment covers kv-shared for everyone but app-orders.
    audit("SecretGet", SHARED, 403, Caller(P["app-partner"], gid("appid-partner")), path="/secrets/partner-token"),
    # COMPOUND_IDENTITY_REQUIRED: bob's only entry on the default-model vault is bound to portal-app.
    audit("SecretGet", DEFAULT, 403, Caller(P["bob"], gid("appid-cli"), upn="bob@contoso.example"),
          path="/secrets/portal-config"),
    # ALREADY_GRANTED at management-group scope: app-audit holds Key Vault Reader on the root group.
    audit("KeyList", PAY, 403, Caller(P["app-audit"], gid("appid-audit")), path="/keys"),
    # AUTH_CHALLENGE: the normal first-call 401.
    {**audit("Authentication", PAY, 401, Caller(P["app-orders"]), path="/secrets/"), "identity": {}},
]}

ERRORS = "\n\n".join([
    # MISSING_ROLE_ASSIGNMENT with a privileged-looking key operation: sign needs Key Vault Crypto User (tier 2).
    "azure.core.exceptions.HttpResponseError: (Forbidden) Caller is not authorized to perform action on resource.\n"
    "If role assignments, deny assignments or role definitions were changed recently, please observe propagation "
    "time.\n"
    f"Caller: {caller('app-signer')}\n"
    "Action: 'Microsoft.KeyVault/vaults/keys/sign/action'\n"
    f"Resource: '{str(PAY['id']).lower()}/keys/release-signing'\n"
    "Assignment: (not found)\nDenyAssignmentId: null\nDecisionReason: 'DeniedWithNoValidRBAC' \n"
    "Vault: kv-payments;location=westeurope\n"
    "Code: Forbidden\nMessage: Caller is not authorized to perform action on resource.\n"
    "Inner error: {\n    \"code\": \"ForbiddenByRbac\"\n}",
])

FIREWALL = {"error": {"code": "Forbidden", "message":
                      "Client address is not authorized and caller is not a trusted service.\r\n"
                      "Client address: 20.126.176.160\r\n"
                      f"Caller: {caller('mi-web')}\r\nVault: kv-edge;location=westeurope",
                      "innererror": {"code": "ForbiddenByFirewall"}}}
THROTTLED = {"error": {"code": "Throttled", "message": "Request was not processed because too many requests were "
                       "received. Reason: VaultRequestTypeLimitReached"}}
KEY_OP = ("Azure.RequestFailedException : Service request failed.\nStatus: 403 (Forbidden)\n\nContent:\n"
          '{"error":{"code":"Forbidden","message":"Operation decrypt is not permitted on this key.",'
          '"innererror":{"code":"KeyOperationForbidden"}}}\n')
AUTH_FAILED = ("--------------------------------------------------------------------------------\n"
               "RESPONSE 401: 401 Unauthorized\nERROR CODE: Unauthorized\n"
               "--------------------------------------------------------------------------------\n"
               '{\n  "error": {\n    "code": "Unauthorized",\n    "message": "AKV10032: Invalid issuer. Expected one '
               f'of https://sts.windows.net/{TENANT}/, found https://sts.windows.net/{gid("other-tenant")}/."\n'
               "  }\n}\n")
DISABLED = {"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.",
                      "innererror": {"code": "SecretDisabled"}}}
MISSING_VAULT = {"error": {"code": "Forbidden", "message":
                           f"The user, group or application '{caller('app-legacy')}' does not have secrets get "
                           "permission on key vault 'kv-elsewhere;location=northeurope'. For help resolving this "
                           "issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                           "innererror": {"code": "AccessDenied"}}}

METRIC_ALERT = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {
        "essentials": {
            "alertId": f"/subscriptions/{SUB}/providers/Microsoft.AlertsManagement/alerts/{gid('alert-metric')}",
            "alertRule": "kv-payments-403s", "severity": "Sev2", "signalType": "Metric",
            "monitorCondition": "Fired", "monitoringService": "Platform",
            "alertTargetIDs": [str(PAY["id"]).lower()], "configurationItems": ["kv-payments"],
            "originAlertId": gid("origin-metric"), "firedDateTime": "2026-11-27T09:05:00Z",
            "description": "Key Vault 403s", "essentialsVersion": "1.0", "alertContextVersion": "1.0"},
        "alertContext": {
            "properties": None, "conditionType": "SingleResourceMultipleMetricCriteria",
            "condition": {"windowSize": "PT5M", "allOf": [{
                "metricName": "ServiceApiResult", "metricNamespace": "Microsoft.KeyVault/vaults",
                "operator": "GreaterThan", "threshold": "0", "timeAggregation": "Count",
                "dimensions": [{"name": "ResourceId", "value": str(PAY["id"]).lower()},
                               {"name": "StatusCode", "value": "403"},
                               {"name": "ActivityName", "value": "SecretGet"}],
                "metricValue": 12.0}],
                "windowStartTime": "2026-11-27T09:00:00Z", "windowEndTime": "2026-11-27T09:05:00Z"}}}}

LOG_ALERT_V2 = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {
        "essentials": {
            "alertId": f"/subscriptions/{SUB}/providers/Microsoft.AlertsManagement/alerts/{gid('alert-log')}",
            "alertRule": "kv-denials", "severity": "Sev2", "signalType": "Log", "monitorCondition": "Fired",
            "monitoringService": "Log Alerts V2",
            "alertTargetIDs": [f"{RG}/rg-ops/providers/microsoft.operationalinsights/workspaces/law-ops"],
            "configurationItems": ["kv-payments"], "originAlertId": gid("origin-log"),
            "firedDateTime": "2026-11-27T09:10:00Z", "description": "Key Vault denials",
            "essentialsVersion": "1.0", "alertContextVersion": "1.0"},
        "alertContext": {
            "properties": {}, "conditionType": "LogQueryCriteria",
            "condition": {"windowSize": "PT15M", "allOf": [{
                "searchQuery": "AZKVAuditLogs | where HttpStatusCode in (403, 429)",
                "metricMeasureColumn": None, "targetResourceTypes": "['Microsoft.OperationalInsights/workspaces']",
                "operator": "GreaterThan", "threshold": "0", "timeAggregation": "Count",
                "dimensions": [
                    {"name": "_ResourceId", "value": str(PAY["id"]).lower()},
                    {"name": "OperationName", "value": "KeySign"},
                    {"name": "HttpStatusCode", "value": "403"},
                    {"name": "identity_claim_oid_g", "value": P["app-orders"]},
                    {"name": "identity_claim_appid_g", "value": gid("appid-orders")},
                    {"name": "identity_claim_idtyp_s", "value": "app"},
                    {"name": "id_s", "value": "https://kv-payments.vault.azure.net/keys/orders-signing"}],
                "metricValue": 4.0, "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1},
            }], "windowStartTime": "2026-11-27T08:55:00Z", "windowEndTime": "2026-11-27T09:10:00Z"}}}}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = OUT / "inputs"
    inputs.mkdir(exist_ok=True)
    (OUT / "tenant.json").write_text(json.dumps(TENANT_DOC, indent=1) + "\n")
    files: dict[str, str] = {
        "01_audit_events.json": json.dumps(RECORDS, indent=1),
        "02_python_sdk_error.txt": ERRORS,
        "03_firewall_body.json": json.dumps(FIREWALL),
        "04_throttled_body.json": json.dumps(THROTTLED),
        "05_dotnet_key_operation.txt": KEY_OP,
        "06_go_auth_failed.txt": AUTH_FAILED,
        "07_disabled_secret_body.json": json.dumps(DISABLED),
        "08_vault_elsewhere_body.json": json.dumps(MISSING_VAULT),
        "09_metric_alert.json": json.dumps(METRIC_ALERT, indent=1),
        "10_log_alert_v2.json": json.dumps(LOG_ALERT_V2, indent=1),
    }
    for old in inputs.iterdir():
        old.unlink()
    for name, text in files.items():
        (inputs / name).write_text(text + ("" if text.endswith("\n") else "\n"))
    print(f"wrote tenant.json and {len(files)} inputs to {OUT}")


if __name__ == "__main__":
    main()
