"""The emulator's Microsoft Graph (/v1.0) and Log Analytics (/v1) routes, through azure-core pipeline clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.rest import HttpRequest

from remediate.emulator import Emulator
from tests.support.emulator import (
    ANA,
    APP,
    APP_TEAM,
    KV_ADMINS,
    KV_RBAC,
    MI,
    async_pipeline,
    pipeline,
    small,
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(small(), page_size=1) as e:
        yield e
    assert not e.unrouted, e.unrouted


def call(emu: Emulator, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
    r = pipeline(emu).send_request(HttpRequest(method, f"{emu.base_url}{path}", json=body, params=params))
    return r.status_code, r.json() if r.content else None


# ---- Graph --------------------------------------------------------------------------------------------------------
def test_get_by_ids_returns_known_objects_with_their_types(emu: Emulator) -> None:
    status, body = call(emu, "POST", "/v1.0/directoryObjects/getByIds",
                        {"ids": [APP, ANA, KV_ADMINS, "99999999-9999-9999-9999-999999999999"],
                         "types": ["user", "group", "servicePrincipal"]})
    assert status == 200
    by_id = {o["id"]: o for o in body["value"]}
    assert set(by_id) == {APP, ANA, KV_ADMINS}
    assert by_id[APP] == {"@odata.type": "#microsoft.graph.servicePrincipal", "id": APP, "displayName": "app-prod",
                          "appId": "99999999-0000-0000-0000-000000000001"}
    assert by_id[ANA]["userPrincipalName"] == "ana@contoso.com"
    assert by_id[KV_ADMINS]["@odata.type"] == "#microsoft.graph.group"
    _, only_users = call(emu, "POST", "/v1.0/directoryObjects/getByIds", {"ids": [APP, ANA], "types": ["user"]})
    assert [o["id"] for o in only_users["value"]] == [ANA]


def test_transitive_member_of_pages_with_odata_next_link(emu: Emulator) -> None:
    emu.reset_count()
    url: str | None = f"{emu.base_url}/v1.0/servicePrincipals/{APP}/transitiveMemberOf"
    groups: list[str] = []
    client = pipeline(emu)
    while url:
        r = client.send_request(HttpRequest("GET", url))
        assert r.status_code == 200
        groups += [g["id"] for g in r.json()["value"]]
        url = r.json().get("@odata.nextLink")
    assert groups == [APP_TEAM, KV_ADMINS] and emu.request_count == 2
    _, direct = call(emu, "GET", f"/v1.0/servicePrincipals/{APP}/memberOf", **{"$top": "5"})
    assert [g["id"] for g in direct["value"]] == [APP_TEAM]
    _, user = call(emu, "GET", f"/v1.0/users/{ANA}/transitiveMemberOf/microsoft.graph.group")
    assert user["value"] == []


def test_unknown_or_mistyped_object_is_graph_404(emu: Emulator) -> None:
    # (was GET /directoryObjects/{id}/transitiveMemberOf: Graph has no such route, see test_emulator_strict.py)
    status, body = call(emu, "POST", "/v1.0/directoryObjects/99999999-9999-9999-9999-999999999999/getMemberGroups",
                        {"securityEnabledOnly": False})
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"
    assert "request-id" in body["error"]["innerError"]
    status, _ = call(emu, "GET", f"/v1.0/users/{APP}")  # a service principal is not a user
    assert status == 404
    status, body = call(emu, "GET", f"/v1.0/servicePrincipals/{MI}")
    assert status == 200 and body["displayName"] == "mi-batch"


def test_graph_can_be_denied() -> None:
    data = small()
    data["graph"] = False
    with Emulator(data) as emu:
        status, body = call(emu, "POST", "/v1.0/directoryObjects/getByIds", {"ids": [APP]})
        assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"
        emu.configure(graph=True)
        assert call(emu, "POST", "/v1.0/directoryObjects/getByIds", {"ids": [APP]})[0] == 200
    with Emulator(small(), graph=False) as emu:
        assert call(emu, "POST", f"/v1.0/directoryObjects/{APP}/getMemberGroups",
                    {"securityEnabledOnly": False})[0] == 403


async def test_async_graph_client(emu: Emulator) -> None:
    async with async_pipeline(emu) as client:
        r = await client.send_request(HttpRequest("POST", f"{emu.base_url}/v1.0/directoryObjects/getByIds",
                                                  json={"ids": [MI]}))
        assert r.status_code == 200
        await r.read()
        assert r.json()["value"][0]["displayName"] == "mi-batch"


# ---- Log Analytics ------------------------------------------------------------------------------------------------
WS = "dddd3333-ee44-5555-66ff-777777aaaaaa"
OTHER_WS = "eeee4444-ee44-5555-66ff-777777aaaaaa"
RBAC_RID = KV_RBAC.lower()


def _rows() -> list[dict[str, Any]]:
    """Audit rows in both tables, plus what the audit query must never return (other tables, workspaces, vaults)."""
    ad = {"ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent", "Resource": "KV-RBAC",
          "_ResourceId": RBAC_RID, "ResultSignature": "Forbidden", "httpStatusCode_d": 403,
          "ResultDescription": "Caller is not authorized to perform action on resource.",
          "CallerIPAddress": "203.0.113.9", "requestUri_s": "https://kv-rbac.vault.azure.net/secrets/db-password"}
    return [
        {**ad, "TimeGenerated": "2026-11-20T10:00:00Z", "OperationName": "SecretGet", "identity_claim_oid_g": APP,
         "CorrelationId": "c-1"},
        {**ad, "TimeGenerated": "2026-11-20T10:01:00Z", "OperationName": "SecretGet", "identity_claim_oid_g": APP,
         "CorrelationId": "c-2", "httpStatusCode_d": 200, "ResultSignature": "OK"},             # not a denial
        {**ad, "TimeGenerated": "2026-11-20T10:02:00Z", "OperationName": "KeySign", "identity_claim_oid_g": MI,
         "CorrelationId": "c-3", "TenantId": OTHER_WS},                                          # other workspace
        {**ad, "TimeGenerated": "2026-11-20T10:03:00Z", "OperationName": "SecretGet", "identity_claim_oid_g": MI,
         "CorrelationId": "c-4", "Resource": "KV-OTHER", "_ResourceId": RBAC_RID[:-7] + "kv-other"},  # other vault
        {"Type": "AZKVAuditLogs", "TimeGenerated": "2026-11-20T10:04:00Z", "_ResourceId": RBAC_RID,
         "OperationName": "SecretList", "ResultSignature": "Unauthorized", "HttpStatusCode": 401,
         "CorrelationId": "c-5", "CallerIpAddress": "198.51.100.7", "RequestUri": "https://kv-rbac.vault.azure.net/secrets",
         "Identity": {"claim": {"oid": ANA, "appid": None}}, "TenantId": WS},
        {"Type": "SigninLogs", "TimeGenerated": "2026-11-20T10:05:00Z", "UserPrincipalName": "ceo@contoso.com",
         "ResultType": "50126", "_ResourceId": RBAC_RID, "httpStatusCode_d": 403, "Resource": "KV-RBAC",
         "ResourceProvider": "MICROSOFT.KEYVAULT", "Category": "AuditEvent"},                  # another table
    ]


@pytest.fixture(scope="module")
def logs_emu() -> Iterator[Emulator]:
    tenant = small()
    tenant["log_rows"] = _rows()
    with Emulator(tenant) as e:
        yield e


def _query(vault: str = "kv-rbac", principal: str | None = None, operation: str | None = None) -> str:
    from datetime import UTC, datetime

    from remediate.facts.loganalytics import AuditQuery

    return AuditQuery(vault=vault, start=datetime(2026, 11, 20, 9, 45, tzinfo=UTC),
                      end=datetime(2026, 11, 20, 10, 30, tzinfo=UTC), principal=principal, operation=operation).kql()


def _cells(body: dict[str, Any], column: str) -> list[Any]:
    [t] = body["tables"]
    idx = [c["name"] for c in t["columns"]].index(column)
    return [r[idx] for r in t["rows"]]


@pytest.mark.parametrize(("kwargs", "correlations"), [
    ({}, ["c-1", "c-5"]),                                   # the vault's 401/403 rows of this workspace, both tables
    ({"principal": APP}, ["c-1"]),
    ({"principal": APP, "operation": "SecretGet"}, ["c-1"]),
    ({"principal": APP, "operation": "KeySign"}, []),
    ({"principal": ANA.upper(), "operation": "SecretList"}, ["c-5"]),
    ({"vault": "kv-other"}, ["c-4"]),
])
def test_the_audit_query_is_answered_by_its_parameters(logs_emu: Emulator, kwargs: dict[str, Any],
                                                       correlations: list[str]) -> None:
    # given rows of several tables, workspaces and vaults; when our audit query is posted to the workspace
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{WS}/query",
                        {"query": _query(**kwargs), "timespan": "2026-11-20T00:00:00Z/2026-11-21T00:00:00Z"})
    # then exactly the matching rows come back, in the query's projected columns, and nothing of SigninLogs
    assert status == 200 and "error" not in body
    assert _cells(body, "CorrelationId") == correlations
    [t] = body["tables"]
    assert t["name"] == "PrimaryResult"
    cols = {c["name"]: c["type"] for c in t["columns"]}
    assert cols["TimeGenerated"] == "datetime" and cols["httpStatusCode_d"] == "real"
    assert "UserPrincipalName" not in cols and "ceo@contoso.com" not in str(body)


def test_the_timespan_narrows_the_query_window(logs_emu: Emulator) -> None:
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{WS}/query",
                        {"query": _query(), "timespan": "2026-11-20T10:03:00Z/PT1H"})
    assert status == 200 and _cells(body, "CorrelationId") == ["c-5"]
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{OTHER_WS}/query", {"query": _query()})
    assert status == 200 and _cells(body, "CorrelationId") == ["c-1", "c-3"]   # c-5 is held by WS only
    assert _cells(call(logs_emu, "POST", f"/v1/workspaces/{OTHER_WS}/query",
                       {"query": _query(principal=MI)})[1], "CorrelationId") == ["c-3"]


@pytest.mark.parametrize("query", [
    "SigninLogs",
    "AzureDiagnostics | where httpStatusCode_d == 403",
    _query() + "\n| union SigninLogs",
    _query().replace("take 200", "take 100000"),
    _query().replace("let kvVault = 'kv-rbac';", "let kvVault = 'kv-rbac' or 1 == 1;"),
    "let kvStart = datetime(2026-11-20T09:45:00.0000000Z);\n" + _query().split("\n", 1)[1] + "\nSigninLogs",
])
def test_any_other_query_is_a_bad_argument_error(logs_emu: Emulator, query: str) -> None:
    # given a query that is not ours (an alert's KQL, an appended table, an edited header)
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{WS}/query", {"query": query})
    # then the real API's 400 shape, with an inner error, and no rows
    assert status == 400
    assert body["error"]["code"] == "BadArgumentError"
    assert body["error"]["message"] == "The request had some invalid properties"
    assert body["error"]["innererror"]["code"] == "SyntaxError"
    assert "tables" not in body


def test_query_errors(logs_emu: Emulator) -> None:
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{WS}/query", {"timespan": "PT1H"})
    assert status == 400 and body["error"]["code"] == "BadArgumentError"
    status, body = call(logs_emu, "POST", f"/v1/workspaces/{WS}/query", {"query": _query(), "timespan": "yesterday"})
    assert status == 400
    status, body = call(logs_emu, "GET", f"/v1/workspaces/{WS}/query", query=_query(),
                        timespan="P1D/2026-11-21T00:00:00Z")
    assert status == 200 and _cells(body, "CorrelationId") == ["c-1", "c-5"]


def test_resource_centric_query_reads_only_that_resource(logs_emu: Emulator) -> None:
    status, body = call(logs_emu, "POST", f"/v1{KV_RBAC}/query", {"query": _query()})
    assert status == 200 and _cells(body, "CorrelationId") == ["c-1", "c-3", "c-5"]


def test_a_partial_error_is_a_200_with_the_rows_and_an_error_object() -> None:
    tenant = small()
    tenant["log_rows"] = _rows()
    tenant["emulator"] = {"logs_partial_error": "Query result set has exceeded the internal limit."}
    with Emulator(tenant) as e:
        status, body = call(e, "POST", f"/v1/workspaces/{WS}/query", {"query": _query()})
    assert status == 200 and _cells(body, "CorrelationId") == ["c-1", "c-5"]
    assert body["error"]["code"] == "PartialError" and body["error"]["details"][0]["message"].startswith("Query")
