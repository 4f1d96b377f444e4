"""The vault name -> id index that outlives a batch: hits skip Resource Graph, entries expire after their TTL, a 404
from ARM forgets one; in memory and in the Azure Table ``vaultindex`` (Azurite)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from azure.data.tables.aio import TableClient as AsyncTableClient

from remediate.backends import EmulatorRun
from remediate.model import Denial, ObjectRef, Principal, VaultRef
from remediate.service import diagnose
from remediate.store.vault_index import LayeredVaultIndex, MemoryVaultIndex, TableVaultIndex, partition_key

TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
PAY = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")
APP = str(uuid.uuid5(uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"), "app-orders"))
SCOPE = "https://management.azure.com"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _denial(name: str = "kv-payments") -> Denial:
    return Denial(source="test", status=403, principal=Principal(object_id=APP, kind="app"), vault=VaultRef(name),
                  operation="SecretGet", object=ObjectRef("secrets", "db-password"))


async def _batch(run: EmulatorRun, index: Any, name: str = "kv-payments") -> Any:
    async with run.facts(index=index) as facts:
        return await diagnose([_denial(name)], facts)


# ---- memory ---------------------------------------------------------------------------------------------------

async def test_memory_index_hits_until_the_ttl_then_misses() -> None:
    clock = Clock()
    index = MemoryVaultIndex(timedelta(minutes=10), clock=clock)
    await index.put(SCOPE, "KV-Payments", PAY["id"])
    assert await index.get(SCOPE, "kv-payments") == PAY["id"]
    assert await index.get("https://management.usgovcloudapi.net", "kv-payments") is None   # another cloud
    clock.now += 599
    assert await index.get(SCOPE, "kv-payments") == PAY["id"]
    clock.now += 2
    assert await index.get(SCOPE, "kv-payments") is None


async def test_memory_index_stores_only_a_valid_name_and_an_id_ending_in_it() -> None:
    index = MemoryVaultIndex()
    await index.put(SCOPE, "kv-other", PAY["id"])
    await index.put(SCOPE, "kv'x", PAY["id"])
    await index.put(SCOPE, "kv-payments", "/subscriptions/x/kv-payments")
    assert len(index) == 0


async def test_memory_index_is_bounded() -> None:
    index = MemoryVaultIndex(max_entries=3)
    for i in range(5):
        await index.put(SCOPE, f"kv-{i}x", PAY["id"].replace("kv-payments", f"kv-{i}x"))
    assert len(index) == 3
    assert await index.get(SCOPE, "kv-0x") is None and await index.get(SCOPE, "kv-4x") is not None


# ---- the index in the diagnosis ------------------------------------------------------------------------------

async def test_a_second_batch_finds_the_vault_in_the_index_without_resource_graph() -> None:
    index = MemoryVaultIndex()
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        # given a first batch that found the vault through Resource Graph
        first = await _batch(run, index)
        # when a second batch (a new fact source, as the next invocation has) names it again
        second = await _batch(run, index)
    # then the index answered: no Resource Graph request, and the reads started together with the id known
    assert first.stats.requests.requests_by_api.get("resource_graph") == 1
    assert "resource_graph" not in second.stats.requests.requests_by_api
    assert second.findings[0].cause == first.findings[0].cause != "VAULT_NOT_FOUND"


async def test_an_expired_entry_is_asked_of_resource_graph_again() -> None:
    clock = Clock()
    index = MemoryVaultIndex(timedelta(hours=1), clock=clock)
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        await _batch(run, index)
        clock.now += 3601
        again = await _batch(run, index)
    assert again.stats.requests.requests_by_api.get("resource_graph") == 1


def _move(run: EmulatorRun, old: str, new: str) -> None:
    """The vault deleted at ``old`` and created again at ``new`` (ARM's view; Resource Graph catches up later)."""
    state = run.emulator.state
    with state.lock:
        vault = state.vaults.pop(old.lower())
        state.vaults[new.lower()] = dict(vault, id=new)


async def test_a_404_forgets_the_entry_and_the_vault_is_found_where_it_is_now() -> None:
    # given an index entry pointing where the vault no longer is (deleted, and created again elsewhere)
    index = MemoryVaultIndex()
    moved = PAY["id"].replace("rg-payments", "rg-moved")
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        await _batch(run, index)
        _move(run, PAY["id"], moved)
        run.emulator.state.sync_resource_graph()
        # when the next batch names it
        result = await _batch(run, index)
        # then ARM's 404 made the batch ask Resource Graph again, which knows the new place, and the index follows
        assert result.findings[0].cause != "VAULT_NOT_FOUND"
        assert result.stats.requests.requests_by_api.get("resource_graph") == 1
        assert any("where ARM has no vault" in n for n in result.notes)
        assert await index.get(run.index_scope, "kv-payments") == moved


async def test_a_404_with_resource_graph_still_stale_falls_back_to_arm() -> None:
    index = MemoryVaultIndex()
    moved = PAY["id"].replace("rg-payments", "rg-moved")
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        await _batch(run, index)
        _move(run, PAY["id"], moved)
        # Resource Graph has not caught up: it still lists the old place
        result = await _batch(run, index)
        assert result.findings[0].cause != "VAULT_NOT_FOUND"
        assert any("found through ARM" in n for n in result.notes)
        assert await index.get(run.index_scope, "kv-payments") == moved


async def test_a_failing_index_is_a_miss_never_a_failed_diagnosis() -> None:
    class Broken:
        async def get(self, scope: str, name: str) -> str | None:
            raise RuntimeError("table down")

        async def put(self, scope: str, name: str, resource_id: str) -> None:
            raise RuntimeError("table down")

        async def forget(self, scope: str, name: str) -> None:
            raise RuntimeError("table down")

    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        result = await _batch(run, Broken())
    assert result.findings[0].cause != "VAULT_NOT_FOUND"


# ---- the Table (Azurite) ---------------------------------------------------------------------------------------

async def _table(azurite: str) -> AsyncTableClient:
    client = AsyncTableClient.from_connection_string(azurite, table_name=f"vaultindex{uuid.uuid4().hex[:8]}")
    await client.create_table()
    return client


async def test_table_index_round_trips_expires_and_forgets(azurite: str) -> None:
    now = [datetime(2026, 12, 7, 12, 0, tzinfo=UTC)]
    client = await _table(azurite)
    index = TableVaultIndex(client, timedelta(hours=24), now=lambda: now[0])
    try:
        await index.put(SCOPE, "KV-Payments", PAY["id"])
        entity = await client.get_entity(partition_key(SCOPE), "kv-payments")
        assert entity["ResourceId"] == PAY["id"]
        assert await index.get(SCOPE, "kv-payments") == PAY["id"]
        assert await index.get("emulator:other", "kv-payments") is None
        now[0] += timedelta(hours=23, minutes=59)
        assert await index.get(SCOPE, "kv-payments") == PAY["id"]
        now[0] += timedelta(minutes=2)
        assert await index.get(SCOPE, "kv-payments") is None
        now[0] -= timedelta(hours=1)
        await index.forget(SCOPE, "kv-payments")
        assert await index.get(SCOPE, "kv-payments") is None
        await index.forget(SCOPE, "kv-payments")       # forgetting twice is fine
    finally:
        await client.delete_table()
        await index.close()


async def test_table_index_refuses_an_id_that_does_not_end_in_the_name(azurite: str) -> None:
    client = await _table(azurite)
    index = TableVaultIndex(client)
    try:
        await index.put(SCOPE, "kv-other", PAY["id"])
        # a row written behind our back with another vault's id is not returned either
        await client.upsert_entity({"PartitionKey": partition_key(SCOPE), "RowKey": "kv-other",
                                    "ResourceId": PAY["id"], "ResolvedAt": datetime.now(UTC)})
        assert await index.get(SCOPE, "kv-other") is None
    finally:
        await client.delete_table()
        await index.close()


async def test_the_table_layer_serves_another_process_and_fills_its_memory(azurite: str) -> None:
    # given one process that resolved the vault (its memory and the shared Table)
    client = await _table(azurite)
    table = TableVaultIndex(client)
    try:
        with EmulatorRun(copy.deepcopy(TENANT)) as run:
            await _batch(run, LayeredVaultIndex([MemoryVaultIndex(), table]))
            # when another process (its own, empty memory) diagnoses the same vault
            memory = MemoryVaultIndex()
            result = await _batch(run, LayeredVaultIndex([memory, table]))
            # then the Table answered (no Resource Graph request) and the process remembers it in memory
            assert "resource_graph" not in result.stats.requests.requests_by_api
            assert await memory.get(run.index_scope, "kv-payments") == PAY["id"]
    finally:
        await client.delete_table()
        await table.close()


async def test_denials_sharing_a_stale_name_ask_resource_graph_again_once() -> None:
    # given an index entry for a vault that moved, and two callers denied on it in one batch
    index = MemoryVaultIndex()
    moved = PAY["id"].replace("rg-payments", "rg-moved")
    other = str(uuid.uuid5(uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"), "app-billing"))
    with EmulatorRun(copy.deepcopy(TENANT)) as run:
        await _batch(run, index)
        _move(run, PAY["id"], moved)
        run.emulator.state.sync_resource_graph()
        async with run.facts(index=index) as facts:
            d = _denial()
            result = await diagnose([d, d.with_(principal=Principal(object_id=other, kind="app"))], facts)
    # then both found the vault where it is now, through one more Resource Graph query and one GET per place
    assert [f.cause != "VAULT_NOT_FOUND" for f in result.findings] == [True, True]
    assert result.stats.requests.requests_by_api["resource_graph"] == 1
    assert not any("found through ARM" in n for n in result.notes)
