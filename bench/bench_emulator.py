"""Emulator throughput and latency through the real SDK clients (sync and async), no injected latency.

Prints: start-up time, sync sequential requests/s with p50/p99 latency, sync with 8 threads, async with 32
in flight, and a filtered role-assignment list over a subscription holding 4,000 assignments.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.aio import KeyVaultManagementClient as AsyncKeyVaultManagementClient

from remediate.emulator import Emulator

SUB = "00000000-0000-0000-0000-0000000000b1"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-bench"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-bench"
READER = "/providers/Microsoft.Authorization/roleDefinitions/21090545-7ca7-4776-b22c-e363652d74d2"


def tenant(assignments: int = 4000, policies: int = 16) -> dict[str, Any]:
    """A subscription with one vault and many role assignments spread over 400 principals."""
    principals = [str(uuid.UUID(int=i + 1)) for i in range(400)]
    return {
        "tenant_id": "00000000-0000-0000-0000-0000000000aa",
        "subscriptions": [SUB],
        "vaults": [{"id": VAULT, "location": "westeurope",
                    "properties": {"enableRbacAuthorization": True, "accessPolicies": [
                        {"objectId": str(uuid.UUID(int=10_000 + i)), "permissions": {"secrets": ["get"]}}
                        for i in range(policies)]}}],
        "principals": [{"id": p, "type": "ServicePrincipal"} for p in principals],
        "role_assignments": [
            {"id": f"{RG if i % 2 else VAULT}/providers/Microsoft.Authorization/roleAssignments/{uuid.UUID(int=i + 1)}",
             "properties": {"roleDefinitionId": READER, "principalId": principals[i % len(principals)],
                            "principalType": "ServicePrincipal"}}
            for i in range(assignments)],
    }


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


def bench_sync(emu: Emulator, n: int = 500) -> None:
    kv = KeyVaultManagementClient(emu.credential(), SUB, base_url=emu.base_url, connection_verify=emu.ca_file)
    kv.vaults.get("rg-bench", "kv-bench")
    lat: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        kv.vaults.get("rg-bench", "kv-bench")
        lat.append(time.perf_counter() - t)
    took = time.perf_counter() - t0
    print(f"sync sequential    vaults.get {n / took:8.0f} req/s  p50 {statistics.median(lat) * 1000:6.2f} ms"
          f"  p99 {pct(lat, 0.99) * 1000:5.2f} ms")


def bench_threads(emu: Emulator, threads: int = 8, per_thread: int = 150) -> None:
    clients = [KeyVaultManagementClient(emu.credential(), SUB, base_url=emu.base_url, connection_verify=emu.ca_file)
               for _ in range(threads)]
    for c in clients:
        c.vaults.get("rg-bench", "kv-bench")

    def work(c: KeyVaultManagementClient) -> None:
        for _ in range(per_thread):
            c.vaults.get("rg-bench", "kv-bench")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, clients))
    took = time.perf_counter() - t0
    print(f"sync {threads} threads     vaults.get {threads * per_thread / took:8.0f} req/s")


async def bench_async(emu: Emulator, reuse: bool, n: int = 1000, in_flight: int = 32) -> None:
    """``reuse``: the emulator's keep-alive transport; else ``connection_verify=<ca file>`` (a connection per call)."""
    how: dict[str, Any] = {"transport": emu.async_transport()} if reuse else {"connection_verify": emu.ca_file}
    conns = emu.connection_count
    async with AsyncKeyVaultManagementClient(emu.async_credential(), SUB, base_url=emu.base_url, **how) as kv:
        await kv.vaults.get("rg-bench", "kv-bench")
        lat: list[float] = []
        t = time.perf_counter()
        await kv.vaults.get("rg-bench", "kv-bench")
        single = time.perf_counter() - t
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                s = time.perf_counter()
                await kv.vaults.get("rg-bench", "kv-bench")
                lat.append(time.perf_counter() - s)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        took = time.perf_counter() - t0
    label = "transport=emu.async_transport()" if reuse else "connection_verify=ca_file"
    print(f"async {in_flight} in flight vaults.get {n / took:8.0f} req/s  p50 {statistics.median(lat) * 1000:6.2f} ms"
          f"  one alone {single * 1000:5.2f} ms  [{label}: {emu.connection_count - conns} connections]")


def bench_assignments(emu: Emulator, n: int = 100) -> None:
    auth = AuthorizationManagementClient(emu.credential(), SUB, base_url=emu.base_url, connection_verify=emu.ca_file)
    principal = str(uuid.UUID(int=7))
    flt = f"atScope() and assignedTo('{principal}')"
    got = list(auth.role_assignments.list_for_scope(VAULT, filter=flt))
    t0 = time.perf_counter()
    for _ in range(n):
        list(auth.role_assignments.list_for_scope(VAULT, filter=flt))
    took = time.perf_counter() - t0
    print(f"sync role_assignments.list_for_scope(atScope() and assignedTo) over 4,000: "
          f"{took / n * 1000:.2f} ms per call ({len(got)} results)")


def bench_big_vault(n: int = 100) -> None:
    with Emulator(tenant(assignments=0, policies=1024)) as emu:
        kv = KeyVaultManagementClient(emu.credential(), SUB, base_url=emu.base_url, connection_verify=emu.ca_file)
        kv.vaults.get("rg-bench", "kv-bench")
        t0 = time.perf_counter()
        for _ in range(n):
            kv.vaults.get("rg-bench", "kv-bench")
        took = time.perf_counter() - t0
    print(f"sync vaults.get of a vault with 1,024 access policies: {took / n * 1000:.2f} ms per call")


def main() -> None:
    data = tenant()
    Emulator({}).start().stop()  # the CA is made once per process
    t = time.perf_counter()
    emu = Emulator(data).start()
    print(f"start-up (snapshot with 4,000 assignments): {(time.perf_counter() - t) * 1000:.1f} ms")
    try:
        bench_sync(emu)
        bench_threads(emu)
        asyncio.run(bench_async(emu, reuse=True))
        asyncio.run(bench_async(emu, reuse=False))
        bench_assignments(emu)
        print(f"requests served: {emu.request_count}")
    finally:
        emu.stop()
    bench_big_vault()


if __name__ == "__main__":
    main()
