"""A claim key and window for the claim store tests (no tests here), and the type of a store factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from remediate.store.claims import ClaimKey, ClaimStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
KEY: ClaimKey = ("11111111-1111-1111-1111-111111111111", "/subscriptions/s/resourcegroups/rg/vaults/kv",
                 "secrets", "db/password#1?", "secretget", "403")

StoreFactory = Callable[[], ClaimStore]
