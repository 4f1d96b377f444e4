"""Findings records on real Azurite tables and a real SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableClient as AsyncTableClient

from remediate.store.azure import table_client
from remediate.store.findings import FindingStore, SqliteFindingStore, TableFindingStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
VAULT = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"


def finding(n: int) -> dict[str, Any]:
    return {"cause": "MISSING_ROLE_ASSIGNMENT", "occurrences": n, "explanation": "x" * 50,
            "denial": {"principal": {"object_id": f"oid-{n}"}, "vault": {"name": "kv", "resource_id": VAULT}},
            "plan": {"kind": "role_assignment", "scope": VAULT}, "advice": []}


@pytest.fixture(params=["table", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FindingStore]:
    """Given an empty findings store on each real backend."""
    if request.param == "table":
        service: TableServiceClient = request.getfixturevalue("table_service")
        conn: str = request.getfixturevalue("azurite")
        name = "findings" + uuid.uuid4().hex[:12]
        table_client(service, name)
        table = TableFindingStore(AsyncTableClient.from_connection_string(conn, table_name=name))
        yield table
        await table.close()
        service.delete_table(name)
    else:
        yield SqliteFindingStore(tmp_path / "state.db")


async def test_round_trip_newest_first(store: FindingStore) -> None:
    # given findings recorded over two hours (so the table spans partitions), out of order
    minutes = [0, 90, 30, 61, 5]
    ids = {m: await store.record(finding(m), alert_id=f"alert-{m}", invocation_id=f"inv-{m}",
                           when=T0 + timedelta(minutes=m)) for m in minutes}
    # when listing
    got = await store.list(limit=10)
    # then all come back newest first with their ids, context and summary
    assert [r["id"] for r in got] == [ids[m] for m in sorted(minutes, reverse=True)]
    first = got[0]
    assert first["finding"] == finding(90)
    assert (first["alert_id"], first["invocation_id"]) == ("alert-90", "inv-90")
    assert (first["cause"], first["vault"], first["principal"]) == ("MISSING_ROLE_ASSIGNMENT", VAULT, "oid-90")
    assert first["time"] == "2026-11-27T13:30:00.000000Z"
    # and limit cuts the newest
    assert [r["id"] for r in await store.list(limit=2)] == [ids[90], ids[61]]


async def test_same_instant_findings_are_all_kept(store: FindingStore) -> None:
    # given 20 findings recorded at the same instant without alert context
    for n in range(20):
        await store.record({"cause": None, "plan": None, "big": "y" * 40_000, "n": n}, alert_id=None,
                           invocation_id=None, when=T0)
    # when listing; then none was lost, large bodies intact
    got = await store.list(limit=100)
    assert sorted(r["finding"]["n"] for r in got) == list(range(20))
    assert all(len(r["finding"]["big"]) == 40_000 and r["alert_id"] is None for r in got)
