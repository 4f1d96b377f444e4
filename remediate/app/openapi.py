"""The OpenAPI 3 document of the app's routes (served at ``/api/openapi.json``) and its JSON schemas.

The schemas describe spec/cli.md's JSON (the diagnosis is the ``/api/diagnose`` response) and the error body
every route answers with. New fields may be added to responses (``additionalProperties`` stays open).
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..model import Signal


def _s(type_: str, nullable: bool = False, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, **kw}
    if nullable:
        out["nullable"] = True
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR_OR_NULL = _s("string", True)
_VAULT = "[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]"
_SEG = "[A-Za-z0-9._()-]{1,90}"


def _operations() -> list[str]:
    from .. import catalog

    return sorted(op.name for op in catalog.operations())

_PERMS = _s("object", True, additionalProperties=_s("array", items=_s("string")))

SCHEMAS: dict[str, Any] = {
    "Error": _s("object", required=["error"], properties={
        "error": _s("object", required=["code", "message"], properties={
            "code": _s("string", description="stable UPPER_SNAKE code, e.g. BAD_INPUT, NOT_AN_ALERT, UNAUTHORIZED"),
            "message": _s("string", description="what is wrong, naming the input or setting")})}),
    "Accepted": _s("object", required=["accepted"], properties={
        "accepted": _s("integer", minimum=0, description="denials queued for the worker (0 for resolved alerts)")}),
    "Alert": _s("object", description="An Azure Monitor alert: common alert schema (schemaId "
                "azureMonitorCommonAlertSchema) or a legacy metric, log (SearchResult) or activity log webhook.",
                additionalProperties=True, properties={
                    "schemaId": _s("string"), "data": _s("object", additionalProperties=True)}),
    "RunbookRequest": _s("object", description="One denial described by hand (same as the CLI's flags).",
                         required=["principal_id", "vault", "operation"], additionalProperties=False, properties={
                             "principal_id": _s("string", format="uuid", description="object id of the caller"),
                             "vault": {"description": "vault name or resource id", "oneOf": [
                                 _s("string", pattern=f"^{_VAULT}$"),
                                 _s("string", pattern=f"^/subscriptions/{_SEG}/resourceGroups/{_SEG}/providers/"
                                                      f"Microsoft\\.KeyVault/vaults/{_VAULT}$")]},
                             "operation": _s("string", description="Key Vault operation (diagnostic log "
                                             "OperationName)", enum=_operations()),
                             "object": _s("string", description="KIND/NAME, e.g. secrets/db-password",
                                          pattern="^(keys|secrets|certificates|storage)/[A-Za-z0-9-]{1,127}$"),
                             "tenant_id": _s("string", format="uuid")}),
    "Principal": _s("object", properties={
        "object_id": _STR_OR_NULL, "app_id": _STR_OR_NULL, "tenant_id": _STR_OR_NULL, "upn": _STR_OR_NULL,
        "kind": _s("string", True, enum=["app", "user", None])}),
    "Vault": _s("object", properties={"name": _STR_OR_NULL, "resource_id": _STR_OR_NULL}),
    "Object": _s("object", True, required=["kind"], properties={
        "kind": _s("string"), "name": _STR_OR_NULL, "version": _STR_OR_NULL}),
    "Denial": _s("object", required=["source", "status", "principal", "vault", "operation"], properties={
        "source": _s("string"), "status": _s("integer", True), "error_code": _STR_OR_NULL,
        "inner_code": _STR_OR_NULL, "principal": _ref("Principal"), "vault": _ref("Vault"),
        "operation": _STR_OR_NULL, "data_action": _STR_OR_NULL, "access_policy_permission": _PERMS,
        "object": _ref("Object"), "caller_ip": _STR_OR_NULL, "time": _STR_OR_NULL, "correlation_id": _STR_OR_NULL,
        "message": _STR_OR_NULL, "cause_hint": _STR_OR_NULL,
        "signals": _s("array", items=_s("string", enum=sorted(s.value for s in Signal)),
                      description="what the input itself says (decide maps them to cause_hint)"),
        "alert_id": _STR_OR_NULL}),
    "Plan": _s("object", True, required=["kind", "commands"], additionalProperties=True, properties={
        "kind": _s("string", description="role_assignment, access_policy or custom_role"),
        "commands": _s("object", additionalProperties=_s("string"),
                       description="the fix as commands: az (Azure CLI) and bicep")}),
    "Finding": _s("object", required=["cause", "occurrences", "denial", "explanation", "plan", "advice"],
                  additionalProperties=True, properties={
                      "cause": _s("string", description="cause code (causes.md)"),
                      "occurrences": _s("integer", minimum=1), "denial": _ref("Denial"),
                      "permission_model": _s("string", True, enum=["rbac", "access_policy", None]),
                      "required": _s("object", True, properties={
                          "data_actions": _s("array", items=_s("string")), "access_policy": _PERMS}),
                      "explanation": _s("string"), "plan": _ref("Plan"),
                      "advice": _s("array", items=_s("string")),
                      "evidence": _s("object", additionalProperties=True)}),
    "Diagnosis": _s("object", required=["schema", "findings", "stats"], additionalProperties=True, properties={
        "schema": _s("string", enum=["kv-remediate/diagnosis@1"]),
        "findings": _s("array", items=_ref("Finding")),
        "stats": _s("object", required=["arm_requests", "elapsed_ms"], additionalProperties=True, properties={
            "arm_requests": _s("integer", minimum=0), "elapsed_ms": _s("integer", minimum=0)}),
        "notes": _s("array", items=_s("string"))}),
    "Health": _s("object", required=["status", "version", "problems"], properties={
        "status": _s("string", enum=["ok", "degraded"]), "version": _s("string"),
        "problems": _s("array", items=_s("object", required=["setting", "problem"], properties={
            "setting": _s("string"), "problem": _s("string")})),
        "own_identity": _s("object", properties={
            "setting": _s("string"), "set": _s("boolean", description="whether the app's own object id is "
                                               "configured (never the value)"), "refused": _s("string")}),
        "tokens": _s("object", properties={"webhook_token": _s("boolean"), "apply_token": _s("boolean")})}),
}
SCHEMAS["RemediateRequest"] = dict(
    SCHEMAS["RunbookRequest"], description="A runbook request, plus whether to apply what policy allows.",
    properties=dict(SCHEMAS["RunbookRequest"]["properties"], apply=_s("boolean", description="apply (default: "
                                                                      "false, suggest only)")))


RUNBOOK_EXAMPLE = {"principal_id": "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879", "vault": "kv-payments",
                   "operation": "SecretGet", "object": "secrets/db-password"}
ALERT_EXAMPLE = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {"essentials": {"alertId": "/subscriptions/946986aa-ba68-5122-92be-d8e38bdbfa86/providers/"
                                       "Microsoft.AlertsManagement/alerts/cef3d224-bb3c-5f10-b9b9-f1029634e26e",
                            "signalType": "Log", "monitorCondition": "Fired", "monitoringService": "Log Alerts V2",
                            "firedDateTime": "2026-11-27T09:10:00Z", "alertTargetIDs": []},
             "alertContext": {"conditionType": "LogQueryCriteria", "condition": {
                 "windowStartTime": "2026-11-27T08:55:00Z", "windowEndTime": "2026-11-27T09:10:00Z",
                 "allOf": [{"searchQuery": "AZKVAuditLogs | where HttpStatusCode == 403",
                            "dimensions": [
                                {"name": "_ResourceId", "value": "/subscriptions/946986aa-ba68-5122-92be-d8e38bdbfa86"
                                 "/resourcegroups/rg-payments/providers/microsoft.keyvault/vaults/kv-payments"},
                                {"name": "OperationName", "value": "SecretGet"},
                                {"name": "identity_claim_oid_g", "value": "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879"},
                                {"name": "id_s", "value": "https://kv-payments.vault.azure.net/secrets/db-password"},
                            ]}]}}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERR = _ref("Error")
_KEY: list[dict[str, list[str]]] = [{"functionKey": []}, {"functionKeyQuery": []}]
_TOO_LARGE = "over a size cap (body over 4 MiB, more denials per input than KV_REMEDIATE_MAX_DENIALS or more " \
             "distinct principals than KV_REMEDIATE_MAX_PRINCIPALS): nothing was done"


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document (a new dict each call)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "kv-remediate", "version": __version__,
                 "description": "Diagnose denied Azure Key Vault requests and propose the least-privilege fix. "
                                "Every error is {\"error\": {\"code\", \"message\"}}."},
        "paths": {
            "/api/alerts": {"post": {
                "operationId": "alerts", "summary": "Azure Monitor action group webhook",
                "description": "Validates the alert, queues its denials for the worker and answers at once. With "
                               "the secure webhook on, an Entra ID bearer token is required as well: issued to "
                               "Azure Monitor Action Groups (appid 461e8683-5575-4561-ac7f-899cc907d62a) for this "
                               "app, holding the app role ActionGroupsSecureWebhook.",
                "security": [*_KEY, {"functionKey": [], "actionGroupsBearer": []},
                                    {"functionKeyQuery": [], "actionGroupsBearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("Alert"), "example": ALERT_EXAMPLE}}},
                "responses": {"202": _json(_ref("Accepted"), "denials queued"),
                              "400": _json(_ERR, "not an alert about a Key Vault, or unreadable"),
                              "401": _json(_ERR, "missing or wrong function key, or (secure webhook) a missing "
                                                 "or invalid bearer token, or one without the Action Groups app "
                                                 "and role"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "500": _json(_ERR, "the app is misconfigured (health names the setting)"),
                              "503": _json(_ERR, "the queue could not be reached; Azure Monitor retries")}}},
            "/api/diagnose": {"post": {
                "operationId": "diagnose", "summary": "Diagnose a denial (runbooks)",
                "description": "Any input `kv-remediate parse` accepts (alerts, audit log records, Log Analytics "
                               "rows, REST error bodies, SDK or CLI error text) or a runbook request.",
                "security": _KEY,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("RunbookRequest"), "example": RUNBOOK_EXAMPLE},
                    "text/plain": {"schema": _s("string")}}},
                "responses": {"200": _json(_ref("Diagnosis"), "the diagnosis (spec/cli.md)"),
                              "400": _json(_ERR, "unusable input, naming what is wrong"),
                              "401": _json(_ERR, "missing or wrong function key"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "500": _json(_ERR, "the app is misconfigured (health names the setting)"),
                              "503": _json(_ERR, "Azure could not be reached or refused the app's identity")}}},
            "/api/remediate": {"post": {
                "operationId": "remediate", "summary": "Diagnose, then apply what policy allows",
                "description": "Like /api/diagnose. With `\"apply\": true` in a runbook request (or `?apply=true`) "
                               "the plans that every policy rule allows are applied; each finding says `applied`, "
                               "or `refused_by` the rule that refused it. Default: suggest only. Applying needs, "
                               "besides the function key, an Entra ID bearer token for this app's audience "
                               "(KV_REMEDIATE_API_AUDIENCE) holding the app role KvRemediate.Apply: the key alone "
                               "only diagnoses, and apply without a valid token is 401 before anything is read.",
                "security": [*_KEY, {"functionKey": [], "applyBearer": []},
                                    {"functionKeyQuery": [], "applyBearer": []}],
                "parameters": [{"name": "apply", "in": "query", "required": False,
                                "schema": _s("string", enum=["true", "false"])}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("RemediateRequest"),
                                         "example": dict(RUNBOOK_EXAMPLE, apply=True)},
                    "text/plain": {"schema": _s("string")}}},
                "responses": {"200": _json(_ref("Diagnosis"), "the findings, each with its outcome"),
                              "400": _json(_ERR, "unusable input, naming what is wrong"),
                              "401": _json(_ERR, "missing or wrong function key, or apply without a valid bearer "
                                                 "token holding KvRemediate.Apply (nothing read or changed)"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "500": _json(_ERR, "the remediation policy or a setting is invalid: nothing is read "
                                                 "or changed"),
                              "503": _json(_ERR, "Azure could not be reached or refused the app's identity")}}},
            "/api/health": {"get": {
                "operationId": "health", "summary": "Version and configuration problems (no values)",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "the app's health")}}},
            "/api/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": _KEY,
                "responses": {"200": {"description": "the OpenAPI document",
                                      "content": {"application/json": {"schema": _s("object")}}},
                              "401": _json(_ERR, "missing or wrong function key")}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "actionGroupsBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                       "description": "secure webhook (KV_REMEDIATE_WEBHOOK_AUDIENCE/_TENANT): a "
                                                      "token of Azure Monitor Action Groups with the app role "
                                                      "ActionGroupsSecureWebhook"},
                "applyBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "apply over HTTP (KV_REMEDIATE_API_AUDIENCE/_TENANT): an Entra ID "
                                               "token for this app holding the app role KvRemediate.Apply"},
            },
        },
    }
