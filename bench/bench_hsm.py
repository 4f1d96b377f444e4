"""Managed HSM facts at 100 ms injected emulator latency (issue 12 asks a cold HSM diagnosis <= 250 ms, the three
scope reads in parallel): requests and time of (a) the HSM from ARM then its local RBAC for one key, cold (a new
process-wide challenge per run: a fresh HSM host), and (b) the local RBAC alone with the challenge already answered.

The reads of (a) are three round trips: ARM's GET (for ``hsmUri``), the HSM's 401 challenge, then the three scope
lists and the definitions together. Each run starts its own emulator; the figure is the median of five runs.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from remediate.backends import EmulatorRun
from tests.support.hsm import HSM_ID, renamed, tenant

RUNS = 5


async def _once(i: int, warm: bool) -> tuple[int, float]:
    name = f"hsm-bench-{'w' if warm else 'c'}{i}-{time.monotonic_ns() % 10**9}"
    with EmulatorRun(renamed(tenant(), name)) as run:
        run.emulator.configure(latency_ms=100)
        async with run.hsm_facts() as facts:
            hsm = await facts.get_hsm(HSM_ID.rsplit("/", 1)[0] + "/" + name)
            assert hsm is not None
            if warm:
                await facts.read_assignment(hsm, "/", "00000000-0000-0000-0000-000000000000")
            run.emulator.reset_count()
            start = time.perf_counter()
            if not warm:
                hsm = await facts.get_hsm(HSM_ID.rsplit("/", 1)[0] + "/" + name)  # cached? no: a fresh GET
                assert hsm is not None
            access = await facts.local_rbac(hsm, "cmk")
            elapsed = (time.perf_counter() - start) * 1000
            assert len(access.assignments) == ASSIGNMENTS
            return run.emulator.request_count, elapsed


ASSIGNMENTS = 4   # the bench HSM's assignments that apply to key 'cmk' (at '/', '/keys' and '/keys/cmk')

def main() -> None:
    for label, warm in (("cold: ARM GET + challenge + 3 scopes and definitions", False),
                        ("local RBAC, challenge answered: 3 scopes and definitions", True)):
        got = [asyncio.run(_once(i, warm)) for i in range(RUNS + 1)][1:]
        print(f"{label}: {got[0][0]} requests, median {statistics.median(ms for _, ms in got):.0f} ms "
              f"(runs: {', '.join(f'{ms:.0f}' for _, ms in got)})", flush=True)


if __name__ == "__main__":
    main()
