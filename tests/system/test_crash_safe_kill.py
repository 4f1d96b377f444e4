"""A real process killed with SIGKILL mid-apply (issue 17): nothing of ours runs after the signal.

The CLI runs in live mode (no --snapshot: DefaultAzureCredential and the real SDK clients, pointed through the
documented endpoint settings at the bundled emulator in this test process, which outlives the killed process as
Azure would), with the grant store on Azurite's tables (``KV_REMEDIATE_STORAGE``, the app's store). The test
watches the emulator and sends SIGKILL as soon as the role assignment exists, while the verifying read is still
in flight (every emulator answer takes 200 ms). Then the same command again, then the reconciler after the expiry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient

from remediate.apply import reconcile
from remediate.emulator import Emulator
from remediate.facts.arm import ArmFacts
from remediate.facts.writes import ArmWriter
from remediate.outcome import Revocation
from remediate.store.grants import TableGrantStore
from tests.support.app import ROOT
from tests.support.demo_apply import APPLY, TENANT, gid
from tests.support.live import live_env

ORDERS = gid("app-orders")
TTL = timedelta(hours=1)


def ours(emu: Emulator) -> list[dict[str, Any]]:
    return [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"].lower() == ORDERS.lower()]


def test_sigkill_mid_apply_then_rerun_then_timer(tmp_path: Path, azurite: str,
                                                 token_endpoint: tuple[str, list[str]]) -> None:
    identity_endpoint, _ = token_endpoint
    service = TableServiceClient.from_connection_string(azurite)
    for name in ("grants", "claims"):
        service.delete_table(name)
    request, policy = tmp_path / "r.json", tmp_path / "policy.json"
    request.write_text(json.dumps({"principal_id": ORDERS, "vault": "kv-payments", "operation": "SecretGet"}))
    policy.write_text(json.dumps(dict(APPLY, grant_ttl="PT1H")))
    command = [sys.executable, "-m", "remediate", "remediate", str(request), "--policy", str(policy), "--apply",
               "--output", "json"]
    with Emulator(TENANT, latency_ms=200) as emu:
        env = {**live_env(emu, identity_endpoint, tmp_path), "KV_REMEDIATE_STORAGE": azurite,
               "PYTHONPATH": str(ROOT)}
        # given the CLI applying a one-hour grant
        t0 = datetime.now(UTC)
        proc = subprocess.Popen(command, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # when it is killed the moment the role assignment exists (its verifying read still in flight)
        deadline = time.monotonic() + 120
        while not ours(emu):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # then Azure holds the grant, labelled as ours, and the store holds the intent, pending
        store = TableGrantStore(service.get_table_client("grants"))
        [intent] = store.list()
        assert intent.outcome == "pending" and intent.expires_at is not None
        [assignment] = ours(emu)
        assert intent.id in assignment["properties"]["description"]

        # when the operator runs the same command again
        emu.configure(latency_ms=0)
        again = subprocess.run(command, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                               check=False)
        assert again.returncode == 0, again.stderr
        [finding] = json.loads(again.stdout)["findings"]
        # then it adopts the grant: applied, the same grant id, the first attempt's expiry; still one assignment
        assert finding["outcome"] == "applied" and finding["adopted"] is True, finding
        assert finding["grant_id"] == intent.id
        assert datetime.fromisoformat(finding["expires_at"]) == intent.expires_at
        assert len(ours(emu)) == 1
        [record] = store.list()
        assert record.outcome == "applied" and record.expires_at == intent.expires_at
        assert record.expires_at is not None and abs(record.expires_at - (t0 + TTL)) < timedelta(seconds=30)

        # when the revocation timer runs after the expiry
        async def timer() -> list[Revocation]:
            async with ArmFacts(emu.async_credential(), TENANT["subscriptions"], arm_url=emu.base_url,
                                graph_url=emu.base_url, connection_verify=emu.ca_file,
                                transport_factory=emu.async_transport) as facts:
                return await reconcile(ArmWriter(facts), store, record.expires_at + timedelta(minutes=5))
        results = asyncio.run(timer())
        # then the assignment is gone and the trail is: the grant (revoked) and its revocation
        assert [r.revoked for r in results] == [True]
        assert ours(emu) == []
        assert sorted((r.outcome, r.revoked_at is not None) for r in store.list()) == [
            ("applied", True), ("revoked", True)]
