"""The emulator's Microsoft Graph (/v1.0) and Log Analytics (/v1) routes, through azure-core pipeline clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.rest import HttpRequest

from remediate.emulator import Emulator
from tests.test_emulator_support import (  # loopback_only: autouse guard
    ANA,
    APP,
    APP_TEAM,
    KV_ADMINS,
    KV_RBAC,
    MI,
    async_pipeline,
    loopback_only,  # noqa: F401
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
    _, direct = call(emu, "GET", f"/v1.0/directoryObjects/{APP}/memberOf", **{"$top": "5"})
    assert [g["id"] for g in direct["value"]] == [APP_TEAM]
    _, user = call(emu, "GET", f"/v1.0/users/{ANA}/transitiveMemberOf/microsoft.graph.group")
    assert user["value"] == []


def test_unknown_or_mistyped_object_is_graph_404(emu: Emulator) -> None:
    status, body = call(emu, "GET", "/v1.0/directoryObjects/99999999-9999-9999-9999-999999999999/transitiveMemberOf")
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
        assert call(emu, "GET", f"/v1.0/directoryObjects/{APP}/transitiveMemberOf")[0] == 403


async def test_async_graph_client(emu: Emulator) -> None:
    async with async_pipeline(emu) as client:
        r = await client.send_request(HttpRequest("POST", f"{emu.base_url}/v1.0/directoryObjects/getByIds",
                                                  json={"ids": [MI]}))
        assert r.status_code == 200
        await r.read()
        assert r.json()["value"][0]["displayName"] == "mi-batch"


# ---- Log Analytics ------------------------------------------------------------------------------------------------
def test_workspace_query_returns_a_primary_result_table(emu: Emulator) -> None:
    status, body = call(emu, "POST", "/v1/workspaces/ws-1/query",
                        {"query": "AzureDiagnostics | where ResultSignature == 'Forbidden'",
                         "timespan": "2026-11-20T00:00:00Z/2026-11-21T00:00:00Z"})
    assert status == 200
    t = body["tables"][0]
    assert t["name"] == "PrimaryResult"
    cols = {c["name"]: c["type"] for c in t["columns"]}
    assert cols["TimeGenerated"] == "datetime" and cols["httpStatusCode_d"] == "long"
    assert cols["OperationName"] == "string"
    ops = [row[[c["name"] for c in t["columns"]].index("OperationName")] for row in t["rows"]]
    assert ops == ["SecretGet", "VaultGet"]  # rows without TimeGenerated are always included


@pytest.mark.parametrize(("timespan", "ops"), [
    ("2026-11-21T09:00:00Z/PT2H", ["KeySign", "VaultGet"]),
    ("P1D/2026-11-20T12:00:00Z", ["SecretGet", "VaultGet"]),
    ("2026-11-19T00:00:00Z/2026-11-22T00:00:00Z", ["SecretGet", "KeySign", "VaultGet"]),
    ("PT1H", ["VaultGet"]),
])
def test_resource_centric_get_query_filters_by_timespan(emu: Emulator, timespan: str, ops: list[str]) -> None:
    path = f"/v1{KV_RBAC}/query"
    status, body = call(emu, "GET", path, query="AzureDiagnostics", timespan=timespan)
    assert status == 200
    t = body["tables"][0]
    idx = [c["name"] for c in t["columns"]].index("OperationName")
    assert [r[idx] for r in t["rows"]] == ops
    assert {c["name"]: c["type"] for c in t["columns"]}.get("DurationMs", "real") == "real"


def test_query_errors(emu: Emulator) -> None:
    status, body = call(emu, "POST", "/v1/workspaces/ws-1/query", {"timespan": "PT1H"})
    assert status == 400 and body["error"]["code"] == "BadArgumentError"
    status, body = call(emu, "GET", "/v1/workspaces/ws-1/query", query="x", timespan="yesterday")
    assert status == 400
