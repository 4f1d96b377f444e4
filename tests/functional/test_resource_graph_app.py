"""The function app keeps the vault index across invocations: the process's memory in front of the Table
`vaultindex` (Azurite), so the next invocation naming the same vault skips Resource Graph."""

from __future__ import annotations

import pytest
from azure.data.tables import TableServiceClient

from remediate.app import services
from remediate.app.http import diagnose_body
from remediate.app.settings import VAULT_INDEX_TABLE
from remediate.store.vault_index import LayeredVaultIndex, partition_key
from tests.support.app import DEMO, app_environment

BODY = (b'{"principal_id": "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879", "vault": "kv-payments", '
        b'"operation": "SecretGet", "object": "secrets/db-password"}')


async def test_the_next_invocation_finds_the_vault_in_the_index(monkeypatch: pytest.MonkeyPatch, azurite: str,
                                                                 table_service: TableServiceClient) -> None:
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        rt = services.get()
        try:
            # given a first /api/diagnose naming the vault by name
            first = await diagnose_body(BODY)
            # when the next invocation names it again
            second = await diagnose_body(BODY)
            index = await rt.vault_index()
            run = rt.emulator
        finally:
            await rt.aclose()
        # then the first asked Resource Graph, the second found the id in the index
        assert first["stats"]["requests_by_api"].get("resource_graph") == 1
        assert "resource_graph" not in second["stats"]["requests_by_api"]
        assert first["findings"][0]["cause"] == second["findings"][0]["cause"]
        # and the index is the process's memory in front of the Table, which holds the resolution for other instances
        assert isinstance(index, LayeredVaultIndex)
        assert run is not None
        entity = table_service.get_table_client(VAULT_INDEX_TABLE).get_entity(partition_key(run.index_scope),
                                                                              "kv-payments")
        assert entity["ResourceId"].endswith("/providers/Microsoft.KeyVault/vaults/kv-payments")


async def test_without_storage_the_index_is_the_process_memory(monkeypatch: pytest.MonkeyPatch, azurite: str) -> None:
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=x;AccountKey=eA==;"
                           "TableEndpoint=http://127.0.0.1:9/x;")
        services.reset()
        rt = services.get()
        try:
            first = await diagnose_body(BODY)
            second = await diagnose_body(BODY)
        finally:
            await rt.aclose()
        assert first["findings"][0]["cause"] == second["findings"][0]["cause"]
        assert "resource_graph" not in second["stats"]["requests_by_api"]
