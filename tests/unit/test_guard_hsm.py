"""The guard on Managed HSM plans (pure): the exact local role assignment judged, never the plan's description of
it; approval-only by default; attack tests for every way a plan could widen an HSM grant."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from remediate import armid
from remediate.catalog.hsm import BUILTIN_ID_PREFIX, builtin_role_by_name
from remediate.errors import PolicyError
from remediate.evidence import Evidence, PrincipalEvidence
from remediate.guard import Policy, Verdict, check, exact_write, parse_policy, policy_from_dict
from remediate.hsm_model import custom_role_name
from remediate.model import (
    Denial,
    Finding,
    HsmCustomRolePlan,
    HsmRoleAssignmentPlan,
    Principal,
    Proof,
    VaultRef,
)

SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
HSM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-hsm/providers/Microsoft.KeyVault/managedHSMs/hsm-pay"
OTHER_HSM = f"/subscriptions/{SUB}/resourceGroups/rg-hsm/providers/Microsoft.KeyVault/managedHSMs/hsm-other"
OID = "11111111-2222-4333-8444-555555555555"
OTHER = "22222222-2222-4333-8444-555555555555"
OPERATOR = Proof("operator", "test")
APPROVAL = Proof("approval", "alice@contoso.com")
AUDIT = Proof("audit_log", "workspace w1, row 2026-12-07T10:00:00Z")
ENCRYPT = ("Microsoft.KeyVault/managedHsm/keys/encrypt/action", "Microsoft.KeyVault/managedHsm/keys/decrypt/action")


def role_id(name: str) -> str:
    role = builtin_role_by_name(name)
    assert role is not None
    return BUILTIN_ID_PREFIX + role.name


def custom(actions: tuple[str, ...] = ENCRYPT, name: str | None = None) -> HsmCustomRolePlan:
    return HsmCustomRolePlan(name=name or custom_role_name(actions), role_name="kv-remediate encrypt, decrypt",
                             data_actions=actions)


def plan(*, role: str = "Managed HSM Crypto Service Encryption User", custom_role: HsmCustomRolePlan | None = None,
         role_definition_id: str | None = None, **changes: Any) -> HsmRoleAssignmentPlan:
    """As the planner builds them: a built-in for wrap/unwrap and release, our custom role for encrypt and the rest
    (``changes``: hsm, scope, principal_id, principal_type, tier)."""
    rid = role_definition_id or (f"/providers/Microsoft.Authorization/roleDefinitions/{custom_role.name}"
                                 if custom_role else role_id(role))
    base = HsmRoleAssignmentPlan(hsm=HSM_ID, scope="/keys/cmk", role_definition_id=rid, role_name=role,
                                 principal_id=OID, principal_type="ServicePrincipal", tier=1, custom_role=custom_role)
    return replace(base, **changes)


def finding(p: HsmRoleAssignmentPlan, *, caller: str = OID, name: str | None = "hsm-pay",
            resource_id: str | None = None, kind: str = "managed_hsm", graph_says: str | None = None) -> Finding:
    d = Denial(source="t", status=403, principal=Principal(object_id=caller, kind="app"),
               vault=VaultRef(name, resource_id, kind, "/keys/cmk"),  # type: ignore[arg-type]
               data_action="Microsoft.KeyVault/managedHsm/keys/wrap/action")
    ev = Evidence(principal=PrincipalEvidence(graph_says, "ServicePrincipal", None, None, (), True)) \
        if graph_says else Evidence()
    return Finding("MISSING_ROLE_ASSIGNMENT", 1, d, "rbac", None, "", p, (), ev)  # type: ignore[arg-type]


APPLY = Policy(mode="apply", scopes=(HSM_ID,))
WIDE = Policy(mode="apply", scopes=(f"/subscriptions/{SUB}",), object_scope=True, max_tier=3, allow_privileged=True,
              hsm_unattended=True, principal_types=("ServicePrincipal", "User"))


@pytest.mark.parametrize("given_plan", [
    plan(),                                                                  # wrap/unwrap
    plan(role="Managed HSM Crypto Service Release User"),                    # release
    plan(custom_role=custom()),                                              # encrypt/decrypt: our custom role
    plan(custom_role=custom(), scope="/keys"),                               # no key named: /keys
    plan(custom_role=custom(), role_definition_id=BUILTIN_ID_PREFIX + custom_role_name(ENCRYPT)),
    plan(scope="keys/cmk/"),                                                 # any spelling, normalised
])
def test_a_planned_hsm_grant_is_allowed_with_a_persons_approval(given_plan: HsmRoleAssignmentPlan) -> None:
    # given a plan as the planner builds it, inside the policy's scope, and a person's approval of it
    verdict = check(finding(given_plan), APPLY, proof=APPROVAL)
    # then it is allowed
    assert verdict.allowed, verdict.reason


def test_an_operators_act_alone_opens_an_approval_request_for_an_hsm_grant() -> None:
    # given a plan every rule allows and an operator's --apply (approval means a second person, as under mode approve)
    verdict = check(finding(plan()), APPLY, proof=OPERATOR)
    # then it waits for a person's approval
    assert (verdict.allowed, verdict.refused_by) == (False, "approval"), verdict.reason
    # and with hsm_unattended the operator's act applies it
    assert check(finding(plan()), replace(APPLY, hsm_unattended=True), proof=OPERATOR).allowed


def test_the_write_is_the_normalised_key_scope_on_the_hsm() -> None:
    write = exact_write(plan(scope="//Keys/cmk/"))
    assert not isinstance(write, Verdict)
    assert isinstance(write.scope, armid.HsmGrantScope)
    assert (str(write.scope), write.scope.local, write.tier, write.privileged) == (HSM_ID, "/keys/cmk", 1, False)


def test_audit_log_alone_is_approval_only_by_default() -> None:
    # given an HSM plan every rule allows, proven only by the audit log we read
    f = finding(plan())
    verdict = check(f, APPLY, proof=AUDIT)
    # then it needs a person: refused by "approval", naming why
    assert (verdict.allowed, verdict.refused_by) == (False, "approval")
    assert "Policy Administrator" in verdict.reason and "Administrator" in verdict.reason
    # and with hsm_unattended the audit log applies it
    assert check(f, replace(APPLY, hsm_unattended=True), proof=AUDIT).allowed
    # and without any proof it is the evidence rule, as for vaults
    assert check(f, APPLY).refused_by == "evidence"


@pytest.mark.parametrize(("rule", "policy"), [
    ("mode", Policy(scopes=(HSM_ID,))),
    ("scopes", replace(APPLY, scopes=(OTHER_HSM,))),
    ("max_tier", replace(APPLY, max_tier=0)),
    ("principals.deny", replace(APPLY, deny=(OID,))),
    ("max_grants_per_hour", replace(APPLY, max_grants_per_hour=0)),
])
def test_approval_comes_only_after_every_other_rule(rule: str, policy: Policy) -> None:
    # given an audit-log proof and a policy some other rule of which refuses: that rule is named, not "approval"
    assert check(finding(plan()), policy, proof=AUDIT).refused_by == rule


def test_vault_plans_are_not_approval_only() -> None:
    from tests.unit.test_guard import APPLY as VAULT_APPLY
    from tests.unit.test_guard import finding as vault_finding

    assert check(vault_finding(), VAULT_APPLY, proof=AUDIT).allowed


def _attacks() -> list[tuple[Finding, str]]:
    wrap = plan()
    return [
        # the local scope: '/' covers the HSM's role assignments and definitions; anything not /keys[/name]
        *[(finding(plan(scope=s)), "scopes") for s in (
            "/", "", "//", "///", " / ", "/keys/..", "/keys/../..", "/keys/cmk/..", "/keys/a/b", "/secrets", "/keys/*",
            "/keys/cmk%2F..", "/keys/cmk\\..", "/keys/\u0430bc", "/keys/cmk\n/", "/keys/cmk?x=1", "/roleAssignments",
            "/keys/" + "a" * 128, "/securitydomain", "/providers/Microsoft.Authorization/roleAssignments/x")],
        # the HSM: not a canonical managedHSMs id, or not the HSM the denial names
        *[(finding(plan(hsm=h)), "scopes") for h in (
            HSM_ID + "/", HSM_ID + "/keys", HSM_ID.replace("managedHSMs", "vaults"), f"/subscriptions/{SUB}",
            HSM_ID.replace("rg-hsm", "rg-hsm/../rg-x"), HSM_ID.replace(SUB, "not-a-guid"), "hsm-pay",
            "https://hsm-pay.managedhsm.azure.net", HSM_ID.replace("hsm-pay", "hsm-pay%2F.."), OTHER_HSM)],
        (finding(wrap, name="hsm-other"), "scopes"),
        (finding(wrap, name=None, resource_id=OTHER_HSM), "scopes"),
        (finding(wrap, kind="vault"), "scopes"),                          # a vault denial never gets an HSM grant
        # the role: an ARM role id, an unknown GUID, a custom role that is not exactly our least-privilege one
        (finding(plan(role_definition_id=f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                      + wrap.role_definition_id.rsplit("/", 1)[-1])), "permissions"),
        (finding(plan(role_definition_id=BUILTIN_ID_PREFIX + OTHER)), "permissions"),
        (finding(plan(role_definition_id=wrap.role_definition_id + "/x")), "permissions"),
        (finding(plan(role_definition_id="*")), "permissions"),
        (finding(plan(custom_role=custom(("Microsoft.KeyVault/managedHsm/*",)))), "permissions"),
        (finding(plan(custom_role=custom(("Microsoft.KeyVault/managedHsm/keys/*",)))), "permissions"),
        (finding(plan(custom_role=custom((*ENCRYPT, "Microsoft.KeyVault/managedHsm/roleAssignments/write/action")))),
         "permissions"),
        (finding(plan(custom_role=custom((*ENCRYPT, "Microsoft.KeyVault/managedHsm/securitydomain/download/action")))),
         "permissions"),
        (finding(plan(custom_role=custom(("Microsoft.KeyVault/vaults/keys/decrypt/action",)))), "permissions"),
        (finding(plan(custom_role=custom(()))), "permissions"),
        # the custom role says encrypt, but the assignment names another role (a built-in, or another custom one)
        (finding(plan(custom_role=custom(), role_definition_id=role_id("Managed HSM Crypto User"))), "permissions"),
        (finding(plan(custom_role=custom(name=OTHER))), "permissions"),
        (finding(plan(custom_role=custom(), role_definition_id=BUILTIN_ID_PREFIX + OTHER)), "permissions"),
        # the grantee: not the denied caller, not an identified user or service principal
        (finding(plan(principal_id=OTHER)), "principals.caller"),
        (finding(plan(), graph_says=OTHER), "principals.caller"),
        (finding(plan(principal_id="*"), caller="*"), "principal_types"),
        (finding(plan(principal_id="00000000-0000-0000-0000-000000000000"),
                 caller="00000000-0000-0000-0000-000000000000"), "principal_types"),
        (finding(plan(principal_type="Group")), "principal_types"),
        (finding(plan(principal_type=None)), "principal_types"),
    ]


@pytest.mark.parametrize(("given_finding", "rule"), _attacks())
def test_attack_hsm_writes_are_refused(given_finding: Finding, rule: str) -> None:
    # given the widest policy (the whole subscription, tier 3, privileged, unattended) and an operator's act
    verdict = check(given_finding, WIDE, proof=OPERATOR)
    # then a plan whose write is anything but ours, for this HSM and this caller, is refused by the rule owning it
    assert (verdict.allowed, verdict.refused_by) == (False, rule), verdict.reason


@pytest.mark.parametrize("role", ["Managed HSM Administrator", "Managed HSM Policy Administrator",
                                  "Managed HSM Crypto Officer", "Managed HSM Backup", "Managed HSM Restore"])
def test_roles_that_change_rbac_or_the_hsm_itself_are_privileged(role: str) -> None:
    f = finding(plan(role=role, tier=0))
    assert check(f, replace(WIDE, allow_privileged=False), proof=OPERATOR).refused_by == "allow_privileged"
    write = exact_write(f.plan)  # type: ignore[arg-type]
    assert not isinstance(write, Verdict) and write.privileged and write.tier == 3


@pytest.mark.parametrize(("role", "tier"), [
    ("Managed HSM Crypto Service Encryption User", 1), ("Managed HSM Crypto Service Release User", 1),
    ("Managed HSM Crypto User", 3), ("Managed HSM Crypto Auditor", 3),   # deletedKeys/delete (the doc's anomaly)
])
def test_the_tier_is_the_catalogues_not_the_plans(role: str, tier: int) -> None:
    write = exact_write(plan(role=role, tier=0))
    assert not isinstance(write, Verdict)
    assert (write.tier, write.privileged) == (tier, False)
    verdict = check(finding(plan(role=role, tier=0)), replace(APPLY, max_tier=1), proof=APPROVAL)
    assert verdict.allowed == (tier <= 1)


@pytest.mark.parametrize(("prefix", "inside"), [
    (f"/subscriptions/{SUB}/resourceGroups/rg-hsm", True),
    (f"/subscriptions/{SUB}/resourceGroups/rg-hs", False),            # a text prefix is not a segment prefix
    (f"/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/RG-HSM/", True),
    (HSM_ID, True),
    (HSM_ID[:-1], False),
    (HSM_ID.replace("managedHSMs", "vaults"), False),
])
def test_policy_scopes_match_the_hsms_arm_id_by_whole_segments(prefix: str, inside: bool) -> None:
    verdict = check(finding(plan()), replace(APPLY, scopes=(prefix,)), proof=APPROVAL)
    assert verdict.allowed == inside, verdict.reason


def test_the_policy_key_is_validated_and_defaults_off() -> None:
    assert policy_from_dict(None).hsm_unattended is False
    assert parse_policy("mode: apply\nhsm_unattended: true\n", "p").hsm_unattended is True
    assert parse_policy("hsm_unattended: true\n", "p").to_dict()["hsm_unattended"] is True
    with pytest.raises(PolicyError, match="'hsm_unattended' must be true or false"):
        parse_policy("hsm_unattended: 'yes'\n", "p.yaml")


@pytest.mark.parametrize("text", [
    HSM_ID + "/", HSM_ID + "/keys/k", "/" + HSM_ID, HSM_ID.replace("/managedHSMs/", "/managedHSMs//"),
    HSM_ID.replace("managedHSMs", "vaults"), HSM_ID.replace("managedHSMs", "managedHSM"),
    HSM_ID.replace("Microsoft.KeyVault", "Microsoft.Storage"), HSM_ID.replace(SUB, "*"),
    HSM_ID.replace("rg-hsm", ".."), HSM_ID.replace("rg-hsm", "rg."), HSM_ID.replace("hsm-pay", "hsm--pay"),
    HSM_ID.replace("hsm-pay", "hsm-pay%2F.."), HSM_ID.replace("hsm-pay", "h"), HSM_ID.replace("hsm-pay", "1hsm"),
    HSM_ID.replace("hsm-pay", "hsm-pay\n"), HSM_ID.replace("hsm-pay", "hsm-p\u0430y"), HSM_ID + "\\..",
    HSM_ID.replace("subscriptions", "tenants"), "", "/",
])
def test_the_hsm_id_parser_is_strict(text: str) -> None:
    assert armid.parse_hsm_id(text) is None


def test_the_hsm_id_parser_keeps_a_canonical_id() -> None:
    got = armid.parse_hsm_id(HSM_ID.replace("managedHSMs", "managedhsms").replace("resourceGroups", "resourcegroups"))
    assert got is not None and str(got) == HSM_ID and got.name == "hsm-pay"
