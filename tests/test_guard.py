"""Policy validation and the guard's rules, on plain data."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.errors import PolicyError
from remediate.guard import Policy, check, parse_policy, policy_from_dict
from remediate.model import Denial, Finding, Principal, RoleAssignmentPlan, VaultRef

SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
OID = "11111111-2222-4333-8444-555555555555"


def finding(tier: int = 1, scope: str = VAULT_ID, ptype: str | None = "ServicePrincipal",
            privileged: bool = False) -> Finding:
    plan = RoleAssignmentPlan(principal_id=OID, principal_type=ptype, scope=scope, role_definition_id="x",
                              role_name="Key Vault Secrets User", tier=tier, commands={}, privileged=privileged)
    d = Denial(source="t", status=403, principal=Principal(object_id=OID, kind="app"), vault=VaultRef("kv1", VAULT_ID))
    return Finding("MISSING_ROLE_ASSIGNMENT", 1, d, "rbac", None, "", plan, (), {})


APPLY = Policy(mode="apply", scopes=(VAULT_ID,))


@pytest.mark.parametrize(("given_finding", "policy", "recent", "rule"), [
    (finding(), Policy(), 0, "mode"),
    (replace(finding(), plan=None), APPLY, 0, "plan"),
    (finding(ptype="Group"), APPLY, 0, "principal_types"),
    (finding(ptype=None), APPLY, 0, "principal_types"),
    (finding(ptype="User"), APPLY, 0, "principal_types"),
    (finding(), replace(APPLY, deny=(OID,)), 0, "principals.deny"),
    (finding(), replace(APPLY, allow=("22222222-2222-4333-8444-555555555555",)), 0, "principals.allow"),
    (finding(scope=f"/subscriptions/{SUB}"), replace(APPLY, scopes=(f"/subscriptions/{SUB}",)), 0, "scopes"),
    (finding(), replace(APPLY, scopes=()), 0, "scopes"),
    (finding(scope=VAULT_ID + "/secrets/a"), APPLY, 0, "object_scope"),
    (finding(privileged=True, tier=3), replace(APPLY, max_tier=3), 0, "allow_privileged"),
    (finding(tier=2), APPLY, 0, "max_tier"),
    (finding(), APPLY, 20, "max_grants_per_hour"),
    (finding(), APPLY, 0, None),
    (finding(), replace(APPLY, scopes=(f"/SUBSCRIPTIONS/{SUB.upper()}",)), 0, None),
])
def test_rules(given_finding: Finding, policy: Policy, recent: int, rule: str | None) -> None:
    verdict = check(given_finding, policy, recent)
    assert verdict.refused_by == rule and verdict.allowed == (rule is None)


@pytest.mark.parametrize(("text", "key"), [
    ("mode: fix", "mode"),
    ("scopes: nope", "scopes"),
    ("scopes: ['/']", "scopes"),
    ("principal_types: [Group]", "principal_types"),
    ("max_tier: 7", "max_tier"),
    ("grant_ttl: 8 hours", "grant_ttl"),
    ("max_grants_per_hour: -1", "max_grants_per_hour"),
    ("allow_privileged: 'yes'", "allow_privileged"),
    ("principals: {allow: [not-a-guid]}", "principals.allow"),
    ("colour: blue", "colour"),
])
def test_invalid_policy_names_the_key(text: str, key: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.yaml")
    assert f"'{key}'" in str(err.value) and "p.yaml" in str(err.value)


def test_defaults_change_nothing() -> None:
    p = policy_from_dict(None)
    assert p.mode == "suggest" and p.scopes == () and p.max_tier == 1 and not p.allow_privileged


def test_json_and_yaml_agree() -> None:
    y = parse_policy("mode: apply\nscopes: [/subscriptions/x]\ngrant_ttl: PT8H\n", "y")
    j = parse_policy('{"mode": "apply", "scopes": ["/subscriptions/x"], "grant_ttl": "PT8H"}', "j")
    assert y.to_dict() == j.to_dict() and y.grant_ttl is not None and y.grant_ttl.total_seconds() == 8 * 3600


@given(tier=st.integers(0, 3), max_tier=st.integers(0, 3), recent=st.integers(0, 40), limit=st.integers(0, 40),
       privileged=st.booleans(), allow_priv=st.booleans())
def test_an_allowed_plan_never_breaks_a_rule(tier: int, max_tier: int, recent: int, limit: int, privileged: bool,
                                             allow_priv: bool) -> None:
    policy = replace(APPLY, max_tier=max_tier, max_grants_per_hour=limit, allow_privileged=allow_priv)
    verdict = check(finding(tier=tier, privileged=privileged), policy, recent)
    if verdict.allowed:
        assert tier <= max_tier and recent < limit and (allow_priv or not privileged)
    else:
        assert verdict.refused_by and verdict.reason


def test_access_policy_plan_uses_the_callers_type() -> None:
    from remediate.model import AccessPolicyPlan

    plan = AccessPolicyPlan(vault_id=VAULT_ID, tenant_id=None, object_id=OID, add={"secrets": ("get",)}, tier=1,
                            commands={}, principal_type="User")
    f = replace(finding(), plan=plan)
    assert check(f, APPLY).refused_by == "principal_types"
    assert check(f, replace(APPLY, principal_types=("User",))).allowed
    assert check(replace(f, plan=replace(plan, principal_type=None)), APPLY).refused_by == "principal_types"
