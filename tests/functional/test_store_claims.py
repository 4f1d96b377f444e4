"""Claims: exactly one winner per denial tuple and window, on real Azurite tables and a real SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableClient as AsyncTableClient

from remediate.store.azure import table_client
from remediate.store.claims import Claim, TableClaimStore, key_hash
from tests.support.claims import KEY, T0, WINDOW, StoreFactory


async def _storm(factory: StoreFactory, n: int, now: datetime, prefix: str,
                 instances: int | None = None) -> list[Claim]:
    """n concurrent claims from ``instances`` stores (default: one per claim, as n separate instances)."""
    stores = [factory() for _ in range(instances or n)]  # separate clients, as separate instances would have
    return list(await asyncio.gather(*(stores[i % len(stores)].claim(KEY, WINDOW, now + timedelta(microseconds=i),
                                                                     f"{prefix}-{i}") for i in range(n))))


async def test_first_claim_wins_and_later_ones_count_occurrences(new_store: StoreFactory) -> None:
    # given an empty store
    store = new_store()
    # when three instances claim the same tuple inside the window
    first = await store.claim(KEY, WINDOW, T0, "a")
    second = await store.claim(KEY, WINDOW, T0 + timedelta(minutes=1), "b")
    third = await store.claim(KEY, WINDOW, T0 + timedelta(minutes=2), "c")
    # then the first wins and the others count occurrences on its record
    assert (first.won, first.occurrences, first.winner) == (True, 1, "a")
    assert (second.won, second.occurrences, second.winner) == (False, 2, "a")
    assert (third.won, third.occurrences, third.winner) == (False, 3, "a")
    assert first.key_hash == second.key_hash == key_hash(KEY)
    assert first.expires_at == T0 + WINDOW


async def test_different_tuples_do_not_interfere(new_store: StoreFactory) -> None:
    # given a claimed tuple
    store = new_store()
    await store.claim(KEY, WINDOW, T0, "a")
    # when a tuple differing only by None vs "" is claimed
    other = await store.claim((*KEY[:-1], None), WINDOW, T0, "b")
    # then it is a separate claim
    assert other.won and other.occurrences == 1


async def test_winner_reclaiming_is_idempotent(new_store: StoreFactory) -> None:
    # given a tuple won by claimant "msg-1"
    store = new_store()
    await store.claim(KEY, WINDOW, T0, "msg-1")
    await store.claim(KEY, WINDOW, T0, "msg-2")
    # when the same claimant (a redelivered message) claims again
    again = await store.claim(KEY, WINDOW, T0 + timedelta(minutes=1), "msg-1")
    # then it still wins and no occurrence is added
    assert again.won and again.occurrences == 2 and again.winner == "msg-1"


async def test_fifty_concurrent_claimants_one_winner(new_store: StoreFactory) -> None:
    # given 50 instances with their own clients
    # when all claim the same tuple at once
    claims = await _storm(new_store, 50, T0, "inst")
    # then exactly one wins, and the losers' counts are exactly 2..50 (each occurrence landed once)
    winners = [c for c in claims if c.won]
    assert len(winners) == 1
    assert sorted(c.occurrences for c in claims if not c.won) == list(range(2, 51))
    assert {c.winner for c in claims} == {winners[0].winner}
    # and the record holds 50 occurrences
    final = await new_store().claim(KEY, WINDOW, T0 + timedelta(minutes=1), "late")
    assert final.occurrences == 51


async def test_concurrent_claims_of_few_instances_coalesce_without_losing_counts(new_store: StoreFactory) -> None:
    # given 3 instances with 20 concurrent claims each on one tuple
    # when all 60 claim at once
    claims = await _storm(new_store, 60, T0, "inst", instances=3)
    # then exactly one wins and every occurrence is counted exactly once
    assert [c.won for c in claims].count(True) == 1
    assert sorted(c.occurrences for c in claims if not c.won) == list(range(2, 61))
    assert (await new_store().claim(KEY, WINDOW, T0 + timedelta(minutes=1), "late")).occurrences == 61


async def test_expired_window_is_taken_over_exactly_once(new_store: StoreFactory) -> None:
    # given a tuple won at T0 and counted twice
    store = new_store()
    await store.claim(KEY, WINDOW, T0, "old")
    await store.claim(KEY, WINDOW, T0 + timedelta(minutes=1), "x")
    # when 20 instances claim concurrently after the window has passed
    later = T0 + WINDOW + timedelta(seconds=1)
    claims = await _storm(new_store, 20, later, "new")
    # then exactly one takes over, with a fresh window and count
    winners = [c for c in claims if c.won]
    assert len(winners) == 1 and winners[0].winner.startswith("new-")
    assert later <= winners[0].expires_at - WINDOW < later + timedelta(seconds=1)
    assert sorted(c.occurrences for c in claims) == list(range(1, 21))


async def test_naive_time_is_refused(new_store: StoreFactory) -> None:
    # given a store; when claiming with a naive datetime; then it is refused before any write
    with pytest.raises(ValueError, match="timezone-aware"):
        await new_store().claim(KEY, WINDOW, datetime(2026, 1, 1), "a")


async def test_record_deleted_behind_our_back_is_recreated(azurite: str, table_service: TableServiceClient) -> None:
    # given a store that has seen a key's record, and the record then deleted (e.g. by a cleanup job)
    name = "claims" + uuid.uuid4().hex[:12]
    table = table_client(table_service, name)
    store = TableClaimStore(AsyncTableClient.from_connection_string(azurite, table_name=name))
    first = await store.claim(KEY, WINDOW, T0, "a")
    table.delete_entity(first.key_hash[:2], first.key_hash)
    # when the key is claimed again inside the old window; then the new claimant wins a fresh record
    again = await store.claim(KEY, WINDOW, T0 + timedelta(minutes=1), "b")
    assert (again.won, again.occurrences, again.winner) == (True, 1, "b")
    await store.close()
    table_service.delete_table(name)
