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


async def test_since_rows_and_get_for_the_findings_page(store: FindingStore) -> None:
    # given findings recorded over five hours
    ids = {m: await store.record({**finding(m), "outcome": "suggested"}, alert_id=None, invocation_id=None,
                                 when=T0 + timedelta(minutes=m)) for m in (0, 70, 150, 290)}
    # when listing since 02:30 after T0 (the store keeps whole hours; the page filters the exact time)
    since = await store.list(limit=10, since=T0 + timedelta(minutes=150))
    assert [r["id"] for r in since] == [ids[290], ids[150]]
    # then the page's rows carry the list columns without the finding, and get reads one whole record
    rows = await store.rows(limit=10)
    assert [r["id"] for r in rows] == [ids[m] for m in (290, 150, 70, 0)]
    assert "finding" not in rows[0] and rows[0]["outcome"] == "suggested" and rows[0]["explanation"] == "x" * 50
    assert rows[0]["vault_name"] == "kv" and rows[0]["principal"] == "oid-290"
    assert [r["id"] for r in await store.rows(limit=10, since=T0 + timedelta(minutes=70))] == [
        ids[290], ids[150], ids[70]]
    whole = await store.get(ids[70])
    assert whole is not None and whole["finding"]["occurrences"] == 70
    assert await store.get("00000000000000000-0000") is None and await store.get("not an id") is None


async def test_rows_of_records_made_before_the_list_columns(table_service: TableServiceClient, azurite: str) -> None:
    # given a record as the store wrote it before the list columns existed (no columns, no marker)
    name = "findings" + uuid.uuid4().hex[:12]
    table_client(table_service, name)
    store = TableFindingStore(AsyncTableClient.from_connection_string(azurite, table_name=name))
    try:
        rid = await store.record({**finding(1), "outcome": "applied"}, alert_id=None, invocation_id=None, when=T0)
        table = table_service.get_table_client(name)
        entity = dict(next(iter(table.list_entities())))
        for column in ("listed", "outcome", "explanation", "vault_name", "principal_name", "operation"):
            entity.pop(column, None)
        table.upsert_entity(entity, mode="replace")   # type: ignore[arg-type]
        # when the page lists it; then its columns come from the whole record
        (row,) = await store.rows()
        assert row["id"] == rid and row["outcome"] == "applied" and row["explanation"] == "x" * 50
    finally:
        await store.close()
        table_service.delete_table(name)
