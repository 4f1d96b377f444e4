"""Claims per second against a private Azurite: distinct keys (a spread storm) and one hot key (a focused storm).

Starts and stops its own Azurite (``tools/install_azurite.sh`` installs it). An "instance" is one
TableClaimStore with its own TableClient (as one function host process has); its threads share it, so their
claims on one key coalesce, while claims from different instances meet only at the Table's conditional writes.
The hot-key runs also check that the dedupe held: one winner, and the record counts every claim.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableClient, TableServiceClient

from remediate.store.azure import table_client
from remediate.store.claims import Claim, ClaimKey, TableClaimStore
from tests.azurite import start_azurite

WINDOW = timedelta(minutes=10)
THREADS = int(os.environ.get("BENCH_CLAIM_THREADS", "16"))
CLAIMS = int(os.environ.get("BENCH_CLAIMS", "2000"))
HOT_CLAIMS = int(os.environ.get("BENCH_HOT_CLAIMS", "500"))


def _key(i: int) -> ClaimKey:
    return (f"principal-{i}", "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv",
            "secrets", "db-password", "secretget", "403")


def _run(conn: str, table: str, keys: list[ClaimKey], threads: int, instances: int) -> tuple[float, list[Claim]]:
    """Claim ``keys`` from ``threads`` threads spread over ``instances`` stores (one per simulated instance)."""
    stores = [TableClaimStore(TableClient.from_connection_string(conn, table_name=table)) for _ in range(instances)]

    def one(i: int) -> Claim:
        return stores[i % instances].claim(keys[i], WINDOW, datetime.now(UTC), f"claimant-{i}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        claims = list(pool.map(one, range(len(keys))))
    return time.perf_counter() - start, claims


def main() -> None:
    azurite = start_azurite()
    try:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        hot = [_key(-1)] * HOT_CLAIMS
        for label, keys, threads, instances in (
            ("distinct keys, 1 instance x 1 thread", [_key(i) for i in range(CLAIMS // 4)], 1, 1),
            (f"distinct keys, 1 instance x {THREADS} threads", [_key(i) for i in range(CLAIMS)], THREADS, 1),
            ("one hot key, 1 instance x 1 thread", hot, 1, 1),
            (f"one hot key, 1 instance x {THREADS} threads", hot, THREADS, 1),
            (f"one hot key, 4 instances x {THREADS // 4} threads", hot, THREADS, 4),
            (f"one hot key, {THREADS} instances x 1 thread", hot, THREADS, THREADS),
        ):
            name = "bench" + uuid.uuid4().hex[:10]
            table_client(service, name)
            elapsed, claims = _run(azurite.connection_string, name, keys, threads, instances)
            winners = sum(c.won for c in claims)
            line = f"claims {label}: {len(keys)} claims in {elapsed:.2f} s = {len(keys) / elapsed:,.0f} claims/s"
            if len(set(keys)) == 1:
                top = max(c.occurrences for c in claims)
                ok = winners == 1 and top == len(keys)
                line += f" (winners {winners}, occurrences {top}/{len(keys)}: {'ok' if ok else 'MISMATCH'})"
            else:
                line += f" (winners {winners}/{len(keys)})"
            print(line, flush=True)
            service.delete_table(name)
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
