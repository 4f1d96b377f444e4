"""Apply numbers (issue 5, 17): ARM writes and reads per applied plan, grant-store calls per apply (intent first,
then settle), apply latency at 100 ms injected latency, and the reconciler's cost over a store of many grants."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from remediate.apply import ApplyContext, reconcile
from remediate.backends import EmulatorRun
from remediate.facts.writes import ArmWriter
from remediate.guard import policy_from_dict
from remediate.model import Proof, VaultRef
from remediate.service import diagnose, remediate
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import GrantRecord, SqliteGrantStore

from .bench_diagnose import SUB, TENANT, denial, gid

LEGACY = next(v for v in TENANT["vaults"] if v["name"] == "kv-legacy")
POLICY = policy_from_dict({"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "max_grants_per_hour": 1000})


class CountingStore(SqliteGrantStore):
    """Counts the grant-store calls an apply makes."""

    calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("add", "begin", "settle", "open_for", "count_applied_since", "get"):
            CountingStore.calls += 1
        return super().__getattribute__(name)


def one(tenant: dict[str, Any], d: Any, tmp: Path) -> dict[str, Any]:
    """Diagnose alone, then remediate on a fresh copy (and a fresh state file): the difference is what applying
    cost."""
    db = tmp / f"{uuid.uuid4().hex}.db"
    ctx = ApplyContext(policy=POLICY, grants=CountingStore(db), slots=SqliteClaimStore(db),
                       now=datetime.now(UTC), operator=Proof("operator", "bench"))

    async def go() -> dict[str, Any]:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                diag = (await diagnose([d], facts)).stats.to_dict()
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                t = time.perf_counter()
                CountingStore.calls = 0
                rem = await remediate([d], facts, ctx)
                ms = (time.perf_counter() - t) * 1000
        outcome, stats = rem.findings[0].outcome, rem.stats.to_dict()
        return {"outcome": outcome.to_dict() if outcome else None, "writes": stats["arm_writes"],
                "store": CountingStore.calls, "apply_requests": stats["arm_requests"] - diag["arm_requests"],
                "total_ms": ms,
                "diagnose_ms": diag["elapsed_ms"]}
    return asyncio.run(go())


def main() -> None:
    tenant = dict(TENANT, principals=[*TENANT.get("principals", []), *(
        {"id": gid(n), "type": "ServicePrincipal", "display_name": n} for n in ("bench-rbac", "bench-ap"))])
    with tempfile.TemporaryDirectory() as tmp:
        for label, d in (("role assignment", denial(gid("bench-rbac"))),
                         ("access policy", denial(gid("bench-ap")).with_(vault=VaultRef("kv-legacy", LEGACY["id"])))):
            r = one(tenant, d, Path(tmp))
            print(f"{label}: {r['outcome']['outcome']}, {r['writes']} ARM write(s), "
                  f"{r['apply_requests'] - r['writes']} verifying read(s) (target: 1 write + 1 read), "
                  f"{r['store']} grant-store calls (rate count, open intent?, begin, settle)")
            slow = dict(tenant, emulator={"latency_ms": 100})
            runs = [one(slow, d, Path(tmp)) for _ in range(3)]
            print(f"{label} at 100 ms latency: diagnose {statistics.median(x['diagnose_ms'] for x in runs):.0f} ms, "
                  f"diagnose + apply + verify {statistics.median(x['total_ms'] for x in runs):.0f} ms (median of 3)")

        print(reconcile_cost(Path(tmp)))


def reconcile_cost(tmp: Path, n: int = 2000, due: int = 10) -> str:
    """The timer's pass over a SQLite store of ``n`` applied grants of which ``due`` have expired (each revoke is
    an emulator round trip; the rest must not cost a read each)."""
    store = SqliteGrantStore(tmp / "reconcile.db")
    now = datetime.now(UTC)
    vault = LEGACY["id"]
    base = GrantRecord(outcome="applied", time=now, vault_id=vault, principal_id=gid("nobody"), scope=vault,
                       permissions_added={"secrets": ["get"]}, plan={"tenant_id": TENANT["tenant_id"]})
    for i in range(n):
        store.add(replace(base, id=str(uuid.uuid4()), expires_at=now + timedelta(minutes=-1 if i < due else 60)))

    async def go() -> float:
        with EmulatorRun(TENANT) as emu:
            async with emu.facts() as facts:
                t = time.perf_counter()
                results = await reconcile(ArmWriter(facts), store, now)
                ms = (time.perf_counter() - t) * 1000
        assert sum(1 for r in results if r.revoked) == due, results[:3]
        return ms
    return f"reconcile over {n} applied grants, {due} due: {asyncio.run(go()):.0f} ms (SQLite, indexed queries)"


if __name__ == "__main__":
    main()
