"""Managed HSM at 100 ms injected emulator latency (issue 12 asks a cold HSM diagnosis <= 250 ms, the three scope
reads in parallel).

(a) and (b) read through facts/hsm.py alone: the HSM from ARM then its local RBAC for one key, cold (ARM's GET, then
the HSM's 401 challenge, then the three scope lists and the definitions: three round trips in a row), and the local
RBAC alone with the challenge already answered (one round trip).

(c) and (d) are the whole cold diagnosis of one HSM denial through ``service.diagnose`` (what the CLI and the app
call): the HSM from ARM, started together with the challenge and the local RBAC at the host the HSM's name implies,
and Graph's type and groups (service_hsm.py), so two round trips in all; (c) names the HSM by resource id (ARM's
GET), (d) by name only (Azure Resource Graph, then ARM's GET: still two round trips, as the data plane's own two run
beside them). Each run starts its own emulator and a fresh HSM host (the SDK caches challenges per host for the
whole process); the figure is the median of five runs after one warm-up.

(e) is (c) for a denial that reached a key through ARM: the HSM's AllowKeyManagementOperationsThroughARM is read as
well (one more data-plane request, started with the others), and (c) and (d) must not change for it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from remediate.backends import EmulatorRun
from remediate.model import Denial, Principal, Signal, VaultRef
from remediate.service import diagnose
from tests.support.hsm import HSM_ID, STRANGER, renamed, tenant

RUNS = 5
ASSIGNMENTS = 4   # the bench HSM's assignments that apply to key 'cmk' (at '/', '/keys' and '/keys/cmk')
ENCRYPT = "Microsoft.KeyVault/managedHsm/keys/encrypt/action"


def _fresh(warm: str, i: int) -> tuple[str, dict[str, Any]]:
    name = f"hsm-b{warm}{i}-{time.monotonic_ns() % 10**9}"
    t = renamed(tenant(), name)
    t["principals"] = [{"id": STRANGER, "type": "ServicePrincipal", "display_name": "app-pay", "member_of": []}]
    return name, t


async def _facts_once(i: int, warm: bool) -> tuple[int, float]:
    name, t = _fresh("w" if warm else "c", i)
    with EmulatorRun(t) as run:
        run.emulator.configure(latency_ms=100)
        async with run.hsm_facts() as facts:
            hsm = await facts.get_hsm(HSM_ID.rsplit("/", 1)[0] + "/" + name)
            assert hsm is not None
            if warm:
                await facts.read_assignment(hsm, "/", "00000000-0000-0000-0000-000000000000")
            run.emulator.reset_count()
            start = time.perf_counter()
            if not warm:
                hsm = await facts.get_hsm(HSM_ID.rsplit("/", 1)[0] + "/" + name)   # a fresh GET, as cold
                assert hsm is not None
            access = await facts.local_rbac(hsm, "cmk")
            elapsed = (time.perf_counter() - start) * 1000
            assert len(access.assignments) == ASSIGNMENTS
            return run.emulator.request_count, elapsed


async def _diagnose_once(i: int, by_id: bool) -> tuple[int, float]:
    name, t = _fresh("i" if by_id else "n", i)
    rid = HSM_ID.rsplit("/", 1)[0] + "/" + name if by_id else None
    denial = Denial(source="bench", status=403, principal=Principal(object_id=STRANGER),
                    vault=VaultRef(name=name, resource_id=rid, kind="managed_hsm", scope="/keys/cmk"),
                    data_action=ENCRYPT)
    return await _timed_diagnosis(t, denial, "MISSING_ROLE_ASSIGNMENT", planned=True)


async def _arm_path_once(i: int) -> tuple[int, float]:
    """(e): a key create that reached the HSM through ARM (Signal.HSM_ARM_PATH), by resource id, on an HSM that does
    not trust ARM (the default): the setting is read beside the other reads, so still two round trips."""
    name, t = _fresh("a", i)
    denial = Denial(source="bench", status=403, principal=Principal(object_id=STRANGER),
                    vault=VaultRef(name=name, resource_id=HSM_ID.rsplit("/", 1)[0] + "/" + name, kind="managed_hsm",
                                   scope="/keys/cmk"),
                    data_action="Microsoft.KeyVault/managedHsm/keys/create", signals=frozenset({Signal.HSM_ARM_PATH}))
    return await _timed_diagnosis(t, denial, "HSM_ARM_NOT_TRUSTED", planned=False)


async def _timed_diagnosis(t: dict[str, Any], denial: Denial, cause: str, *, planned: bool) -> tuple[int, float]:
    """One cold diagnosis of ``denial`` on tenant ``t`` at 100 ms latency: (requests, ms), checked for ``cause``."""
    with EmulatorRun(t) as run:
        run.emulator.configure(latency_ms=100)
        async with run.facts() as facts:
            run.emulator.reset_count()
            start = time.perf_counter()
            got = await diagnose([denial], facts)
            elapsed = (time.perf_counter() - start) * 1000
            f = got.findings[0]
            assert str(f.cause) == cause and (f.plan is not None) == planned, f.explanation
            return run.emulator.request_count, elapsed


def _report(label: str, got: list[tuple[int, float]]) -> None:
    print(f"{label}: {got[0][0]} requests, median {statistics.median(ms for _, ms in got):.0f} ms "
          f"(runs: {', '.join(f'{ms:.0f}' for _, ms in got)})", flush=True)


def main() -> None:
    for label, warm in (("(a) facts/hsm.py cold: ARM GET, then challenge, then 3 scopes and definitions", False),
                        ("(b) facts/hsm.py local RBAC, challenge answered: 3 scopes and definitions", True)):
        _report(label, [asyncio.run(_facts_once(i, warm)) for i in range(RUNS + 1)][1:])
    for label, by_id in (("(c) cold HSM diagnosis (service.diagnose), HSM by resource id", True),
                         ("(d) cold HSM diagnosis (service.diagnose), HSM by name (Resource Graph)", False)):
        _report(label, [asyncio.run(_diagnose_once(i, by_id)) for i in range(RUNS + 1)][1:])
    _report("(e) cold HSM diagnosis of an ARM-path denial (the ARM-trust setting read too), by resource id",
            [asyncio.run(_arm_path_once(i)) for i in range(RUNS + 1)][1:])


if __name__ == "__main__":
    main()
