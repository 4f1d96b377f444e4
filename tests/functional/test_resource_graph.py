"""Azure Resource Graph: the real ``azure-mgmt-resourcegraph`` client against the emulator's ``resources`` API,
and the diagnosis finding vaults named by name through it (with the ARM fallback when it finds nothing)."""

from __future__ import annotations

import copy
import json
import uuid
from importlib import resources
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph.aio import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from remediate.backends import EmulatorRun
from remediate.emulator import Emulator
from remediate.facts import resource_graph
from remediate.facts.locate import EVERY_READABLE
from remediate.model import Denial, ObjectRef, Principal, VaultRef
from remediate.service import diagnose

TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
PAY = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")
ORDERS_APP = str(uuid.uuid5(uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"), "app-orders"))
MG_ROOT = "/providers/Microsoft.Management/managementGroups/"


def many_subscriptions(count: int, vaults_per_sub: int = 1) -> dict[str, Any]:
    """The demo tenant's principals and roles, with ``count`` subscriptions under two management groups, each
    holding ``vaults_per_sub`` RBAC vaults named ``kv-s{i}-{j}``."""
    tenant = copy.deepcopy(TENANT)
    subs = [str(uuid.UUID(int=0xA000 + i)) for i in range(count)]
    tenant["subscriptions"] = subs
    half = count // 2
    tenant["management_groups"] = [
        {"id": f"{MG_ROOT}mg-root", "subscriptions": []},
        {"id": f"{MG_ROOT}mg-a", "parent": f"{MG_ROOT}mg-root", "subscriptions": subs[:half]},
        {"id": f"{MG_ROOT}mg-b", "parent": f"{MG_ROOT}mg-root", "subscriptions": subs[half:]}]
    tenant["vaults"] = [
        {"id": f"/subscriptions/{s}/resourceGroups/rg-{i}/providers/Microsoft.KeyVault/vaults/kv-s{i}-{j}",
         "location": "westeurope", "properties": {"enableRbacAuthorization": True}}
        for i, s in enumerate(subs) for j in range(vaults_per_sub)]
    return tenant


async def _client(emu: Emulator) -> ResourceGraphClient:
    return ResourceGraphClient(emu.async_credential(), base_url=emu.base_url, transport=emu.async_transport(),
                               api_version=resource_graph.API_VERSION)


def _request(query: str, **options: Any) -> QueryRequest:
    return QueryRequest(query=query, options=QueryRequestOptions(result_format="objectArray", **options))


# ---- the emulator's resources API through the real client ------------------------------------------------------

async def test_the_real_client_finds_vaults_by_name_across_every_subscription() -> None:
    # given a tenant of 20 subscriptions with one vault each
    with Emulator(many_subscriptions(20)) as emu:
        async with await _client(emu) as client:
            # when the code's query for three names (one of them unknown) runs at tenant scope
            query = resource_graph.build_query(names=["kv-s3-0", "KV-S17-0", "kv-nowhere"])
            page = await client.resources(_request(query, top=1000))
    # then the two vaults come back with where they are, in Resource Graph's shape
    assert page.total_records == 2 and page.count == 2 and page.result_truncated == "false"
    assert page.skip_token is None
    rows = {r["name"]: r for r in page.data}
    assert set(rows) == {"kv-s3-0", "kv-s17-0"}
    assert rows["kv-s3-0"]["id"].endswith("/resourceGroups/rg-3/providers/Microsoft.KeyVault/vaults/kv-s3-0")
    assert rows["kv-s3-0"]["type"] == "microsoft.keyvault/vaults"
    assert rows["kv-s3-0"]["resourceGroup"] == "rg-3"
    assert set(rows["kv-s3-0"]) == {"id", "name", "type", "subscriptionId", "resourceGroup"}


async def test_pages_follow_the_skip_token_until_the_last() -> None:
    # given 7 matching vaults and a page size of 3
    with Emulator(many_subscriptions(7)) as emu:
        async with await _client(emu) as client:
            query = resource_graph.build_query(names=[f"kv-s{i}-0" for i in range(7)])
            # when every page is read with the facts module's pager
            rows = await resource_graph.query_rows(client, query, top=3)
            count = emu.request_count
            # and a skip token is replayed with another query
            first = await client.resources(_request(query, top=3))
            other = resource_graph.build_query(names=["kv-s1-0"])
            with pytest.raises(HttpResponseError) as err:
                await client.resources(_request(other, top=3, skip_token=first.skip_token))
    # then three requests returned all seven rows, once each
    assert sorted(r.name for r in rows) == sorted(f"kv-s{i}-0" for i in range(7))
    assert count == 3
    # and the token belongs to its own query only
    assert err.value.status_code == 400


async def test_subscriptions_and_management_groups_scope_the_query() -> None:
    tenant = many_subscriptions(10)
    subs = tenant["subscriptions"]
    query = resource_graph.build_query(names=[f"kv-s{i}-0" for i in range(10)])
    with Emulator(tenant) as emu:
        async with await _client(emu) as client:
            by_subs = await client.resources(QueryRequest(query=query, subscriptions=subs[:2]))
            by_mg = await client.resources(QueryRequest(query=query, management_groups=["mg-b"]))
            by_root = await client.resources(QueryRequest(query=query, management_groups=["mg-root"]))
    assert {r["subscriptionId"] for r in by_subs.data} == set(subs[:2])
    assert {r["subscriptionId"] for r in by_mg.data} == set(subs[5:])
    assert by_root.total_records == 10


async def test_by_id_finds_the_vault_the_id_names() -> None:
    with Emulator(TENANT) as emu:
        async with await _client(emu) as client:
            page = await client.resources(_request(resource_graph.build_query(ids=[PAY["id"].upper()])))
    assert [r["id"] for r in page.data] == [PAY["id"]]


@pytest.mark.parametrize("query", [
    "resources | project id, name",
    "resources\n| where type in~ ('microsoft.keyvault/vaults', 'microsoft.keyvault/managedhsms')\n"
    "| where name in~ ('kv-payments')\n| project id, name, type, subscriptionId, resourceGroup, properties",
    "resources\n| where type in~ ('microsoft.keyvault/vaults', 'microsoft.keyvault/managedhsms')\n"
    "| where name in~ ('kv-payments') or 1 == 1\n| project id, name, type, subscriptionId, resourceGroup",
    "resources\n| where type in~ ('microsoft.keyvault/vaults', 'microsoft.keyvault/managedhsms')\n"
    "| where name in~ ('kv-payments'') | union (resources) | project id //')\n"
    "| project id, name, type, subscriptionId, resourceGroup",
    "securityresources | project id",
])
async def test_other_queries_are_refused_with_resource_graphs_error_shape(query: str) -> None:
    # given a query of a shape the code never sends
    with Emulator(TENANT) as emu:
        async with await _client(emu) as client:
            # when it is sent
            with pytest.raises(HttpResponseError) as err:
                await client.resources(_request(query))
    # then the answer is Resource Graph's 400 BadRequest with InvalidQuery and a ParserFailure, as the SDK maps it
    exc = err.value
    assert exc.status_code == 400
    assert exc.error.code == "BadRequest"
    assert exc.error.message.startswith("Please provide below info when asking for support: timestamp = ")
    details = [d.code for d in exc.error.details]
    assert details[0] == "InvalidQuery" and "ParserFailure" in details
    assert "InvalidQuery" in resource_graph.error_summary(exc)


async def test_the_emulator_injects_latency_and_faults_into_resource_graph_too() -> None:
    # given an emulator that throttles every request, then one that answers at once
    tenant = dict(copy.deepcopy(TENANT), emulator={"faults": {"throttle_rate": 1.0, "retry_after_s": 0}})
    with Emulator(tenant) as emu:
        async with ResourceGraphClient(emu.async_credential(), base_url=emu.base_url, transport=emu.async_transport(),
                                       retry_total=0) as client:
            with pytest.raises(HttpResponseError) as err:
                await client.resources(_request(resource_graph.build_query(names=["kv-payments"])))
    assert err.value.status_code == 429


# ---- the diagnosis finds vaults by name through Resource Graph ---------------------------------------------------

def _denial(vault: str | None, vault_id: str | None = None, oid: str = ORDERS_APP) -> Denial:
    return Denial(source="test", status=403, principal=Principal(object_id=oid, kind="app"),
                  vault=VaultRef(vault, vault_id), operation="SecretGet", object=ObjectRef("secrets", "db-password"))


async def _diagnose(tenant: dict[str, Any], denials: list[Denial], **kw: Any) -> Any:
    with EmulatorRun(tenant) as run:
        async with run.facts(**kw) as facts:
            return await diagnose(denials, facts)


async def test_a_vault_named_by_name_among_200_subscriptions_costs_one_query_not_200_lists() -> None:
    # given 200 subscriptions, the vault in the last one, and no subscription list at all
    tenant = many_subscriptions(200)
    with EmulatorRun(tenant) as run:
        async with run.facts() as facts:
            facts.subscriptions = ()
            # when a denial names the vault by name only
            result = await diagnose([_denial("kv-s199-0")], facts)
    # then Resource Graph found it in one request and ARM read it (vault, assignments, deny assignments)
    finding = result.findings[0]
    assert finding.cause != "VAULT_NOT_FOUND"
    assert result.stats.requests.requests_by_api == {"arm": 3, "resource_graph": 1}
    assert result.notes == ()


async def test_fifty_vaults_by_name_are_found_with_one_query_for_the_batch() -> None:
    tenant = many_subscriptions(200)
    denials = [_denial(f"kv-s{i * 4}-0") for i in range(50)]
    result = await _diagnose(tenant, denials)
    assert all(f.cause != "VAULT_NOT_FOUND" for f in result.findings)
    assert result.stats.requests.requests_by_api["resource_graph"] == 1
    assert result.stats.requests.arm_requests <= 160


async def test_properties_come_from_arm_not_from_resource_graphs_copy() -> None:
    # given a vault that Resource Graph indexed as RBAC, then ARM switched to access policies
    tenant = copy.deepcopy(TENANT)
    with EmulatorRun(tenant) as run:
        run.emulator.state.graph_rows()      # Resource Graph's copy is taken now
        with run.emulator.state.lock:
            props = run.emulator.state.vaults[PAY["id"].lower()]["properties"]
            props["enableRbacAuthorization"] = not props.get("enableRbacAuthorization", False)
            model = "rbac" if props["enableRbacAuthorization"] else "access_policy"
        async with run.facts() as facts:
            result = await diagnose([_denial("kv-payments")], facts)
    # then the decision used ARM's current model
    assert result.findings[0].to_dict()["permission_model"] == model


async def test_a_vault_resource_graph_has_not_indexed_yet_is_found_through_arm_with_a_note() -> None:
    # given a vault ARM has but Resource Graph has not indexed yet (it lags by minutes)
    tenant = copy.deepcopy(TENANT)
    tenant["emulator"] = {"resource_graph_unindexed": ["kv-payments"]}
    # when a denial names it by name
    result = await _diagnose(tenant, [_denial("kv-payments")])
    # then the ARM search found it, and the notes say why ARM was searched
    assert result.findings[0].cause != "VAULT_NOT_FOUND"
    assert result.stats.requests.requests_by_api["resource_graph"] == 1
    assert any("Resource Graph found no vault" in n and "found through ARM" in n for n in result.notes)


async def test_without_a_subscription_list_a_vault_resource_graph_misses_is_not_found_and_the_note_says_why(
) -> None:
    tenant = copy.deepcopy(TENANT)
    tenant["emulator"] = {"resource_graph_unindexed": ["kv-payments"]}
    with EmulatorRun(tenant) as run:
        async with run.facts() as facts:
            facts.subscriptions = ()
            result = await diagnose([_denial("kv-payments")], facts)
    finding = result.findings[0].to_dict()
    assert finding["cause"] == "VAULT_NOT_FOUND"
    assert EVERY_READABLE in finding["explanation"]
    assert any("no subscription is configured" in n for n in result.notes)


async def test_resource_graph_failing_falls_back_to_arm_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # given Resource Graph answers 503 to every query
    from remediate.emulator import routes_resource_graph
    from remediate.emulator.wire import Response

    monkeypatch.setattr(routes_resource_graph, "handle", lambda state, req: Response(
        503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}))
    # when a denial names a vault by name
    result = await _diagnose(copy.deepcopy(TENANT), [_denial("kv-payments")], retry_total=0)
    # then ARM's search found it, and the note names Resource Graph's answer
    assert result.findings[0].cause != "VAULT_NOT_FOUND"
    assert any("Azure Resource Graph did not answer (503 ServiceUnavailable" in n for n in result.notes)


async def test_a_known_vault_id_never_asks_resource_graph() -> None:
    result = await _diagnose(copy.deepcopy(TENANT), [_denial("kv-payments", PAY["id"])])
    assert "resource_graph" not in result.stats.requests.requests_by_api


async def test_resource_graph_off_is_the_old_search_by_listing() -> None:
    tenant = many_subscriptions(5)
    result = await _diagnose(tenant, [_denial("kv-s4-0")], resource_graph=False)
    assert result.findings[0].cause != "VAULT_NOT_FOUND"
    assert "resource_graph" not in result.stats.requests.requests_by_api
    assert result.stats.requests.requests_by_api["arm"] == 5 + 2


async def test_a_stale_resource_graph_row_is_checked_at_arm_and_the_vault_reported_missing() -> None:
    # given Resource Graph still lists a vault ARM has deleted
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        run.emulator.state.graph_rows()
        with run.emulator.state.lock:
            del run.emulator.state.vaults[PAY["id"].lower()]
        async with run.facts() as facts:
            result = await diagnose([_denial("kv-payments")], facts)
    assert result.findings[0].cause == "VAULT_NOT_FOUND"
    assert any("where ARM has no vault" in n for n in result.notes)


@pytest.mark.parametrize(("host", "kind", "name"), [
    ("kv-payments.vault.azure.net", "vault", "kv-payments"),
    ("KV1.vault.usgovcloudapi.net", "vault", "kv1"),
    ("kv1.vault.azure.cn.", "vault", "kv1"),
    ("hsm1.managedhsm.azure.net", "hsm", "hsm1"),
    ("hsm1.managedhsm.usgovcloudapi.net", "hsm", "hsm1"),
])
def test_hosts_of_every_cloud_name_a_vault_or_hsm(host: str, kind: str, name: str) -> None:
    assert resource_graph.target_from_host(host) == resource_graph.GraphTarget(kind, name)


@pytest.mark.parametrize("host", ["kv1.vault.azure.net.evil.com", "kv1.blob.core.windows.net", "k.vault.azure.net",
                                  "kv--1.vault.azure.net", "kv1", "'x'.vault.azure.net"])
def test_other_hosts_name_nothing(host: str) -> None:
    assert resource_graph.target_from_host(host) is None


async def test_locate_finds_vaults_and_hsms_by_name_host_or_id_in_two_queries() -> None:
    # given the demo tenant, and a Managed HSM that Resource Graph lists (the emulator serves no HSM data plane)
    hsm_id = PAY["id"].replace("Microsoft.KeyVault/vaults/kv-payments", "Microsoft.KeyVault/managedHSMs/hsm-pay")
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        state = run.emulator.state
        state.graph_rows()
        with state.lock:
            assert state._graph_rows is not None
            state._graph_rows[hsm_id.lower()] = {
                "id": hsm_id, "name": "hsm-pay", "type": "microsoft.keyvault/managedhsms",
                "subscriptionId": SUB, "resourceGroup": "rg-payments"}
        async with run.facts() as facts:
            targets = ["kv-payments", "KV-PAYMENTS.vault.azure.net", "hsm-pay.managedhsm.azure.net",
                       "hsm-pay.vault.azure.net", PAY["id"].upper(), hsm_id, "kv-nowhere", "not a name!", "/x"]
            # when they are located at once
            found = await facts.locate(targets)
            requests = dict(facts.by_api)
    # then one query for the names and hosts and one for the ids answered each by kind
    assert requests == {"resource_graph": 2}
    assert [r.id for r in found["kv-payments"]] == [PAY["id"]]
    assert [r.id for r in found["KV-PAYMENTS.vault.azure.net"]] == [PAY["id"]]
    assert [(r.kind, r.id) for r in found["hsm-pay.managedhsm.azure.net"]] == [("hsm", hsm_id)]
    assert found["hsm-pay.vault.azure.net"] == ()          # a vault host never names the HSM
    assert [r.id for r in found[PAY["id"].upper()]] == [PAY["id"]]
    assert [r.kind for r in found[hsm_id]] == ["hsm"]
    assert found["kv-nowhere"] == found["not a name!"] == found["/x"] == ()
