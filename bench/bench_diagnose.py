"""Diagnosis numbers (issue 3): Azure requests per batch, latency with injected ARM latency, in-process decision
throughput, peak memory for a large batch, and the function app's import cost."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid
from importlib import resources
from typing import Any

from remediate.backends import EmulatorRun
from remediate.explain import build_finding
from remediate.model import (
    AccessPolicyEntry,
    Denial,
    Facts,
    ObjectRef,
    Principal,
    PrincipalInfo,
    RoleAssignment,
    Vault,
    VaultRef,
)
from remediate.service import diagnose

NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
PAY = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")


def gid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def denial(oid: str, obj: str = "db-password", op: str = "SecretGet") -> Denial:
    return Denial(source="bench", status=403, principal=Principal(object_id=oid, kind="app"),
                  vault=VaultRef("kv-payments", PAY["id"]), operation=op, object=ObjectRef("secrets", obj))


def run_batch(tenant: dict[str, Any], denials: list[Denial]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                return (await diagnose(denials, facts)).stats.to_dict()
    return asyncio.run(go())


def requests_and_latency() -> None:
    cold = run_batch(TENANT, [denial(gid("app-orders"))])
    print(f"cold diagnosis, vault id known: {cold['arm_requests']} requests (target <= 3) {cold['requests_by_api']}")
    principals = [gid(f"bench-app-{i}") for i in range(10)]
    batch = [denial(principals[i % 10], f"s{i % 37}") for i in range(1000)]
    stats = run_batch(TENANT, batch)
    print(f"1,000 denials / 10 principals / 1 vault: {stats['arm_requests']} requests (target <= 30), "
          f"{stats['findings']} findings")
    slow = dict(TENANT, emulator={"latency_ms": 100})
    one = [run_batch(slow, [denial(gid("app-orders"))])["elapsed_ms"] for _ in range(5)]
    print(f"one diagnosis at 100 ms latency: median {statistics.median(one)} ms (target <= 250)")
    many = [run_batch(slow, batch)["elapsed_ms"] for _ in range(3)]
    print(f"1,000-denial batch at 100 ms latency: median {statistics.median(many)} ms (target <= 2000)")


def decision_throughput() -> None:
    # A vault with 1,024 access-policy entries and a subscription with 4,000 role assignments; each denial's
    # facts carry what ARM's assignedTo() returns for its principal (the index), never the whole list.
    vault_ap = Vault(id=PAY["id"].replace("kv-payments", "kv-big"), name="kv-big", tenant_id=TENANT["tenant_id"],
                     rbac=False, access_policies=tuple(
                         AccessPolicyEntry(TENANT["tenant_id"], gid(f"ap-{i}"), None, {"secrets": ("get",)})
                         for i in range(1024)))
    vault_rbac = Vault(id=PAY["id"], name="kv-payments", tenant_id=TENANT["tenant_id"], rbac=True)
    role = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/" + SECRETS_USER
    assignments: dict[str, list[RoleAssignment]] = {}
    for i in range(4000):
        oid = gid(f"ra-{i % 2000}")
        scope = PAY["id"] if i % 2 else f"/subscriptions/{SUB}/resourceGroups/rg-{i}"
        assignments.setdefault(oid, []).append(RoleAssignment(f"{scope}/ra/{i}", scope, role, oid))
    denials = [denial(gid(f"ra-{i % 2000}") if i % 2 else gid(f"ap-{i % 1500}"), f"s{i}",
                      "SecretSet" if i % 3 == 0 else "SecretGet") for i in range(20000)]
    facts = [Facts(vault=vault_rbac if i % 2 else vault_ap, principal=PrincipalInfo(d.principal.object_id),
                   assignments=tuple(assignments.get(d.principal.object_id or "", ())))
             for i, d in enumerate(denials)]
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for d, f in zip(denials, facts, strict=True):
            build_finding(d, 1, f)
        rates.append(len(denials) / (time.perf_counter() - t))
    print(f"decision + plan in process: median {statistics.median(rates):,.0f} denials/s (target >= 5,000)")


def peak_memory() -> None:
    code = ("import asyncio,json,resource,uuid;from importlib import resources;"
            "from bench.bench_diagnose import denial,gid,run_batch,TENANT;"
            "b=[denial(gid(f'm-{i%500}'),f's{i%200}') for i in range(100000)];"
            "s=run_batch(TENANT,b);"
            "print(s['findings'],s['arm_requests'],resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    print(f"100,000-denial batch: {out[0]} findings, {out[1]} requests, peak RSS {out[2]} MB (target <= 400)")


def import_cost() -> None:
    def t(stmt: str) -> float:
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], check=True)
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)
    base, app = t("import azure.functions"), t("import function_app")
    print(f"import function_app {app * 1000:.0f} ms vs import azure.functions {base * 1000:.0f} ms: "
          f"{app / base:.2f}x (target <= 1.3x)")


def main() -> None:
    requests_and_latency()
    decision_throughput()
    peak_memory()
    import_cost()
    _ = resource


if __name__ == "__main__":
    main()
