"""Fault and latency injection: the SDK's own retry policy rides through 429/5xx/dropped connections, writes
happen exactly once, and injected latency does not serialise concurrent requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from remediate.emulator import Emulator, Faults
from tests.support.emulator import (
    FAST_RETRY,
    KV_POLICY,
    KV_RBAC,
    READER,
    SUB,
    TENANT,
    async_auth_client,
    async_kv_client,
    auth_client,
    err_code,
    kv_client,
    small,
)

NOISY = Faults(throttle_rate=0.2, retry_after_s=0, error_rate=0.15, reset_rate=0.1)


def ra_body(principal: str) -> dict[str, object]:
    return {"properties": {"roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/"
                                               f"roleDefinitions/{READER}",
                           "principalId": principal, "principalType": "ServicePrincipal"}}


def test_sync_reads_succeed_through_faults_and_count_every_attempt() -> None:
    with Emulator(small(), faults=NOISY, seed=7) as emu:
        kv = kv_client(emu, **FAST_RETRY)
        for _ in range(30):
            assert kv.vaults.get("rg-app", "kv-rbac").name == "kv-rbac"
        assert emu.request_count > 30


async def test_async_reads_succeed_through_faults() -> None:
    with Emulator(small(), faults=NOISY, seed=11) as emu:
        async with async_kv_client(emu, **FAST_RETRY) as kv:
            got = await asyncio.gather(*(kv.vaults.get("rg-app", "kv-policy") for _ in range(30)))
        assert {v.name for v in got} == {"kv-policy"}
        assert emu.request_count > 30


async def test_writes_under_faults_happen_exactly_once() -> None:
    principals = [str(uuid.uuid4()) for _ in range(40)]
    with Emulator(small(), faults=NOISY, seed=3) as emu:
        async with async_auth_client(emu, **FAST_RETRY) as auth:
            await asyncio.gather(*(auth.role_assignments.create(KV_RBAC, str(uuid.uuid5(uuid.NAMESPACE_URL, p)),
                                                                ra_body(p)) for p in principals))
        async with async_kv_client(emu, **FAST_RETRY) as kv:
            await asyncio.gather(*(kv.vaults.update_access_policy("rg-app", "kv-policy", "add", {"properties": {
                "accessPolicies": [{"tenantId": TENANT, "objectId": p, "permissions": {"secrets": ["get"]}}]}})
                for p in principals))
        tenant = emu.tenant()
        assert emu.request_count > 80
    created = [a["properties"]["principalId"] for a in tenant["role_assignments"]]
    assert sorted(p for p in created if p in principals) == sorted(principals)
    vault = next(v for v in tenant["vaults"] if v["id"] == KV_POLICY)
    entries = [e for e in vault["properties"]["accessPolicies"] if e["objectId"] in principals]
    assert len(entries) == 40 and all(e["permissions"] == {"secrets": ["get"]} for e in entries)


def test_throttle_answer_is_arm_shaped_with_retry_after() -> None:
    with Emulator(small(), faults=Faults(throttle_rate=1.0, retry_after_s=7)) as emu:
        with pytest.raises(HttpResponseError) as e:
            kv_client(emu, retry_total=0).vaults.get("rg-app", "kv-rbac")
        assert e.value.status_code == 429 and err_code(e) == "TooManyRequests"
        response: Any = e.value.response
        assert response.headers["Retry-After"] == "7"


def test_errors_and_resets_surface_when_retries_are_exhausted() -> None:
    with Emulator(small(), faults=Faults(error_rate=1.0)) as emu:
        with pytest.raises(HttpResponseError) as e:
            kv_client(emu, retry_total=1, **FAST_RETRY).vaults.get("rg-app", "kv-rbac")
        assert e.value.status_code in (500, 503)
        assert emu.request_count == 2
    with Emulator(small(), faults=Faults(reset_rate=1.0)) as emu:
        with pytest.raises(ServiceResponseError):
            kv_client(emu, retry_total=1, **FAST_RETRY).vaults.get("rg-app", "kv-rbac")
        assert emu.request_count == 2


def test_a_fault_never_applies_a_write() -> None:
    with Emulator(small(), faults=Faults(throttle_rate=0.5, error_rate=0.25, reset_rate=0.25)) as emu:
        p = str(uuid.uuid4())
        with pytest.raises((HttpResponseError, ServiceResponseError)):
            auth_client(emu, retry_total=0).role_assignments.create(KV_RBAC, str(uuid.uuid4()), ra_body(p))
        assert not [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == p]


def test_lost_response_option_applies_then_drops_and_retries_are_idempotent() -> None:
    with Emulator(small(), faults=Faults(lost_response_rate=1.0)) as emu:
        p = str(uuid.uuid4())
        name = str(uuid.uuid4())
        with pytest.raises(ServiceResponseError):
            auth_client(emu, retry_total=2, **FAST_RETRY).role_assignments.create(KV_RBAC, name, ra_body(p))
        assert emu.request_count == 3
        mine = [a for a in emu.tenant()["role_assignments"] if a["properties"]["principalId"] == p]
        assert len(mine) == 1 and mine[0]["name"] == name  # applied once although no answer arrived
        emu.configure(faults=Faults(lost_response_rate=0.5), seed=1)
        a = auth_client(emu, **FAST_RETRY).role_assignments.create(KV_RBAC, name, ra_body(p))
        assert a.name == name  # re-PUT of the same assignment is idempotent


def test_same_seed_same_faults() -> None:
    counts = []
    for _ in range(2):
        with Emulator(small(), faults=NOISY, seed=42) as emu:
            kv = kv_client(emu, **FAST_RETRY)
            for _ in range(20):
                kv.vaults.get("rg-app", "kv-rbac")
            counts.append(emu.request_count)
    assert counts[0] == counts[1] > 20


async def test_latency_is_per_request_and_overlaps() -> None:
    with Emulator(small(), latency_ms=100) as emu:
        async with async_kv_client(emu) as kv:
            await kv.vaults.get("rg-app", "kv-rbac")  # open the connection pool first
            t = time.perf_counter()
            await asyncio.gather(*(kv.vaults.get("rg-app", "kv-rbac") for _ in range(10)))
            took = time.perf_counter() - t
        assert 0.1 <= took < 0.5, took
        assert emu.request_count == 11


async def test_async_transport_reuses_connections_where_connection_verify_does_not() -> None:
    from azure.mgmt.keyvault.aio import KeyVaultManagementClient as AsyncKV

    with Emulator(small()) as emu:
        async with AsyncKV(emu.async_credential(), SUB, base_url=emu.base_url,
                           transport=emu.async_transport()) as kv:
            for _ in range(10):
                await kv.vaults.get("rg-app", "kv-rbac")
        assert emu.connection_count == 1
        async with async_kv_client(emu) as kv:  # connection_verify=<ca file>: azure-core makes an SSLContext per call
            for _ in range(5):
                await kv.vaults.get("rg-app", "kv-rbac")
        assert emu.connection_count == 1 + 5
