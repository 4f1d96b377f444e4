"""Attack tests: nothing from an input can change the Resource Graph query, and nothing Resource Graph answers can
point the diagnosis at a resource that is not a vault of the name asked for."""

from __future__ import annotations

import copy
import json
import uuid
from importlib import resources
from typing import Any

import pytest

from remediate.backends import EmulatorRun
from remediate.facts import resource_graph
from remediate.facts.resource_graph import UnsafeQueryValue, build_query, kql_string, row_from_graph
from remediate.model import Denial, ObjectRef, Principal, VaultRef
from remediate.service import diagnose

TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
PAY = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")
APP = str(uuid.uuid5(uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"), "app-orders"))

CRAFTED_NAMES = [
    "kv-payments') | project id //",
    "kv' or name != '",
    "kv\\' or 1==1",
    "kv-payments\n| union securityresources",
    "kv-payments\r\n| take 1",
    "kv-payments;drop",
    "kv-payments|",
    'kv"x"',
    "kv`x`",
    "kv-\u202epayments",
    "kv\u0000x",
    "kν-payments",            # Greek nu: not a vault name
    "a" * 25,
    "kv--double",
    "",
    "../kv-payments",
]
CRAFTED_IDS = [
    PAY["id"] + "') | project id //",
    PAY["id"].replace("rg-payments", "rg'x"),
    PAY["id"] + "/secrets/x",
    PAY["id"].replace("Microsoft.KeyVault/vaults", "Microsoft.Storage/storageAccounts"),
    "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
]


@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_the_query_builder_refuses_anything_but_a_vault_name(name: str) -> None:
    with pytest.raises(UnsafeQueryValue):
        build_query(names=[name])
    with pytest.raises(UnsafeQueryValue):
        build_query(names=["kv-payments", name])


@pytest.mark.parametrize("rid", CRAFTED_IDS)
def test_the_query_builder_refuses_anything_but_a_vault_or_hsm_id(rid: str) -> None:
    with pytest.raises(UnsafeQueryValue):
        build_query(ids=[rid])


@pytest.mark.parametrize("value", ["a'b", "a\\b", "a\nb", "a|b", "a;b", "", "a\tb", "\u202e"])
def test_a_literal_that_could_leave_its_quotes_is_refused_not_escaped(value: str) -> None:
    with pytest.raises(UnsafeQueryValue):
        kql_string(value)


def test_the_query_is_the_fixed_text_with_one_list_of_validated_literals() -> None:
    q = build_query(names=["KV-One", "kv-two", "kv-one"])
    assert q == (resource_graph.QUERY_HEAD + "| where name in~ ('kv-one', 'kv-two')\n" + resource_graph.QUERY_TAIL)
    assert build_query(ids=[PAY["id"]]).count("'") == 2 + 4


def test_too_many_values_or_both_kinds_are_refused() -> None:
    with pytest.raises(UnsafeQueryValue):
        build_query(names=[f"kv-{i}" for i in range(resource_graph.MAX_VALUES_PER_QUERY + 1)])
    with pytest.raises(UnsafeQueryValue):
        build_query(names=["kv-a"], ids=[PAY["id"]])
    with pytest.raises(UnsafeQueryValue):
        build_query()


@pytest.mark.parametrize("row", [
    {"id": PAY["id"], "name": "kv-other", "type": "microsoft.keyvault/vaults"},         # name and id disagree
    {"id": PAY["id"] + "/../../x", "name": "x", "type": "microsoft.keyvault/vaults"},
    {"id": PAY["id"].replace("Microsoft.KeyVault/vaults", "Microsoft.Storage/storageAccounts"), "name": "kv-payments",
     "type": "microsoft.storage/storageaccounts"},
    {"id": PAY["id"], "name": "kv-payments", "type": "microsoft.storage/storageaccounts"},   # type disagrees
    {"id": 7, "name": "kv-payments", "type": "microsoft.keyvault/vaults"},
    "not a row",
])
def test_rows_that_are_not_a_vault_of_that_name_are_dropped(row: Any) -> None:
    assert row_from_graph(row) is None


def _denial(vault: VaultRef) -> Denial:
    return Denial(source="test", status=403, principal=Principal(object_id=APP, kind="app"), vault=vault,
                  operation="SecretGet", object=ObjectRef("secrets", "db-password"))


@pytest.mark.parametrize("name", CRAFTED_NAMES)
async def test_a_crafted_vault_name_in_a_denial_never_reaches_resource_graph(name: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # given Resource Graph's query texts recorded as the emulator receives them
    from remediate.emulator import routes_resource_graph

    seen: list[str] = []
    handle = routes_resource_graph.handle

    def spy(state: Any, req: Any) -> Any:
        seen.append(req.body["query"])
        return handle(state, req)
    monkeypatch.setattr(routes_resource_graph, "handle", spy)
    # when a denial with a crafted vault name is diagnosed beside an honest one
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        async with run.facts() as facts:
            result = await diagnose([_denial(VaultRef(name)), _denial(VaultRef("kv-payments"))], facts)
    # then Resource Graph was asked once, for the honest name only, and the crafted one found no vault
    assert seen == [build_query(names=["kv-payments"])]
    assert result.findings[0].cause == "VAULT_NOT_FOUND"
    assert result.findings[1].cause != "VAULT_NOT_FOUND"


async def test_a_row_resource_graph_returns_for_another_name_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a Resource Graph that answers every query with the payments vault (whatever name was asked)
    from remediate.emulator import routes_resource_graph
    from remediate.emulator.wire import Response

    row = {"id": PAY["id"], "name": "kv-payments", "type": "microsoft.keyvault/vaults",
           "subscriptionId": PAY["id"].split("/")[2], "resourceGroup": "rg-payments"}
    monkeypatch.setattr(routes_resource_graph, "handle", lambda state, req: Response(200, {
        "totalRecords": 1, "count": 1, "resultTruncated": "false", "data": [row], "facts": []}))
    tenant = copy.deepcopy(TENANT)
    with EmulatorRun(tenant) as run:
        async with run.facts() as facts:
            facts.subscriptions = ()
            # when a denial names another vault
            result = await diagnose([_denial(VaultRef("kv-elsewhere"))], facts)
    # then that vault is not found: a row is used only for the name it carries
    assert result.findings[0].cause == "VAULT_NOT_FOUND"
