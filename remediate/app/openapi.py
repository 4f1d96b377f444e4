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
        "tokens": _s("object", properties={"webhook_token": _s("boolean"), "apply_token": _s("boolean")}),
        "findings_page": _s("object", description="how people sign in to the findings page: App Service "
                            "Authentication on (WEBSITE_AUTH_ENABLED), bearer tokens configured "
                            "(KV_REMEDIATE_API_AUDIENCE), KV_REMEDIATE_PAGE_KEY set (needed with several instances)",
                            properties={"easy_auth": _s("boolean"), "bearer": _s("boolean"),
                                        "page_key": _s("boolean")}),
        "parts": _s("array", description="under `kv-remediate serve`: its queue-worker (and extra HTTP) processes; "
                                          "empty on Azure",
                    items=_s("object", required=["part", "instance", "state"], properties={
                        "part": _s("string"), "instance": _s("integer", minimum=1),
                        "state": _s("string", enum=["running", "restarting", "failed"]),
                        "detail": _s("string")}))}),
}


# msgspec writes an optional X as ``anyOf: [X, {"type": "null"}]``: exactly two variants.
_NULLABLE_PAIR = 2


def _oas30(schema: Any) -> Any:
    """A JSON Schema (2020-12, as msgspec writes it) in OpenAPI 3.0's dialect: ``anyOf [X, null]`` is X with
    ``nullable``, and an empty ``required`` list is left out."""
    if isinstance(schema, list):
        return [_oas30(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _oas30(v) for k, v in schema.items() if not (k == "required" and v == [])}
    variants = out.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == _NULLABLE_PAIR:
        [inner] = [v for v in variants if v != {"type": "null"}]
        out = {**{k: v for k, v in out.items() if k != "anyOf"}, **inner, "nullable": True}
    return out


def request_schemas() -> dict[str, Any]:
    """The request bodies' schemas, from the models intake validates them with (``intake.runbook``), and the
    catalogue's operation names."""
    import msgspec

    from ..intake.runbook import NAMING, RemediateRequest, RunbookRequest

    _, components = msgspec.json.schema_components((RunbookRequest, RemediateRequest),
                                                   ref_template="#/components/schemas/{name}")
    out: dict[str, Any] = _oas30(components)
    for schema in out.values():
        schema.pop("title", None)
        schema["anyOf"] = [{"required": [name]} for name in NAMING]
        schema["properties"]["operation"]["enum"] = [*_operations(), None]
    return out


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
_UNSUPPORTED = ("a Content-Type no route reads (application/json, application/*+json and text/plain are read; so are "
                "none and application/x-www-form-urlencoded, clients' default label, as sent) or a charset Python "
                "does not know: UNSUPPORTED_MEDIA_TYPE, nothing was done")
_BAD_BODY = ("unusable body, naming what is wrong: empty (EMPTY_BODY, also when only a byte-order mark or white "
             "space), not UTF-8 and not UTF-16/UTF-32 with a byte-order mark or a declared charset (BAD_ENCODING, "
             "naming the byte), a bare JSON null, boolean or number (NOT_A_DENIAL), or not a recognised input")
_BODY_RULES = (" Bodies are UTF-8; UTF-16 and UTF-32 with a byte-order mark, UTF-8 with one, and a charset declared "
               "in Content-Type are decoded first. Over 4 MiB: 413; a Content-Type other than application/json, "
               "application/*+json, text/plain or application/x-www-form-urlencoded (read as sent): 415.")
_TOO_LARGE = "over a size cap (body over 4 MiB, more denials per input than KV_REMEDIATE_MAX_DENIALS or more " \
             "distinct principals than KV_REMEDIATE_MAX_PRINCIPALS): nothing was done"


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": _s("string")}}}


def _decision(verb: str) -> dict[str, Any]:
    """A decision posted from the findings page's form (HTML in, HTML out)."""
    return {"post": {
        "operationId": f"findings_{verb}", "summary": f"{verb.capitalize()} an approval request (the page's form)",
        "tags": ["page"],
        "description": "A form post from the findings page by a signed-in approver (app role KvRemediate.Approve): "
                       "the hidden `csrf` field is an HMAC bound to the person, the request and the page's "
                       "SameSite=Strict cookie (one hour); another Origin is refused. The approvals core then "
                       "re-checks the request and applies exactly the approved write, or nothing, and records who, "
                       "when and from where.",
        "security": [{}, {"pageBearer": []}],
        "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": _s("string")}],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _s(
            "object", required=["csrf"], properties={"csrf": _s("string"), "reason": _s("string", maxLength=500),
                                                     "back": _s("string")})}}},
        "responses": {"200": _html("decided (applied, recorded, rejected) or a repeated approval"),
                      "401": _html("not signed in"), "403": _html("not an approver, a bad form token, another "
                                                                   "origin, or the approver is the grantee"),
                      "404": _html("no such request"), "409": _html("no longer pending, expired, or approved but "
                                                                   "not applied (the tenant changed)")}}}


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
                               "app, holding the app role ActionGroupsSecureWebhook." + _BODY_RULES,
                "security": [*_KEY, {"functionKey": [], "actionGroupsBearer": []},
                                    {"functionKeyQuery": [], "actionGroupsBearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("Alert"), "example": ALERT_EXAMPLE}}},
                "responses": {"202": _json(_ref("Accepted"), "denials queued"),
                              "400": _json(_ERR, "not an alert about a Key Vault, or " + _BAD_BODY),
                              "401": _json(_ERR, "missing or wrong function key, or (secure webhook) a missing "
                                                 "or invalid bearer token, or one without the Action Groups app "
                                                 "and role"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "415": _json(_ERR, _UNSUPPORTED),
                              "500": _json(_ERR, "the app is misconfigured (health names the setting)"),
                              "503": _json(_ERR, "the queue could not be reached; Azure Monitor retries")}}},
            "/api/diagnose": {"post": {
                "operationId": "diagnose", "summary": "Diagnose a denial (runbooks)",
                "description": "Any input `kv-remediate parse` accepts (alerts, audit log records, Log Analytics "
                               "rows, REST error bodies, SDK or CLI error text) or a runbook request." + _BODY_RULES,
                "security": _KEY,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("RunbookRequest"), "example": RUNBOOK_EXAMPLE},
                    "text/plain": {"schema": _s("string")}}},
                "responses": {"200": _json(_ref("Diagnosis"), "the diagnosis (spec/cli.md)"),
                              "400": _json(_ERR, _BAD_BODY),
                              "401": _json(_ERR, "missing or wrong function key"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "415": _json(_ERR, _UNSUPPORTED),
                              "500": _json(_ERR, "the app is misconfigured (health names the setting)"),
                              "503": _json(_ERR, "Azure could not be reached or refused the app's identity")}}},
            "/api/remediate": {"post": {
                "operationId": "remediate", "summary": "Diagnose, then apply what policy allows",
                "description": "Like /api/diagnose. With `\"apply\": true` in a runbook request (or `?apply=true`) "
                               "the plans that every policy rule allows are applied; each finding says `applied`, "
                               "or `refused_by` the rule that refused it. Default: suggest only. Applying needs, "
                               "besides the function key, an Entra ID bearer token for this app's audience "
                               "(KV_REMEDIATE_API_AUDIENCE) holding the app role KvRemediate.Apply: the key alone "
                               "only diagnoses, and apply without a valid token is 401 before anything is read."
                               + _BODY_RULES,
                "security": [*_KEY, {"functionKey": [], "applyBearer": []},
                                    {"functionKeyQuery": [], "applyBearer": []}],
                "parameters": [{"name": "apply", "in": "query", "required": False,
                                "schema": _s("string", enum=["true", "false"])}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("RemediateRequest"),
                                         "example": dict(RUNBOOK_EXAMPLE, apply=True)},
                    "text/plain": {"schema": _s("string")}}},
                "responses": {"200": _json(_ref("Diagnosis"), "the findings, each with its outcome"),
                              "400": _json(_ERR, _BAD_BODY),
                              "401": _json(_ERR, "missing or wrong function key, or apply without a valid bearer "
                                                 "token holding KvRemediate.Apply (nothing read or changed)"),
                              "413": _json(_ERR, _TOO_LARGE),
                              "415": _json(_ERR, _UNSUPPORTED),
                              "500": _json(_ERR, "the remediation policy or a setting is invalid: nothing is read "
                                                 "or changed"),
                              "503": _json(_ERR, "Azure could not be reached or refused the app's identity")}}},
            "/api/findings": {"get": {
                "operationId": "findings_page", "summary": "The findings page (HTML, for people)", "tags": ["page"],
                "description": "Recent findings with filters, a 7-day summary by cause and the grants in force; "
                               "`id` opens a finding, `approval` an approval request (the link notifications "
                               "carry). Server-rendered HTML under a Content-Security-Policy that allows no "
                               "script; a GET never changes anything. A person must be signed in: App Service "
                               "Authentication's principal (only when WEBSITE_AUTH_ENABLED is True) or an Entra ID "
                               "bearer token for this app (KV_REMEDIATE_API_AUDIENCE) holding the app role "
                               "KvRemediate.Approve or KvRemediate.Read.",
                "security": [{}, {"pageBearer": []}],
                "parameters": [{"name": n, "in": "query", "required": False, "schema": _s("string")}
                               for n in ("cause", "vault", "principal", "outcome", "since", "id", "approval")],
                "responses": {"200": _html("the page"), "401": _html("not signed in, or an invalid token"),
                              "403": _html("signed in without a page role")}}},
            "/api/findings/approvals/{request_id}/approve": _decision("approve"),
            "/api/findings/approvals/{request_id}/reject": _decision("reject"),
            "/api/slack/actions": {"post": {
                "operationId": "slack_actions", "summary": "Slack interactivity (Approve / Reject buttons)",
                "description": "The Slack app's Interactivity Request URL. Anonymous: Slack's request signature "
                               "(X-Slack-Signature, v0 HMAC-SHA256 of v0:timestamp:body with "
                               "KV_REMEDIATE_SLACK_SIGNING_SECRET, timestamp within five minutes) is the "
                               "authentication. A verified click is queued and answered at once; the outcome "
                               "replaces the Slack message through its response_url. Only Slack users mapped to "
                               "an Entra ID object id (KV_REMEDIATE_SLACK_APPROVERS) act.",
                "security": [],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                    "schema": _s("object", properties={"payload": _s("string")}, required=["payload"])}}},
                "responses": {"200": {"description": "verified; the click is queued (or was the Open link)"},
                              "400": _json(_ERR, "not a block_actions click on a kv-remediate button"),
                              "401": _json(_ERR, "missing, bad or stale Slack signature, or Slack is not "
                                                 "configured (KV_REMEDIATE_SLACK_SIGNING_SECRET unset)"),
                              "503": _json(_ERR, "the queue could not be reached; nothing was decided")}}},
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
            "schemas": {**SCHEMAS, **request_schemas()},
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "actionGroupsBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                       "description": "secure webhook (KV_REMEDIATE_WEBHOOK_AUDIENCE/_TENANT): a "
                                                      "token of Azure Monitor Action Groups with the app role "
                                                      "ActionGroupsSecureWebhook"},
                "pageBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "the findings page (KV_REMEDIATE_API_AUDIENCE/_TENANT): an Entra ID "
                                              "token for this app holding KvRemediate.Approve or KvRemediate.Read"},
                "applyBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "apply over HTTP (KV_REMEDIATE_API_AUDIENCE/_TENANT): an Entra ID "
                                               "token for this app holding the app role KvRemediate.Apply"},
            },
        },
    }
