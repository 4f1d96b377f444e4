"""Grant audit records: the same behaviour on Azure Tables (real Azurite) and SQLite (a real file)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.data.tables import TableClient, TableServiceClient

from remediate.errors import InputError, StorageError
from remediate.store.azure import table_client
from remediate.store.grants import EMULATOR, GrantRecord, GrantStore, SqliteGrantStore, TableGrantStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
VAULT = "/subscriptions/0000/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/Contoso-KV"
OTHER_VAULT = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/other"
PLAN = {"kind": "access_policy", "vault_id": VAULT, "object_id": "p1",
        "add": {"keys": [], "secrets": ["get"], "certificates": [], "storage": []}}


@pytest.fixture(params=["table", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GrantStore]:
    """Given an empty grant store on each real backend."""
    if request.param == "table":
        service: TableServiceClient = request.getfixturevalue("table_service")
        name = "grants" + uuid.uuid4().hex[:12]
        yield TableGrantStore(table_client(service, name))
        service.delete_table(name)
    else:
        yield SqliteGrantStore(tmp_path / "nested" / "state.db")


def applied(minutes: int, *, vault: str = VAULT, ttl: timedelta | None = timedelta(hours=1),
            principal: str = "p1") -> GrantRecord:
    when = T0 + timedelta(minutes=minutes)
    return GrantRecord(outcome="applied", time=when, alert_id="alert-1", correlation_id="corr-1",
                       finding={"cause": "MISSING_ACCESS_POLICY", "occurrences": 3}, plan=PLAN,
                       before={"permissions": {"secrets": ["list"]}},
                       after={"permissions": {"secrets": ["get", "list"]}}, actor="func-identity-oid",
                       expires_at=when + ttl if ttl else None, vault_id=vault, principal_id=principal,
                       scope=vault, permissions_added={"secrets": ["get"]})


def test_round_trip_keeps_every_field(store: GrantStore) -> None:
    # given a fully populated applied record
    record = applied(0)
    # when it is added and read back
    store.add(record)
    # then every field comes back equal
    assert store.get(record.id) == record
    assert store.get("no-such-id") is None


def test_large_before_after_round_trip(store: GrantStore) -> None:
    # given a record whose 'before' is larger than one table property can hold
    big = {"entries": [{"object_id": f"{i:08d}", "permissions": {"secrets": ["get", "list"]}} for i in range(2000)]}
    record = GrantRecord(outcome="applied", time=T0, before=big, vault_id=VAULT)
    # when stored and read back; then it is intact
    store.add(record)
    got = store.get(record.id)
    assert got is not None and got.before == big


def test_ids_are_never_overwritten(store: GrantStore) -> None:
    # given a stored record; when a record with the same id is added; then it is refused
    record = applied(0)
    store.add(record)
    with pytest.raises(InputError) as info:
        store.add(record)
    assert info.value.code == "GRANT_EXISTS"


def test_list_filters_and_orders_newest_first(store: GrantStore) -> None:
    # given applied, refused and other-vault records
    a1, a2 = applied(1), applied(5)
    refused = GrantRecord(outcome="refused", time=T0 + timedelta(minutes=3), refused_by="max_tier", vault_id=VAULT,
                          plan=PLAN)
    other = applied(2, vault=OTHER_VAULT)
    for r in (a1, refused, a2, other):
        store.add(r)
    # when listing; then newest first, filters are case-insensitive on the vault and exact on the outcome
    assert [r.id for r in store.list()] == [a2.id, refused.id, other.id, a1.id]
    assert [r.id for r in store.list(vault=VAULT.lower())] == [a2.id, refused.id, a1.id]
    assert [r.id for r in store.list(vault=VAULT, outcome="refused")] == [refused.id]
    assert [r.refused_by for r in store.list(outcome="refused")] == ["max_tier"]
    assert [r.id for r in store.list(limit=2)] == [a2.id, refused.id]
    with pytest.raises(InputError):
        store.list(outcome="granted")


def test_expired_and_mark_revoked(store: GrantStore) -> None:
    # given grants expiring at T0+1h, T0+1h10m, one without TTL, and a refused record
    early, late, forever = applied(0), applied(10), applied(20, ttl=None)
    for r in (late, early, forever, GrantRecord(outcome="refused", time=T0, refused_by="scopes")):
        store.add(r)
    # when asking at the first expiry; then only the first is expired (expiry is inclusive)
    assert [r.id for r in store.expired(T0 + timedelta(hours=1))] == [early.id]
    assert [r.id for r in store.expired(T0 + timedelta(hours=2))] == [early.id, late.id]
    # when one is revoked; then it is no longer expired, and it keeps its outcome and the revocation details
    assert store.mark_revoked(early.id, T0 + timedelta(hours=2), "deleted access policy permission secrets/get")
    assert not store.mark_revoked(early.id, T0 + timedelta(hours=3), "second try")
    assert [r.id for r in store.expired(T0 + timedelta(hours=2))] == [late.id]
    got = store.get(early.id)
    assert got is not None and got.outcome == "applied"
    assert got.revoked_at == T0 + timedelta(hours=2)
    assert got.revoke_detail == "deleted access policy permission secrets/get"
    # and an unknown id is a clear error
    with pytest.raises(InputError) as info:
        store.mark_revoked("nope", T0)
    assert info.value.code == "GRANT_NOT_FOUND"


def test_concurrent_revokers_only_one_wins(store: GrantStore) -> None:
    # given one expired grant; when 10 timer instances revoke it at once; then exactly one reports doing it
    record = applied(0)
    store.add(record)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda i: store.mark_revoked(record.id, T0 + timedelta(hours=2), f"r{i}"),
                                range(10)))
    assert results.count(True) == 1


def test_count_applied_since(store: GrantStore) -> None:
    # given applied grants at minutes 0, 30, 50 on one vault (one revoked), one refused, one on another vault
    records = [applied(0), applied(30), applied(50), applied(40, vault=OTHER_VAULT),
               GrantRecord(outcome="refused", time=T0 + timedelta(minutes=45), vault_id=VAULT)]
    for r in records:
        store.add(r)
    store.mark_revoked(records[1].id, T0 + timedelta(minutes=55))
    # when counting the last hour at T0+60m (inclusive of T0) and since T0+30m
    # then only applied grants on that vault count, revoked ones included; vault ids compare case-insensitively
    assert store.count_applied_since(VAULT.upper(), T0) == 3
    assert store.count_applied_since(VAULT, T0 + timedelta(minutes=30)) == 2
    assert store.count_applied_since(VAULT, T0 + timedelta(minutes=51)) == 0


def test_count_applied_since_keeps_emulator_and_azure_apart(store: GrantStore) -> None:
    # given two grants made in Azure and one in the bundled emulator on the same vault id
    for r in (applied(0), applied(10), replace(applied(20), backend=EMULATOR)):
        store.add(r)
    # then each backend counts only its own against max_grants_per_hour
    assert store.count_applied_since(VAULT, T0) == 2
    assert store.count_applied_since(VAULT, T0, EMULATOR) == 1


def test_naive_times_are_refused() -> None:
    # given/when a record is built with a naive time; then it is refused
    with pytest.raises(ValueError, match="timezone-aware"):
        GrantRecord(outcome="applied", time=datetime(2026, 1, 1))


def test_default_sqlite_path_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given HOME pointing at an empty directory
    monkeypatch.setenv("HOME", str(tmp_path))
    # when the store is built without a path; then ~/.kv-remediate/state.db is created with its parents
    store = SqliteGrantStore()
    assert store.path == tmp_path / ".kv-remediate" / "state.db"
    assert store.path.exists()


def test_table_store_with_separate_clients_sees_same_records(table_service: TableServiceClient,
                                                             azurite: str) -> None:
    # given two instances with their own clients on one table
    name = "grants" + uuid.uuid4().hex[:12]
    first = TableGrantStore(table_client(table_service, name))
    second = TableGrantStore(TableClient.from_connection_string(azurite, table_name=name))
    # when one records a grant; then the other counts it for the rate limit
    first.add(applied(0))
    assert second.count_applied_since(VAULT, T0) == 1
    table_service.delete_table(name)


def test_unusable_state_file_is_a_storage_error(tmp_path: Path) -> None:
    # given a state path whose parent is a regular file
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    # when the SQLite store is opened there; then the error names the file and what to do
    with pytest.raises(StorageError, match=r"could not open the state file .*--state"):
        SqliteGrantStore(blocker / "state.db")


def pending(minutes: int, key: str = "ra|scope|p1|role", ttl: timedelta = timedelta(hours=1)) -> GrantRecord:
    when = T0 + timedelta(minutes=minutes)
    return GrantRecord(outcome="pending", time=when, expires_at=when + ttl, vault_id=VAULT, principal_id="p1",
                       scope=VAULT, plan=PLAN, write_key=key, detail="intent recorded")


def test_begin_holds_the_write_identity_until_settled(store: GrantStore) -> None:
    # given an intent on one write identity
    first = pending(0)
    assert store.begin(first) == first
    # when a retry begins the same write; then nothing new is recorded and the open intent comes back
    assert store.begin(pending(1)).id == first.id
    assert store.open_for(first.write_key or "") == first
    assert [r.id for r in store.list()] == [first.id]
    # when it is settled as applied; then it still holds the key (a grant of ours exists)
    applied_rec = replace(first, outcome="applied", detail="created")
    assert store.settle(first.id, "pending", applied_rec)
    assert not store.settle(first.id, "pending", replace(first, outcome="abandoned"))   # settled already
    assert store.open_for(first.write_key or "") == applied_rec
    # when it is revoked; then the key is free, and the next intent on it is recorded
    store.mark_revoked(first.id, T0 + timedelta(hours=2), "expired")
    assert store.open_for(first.write_key or "") is None
    second = pending(200)
    assert store.begin(second) == second


def test_failed_intent_frees_the_key(store: GrantStore) -> None:
    first = pending(0)
    store.begin(first)
    assert store.settle(first.id, "pending", replace(first, outcome="failed", detail="ARM said no"))
    assert store.open_for(first.write_key or "") is None
    assert store.begin(pending(1)).id != first.id


def test_expiry_and_intent_queries_are_answered_by_time(store: GrantStore) -> None:
    # given intents at minutes 0, 10, 20 on distinct writes; the first two applied, the last still pending
    recs = [pending(m, key=f"ra|s|p{m}|r") for m in (0, 10, 20)]
    for r in recs:
        store.begin(r)
    for r in recs[:2]:
        store.settle(r.id, "pending", replace(r, outcome="applied"))
    # then "unresolved before T" and "applied expiring at or before T" see exactly what is due
    assert [r.id for r in store.unresolved_before(T0 + timedelta(minutes=19))] == []
    assert [r.id for r in store.unresolved_before(T0 + timedelta(minutes=20))] == [recs[2].id]
    assert [r.id for r in store.expired(T0 + timedelta(minutes=65))] == [recs[0].id]
    assert [r.id for r in store.expired(T0 + timedelta(hours=3))] == [recs[0].id, recs[1].id]   # not the pending
    store.mark_revoked(recs[0].id, T0 + timedelta(hours=3))
    assert [r.id for r in store.expired(T0 + timedelta(hours=3))] == [recs[1].id]
    assert store.vaults() == [VAULT.lower()]


def test_table_expiry_query_reads_the_index_not_the_partition(table_service: TableServiceClient) -> None:
    # given 200 applied grants, 2 of them due
    name = "grants" + uuid.uuid4().hex[:12]
    client = table_client(table_service, name)
    store = TableGrantStore(client)
    for i in range(200):
        store.add(applied(i, ttl=timedelta(hours=1) if i < 2 else timedelta(days=30)))
    queries: list[str] = []
    original = client.query_entities

    def spy(query_filter: str, **kw: object) -> object:
        queries.append(query_filter)
        return original(query_filter, **kw)  # type: ignore[arg-type]

    client.query_entities = spy  # type: ignore[method-assign]
    # when the timer asks what is due; then the answer comes from a RowKey range of the index partition
    assert len(store.expired(T0 + timedelta(hours=2))) == 2
    assert queries == ["PartitionKey eq @pk and RowKey le @upto"]
    table_service.delete_table(name)


def test_a_constraint_failure_is_a_storage_error_not_a_duplicate(tmp_path: Path) -> None:
    # given a state file whose grants table was made by something else (an extra NOT NULL column)
    import sqlite3

    db = tmp_path / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE grants (id TEXT PRIMARY KEY, time TEXT NOT NULL, outcome TEXT NOT NULL, "
                     "vault_key TEXT, expires_at TEXT, revoked_at TEXT, record TEXT NOT NULL, extra TEXT NOT NULL)")
    store = SqliteGrantStore(db)
    # when a record is added; then the error says what it is, never "a record with this id already exists"
    with pytest.raises(StorageError, match="NOT NULL constraint failed") as info:
        store.add(applied(0))
    assert "already exists" not in info.value.message
