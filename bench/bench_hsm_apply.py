"""Managed HSM apply and revoke numbers (issue 12) at 100 ms injected emulator latency: requests and time of one
applied grant (a built-in role: wrap/unwrap; our custom role: encrypt/decrypt), of the same grant again (adopted,
no write), and of its revocation. Requests are everything the emulator served (ARM's GET for the HSM, the HSM's
401 challenge, the reads and writes of its local RBAC); each figure is the median of five runs, each on a fresh
HSM host (the SDK caches a challenge per host for the whole process)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from remediate.apply import ApplyContext, apply_findings, revoke
from remediate.backends import EmulatorRun
from remediate.evidence import Evidence
from remediate.facts.writes import ArmWriter
from remediate.guard import policy_from_dict
from remediate.hsm_model import custom_role_name
from remediate.model import Cause, Denial, Finding, HsmCustomRolePlan, HsmRoleAssignmentPlan, Principal, Proof, VaultRef
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import EMULATOR, SqliteGrantStore
from tests.support.hsm import HSM_ID, STRANGER, SUB, renamed, role_id, tenant

RUNS = 5
ENCRYPT = ("Microsoft.KeyVault/managedHsm/keys/encrypt/action", "Microsoft.KeyVault/managedHsm/keys/decrypt/action")
POLICY = policy_from_dict({"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "max_grants_per_hour": 1000,
                           "grant_ttl": "PT1H"})


def _finding(hsm_id: str, custom: bool) -> Finding:
    name = custom_role_name(ENCRYPT)
    plan = HsmRoleAssignmentPlan(
        hsm=hsm_id, scope="/keys/cmk", principal_id=STRANGER, principal_type="ServicePrincipal", tier=1,
        role_name="kv-remediate encrypt, decrypt" if custom else "Managed HSM Crypto Service Encryption User",
        role_definition_id=(f"/providers/Microsoft.Authorization/roleDefinitions/{name}" if custom
                            else role_id("Managed HSM Crypto Service Encryption User")),
        custom_role=HsmCustomRolePlan(name, "kv-remediate encrypt, decrypt", ENCRYPT) if custom else None)
    d = Denial(source="bench", status=403, principal=Principal(object_id=STRANGER, kind="app"),
               vault=VaultRef(hsm_id.rsplit("/", 1)[-1], None, "managed_hsm", "/keys/cmk"))
    return Finding(Cause.MISSING_ROLE_ASSIGNMENT, 1, d, "rbac", None, "", plan, (), Evidence())


async def _once(i: int, custom: bool, tmp: Path) -> tuple[tuple[int, float], ...]:
    name = f"hsm-apply-{'c' if custom else 'b'}{i}-{time.monotonic_ns() % 10**9}"
    hsm_id = HSM_ID.rsplit("/", 1)[0] + "/" + name
    db = tmp / f"{name}.db"
    grants = SqliteGrantStore(db)
    # a person approved the plan (HSM plans are approval-only by default): what approvals/service.py passes
    approved = {_finding(hsm_id, custom).denial.identity_key(): Proof("approval", "bench approver")}
    ctx = ApplyContext(policy=POLICY, grants=grants, slots=SqliteClaimStore(db), now=datetime.now(UTC),
                       proofs=approved, backend=EMULATOR)
    out = []
    with EmulatorRun(renamed(tenant(), name)) as run:
        run.emulator.configure(latency_ms=100)
        for step in ("apply", "again"):
            async with run.facts() as facts:
                run.emulator.reset_count()
                t = time.perf_counter()
                [done] = await apply_findings([_finding(hsm_id, custom)], ArmWriter(facts), ctx)
                out.append((run.emulator.request_count, (time.perf_counter() - t) * 1000))
            assert done.outcome is not None and done.outcome.outcome == "applied", (step, done.outcome)
        [rec] = [r for r in grants.list() if r.outcome == "applied"]
        async with run.facts() as facts:
            run.emulator.reset_count()
            t = time.perf_counter()
            said = await revoke(rec, ArmWriter(facts), grants, datetime.now(UTC), backend=EMULATOR)
            out.append((run.emulator.request_count, (time.perf_counter() - t) * 1000))
        assert said.revoked and said.deleted, said
    return tuple(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, custom in (("built-in role (wrap/unwrap)", False), ("custom role (encrypt/decrypt)", True)):
            runs = [asyncio.run(_once(i, custom, Path(tmp))) for i in range(RUNS + 1)][1:]
            for j, step in enumerate(("apply", "same grant again (adopted)", "revoke")):
                reqs = statistics.median(r[j][0] for r in runs)
                ms = [r[j][1] for r in runs]
                print(f"HSM {label}, {step}: {reqs:.0f} requests, median {statistics.median(ms):.0f} ms "
                      f"(runs: {', '.join(f'{x:.0f}' for x in ms)})", flush=True)


if __name__ == "__main__":
    main()
