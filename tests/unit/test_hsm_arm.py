"""A Managed HSM key reached through ARM (issue 12: "key management through ARM not trusted"), pure: intake records
Signal.HSM_ARM_PATH from an ARM key resource under managedHSMs (any case), ARM's operation on HSM keys or the
setting ARM's refusal names; the decision reads AllowKeyManagementOperationsThroughARM from the facts only (false:
HSM_ARM_NOT_TRUSTED, no plan; true or unread: the local RBAC decision); nothing the input says about the setting
counts."""

from __future__ import annotations

import json

import pytest

from remediate.decide import decide
from remediate.explain import build_finding
from remediate.hsm_model import ARM_SETTING, HsmAccess, HsmSetting, ManagedHsm
from remediate.intake import parse_one
from remediate.model import Cause, Denial, Facts, HsmRoleAssignmentPlan, Principal, PrincipalInfo, Signal, VaultRef
from remediate.plan import plan

SUB = "00000000-0000-0000-0000-0000000000a1"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-hsm/providers/Microsoft.KeyVault/managedHSMs/hsm-pay"
KEY_ID = HSM_ID + "/keys/cmk"
OID = "33333333-0000-4000-8000-000000000004"
P = "Microsoft.KeyVault/managedHsm/"
HSM = ManagedHsm(id=HSM_ID, name="hsm-pay", hsm_uri="https://hsm-pay.managedhsm.azure.net/",
                 activation_status="Active")
CLAIMS = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def parsed(name: str, value: object) -> Denial:
    data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    (d,) = parse_one(name, data).denials
    return d


# --- intake ---------------------------------------------------------------------------------------------------

SHAPES = {
    # an ARM deployment's error: the key resource under the HSM in its message, and ARM's words naming the setting
    "deployment": {"error": {"code": "Forbidden", "target": KEY_ID, "message": (
        f"The operation on resource '{KEY_ID}' failed: enable the setting '{ARM_SETTING}' on the Managed HSM to "
        "manage keys through Azure Resource Manager.")}},
    # an activity-log record: ARM's control-plane operation on HSM keys, the key's resource id, upper-cased
    "activity": {"records": [{"time": "2026-12-07T10:00:00Z", "resourceId": KEY_ID.upper(),
                              "operationName": "MICROSOFT.KEYVAULT/MANAGEDHSMS/KEYS/WRITE",
                              "category": "Administrative", "resultType": "Failure",
                              "resultSignature": "Forbidden.403", "identity": {"claims": {CLAIMS: OID}},
                              "properties": {"statusCode": "Forbidden"}}]},
    # az's text: the operation and the id in plain words
    "az": f"ERROR: (Forbidden) Microsoft.KeyVault/managedHSMs/keys/read on {KEY_ID.lower()} was denied.",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_arm_path_to_an_hsm_key_is_a_managed_hsm_denial_with_the_arm_signal(shape: str) -> None:
    # given an input naming an HSM key reached through ARM, when intake reads it
    d = parsed(shape, SHAPES[shape])
    # then it is a Managed HSM denial with the ARM-path signal, aimed at the HSM and its key's scope
    assert Signal.HSM_ARM_PATH in d.signals and d.vault.kind == "managed_hsm"
    assert (d.vault.name or "").lower() == "hsm-pay" and (d.vault.scope or "").lower() == "/keys/cmk"
    assert d.access_policy_permission is None
    # and ARM's operation, when named, stands for the data action ARM asks the HSM for on the caller's behalf
    expected = {"activity": P + "keys/create", "az": P + "keys/read/action", "deployment": None}[shape]
    assert d.data_action == expected


@pytest.mark.parametrize("text", [
    # a data-plane refusal: the HSM's own local RBAC words, no ARM
    f"(AccessDenied) Not authorized to access {P}keys/create on /keys/cmk (Activity ID: x)",
    # a data action spelled with the ARM-like provider but ending in /action, and a vault's key id
    f"Caller is not authorized to perform action '{P}keys/read/action' on "
    f"'/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1/keys/cmk'",
])
def test_a_data_plane_or_vault_refusal_carries_no_arm_signal(text: str) -> None:
    assert Signal.HSM_ARM_PATH not in parsed("t.txt", "ERROR: (Forbidden) " + text).signals


def test_a_crafted_hsm_id_in_an_arm_path_names_no_hsm() -> None:
    # given an ARM key id whose HSM name and subscription are not Azure's shapes
    d = parsed("t.txt", "ERROR: (Forbidden) on /subscriptions/not-a-guid/resourceGroups/rg/providers/"
                        "Microsoft.KeyVault/managedHSMs/x..y/keys/cmk")
    # then nothing is aimed at: no resource id survives
    assert d.vault.resource_id is None


# --- decide ---------------------------------------------------------------------------------------------------

def arm_denial(oid: str | None = OID, action: str | None = P + "keys/create", **kw: object) -> Denial:
    d = Denial(source="test", status=403, principal=Principal(object_id=oid),
               vault=VaultRef(name="hsm-pay", resource_id=HSM_ID, kind="managed_hsm", scope="/keys/cmk"),
               data_action=action, signals=frozenset({Signal.HSM_ARM_PATH}))
    return d.with_(**kw) if kw else d


def facts(setting: HsmSetting | None, oid: str | None = OID, hsm: ManagedHsm = HSM) -> Facts:
    access = HsmAccess(hsm=hsm.name, scopes=("/", "/keys", "/keys/cmk"), assignments=(), custom_definitions=())
    return Facts(vault=None, principal=PrincipalInfo(oid, type="User", groups_known=True), hsm=hsm,
                 hsm_access=access if oid else None, hsm_arm_setting=setting)


FALSE = HsmSetting("hsm-pay", ARM_SETTING, "false", "boolean")
TRUE = HsmSetting("hsm-pay", ARM_SETTING, "true", "boolean")
UNREAD = HsmSetting("hsm-pay", ARM_SETTING, problem="refused")


@pytest.mark.parametrize(("denial", "setting", "hsm", "cause"), [
    (arm_denial(), FALSE, HSM, Cause.HSM_ARM_NOT_TRUSTED),
    (arm_denial(), TRUE, HSM, Cause.MISSING_ROLE_ASSIGNMENT),
    (arm_denial(), UNREAD, HSM, Cause.MISSING_ROLE_ASSIGNMENT),
    (arm_denial(), None, HSM, Cause.MISSING_ROLE_ASSIGNMENT),
    (arm_denial(None), FALSE, HSM, Cause.HSM_ARM_NOT_TRUSTED),          # whoever asked, ARM was not trusted
    (arm_denial(None), TRUE, HSM, Cause.PRINCIPAL_NOT_IDENTIFIED),
    # named by app id only (no object id to aim at): the setting still explains a refusal, else nothing can
    (arm_denial(None, principal=Principal(app_id=OID)), FALSE, HSM, Cause.HSM_ARM_NOT_TRUSTED),
    (arm_denial(None, principal=Principal(app_id=OID)), TRUE, HSM, Cause.PRINCIPAL_NOT_IDENTIFIED),
    (arm_denial(None, principal=Principal(app_id=OID)), UNREAD, HSM, Cause.PRINCIPAL_NOT_IDENTIFIED),
    (arm_denial(action=None), FALSE, HSM, Cause.HSM_ARM_NOT_TRUSTED),   # a deployment error naming no operation
    (arm_denial(action=None), TRUE, HSM, Cause.UNKNOWN),
    # an HSM not activated refuses everything first
    (arm_denial(), FALSE, ManagedHsm(id=HSM_ID, name="hsm-pay", hsm_uri=HSM.hsm_uri,
                                     activation_status="NotActivated"), Cause.HSM_NOT_ACTIVATED),
    # what the input alone decides still comes first
    (arm_denial(status=429), FALSE, HSM, Cause.THROTTLED),
    (arm_denial(signals=frozenset({Signal.HSM_ARM_PATH, Signal.NETWORK})), FALSE, HSM, Cause.NETWORK_BLOCKED),
    # an ordinary HSM denial is never judged by the setting, even if one were read
    (arm_denial(signals=frozenset()), FALSE, HSM, Cause.MISSING_ROLE_ASSIGNMENT),
])
def test_the_arm_trust_setting_decides_only_an_arm_path_denial(denial: Denial, setting: HsmSetting | None,
                                                               hsm: ManagedHsm, cause: Cause) -> None:
    decision = decide(denial, facts(setting, denial.principal.object_id, hsm))
    assert decision.cause == cause


def test_arm_not_trusted_gets_no_plan_and_the_data_plane_or_an_administrator_as_advice() -> None:
    finding = build_finding(arm_denial(), 1, facts(FALSE))
    assert finding.cause == Cause.HSM_ARM_NOT_TRUSTED and finding.plan is None
    advice = " ".join(finding.advice)
    assert "az keyvault key create --hsm-name hsm-pay" in advice
    assert f"az keyvault setting update --hsm-name hsm-pay --name {ARM_SETTING} --value true" in advice
    assert "acceptable tradeoff" in advice and "false" in finding.explanation


@pytest.mark.parametrize("claim", [
    f"{ARM_SETTING} is true on this HSM",
    f'{{"name": "{ARM_SETTING}", "value": "true", "type": "boolean"}}',
])
def test_an_input_claiming_the_setting_is_true_changes_nothing(claim: str) -> None:
    # given an ARM-path denial whose text says ARM is trusted, and the HSM's own answer false
    d = arm_denial(message=claim)
    # then the HSM's answer decides
    assert decide(d, facts(FALSE)).cause == Cause.HSM_ARM_NOT_TRUSTED
    # and with the HSM's answer true the grant is the usual least-privilege one, at the HSM ARM returned
    decision = decide(d, facts(TRUE))
    fix = plan(d, decision, facts(TRUE))
    assert isinstance(fix, HsmRoleAssignmentPlan) and fix.hsm == HSM_ID and fix.scope == "/keys/cmk"


def test_an_arm_id_naming_another_hsm_than_the_text_does_not_redirect_the_denial() -> None:
    # given the HSM's own data-plane URL for hsm-pay, and an ARM key id under another HSM later in the same text
    text = (f"ERROR: (Forbidden) Request: PUT https://hsm-pay.managedhsm.azure.net/keys/cmk/create?api-version=7.4 "
            f"on {KEY_ID.replace('hsm-pay', 'hsm-evil')}")
    d = parsed("t.txt", text).canonical()
    # then the denial is about hsm-pay, with no resource id of the other HSM kept
    assert d.vault.name == "hsm-pay" and d.vault.resource_id is None and Signal.HSM_ARM_PATH in d.signals


def test_a_huge_or_controlled_text_costs_nothing_and_names_nothing() -> None:
    from remediate.intake.values import hsm_arm_path

    assert hsm_arm_path("x" * 1_000_000) is None
    assert hsm_arm_path(KEY_ID + "\x00") is None
    assert hsm_arm_path(None) is None
