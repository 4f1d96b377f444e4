"""Claims per second against a private Azurite: distinct keys (a spread storm) and one hot key (a focused storm).

Starts and stops its own Azurite (``tools/install_azurite.sh`` installs it). An "instance" is one
TableClaimStore with its own async TableClient (as one function host process has); the concurrent claims it makes
("tasks", as a worker's concurrent invocations) share it, so their claims on one key coalesce, while claims from
different instances meet only at the Table's conditional writes.
The hot-key runs also check that the dedupe held: one winner, and the record counts every claim.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableClient

from remediate.store.azure import table_client
from remediate.store.claims import Claim, ClaimKey, TableClaimStore
from tests.support.azurite import start_azurite

WINDOW = timedelta(minutes=10)
TASKS = int(os.environ.get("BENCH_CLAIM_TASKS", "16"))
CLAIMS = int(os.environ.get("BENCH_CLAIMS", "2000"))
HOT_CLAIMS = int(os.environ.get("BENCH_HOT_CLAIMS", "500"))


def _key(i: int) -> ClaimKey:
    return (f"principal-{i}", "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv",
            "secrets", "db-password", "secretget", "403")


async def _run(conn: str, table: str, keys: list[ClaimKey], tasks: int, instances: int) -> tuple[float, list[Claim]]:
    """Claim ``keys`` from ``tasks`` concurrent tasks spread over ``instances`` stores (one per simulated
    instance)."""
    stores = [TableClaimStore(TableClient.from_connection_string(conn, table_name=table)) for _ in range(instances)]
    gate = asyncio.Semaphore(tasks)

    async def one(i: int) -> Claim:
        async with gate:
            return await stores[i % instances].claim(keys[i], WINDOW, datetime.now(UTC), f"claimant-{i}")

    await asyncio.gather(*(s.claim(_key(-2), WINDOW, datetime.now(UTC), "warm-up") for s in stores))
    start = time.perf_counter()
    claims = list(await asyncio.gather(*(one(i) for i in range(len(keys)))))
    elapsed = time.perf_counter() - start
    for store in stores:
        await store.close()
    return elapsed, claims


def main() -> None:
    azurite = start_azurite()
    try:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        hot = [_key(-1)] * HOT_CLAIMS
        for label, keys, tasks, instances in (
            ("distinct keys, 1 instance x 1 task", [_key(i) for i in range(CLAIMS // 4)], 1, 1),
            (f"distinct keys, 1 instance x {TASKS} tasks", [_key(i) for i in range(CLAIMS)], TASKS, 1),
            ("one hot key, 1 instance x 1 task", hot, 1, 1),
            (f"one hot key, 1 instance x {TASKS} tasks", hot, TASKS, 1),
            (f"one hot key, 4 instances x {TASKS // 4} tasks", hot, TASKS, 4),
            (f"one hot key, {TASKS} instances x 1 task", hot, TASKS, TASKS),
        ):
            name = "bench" + uuid.uuid4().hex[:10]
            table_client(service, name)
            elapsed, claims = asyncio.run(_run(azurite.connection_string, name, keys, tasks, instances))
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
