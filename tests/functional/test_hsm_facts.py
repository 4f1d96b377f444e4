"""facts/hsm.py against the emulator: finding an HSM through ARM, its local RBAC at the three scopes as typed values,
SDK errors as domain errors with the remedy, and the write side (create / verify / delete only ours) staying
idempotent under injected faults. Outcomes are asserted on what the HSM holds afterwards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from remediate.backends import EmulatorRun
from remediate.emulator import Faults
from remediate.emulator.snapshot import load_snapshot
from remediate.errors import ApplyError, AzureUnavailableError, HsmAccessDeniedError
from remediate.facts.hsm import HsmFacts, ensure_assignment, ensure_custom_role, remove_assignment
from remediate.hsm_model import ManagedHsm, assignment_name, custom_role_name
from tests.support.hsm import (
    ADMIN,
    APP,
    AUDITOR,
    CUSTOM,
    HSM,
    HSM_ID,
    HSM_URL,
    OFFICER,
    SIGNER,
    STRANGER,
    role_id,
    tenant,
)

RELEASE = role_id("Managed HSM Crypto Service Release User")
NOISY = Faults(throttle_rate=0.15, retry_after_s=0, error_rate=0.15, reset_rate=0.1, lost_response_rate=0.5)


def held(run: EmulatorRun) -> list[dict[str, Any]]:
    """The HSM's assignments as the emulated tenant holds them now."""
    return list(run.emulator.tenant().get("hsm_role_assignments", {}).get(HSM, []))


async def _hsm(facts: HsmFacts) -> ManagedHsm:
    found = await facts.get_hsm(HSM_ID)
    assert found is not None
    return found


async def test_the_hsm_is_found_by_id_name_and_host() -> None:
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            by_id = await facts.get_hsm(HSM_ID)
            by_name = await facts.find_hsm(HSM)
            by_host = await facts.find_hsm(f"{HSM}.managedhsm.azure.net")
            by_url = await facts.find_hsm(HSM_URL + "/keys/cmk")
            missing = await facts.get_hsm(HSM_ID + "x")
            unknown = await facts.find_hsm("hsm-nope")
    assert by_id is not None and by_id == by_name == by_host == by_url
    assert by_id.hsm_uri == HSM_URL + "/" and by_id.initial_admin_object_ids == (ADMIN,)
    assert by_id.activated is True and by_id.resource_group == "rg-hsm"
    assert missing is None and unknown is None


@pytest.mark.parametrize(("key", "principals"), [
    (None, {ADMIN, AUDITOR, OFFICER}),
    ("cmk", {ADMIN, AUDITOR, OFFICER, APP}),
    ("sig", {ADMIN, AUDITOR, OFFICER, SIGNER}),
])
async def test_local_rbac_reads_the_three_scopes_in_parallel(key: str | None, principals: set[str]) -> None:
    # given the HSM with assignments at every scope
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when the local RBAC for one key is read
            access = await facts.local_rbac(hsm, key)
    # then every assignment that applies is there once (the HSM-level ones are listed at each scope), typed
    assert {a.principal_id for a in access.assignments} == principals
    assert len({a.id.lower() for a in access.assignments}) == len(access.assignments)
    assert [d.name for d in access.custom_definitions] == [CUSTOM]
    assert access.custom_definitions[0].grants("Microsoft.KeyVault/managedHsm/keys/sign/action")
    assert len(access.builtin_definitions) == 9
    if key == "sig":
        (signer,) = access.for_principals((SIGNER,))
        definition = access.definition(signer.role_definition_id)
        assert definition is not None and definition.role_name == "kv-remediate sign"


async def test_an_hsm_refusing_our_identity_is_a_domain_error_with_the_remedy() -> None:
    # given the HSM sees us as a principal with no local role
    t = tenant()
    t["emulator"] = {"hsm_caller": STRANGER}
    with EmulatorRun(t) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when its local RBAC is read
            with pytest.raises(HsmAccessDeniedError) as info:
                await facts.local_rbac(hsm, "cmk")
    # then the error names the data action and scope the HSM named, and what to assign
    assert info.value.hsm == HSM
    assert info.value.data_action is not None and info.value.data_action.startswith("Microsoft.KeyVault/managedHsm/")
    assert info.value.scope in ("/", "/keys", "/keys/cmk")
    assert "Managed HSM Crypto Auditor" in info.value.message and "--scope /" in info.value.message
    assert isinstance(info.value.__cause__, Exception)


async def test_ensure_is_idempotent_and_verified() -> None:
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when the same grant is ensured twice
            first = await ensure_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
            second = await ensure_assignment(facts, hsm, "keys/cmk", RELEASE, STRANGER.upper())
        # then one assignment exists, under our deterministic name, written once and confirmed both times
        ours = [a for a in held(run) if a["properties"]["principalId"].lower() == STRANGER]
        assert [a["name"] for a in ours] == [assignment_name(STRANGER, "/keys/cmk", RELEASE)]
        assert ours[0]["properties"]["scope"] == "/keys/cmk"
        assert (first.changed, second.changed) == (True, False)
        assert first.verified and second.verified and first.assignment == second.assignment


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_create_and_delete_under_injected_faults_leave_exactly_what_was_asked(seed: int) -> None:
    # given an HSM that throttles, fails, resets and loses half of the write answers (after applying them)
    with EmulatorRun(tenant()) as run:
        run.emulator.configure(faults=NOISY, seed=seed)
        before = held(run)
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when the same grant is ensured three times concurrently, then again
            writes = await asyncio.gather(*(ensure_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
                                            for _ in range(3)))
            again = await ensure_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
            # then exactly one assignment was added
            after = held(run)
            assert len(after) == len(before) + 1
            assert all(w.verified for w in (*writes, again)) and not again.changed
            # when it is removed twice
            gone = await remove_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
            gone_again = await remove_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
        # then the HSM holds exactly what it held before
        assert held(run) == before
        assert gone.verified and gone_again.verified and not gone_again.changed


async def test_remove_never_deletes_what_we_did_not_write() -> None:
    # given an assignment under our name for this grant, but holding another role (not what kv-remediate writes)
    t = tenant()
    name = assignment_name(STRANGER, "/keys/cmk", RELEASE)
    t["hsm_role_assignments"][HSM].append({"name": name, "principalId": STRANGER, "scope": "/keys/cmk",
                                           "roleDefinitionId": role_id("Managed HSM Crypto User")})
    with EmulatorRun(t) as run:
        before = held(run)
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when we remove (or ensure) the grant
            with pytest.raises(ApplyError, match="other content"):
                await remove_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
            with pytest.raises(ApplyError, match="not made by kv-remediate"):
                await ensure_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
        # then the HSM is unchanged, and the admin's and the app's own assignments are untouched
        assert held(run) == before


async def test_a_write_the_hsm_refuses_is_an_apply_error_and_changes_nothing() -> None:
    t = tenant()
    t["emulator"] = {"hsm_caller": AUDITOR}      # can read, cannot write
    with EmulatorRun(t) as run:
        before = held(run)
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            with pytest.raises(ApplyError) as info:
                await ensure_assignment(facts, hsm, "/keys/cmk", RELEASE, STRANGER)
        assert held(run) == before
    assert "roleAssignments/write/action" in info.value.message
    assert isinstance(info.value.__cause__, AzureUnavailableError)


async def test_a_bad_scope_never_reaches_the_hsm() -> None:
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            run.emulator.reset_count()
            for scope in ("/secrets", "/keys/a/b", "/keys/../x", "/keys/k%2F1"):
                with pytest.raises(ValueError):
                    await ensure_assignment(facts, hsm, scope, RELEASE, STRANGER)
        assert run.emulator.request_count == 0


async def test_snapshot_round_trip_keeps_the_hsm_and_its_local_rbac(tmp_path: Path) -> None:
    # given a tenant in az's flat shapes, and a grant made on it
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            await ensure_assignment(facts, await _hsm(facts), "/keys/cmk", RELEASE, STRANGER)
        out = run.emulator.tenant()
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(out), encoding="utf-8")
    # when the written snapshot is loaded and served again
    with EmulatorRun(load_snapshot(path)) as again:
        async with again.hsm_facts() as facts:
            hsm = await _hsm(facts)
            access = await facts.local_rbac(hsm, "cmk")
        # then the HSM, its assignments (ours included) and its custom role are as they were
        assert hsm.hsm_uri == HSM_URL + "/"
        assert STRANGER in {a.principal_id for a in access.assignments}
        assert [d.name for d in access.custom_definitions] == [CUSTOM]
        assert again.emulator.tenant()["hsm_role_assignments"] == out["hsm_role_assignments"]
        assert again.emulator.tenant()["managed_hsms"] == out["managed_hsms"]


async def test_a_custom_role_is_defined_once_and_assignable_at_a_key() -> None:
    encrypt = ["Microsoft.KeyVault/managedHsm/keys/encrypt/action", "keys/DECRYPT/action"]
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            # when the role for encrypt+decrypt is ensured twice (in another order) and assigned at one key
            role = await ensure_custom_role(facts, hsm, encrypt)
            again = await ensure_custom_role(facts, hsm, list(reversed(encrypt)))
            write = await ensure_assignment(facts, hsm, "/keys/cmk", role.id, STRANGER)
            access = await facts.local_rbac(hsm, "cmk")
        # then one custom role exists besides the tenant's, with exactly those two actions, and it is in force there
        customs = run.emulator.tenant()["hsm_role_definitions"][HSM]
        assert len(customs) == 2 and role == again and role.name == custom_role_name(encrypt)
        assert sorted(role.data_actions) == ["Microsoft.KeyVault/managedHsm/keys/decrypt/action",
                                             "Microsoft.KeyVault/managedHsm/keys/encrypt/action"]
        (mine,) = access.for_principals((STRANGER,))
        definition = access.definition(mine.role_definition_id)
        assert write.verified and definition is not None
        assert definition.grants("Microsoft.KeyVault/managedHsm/keys/decrypt/action")
        assert not definition.grants("Microsoft.KeyVault/managedHsm/keys/create")


@pytest.mark.parametrize("actions", [
    ["Microsoft.KeyVault/managedHsm/*"],                                      # a wildcard
    ["Microsoft.KeyVault/managedHsm/keys/*"],
    ["Microsoft.KeyVault/managedHsm/roleAssignments/write/action"],          # self-escalation
    ["Microsoft.KeyVault/vaults/keys/decrypt/action"],                       # a vault action
    ["keys/decrypt/action", "securitydomain/download/action"],
    [],
])
async def test_a_custom_role_never_holds_more_than_key_data_actions(actions: list[str]) -> None:
    with EmulatorRun(tenant()) as run:
        async with run.hsm_facts() as facts:
            hsm = await _hsm(facts)
            run.emulator.reset_count()
            with pytest.raises(ValueError):
                await ensure_custom_role(facts, hsm, actions)
        assert run.emulator.request_count == 0
        assert len(run.emulator.tenant()["hsm_role_definitions"][HSM]) == 1
