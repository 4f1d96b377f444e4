"""Snapshot loading: ARM and az-CLI shapes, validation errors naming the key, and the tenant() round trip."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from remediate.emulator import Emulator, Snapshot, load_snapshot
from remediate.errors import InputError
from tests.support.emulator import (
    KV_POLICY,
    KV_RBAC,
    KV_READER,
    MI,
    SMALL,
    SUB,
    TENANT,
    auth_client,
    kv_client,
    small,
)


def test_loads_arm_and_az_cli_shapes_to_arm() -> None:
    snap = load_snapshot(SMALL)
    assert isinstance(snap, Snapshot) and snap.tenant_id == TENANT
    flat = next(a for a in snap.role_assignments if a["name"].endswith("3"))  # `az role assignment list` shape
    assert set(flat) == {"id", "name", "type", "properties"}
    assert flat["properties"]["principalId"] == "11111111-0000-0000-0000-000000000003"
    assert "principalName" not in flat["properties"] and "resourceGroup" not in flat
    by_id_only = next(a for a in snap.role_assignments if a["name"].endswith("4"))  # scope derived from the id
    assert by_id_only["properties"]["scope"] == f"{KV_RBAC}/secrets/db-password"
    rd = snap.role_definitions[0]  # `az role definition list` shape
    assert rd["properties"]["type"] == "CustomRole" and rd["properties"]["roleName"] == "Secret Getter"
    assert snap.management_groups[1].parent == "/providers/Microsoft.Management/managementGroups/root"
    assert [p.type for p in snap.principals] == ["ServicePrincipal", "ServicePrincipal", "User", "Group", "Group"]


def test_az_keyvault_show_flat_properties_and_minimal_vault() -> None:
    vid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-flat"
    snap = load_snapshot({"tenant_id": TENANT, "vaults": [
        {"id": vid, "resourceGroup": "rg", "enableRbacAuthorization": False,
         "accessPolicies": [{"objectId": MI, "permissions": {"secrets": ["get"]}}]}]})
    v = snap.vaults[0]
    assert v["name"] == "kv-flat" and v["type"] == "Microsoft.KeyVault/vaults" and "resourceGroup" not in v
    assert v["properties"]["enableRbacAuthorization"] is False
    assert v["properties"]["accessPolicies"][0]["tenantId"] == TENANT
    assert snap.subscriptions == [SUB]  # a vault's subscription is known without being listed


def test_every_list_is_optional_and_unknown_keys_are_ignored() -> None:
    snap = load_snapshot({"whatever": 1})
    assert snap.vaults == [] and snap.graph is True and snap.emulator.page_size == 50


@pytest.mark.parametrize(("data", "key"), [
    ({"vaults": {}}, "vaults"),
    ({"vaults": [{"name": "kv"}]}, "vaults[0].id"),
    ({"vaults": [{"id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s"}]},
     "vaults[0].id"),
    ({"vaults": [{"id": f"{KV_RBAC}", "properties": {"accessPolicies": [{"permissions": {}}]}}]},
     "vaults[0].properties.accessPolicies[0].objectId"),
    ({"role_assignments": [{"id": f"{KV_RBAC}/providers/Microsoft.Authorization/roleAssignments/x",
                            "properties": {"principalId": MI}}]}, "role_assignments[0].properties.roleDefinitionId"),
    ({"role_assignments": [{"properties": {"principalId": MI, "roleDefinitionId": "r"}}]}, "role_assignments[0].name"),
    ({"role_definitions": [{"id": "/providers/Microsoft.Authorization/roleDefinitions/x"}]},
     "role_definitions[0].properties.roleName"),
    ({"principals": [{"id": MI, "type": "Robot"}]}, "principals[0].type"),
    ({"principals": [{"id": MI, "member_of": "g"}]}, "principals[0].member_of"),
    ({"emulator": {"faults": {"throttle_rate": 2}}}, "emulator.faults.throttle_rate"),
    ({"emulator": {"latency_ms": "fast"}}, "emulator.latency_ms"),
    ({"graph": "no"}, "graph"),
    ({"log_rows": [1]}, "log_rows[0]"),
])
def test_bad_snapshot_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(InputError) as e:
        load_snapshot(data)
    assert e.value.source == "snapshot"
    assert e.value.problem.split(":")[0].split(" ")[0] == key, e.value.problem


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "tenant.json"
    bad.write_text('{"vaults": [}')
    with pytest.raises(InputError) as e:
        load_snapshot(bad)
    assert e.value.source == str(bad) and "line 1" in e.value.problem
    with pytest.raises(InputError) as e:
        load_snapshot(tmp_path / "missing.json")
    assert "cannot read" in e.value.problem
    bad.write_text(json.dumps({"principals": [{"type": "User"}]}))
    with pytest.raises(InputError) as e:
        Emulator(bad)
    assert e.value.source == str(bad) and e.value.problem.startswith("principals[0].id:")


def test_tenant_round_trips_and_reflects_writes(tmp_path: Path) -> None:
    with Emulator(small()) as emu:
        before = emu.tenant()
        assert load_snapshot(before).to_dict() == before
        name = str(uuid.uuid4())
        auth_client(emu).role_assignments.create(KV_RBAC, name, {"properties": {
            "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{KV_READER}",
            "principalId": MI, "principalType": "ServicePrincipal"}})
        kv_client(emu).vaults.update_access_policy("rg-app", "kv-policy", "add", {"properties": {"accessPolicies": [
            {"tenantId": TENANT, "objectId": MI, "permissions": {"certificates": ["get"]}}]}})
        after = emu.tenant()
    out = tmp_path / "after.json"
    out.write_text(json.dumps(after))
    reloaded = load_snapshot(out)
    assert any(a["name"] == name for a in reloaded.role_assignments)
    kv = next(v for v in reloaded.vaults if v["id"] == KV_POLICY)
    assert kv["properties"]["accessPolicies"][0]["permissions"]["certificates"] == ["get"]
    assert len(after["role_assignments"]) == len(before["role_assignments"]) + 1
    # a second emulator on the written file serves the changed tenant
    with Emulator(out) as emu2:
        assert auth_client(emu2).role_assignments.get(KV_RBAC, name).principal_id == MI


def test_start_is_fast_and_ports_are_free() -> None:
    Emulator({}).start().stop()  # the CA is made once per process; later starts only bind a port
    t = time.perf_counter()
    a, b = Emulator(small()).start(), Emulator(small()).start()
    took = (time.perf_counter() - t) / 2
    try:
        assert a.base_url != b.base_url and a.base_url.startswith("https://127.0.0.1:")
        assert Path(a.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert took < 0.15, took
    finally:
        a.stop()
        b.stop()


def test_loopback_guard_refuses_other_addresses() -> None:
    # checked on the predicate: a guard test must never risk a real connection elsewhere
    from tests.support.loopback import GUARD, is_loopback

    assert is_loopback(("127.0.0.1", 80)) and is_loopback(("::1", 80))
    assert not is_loopback(("192.0.2.1", 80)) and not is_loopback(("169.254.0.1", 80))
    # and on the installed guard, which refuses before the real connect or lookup runs
    for target in (("192.0.2.1", 443), ("169.254.169.254", 80), ("management.azure.com", 443)):
        with socket.socket() as sock, pytest.raises(pytest.fail.Exception, match=target[0]):
            sock.connect(target)
        with pytest.raises(pytest.fail.Exception, match=target[0]):
            socket.getaddrinfo(*target)
    assert len(GUARD.take()) == 6
