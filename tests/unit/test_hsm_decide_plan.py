"""Managed HSM decision and least-privilege plan, pure: local RBAC over `/`, `/keys`, `/keys/{name}`, groups,
custom roles with notDataActions, the HSM's own listing over package data; a plan for every managedHsm key data
action; and the attacks: nothing the input claims widens or redirects a grant, and an HSM never gets a vault-style
(access policy or ARM role) fix."""

from __future__ import annotations

import pytest

from remediate.catalog.hsm import BUILTIN_ID_PREFIX, HsmRoleDefinition, builtin_role_by_name, key_data_actions
from remediate.decide import decide
from remediate.explain import build_finding
from remediate.hsm_model import HsmAccess, HsmRoleAssignment, ManagedHsm, custom_role_name
from remediate.model import (
    Cause,
    Denial,
    Facts,
    HsmRoleAssignmentPlan,
    ObjectRef,
    Principal,
    PrincipalInfo,
    Signal,
    VaultRef,
)
from remediate.plan import plan
from remediate.render.hsm_commands import NO_BICEP

SUB = "00000000-0000-0000-0000-0000000000a1"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-hsm/providers/Microsoft.KeyVault/managedHSMs/hsm-pay"
OID = "33333333-0000-4000-8000-000000000004"
GROUP = "33333333-0000-4000-8000-0000000000aa"
OTHER = "33333333-0000-4000-8000-0000000000bb"
P = "Microsoft.KeyVault/managedHsm/"
HSM = ManagedHsm(id=HSM_ID, name="hsm-pay", hsm_uri="https://hsm-pay.managedhsm.azure.net/",
                 activation_status="Active")
ENC_USER = "Managed HSM Crypto Service Encryption User"
CRYPTO_USER = "Managed HSM Crypto User"


def role_id(name: str) -> str:
    role = builtin_role_by_name(name)
    assert role is not None
    return BUILTIN_ID_PREFIX + role.name


def assignment(n: int, principal: str, scope: str, role_definition_id: str) -> HsmRoleAssignment:
    name = f"0000aaaa-0000-0000-0000-{n:012d}"
    return HsmRoleAssignment(id=f"{scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{name}",
                             name=name, scope=scope, role_definition_id=role_definition_id, principal_id=principal)


def denial(action: str = P + "keys/encrypt/action", scope: str | None = "/keys/cmk", **kw: object) -> Denial:
    d = Denial(source="test", status=403, principal=Principal(object_id=OID),
               vault=VaultRef(name="hsm-pay", kind="managed_hsm", scope=scope), data_action=action)
    return d.with_(**kw) if kw else d


def facts(*assignments: HsmRoleAssignment, custom: tuple[HsmRoleDefinition, ...] = (),
          listed: tuple[HsmRoleDefinition, ...] = (), groups: tuple[str, ...] = (), hsm: ManagedHsm = HSM,
          ptype: str | None = "ServicePrincipal") -> Facts:
    access = HsmAccess(hsm=hsm.name, scopes=("/", "/keys", "/keys/cmk"), assignments=assignments,
                       custom_definitions=custom, builtin_definitions=listed)
    return Facts(vault=None, principal=PrincipalInfo(OID, type=ptype, groups=groups, groups_known=True), hsm=hsm,
                 hsm_access=access)


# --- decide ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scope", "held_at", "granted"), [
    ("/keys/cmk", "/", True), ("/keys/cmk", "/keys", True), ("/keys/cmk", "/keys/cmk", True),
    ("/keys/cmk", "/keys/other", False), ("/keys", "/keys/cmk", False), (None, "/keys/cmk", False),
    (None, "/keys", True),
])
def test_a_local_assignment_grants_at_its_scope_and_below_only(scope: str | None, held_at: str,
                                                               granted: bool) -> None:
    # given Crypto User held at one scope, when a key operation is denied at another
    got = decide(denial(scope=scope), facts(assignment(1, OID, held_at, role_id(CRYPTO_USER))))
    # then it grants exactly when its scope is the request's or above it
    assert got.cause == (Cause.ALREADY_GRANTED if granted else Cause.MISSING_ROLE_ASSIGNMENT)
    assert got.permission_model == "hsm_local_rbac"


def test_a_groups_assignment_grants_and_another_principals_does_not() -> None:
    held = (assignment(1, GROUP, "/keys", role_id(CRYPTO_USER)), assignment(2, OTHER, "/", role_id(CRYPTO_USER)))
    # given the caller in GROUP: then granted through the group
    got = decide(denial(), facts(*held, groups=(GROUP,)))
    assert got.cause == Cause.ALREADY_GRANTED and got.detail.grant is not None
    assert got.detail.grant.via == "group" and got.detail.grant.principal_id == GROUP
    # given the caller in no group: then the other principal's grant is not the caller's
    assert decide(denial(), facts(*held)).cause == Cause.MISSING_ROLE_ASSIGNMENT


def test_a_custom_roles_not_data_actions_subtract() -> None:
    custom = HsmRoleDefinition(id=BUILTIN_ID_PREFIX + "44444444-0000-0000-0000-000000000001",
                               name="44444444-0000-0000-0000-000000000001", role_name="all but encrypt",
                               role_type="CustomRole", data_actions=(P + "keys/*",),
                               not_data_actions=(P + "keys/encrypt/action",))
    f = facts(assignment(1, OID, "/keys/cmk", custom.id), custom=(custom,))
    assert decide(denial(P + "keys/encrypt/action"), f).cause == Cause.MISSING_ROLE_ASSIGNMENT
    check = decide(denial(P + "keys/encrypt/action"), f).evidence.role_assignments[0]
    assert "notDataActions" in check.reason
    assert decide(denial(P + "keys/decrypt/action"), f).cause == Cause.ALREADY_GRANTED


def test_the_hsms_own_listing_of_a_builtin_wins_over_package_data() -> None:
    # given an HSM whose listing of Crypto User (same GUID) no longer holds encrypt
    pkg = builtin_role_by_name(CRYPTO_USER)
    assert pkg is not None
    listed = HsmRoleDefinition(id=pkg.id, name=pkg.name, role_name=pkg.role_name, role_type="AKVBuiltInRole",
                               data_actions=(P + "keys/read/action",))
    got = decide(denial(), facts(assignment(1, OID, "/", role_id(CRYPTO_USER)), listed=(listed,)))
    # then the HSM's word decides
    assert got.cause == Cause.MISSING_ROLE_ASSIGNMENT


def test_an_hsm_not_activated_is_its_own_cause_and_gets_no_plan() -> None:
    hsm = ManagedHsm(id=HSM_ID, name="hsm-pay", hsm_uri=HSM.hsm_uri, activation_status="NotActivated")
    f = Facts(vault=None, principal=PrincipalInfo(OID), hsm=hsm)
    finding = build_finding(denial(), 1, f)
    assert finding.cause == Cause.HSM_NOT_ACTIVATED and finding.plan is None
    assert "not activated" in finding.explanation and "security-domain download" in " ".join(finding.advice)


@pytest.mark.parametrize(("change", "cause"), [
    ({"status": 401, "signals": frozenset({Signal.AUTH_CHALLENGE}), "principal": Principal()},
     Cause.AUTH_CHALLENGE),
    ({"signals": frozenset({Signal.NETWORK})}, Cause.NETWORK_BLOCKED),
    ({"status": 429}, Cause.THROTTLED),
    ({"principal": Principal()}, Cause.PRINCIPAL_NOT_IDENTIFIED),
    ({"data_action": P + "keys/frobnicate/action"}, Cause.UNKNOWN),
])
def test_what_the_input_alone_decides_reuses_the_vault_codes(change: dict[str, object], cause: Cause) -> None:
    finding = build_finding(denial(**change), 1, facts())
    assert finding.cause == cause and finding.plan is None


def test_no_hsm_found_is_vault_not_found_in_hsm_words() -> None:
    f = Facts(vault=None, principal=PrincipalInfo(OID), searched_subscriptions=(SUB,))
    finding = build_finding(denial(), 1, f)
    assert finding.cause == Cause.VAULT_NOT_FOUND and "Managed HSM 'hsm-pay'" in finding.explanation
    assert SUB in finding.explanation


def test_an_administrative_action_gets_advice_not_a_grant() -> None:
    finding = build_finding(denial(P + "roleAssignments/write/action", scope="/"), 1, facts())
    assert finding.cause == Cause.MISSING_ROLE_ASSIGNMENT and finding.plan is None
    assert "administrative" in finding.explanation


# --- plan: every managedHsm key data action -----------------------------------------------------------------

# Written out by hand from Microsoft's built-in local roles (catalog/data/hsm_roles.json) and plan_hsm's rule: a
# built-in when nothing it adds is above use (tier 1) and its top tier is no higher than the denied one; else a
# custom local role with exactly the action, the narrowest covering built-in (if any) as the alternative.
EXPECTED: dict[str, tuple[str | None, str | None]] = {   # action -> (built-in plan, built-in alternative)
    "keys/read/action": (None, ENC_USER),
    "keys/encrypt/action": (None, CRYPTO_USER), "keys/decrypt/action": (None, CRYPTO_USER),
    "keys/sign/action": (None, CRYPTO_USER), "keys/verify/action": (None, CRYPTO_USER),
    "keys/wrap/action": (ENC_USER, None), "keys/unwrap/action": (ENC_USER, None),
    "keys/release/action": ("Managed HSM Crypto Service Release User", None),
    "keys/backup/action": (None, CRYPTO_USER), "keys/write/action": (None, CRYPTO_USER),
    "keys/rotate/action": (None, CRYPTO_USER), "keys/create": (None, CRYPTO_USER),
    "keys/import/action": (None, CRYPTO_USER), "keys/restore/action": (None, CRYPTO_USER),
    "keys/export/action": (None, None), "keys/deletedKeys/read/action": (None, None),
    "keys/deletedKeys/recover/action": (None, None), "keys/delete": (None, CRYPTO_USER),
    # the Crypto Auditor holds it only in the doc's matrix (a recorded anomaly): never planned on that alone
    "keys/deletedKeys/delete": (None, None),
}


def test_the_table_covers_every_key_data_action() -> None:
    assert {d.name.removeprefix(P) for d in key_data_actions()} == set(EXPECTED)


@pytest.mark.parametrize("short", sorted(EXPECTED))
@pytest.mark.parametrize("key", ["cmk", None])
def test_least_privilege_for_every_key_data_action(short: str, key: str | None) -> None:
    action = P + short
    d = denial(action, scope=f"/keys/{key}" if key else "/keys")
    f = facts()
    finding = build_finding(d, 1, f)
    got = finding.plan
    assert isinstance(got, HsmRoleAssignmentPlan) and got.kind == "hsm_role_assignment"
    builtin, alternative = EXPECTED[short]
    # then the plan is at the key (or /keys), for the caller as read, on the HSM ARM returned
    assert got.scope == (f"/keys/{key}" if key else "/keys") and got.hsm == HSM_ID
    assert got.principal_id == OID and got.principal_type == "ServicePrincipal"
    if builtin is not None:
        assert got.role_name == builtin and got.custom_role is None and not got.alternatives
        assert got.role_definition_id == role_id(builtin)
    else:
        custom = got.custom_role
        assert custom is not None and custom.data_actions == (action,)
        assert custom.name == custom_role_name((action,)) and got.role_definition_id.endswith(custom.name)
        assert [a.role_name for a in got.alternatives] == ([alternative] if alternative else [])
    # and the commands are the HSM's own (local RBAC), never Bicep or a vault command
    az = got.commands["az"]
    assert "az keyvault role assignment create --hsm-name hsm-pay" in az and got.commands["bicep"] == NO_BICEP
    assert "set-policy" not in az and "az role assignment" not in az and "accessPolicies" not in az
    # and the granted role really grants the action (the decision on the planned assignment is ALREADY_GRANTED)
    defs = (got.custom_role,) if got.custom_role else ()
    planned = assignment(9, OID, got.scope, got.role_definition_id)
    custom_defs = tuple(HsmRoleDefinition(id=got.role_definition_id, name=c.name, role_name=c.role_name,
                                          role_type="CustomRole", data_actions=c.data_actions) for c in defs)
    assert decide(d, facts(planned, custom=custom_defs)).cause == Cause.ALREADY_GRANTED


# --- attacks ------------------------------------------------------------------------------------------------

def test_an_hsm_denial_never_gets_an_access_policy_or_arm_role_plan() -> None:
    # given an HSM denial whose input also claims vault things: an access-policy permission, a vault resource id,
    # a vault data action, a principal kind
    vault_id = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
    d = denial(P + "keys/wrap/action", access_policy_permission={"keys": ("all",)},
               principal=Principal(object_id=OID, kind="user"),
               vault=VaultRef(name="hsm-pay", resource_id=vault_id, kind="managed_hsm", scope="/keys/cmk"))
    finding = build_finding(d.canonical(), 1, facts(ptype=None))
    got = finding.plan
    # then the plan is a local role assignment on the HSM ARM returned, for exactly the action
    assert isinstance(got, HsmRoleAssignmentPlan) and got.hsm == HSM_ID and got.role_name == ENC_USER
    assert finding.required is not None and finding.required.access_policy == {}
    # and the principal type is Graph's (unknown here), never the input's claim
    assert got.principal_type is None and "--assignee-principal-type" not in got.commands["az"]


def test_a_vault_data_action_maps_to_the_hsm_key_action_never_wider() -> None:
    # an HSM audit row names the vault operation (KeyWrap): the HSM's own key action is planned, nothing more
    d = denial(None, operation="KeyWrap")
    got = plan(d, decide(d, facts()), facts())
    assert isinstance(got, HsmRoleAssignmentPlan) and got.role_name == ENC_USER


@pytest.mark.parametrize("action", [P + "keys/*", P + "*", P + "keys/encrypt/action/../*",
                                    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                                    P + "roleAssignments/write/action"])
def test_a_wildcard_or_foreign_action_plans_nothing(action: str) -> None:
    finding = build_finding(denial(action), 1, facts())
    assert finding.plan is None


@pytest.mark.parametrize("scope", ["/keys/cmk/../other", "/keys/a b", "/secrets/x", "/keys/" + "k" * 200])
def test_a_scope_not_of_the_hsms_shape_never_reaches_a_plan(scope: str) -> None:
    d = denial(P + "keys/wrap/action", scope=scope).canonical()
    finding = build_finding(d, 1, facts())
    assert finding.plan is None or finding.plan.scope in ("/keys", "/keys/cmk")


def test_the_key_scope_follows_the_refusal_not_another_object_the_input_names() -> None:
    d = denial(P + "keys/wrap/action", scope="/keys/cmk", object=ObjectRef("keys", "other"))
    got = build_finding(d, 1, facts()).plan
    assert got is not None and got.scope == "/keys/cmk"


def test_the_plan_follows_the_hsms_own_listing_of_a_builtin() -> None:
    # given an HSM whose listing of Crypto Service Encryption User (same GUID) holds only unwrap
    pkg = builtin_role_by_name(ENC_USER)
    assert pkg is not None
    listed = HsmRoleDefinition(id=pkg.id, name=pkg.name, role_name=pkg.role_name, role_type="AKVBuiltInRole",
                               data_actions=(P + "keys/unwrap/action",))
    # when wrap is denied, then that role is not planned for it (the HSM's word), but still for unwrap
    wrap = build_finding(denial(P + "keys/wrap/action"), 1, facts(listed=(listed,))).plan
    assert isinstance(wrap, HsmRoleAssignmentPlan) and wrap.role_name != ENC_USER and wrap.custom_role is not None
    unwrap = build_finding(denial(P + "keys/unwrap/action"), 1, facts(listed=(listed,))).plan
    assert isinstance(unwrap, HsmRoleAssignmentPlan) and unwrap.role_name == ENC_USER
