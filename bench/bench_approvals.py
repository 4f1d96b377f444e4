"""Approval numbers (issue 11): how long a person's act takes to answer, measured in-process on the real parts.

- an act that only records (an approval short of ``min_approvals``, a reject, a replay): store work alone (the
  Slack interactivity endpoint must answer within 3 s);
- the approval that completes a request: compare-and-swap, re-diagnose the denial (the tenant read again), the
  hash compared, the write applied and verified, the request ended; at 0 and 100 ms injected ARM latency;
- 20 people approving one request at once: time until all have their answer, and how many applied (must be 1).

Each on the approval store's two backends: SQLite (the CLI) and a private Azurite's Table ``approvals`` (the app).
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remediate.apply import ApplyContext
from remediate.approvals import service
from remediate.approvals.model import Act, Approver
from remediate.backends import EmulatorRun
from remediate.guard import policy_from_dict
from remediate.service import remediate
from remediate.store.approvals import ApprovalStore, SqliteApprovalStore
from remediate.store.approvals_table import TableApprovalStore
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import SqliteGrantStore
from tests.support.azurite import start_azurite

from .bench_diagnose import SUB, TENANT, denial, gid

POLICY = {"mode": "approve", "scopes": [f"/subscriptions/{SUB}"], "max_grants_per_hour": 100000, "max_tier": 3}
ROUNDS = 15


def _person(i: int) -> Approver:
    return Approver(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"bench-approver-{i}")))


def _ctx(tmp: Path, store: ApprovalStore, policy: dict[str, Any]) -> ApplyContext:
    db = tmp / f"{uuid.uuid4().hex}.db"
    return ApplyContext(policy=policy_from_dict(policy), grants=SqliteGrantStore(db), slots=SqliteClaimStore(db),
                        now=datetime.now(UTC), approvals=store)


async def _round(tenant: dict[str, Any], fresh: Callable[[], Callable[[], ApprovalStore]], tmp: Path, people: int,
                 policy: dict[str, Any]) -> tuple[list[float], int]:
    """On a fresh store and tenant: one request opened (app-orders denied a secret on kv-payments), then ``people``
    approvals at once; each act's time (ms) and how many applied."""
    make = fresh()
    store = make()
    with EmulatorRun(tenant) as emu:
        async with emu.facts() as facts:
            ctx = _ctx(tmp, store, policy)
            [f] = (await remediate([denial(gid("app-orders"))], facts, ctx)).findings
        assert f.outcome is not None and f.outcome.approval_id is not None
        approval_id = f.outcome.approval_id

        async def one(i: int) -> tuple[float, str]:
            own_store, own_ctx = make(), _ctx(tmp, store, policy)
            async with emu.facts() as own:
                t = time.perf_counter()
                got = await service.decide(own_store, approval_id, Act("approve", _person(i), "page"), facts=own,
                                           ctx=own_ctx)
                return (time.perf_counter() - t) * 1000, got.status
        done = await asyncio.gather(*(one(i) for i in range(people)))
    return [ms for ms, _ in done], sum(1 for _, s in done if s == "applied")


def _tenant(latency_ms: int) -> dict[str, Any]:
    tenant = copy.deepcopy(TENANT)
    if latency_ms:
        tenant["emulator"] = {"latency_ms": latency_ms}
    return tenant


def _measure(label: str, make: Callable[[], Callable[[], ApprovalStore]], tmp: Path) -> None:
    for latency in (0, 100):
        tenant = _tenant(latency)
        # the recording act: min_approvals 2, the first approval only records
        record = [asyncio.run(_round(tenant, make, tmp, 1, dict(POLICY, min_approvals=2)))[0][0]
                  for _ in range(ROUNDS)]
        complete = [asyncio.run(_round(tenant, make, tmp, 1, POLICY))[0][0] for _ in range(ROUNDS)]
        print(f"{label}, {latency} ms ARM latency: an act that records {statistics.median(record):.0f} ms "
              f"(p95 {sorted(record)[int(0.95 * len(record))]:.0f}); the approval that applies "
              f"{statistics.median(complete):.0f} ms (p95 {sorted(complete)[int(0.95 * len(complete))]:.0f})",
              flush=True)
    times, applied = asyncio.run(_round(_tenant(0), make, tmp, 20, POLICY))
    print(f"{label}: 20 simultaneous approvals of one request: all answered in {max(times):.0f} ms, "
          f"applied {applied} time(s)", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        def sqlite() -> Callable[[], ApprovalStore]:
            path = tmp / f"approvals-{uuid.uuid4().hex}.db"
            return lambda: SqliteApprovalStore(path)
        _measure("SQLite", sqlite, tmp)
        azurite = start_azurite()
        try:
            from azure.data.tables import TableServiceClient

            from remediate.store.azure import table_client

            svc = TableServiceClient.from_connection_string(azurite.connection_string)

            def table() -> Callable[[], ApprovalStore]:
                name = "approvals" + uuid.uuid4().hex[:12]
                table_client(svc, name)
                return lambda: TableApprovalStore(table_client(svc, name, create=False))
            _measure("Azurite Table", table, tmp)
        finally:
            azurite.stop()


if __name__ == "__main__":
    main()
