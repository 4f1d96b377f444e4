"""Apply numbers (issue 5): ARM writes and reads per applied plan, and apply latency at 100 ms injected latency."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remediate.apply import ApplyContext
from remediate.guard import policy_from_dict
from remediate.model import Proof, VaultRef
from remediate.service import diagnose, remediate
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import SqliteGrantStore
from remediate.wiring import EmulatorRun

from .bench_diagnose import SUB, TENANT, denial, gid

LEGACY = next(v for v in TENANT["vaults"] if v["name"] == "kv-legacy")
POLICY = policy_from_dict({"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "max_grants_per_hour": 1000})


def one(tenant: dict[str, Any], d: Any, tmp: Path) -> dict[str, Any]:
    """Diagnose alone, then remediate on a fresh copy: the difference is what applying cost."""
    ctx = ApplyContext(policy=POLICY, grants=SqliteGrantStore(tmp / "s.db"), slots=SqliteClaimStore(tmp / "s.db"),
                       now=datetime.now(UTC), operator=Proof("operator", "bench"))

    async def go() -> dict[str, Any]:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                diag = (await diagnose([d], facts)).stats
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                t = time.perf_counter()
                rem = await remediate([d], facts, ctx)
                ms = (time.perf_counter() - t) * 1000
        return {"outcome": rem.findings[0].outcome, "writes": rem.stats["arm_writes"],
                "apply_requests": rem.stats["arm_requests"] - diag["arm_requests"], "total_ms": ms,
                "diagnose_ms": diag["elapsed_ms"]}
    return asyncio.run(go())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, d in (("role assignment", denial(gid("bench-rbac"))),
                         ("access policy", denial(gid("bench-ap")).with_(vault=VaultRef("kv-legacy", LEGACY["id"])))):
            r = one(TENANT, d, Path(tmp))
            print(f"{label}: {r['outcome']['outcome']}, {r['writes']} ARM write(s), "
                  f"{r['apply_requests'] - r['writes']} verifying read(s) (target: 1 write + 1 read)")
            slow = dict(TENANT, emulator={"latency_ms": 100})
            runs = [one(slow, d, Path(tmp)) for _ in range(3)]
            print(f"{label} at 100 ms latency: diagnose {statistics.median(x['diagnose_ms'] for x in runs):.0f} ms, "
                  f"diagnose + apply + verify {statistics.median(x['total_ms'] for x in runs):.0f} ms (median of 3)")


if __name__ == "__main__":
    main()
