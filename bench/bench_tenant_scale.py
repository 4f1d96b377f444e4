"""Tenant scale (issue 16): vaults named only by name among hundreds of subscriptions, at 100 ms injected latency.

"before" is the search by name through ARM alone (``resource_graph=False``: one vault list per configured
subscription, one after another), "after" is Azure Resource Graph (one query for the batch) and then ARM's vault,
assignments and deny assignments per vault. Prints requests (by API) and the batch's elapsed time, and how both grow
with the number of distinct vaults.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import uuid
from importlib import resources
from typing import Any

from remediate.backends import EmulatorRun
from remediate.model import Denial, ObjectRef, Principal, VaultRef
from remediate.service import diagnose
from remediate.store.vault_index import MemoryVaultIndex

DEMO: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
APP = str(uuid.uuid5(uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"), "app-orders"))
LATENCY_MS = 100


def tenant(subscriptions: int = 200, vaults_per_sub: int = 5, latency_ms: float = LATENCY_MS) -> dict[str, Any]:
    """The demo tenant's principals with ``subscriptions`` subscriptions of ``vaults_per_sub`` RBAC vaults each
    (``kv-s{i}-{j}``), served with ``latency_ms`` per request."""
    t = copy.deepcopy(DEMO)
    subs = [str(uuid.UUID(int=0xB000 + i)) for i in range(subscriptions)]
    t["subscriptions"] = subs
    t["management_groups"] = []
    t["vaults"] = [
        {"id": f"/subscriptions/{s}/resourceGroups/rg-{i}/providers/Microsoft.KeyVault/vaults/kv-s{i}-{j}",
         "location": "westeurope", "properties": {"enableRbacAuthorization": True}}
        for i, s in enumerate(subs) for j in range(vaults_per_sub)]
    t["emulator"] = {"latency_ms": latency_ms}
    return t


def spread(count: int, subscriptions: int = 200, vaults_per_sub: int = 5) -> list[str]:
    """``count`` distinct vault names spread over the subscriptions (the last subscription's vault first)."""
    every = [f"kv-s{i % subscriptions}-{i // subscriptions}" for i in range(subscriptions * vaults_per_sub)]
    names = [f"kv-s{subscriptions - 1}-0", *(every[(i * 7) % len(every)] for i in range(len(every)))]
    return list(dict.fromkeys(names))[:count]


def denial(name: str) -> Denial:
    return Denial(source="bench", status=403, principal=Principal(object_id=APP, kind="app"), vault=VaultRef(name),
                  operation="SecretGet", object=ObjectRef("secrets", "db-password"))


async def _run(run: EmulatorRun, names: list[str], **kw: Any) -> dict[str, Any]:
    async with run.facts(**kw) as facts:
        cpu = time.process_time()
        stats = (await diagnose([denial(n) for n in names], facts)).stats.to_dict()
        # the client's and the in-process emulator's CPU (one GIL): what a busy machine stretches
        stats["cpu_ms"] = round((time.process_time() - cpu) * 1000)
    missing = stats["causes"].get("VAULT_NOT_FOUND", 0)
    assert missing == 0, f"{missing} vaults not found"
    return stats


def measure(names: list[str], *, repeat: int = 3, subscriptions: int = 200, **kw: Any) -> tuple[dict[str, int], str]:
    """(requests by API, "median elapsed ms (CPU ms)") of diagnosing one denial per name; each run on a fresh
    emulator, after one warm-up batch in the process (imports and the CA are once per process in the app too)."""
    async def go() -> dict[str, Any]:
        with EmulatorRun(tenant(subscriptions)) as run:
            return await _run(run, names, **kw)
    runs = [asyncio.run(go()) for _ in range(repeat)]
    best = sorted(runs, key=lambda r: r["elapsed_ms"])[len(runs) // 2]
    return runs[0]["requests_by_api"], f"{best['elapsed_ms']:6d} ms (CPU {best['cpu_ms']} ms)"


def fmt(by_api: dict[str, int]) -> str:
    return f"{sum(by_api.values()):5d} requests {by_api}"


def warm_up() -> None:
    """One small batch so that imports, the CA and the SDK's lazy model loading are not in the first number."""
    async def go() -> None:
        with EmulatorRun(tenant(2, latency_ms=0)) as run:
            await _run(run, ["kv-s1-0"])
            await _run(run, ["kv-s0-0"], resource_graph=False)
    asyncio.run(go())


def headline() -> None:
    print(f"at {LATENCY_MS} ms injected latency, 200 subscriptions x 5 vaults, vaults named by name only:")
    for label, names, req_target, ms_target in (("one denial", spread(1), 5, 350),
                                                ("50 denials on 50 vaults", spread(50), 160, 1000)):
        before, before_ms = measure(names, repeat=1, resource_graph=False)
        after, after_ms = measure(names)
        print(f"  {label:24s} before (ARM lists):     {fmt(before)} {before_ms}")
        print(f"  {label:24s} after (Resource Graph): {fmt(after)} {after_ms} "
              f"(targets <= {req_target} requests, <= {ms_target} ms)")


def warm_index() -> None:
    """The next batch on the same vaults, with the name -> id index the app keeps across invocations."""
    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        index = MemoryVaultIndex()
        with EmulatorRun(tenant()) as run:
            cold = await _run(run, spread(50), index=index)
            warm = await _run(run, spread(50), index=index)
        return cold, warm
    cold, warm = asyncio.run(go())
    print(f"  50 vaults, next batch with the index warm: {fmt(warm['requests_by_api'])} {warm['elapsed_ms']} ms "
          f"(CPU {warm['cpu_ms']} ms; cold: {fmt(cold['requests_by_api'])} {cold['elapsed_ms']} ms)")


def growth() -> None:
    print("how it grows (distinct vaults by name, one denial each; 200 subscriptions; 100 ms latency):")
    for n in (1, 10, 100, 1000):
        after, after_ms = measure(spread(n), repeat=1)
        before, before_ms = measure(spread(n), repeat=1, resource_graph=False)
        print(f"  {n:5d} vaults  after: {fmt(after)} {after_ms}   before: {fmt(before)} {before_ms}")


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (the emulator shares this process's GIL)")
    warm_up()
    headline()
    warm_index()
    growth()


if __name__ == "__main__":
    main()
