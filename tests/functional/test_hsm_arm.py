"""A Managed HSM key reached through ARM, end to end: inputs through ``service.diagnose`` with the real
azure-mgmt-keyvault and azure-keyvault-administration clients (``KeyVaultSettingsClient`` for
AllowKeyManagementOperationsThroughARM) against the emulator. The setting is read only for an ARM-path denial,
and only the HSM's own answer counts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration.aio import KeyVaultSettingsClient

from remediate.backends import EmulatorRun
from remediate.emulator import Emulator
from remediate.hsm_model import ARM_SETTING
from remediate.intake import parse_inputs
from remediate.model import Cause, Denial, Finding, HsmRoleAssignmentPlan, Principal, Signal, VaultRef
from remediate.service import Diagnosis, diagnose
from tests.support.hsm import AUDITOR, HSM, HSM_ID, HSM_URL, STRANGER, tenant

P = "Microsoft.KeyVault/managedHsm/"
OTHER_ID = HSM_ID.rsplit("/", 1)[0] + "/hsm-other"


def world(setting: str | None = None) -> dict[str, Any]:
    t = tenant()
    t["principals"] = [{"id": STRANGER, "type": "User", "display_name": "dev", "member_of": []}]
    if setting is not None:
        t["hsm_settings"] = {HSM: {ARM_SETTING: setting}}
    return t


def arm_denial(oid: str | None = STRANGER, *, arm: bool = True, **kw: Any) -> Denial:
    d = Denial(source="test", status=403, principal=Principal(object_id=oid),
               vault=VaultRef(name=HSM, resource_id=HSM_ID, kind="managed_hsm", scope="/keys/cmk"),
               data_action=P + "keys/create", signals=frozenset({Signal.HSM_ARM_PATH}) if arm else frozenset())
    return d.with_(**kw) if kw else d


async def run(denials: list[Denial], t: dict[str, Any]) -> Diagnosis:
    with EmulatorRun(t) as emu:
        async with emu.facts() as facts:
            return await diagnose(denials, facts)


def only(d: Diagnosis) -> Finding:
    (f,) = d.findings
    return f


# --- the emulator's settings route, through the real SDK client -------------------------------------------------

async def test_the_emulator_answers_settings_as_an_hsm_does() -> None:
    with Emulator(world("true")) as emu:
        async with KeyVaultSettingsClient(HSM_URL, emu.async_credential(), transport=emu.async_transport()) as c:
            got = await c.get_setting(ARM_SETTING)
            assert (got.name, got.value, got.setting_type) == (ARM_SETTING, "true", "boolean")
            assert [s.name async for s in c.list_settings()] == [ARM_SETTING]
            with pytest.raises(ResourceNotFoundError):
                await c.get_setting("NoSuchSetting")
    t = world()
    t["emulator"] = {"hsm_caller": AUDITOR}     # Crypto Auditor holds no settings/read/action
    with Emulator(t) as emu:
        async with KeyVaultSettingsClient(HSM_URL, emu.async_credential(), transport=emu.async_transport()) as c:
            with pytest.raises(HttpResponseError) as err:
                await c.get_setting(ARM_SETTING)
            assert err.value.status_code == 403 and "settings/read/action on /" in str(err.value)


# --- diagnosis -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", [None, "false"])     # absent: Azure's default, not trusted
async def test_an_arm_path_denial_on_an_hsm_that_does_not_trust_arm_is_hsm_arm_not_trusted(
        setting: str | None) -> None:
    f = only(await run([arm_denial()], world(setting)))
    assert f.cause == Cause.HSM_ARM_NOT_TRUSTED and f.plan is None
    assert "az keyvault key create --hsm-name hsm-pay" in " ".join(f.advice)


async def test_an_arm_path_denial_with_no_caller_is_still_explained_by_the_setting() -> None:
    f = only(await run([arm_denial(None)], world("false")))
    assert f.cause == Cause.HSM_ARM_NOT_TRUSTED and f.plan is None


async def test_an_hsm_that_trusts_arm_gets_the_usual_local_rbac_decision_and_says_what_was_read() -> None:
    f = only(await run([arm_denial()], world("true")))
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT and isinstance(f.plan, HsmRoleAssignmentPlan)
    assert f.plan.hsm == HSM_ID and f.plan.scope == "/keys/cmk"
    assert any(ARM_SETTING in x and "true" in x for x in f.evidence.limitations)


async def test_a_setting_our_identity_may_not_read_is_a_limitation_not_a_crash() -> None:
    t = world("false")
    t["emulator"] = {"hsm_caller": AUDITOR}     # reads roles and definitions, not settings
    f = only(await run([arm_denial()], t))
    assert f.cause == Cause.MISSING_ROLE_ASSIGNMENT
    assert any(ARM_SETTING in x and "settings/read/action" in x for x in f.evidence.limitations)


async def test_only_an_arm_path_denial_asks_for_the_setting() -> None:
    # given the same denial with and without the ARM path, on an HSM that trusts ARM (the same verdict both ways),
    # each after the HSM's 401 challenge is answered (the SDK caches it per host for the process: one warm-up run)
    await run([arm_denial()], world("true"))
    plain = await run([arm_denial(arm=False)], world("true"))
    arm = await run([arm_denial()], world("true"))
    # then the ordinary denial makes one HSM request fewer (no GET /settings/...) and says nothing of it
    assert only(plain).cause == only(arm).cause == Cause.MISSING_ROLE_ASSIGNMENT
    assert arm.stats.requests.requests_by_api["hsm"] == plain.stats.requests.requests_by_api["hsm"] + 1
    assert not any(ARM_SETTING in x for x in only(plain).evidence.limitations)


async def test_a_deployment_error_reaches_the_same_finding() -> None:
    key = HSM_ID + "/keys/cmk"
    body = {"error": {"code": "Forbidden", "target": key, "message": (
        f"The operation on resource '{key}' failed: enable the setting '{ARM_SETTING}' to manage keys through "
        "Azure Resource Manager.")}}
    parsed = parse_inputs([("deploy.json", json.dumps(body).encode())])
    f = only(await run(list(parsed.denials), world()))
    assert f.cause == Cause.HSM_ARM_NOT_TRUSTED and f.plan is None


# --- attacks -----------------------------------------------------------------------------------------------

async def test_an_input_claiming_arm_is_trusted_changes_nothing() -> None:
    d = arm_denial(message=f'{{"name": "{ARM_SETTING}", "value": "true", "type": "boolean"}}')
    f = only(await run([d], world("false")))
    assert f.cause == Cause.HSM_ARM_NOT_TRUSTED and f.plan is None


async def test_an_input_naming_another_hsm_reads_that_hsm_only_and_grants_nothing_there() -> None:
    # given the input naming an HSM the tenant does not have (the setting read of ours says false)
    d = arm_denial(vault=VaultRef(name="hsm-other", resource_id=OTHER_ID, kind="managed_hsm", scope="/keys/cmk"))
    f = only(await run([d], world("false")))
    # then it is not found: no grant, no setting borrowed from the HSM we do know
    assert f.cause == Cause.VAULT_NOT_FOUND and f.plan is None


async def test_an_hsm_whose_arm_host_is_not_the_implied_one_is_still_decided_from_its_setting() -> None:
    # given ARM naming the HSM's data plane under another cloud's suffix than the public one its name implies
    t = world("false")
    t["managed_hsms"][0]["properties"]["hsmUri"] = f"https://{HSM}.managedhsm.azure.cn/"
    await run([arm_denial()], t)     # both hosts' 401 challenges answered (cached per host for the process)
    got = await run([arm_denial()], t)
    plain = await run([arm_denial(arm=False)], t)
    # then the setting is read again at ARM's host (the early read at the implied one is not used) and decides:
    # two settings reads where an ordinary denial makes none
    assert only(got).cause == Cause.HSM_ARM_NOT_TRUSTED
    assert got.stats.requests.requests_by_api["hsm"] == plain.stats.requests.requests_by_api["hsm"] + 2
