"""Policy validation and the guard's rules, on plain data."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.errors import PolicyError
from remediate.guard import Policy, check, parse_policy, policy_from_dict
from remediate.model import AccessPolicyPlan, Denial, Finding, Principal, Proof, RoleAssignmentPlan, VaultRef

SUB = "3f2b9c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
OID = "11111111-2222-4333-8444-555555555555"
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
SECRETS_USER = ROLES + "4633458b-17de-408a-b874-0445c86b69e6"       # tier 1
ADMIN = ROLES + "00482a5a-887f-4fb3-b363-3b7fe8e74483"              # Key Vault Administrator, tier 3
OPERATOR = Proof("operator", "test")


def finding(*, tier: int = 1, scope: str = VAULT_ID, ptype: str | None = "ServicePrincipal",
            privileged: bool = False, role: str | None = None, principal: str = OID) -> Finding:
    role = role or (ADMIN if privileged else SECRETS_USER)
    plan = RoleAssignmentPlan(principal_id=principal, principal_type=ptype, scope=scope, role_definition_id=role,
                              role_name="Key Vault Secrets User", tier=tier, commands={}, privileged=privileged)
    d = Denial(source="t", status=403, principal=Principal(object_id=OID, kind="app"), vault=VaultRef("kv1", VAULT_ID))
    return Finding("MISSING_ROLE_ASSIGNMENT", 1, d, "rbac", None, "", plan, (), {})


def ap_finding(add: dict[str, tuple[str, ...]], vault_id: str = VAULT_ID, ptype: str | None = "ServicePrincipal",
               tier: int = 0) -> Finding:
    plan = AccessPolicyPlan(vault_id=vault_id, tenant_id=None, object_id=OID, add=add, tier=tier, commands={},
                            principal_type=ptype)
    return replace(finding(), cause="MISSING_ACCESS_POLICY", plan=plan, permission_model="access_policy")


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
    verdict = check(given_finding, policy, recent, proof=OPERATOR)
    assert verdict.refused_by == rule and verdict.allowed == (rule is None)


def test_no_proof_no_grant() -> None:
    # given a plan every policy rule allows, but nothing that proves the denial happened
    verdict = check(finding(), APPLY)
    # then it is refused by the evidence rule, not applied on the input's word
    assert (verdict.allowed, verdict.refused_by) == (False, "evidence")


SUB_SCOPE = replace(APPLY, scopes=(f"/subscriptions/{SUB}",), object_scope=True, max_tier=3, allow_privileged=True)


@pytest.mark.parametrize(("given_finding", "rule"), [
    # scopes that are not a canonical vault or object id, however they are spelled
    (finding(scope=VAULT_ID + "/secrets/x%2F..%2F..%2F.."), "scopes"),
    (finding(scope=VAULT_ID + "/secrets/../../.."), "scopes"),
    (finding(scope=VAULT_ID + "/secrets/a/../../../.."), "scopes"),
    (finding(scope=VAULT_ID + "\\..\\.."), "scopes"),
    (finding(scope=VAULT_ID + "/secrets/x%252F.."), "scopes"),
    (finding(scope=VAULT_ID + "/Secrets/a"), "scopes"),
    (finding(scope=VAULT_ID + "/storage/a"), "scopes"),
    (finding(scope=VAULT_ID + "/secrets/a/versions"), "scopes"),
    (finding(scope=VAULT_ID + "/secrets/\u0430bc"), "scopes"),          # Cyrillic a
    (finding(scope=VAULT_ID + "/secrets/a\nb"), "scopes"),
    (finding(scope=VAULT_ID + "/"), "scopes"),
    (finding(scope=f"/subscriptions/{SUB}/resourceGroups/rg"), "scopes"),
    (finding(scope=f"/subscriptions/{SUB}/resourceGroups/../providers/Microsoft.KeyVault/vaults/kv1"), "scopes"),
    (finding(scope=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/vaults/kv1"), "scopes"),
    # roles that are not a built-in Key Vault data role of the vault's subscription
    (finding(role=ROLES + "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"), "permissions"),       # Owner
    (finding(role="/subscriptions/00000000-1111-2222-3333-444444444444/providers/Microsoft.Authorization/"
                  "roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"), "permissions"),
    (finding(role=ROLES + "f25e0fa2-a7c8-4377-a976-54943a77a395"), "permissions"),       # Key Vault Contributor
    # grantees that are not an identified, foreign principal
    (finding(principal="00000000-0000-0000-0000-000000000000"), "principal_types"),
    (finding(principal="*"), "principal_types"),
    (finding(principal=OID.upper()), "principals.self"),
    # access-policy permissions outside the catalogue, or all
    (ap_finding({"secrets": ("all",)}), "permissions"),
    (ap_finding({"secrets": ("All",)}), "permissions"),
    (ap_finding({"secrets": ("get", "all")}), "permissions"),
    (ap_finding({"secrets": ("getx",)}), "permissions"),
    (ap_finding({"networkAcls": ("get",)}), "permissions"),
    (ap_finding({}), "permissions"),
    (ap_finding({"secrets": ("get",)}, vault_id=VAULT_ID + "/secrets/a"), "scopes"),
    (ap_finding({"secrets": ("get",)}, vault_id=f"/subscriptions/{SUB}"), "scopes"),
    (ap_finding({"secrets": ("get",)}, ptype=None), "principal_types"),
    (ap_finding({"secrets": ("get",)}, ptype="Group"), "principal_types"),
])
def test_attack_writes_are_refused(given_finding: Finding, rule: str) -> None:
    # given a policy as wide as it gets (the whole subscription, object scope, tier 3, privileged) and a proof
    # when a plan's write is anything but a canonical vault/object scope, a catalogue role or permission, or a
    # foreign identified principal
    verdict = check(given_finding, SUB_SCOPE, proof=OPERATOR, own_principals=frozenset({OID}) if
                    rule == "principals.self" else frozenset())
    # then it is refused by the rule that owns it
    assert (verdict.allowed, verdict.refused_by) == (False, rule), verdict.reason


@pytest.mark.parametrize(("prefix", "scope", "inside"), [
    (f"/subscriptions/{SUB}/resourceGroups/rg", VAULT_ID, True),
    (f"/subscriptions/{SUB}/resourceGroups/r", VAULT_ID, False),          # a text prefix is not a segment prefix
    (f"/subscriptions/{SUB}/resourceGroups/rg/", VAULT_ID, True),
    (VAULT_ID, VAULT_ID + "/secrets/a", True),
    (VAULT_ID[:-1], VAULT_ID + "/secrets/a", False),
])
def test_policy_scopes_compare_whole_segments(prefix: str, scope: str, inside: bool) -> None:
    policy = replace(SUB_SCOPE, scopes=(prefix,))
    verdict = check(finding(scope=scope), policy, proof=OPERATOR)
    assert verdict.allowed == inside, verdict.reason


def test_access_policy_tier_is_the_catalogues_not_the_plans() -> None:
    # given a plan that says tier 0 for 'set' (a tier-2 change) under max_tier 1
    verdict = check(ap_finding({"secrets": ("set",)}, tier=0), replace(APPLY, max_tier=1), proof=OPERATOR)
    # then the catalogue's tier decides
    assert verdict.refused_by == "max_tier"


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
def test_an_allowed_plan_never_breaks_a_rule(*, tier: int, max_tier: int, recent: int, limit: int, privileged: bool,
                                             allow_priv: bool) -> None:
    policy = replace(APPLY, max_tier=max_tier, max_grants_per_hour=limit, allow_privileged=allow_priv)
    verdict = check(finding(tier=tier, privileged=privileged), policy, recent, proof=OPERATOR)
    if verdict.allowed:
        assert tier <= max_tier and recent < limit and (allow_priv or not privileged)
    else:
        assert verdict.refused_by and verdict.reason


def test_access_policy_plan_uses_the_callers_type() -> None:
    from remediate.model import AccessPolicyPlan

    plan = AccessPolicyPlan(vault_id=VAULT_ID, tenant_id=None, object_id=OID, add={"secrets": ("get",)}, tier=1,
                            commands={}, principal_type="User")
    f = replace(finding(), plan=plan)
    assert check(f, APPLY, proof=OPERATOR).refused_by == "principal_types"
    assert check(f, replace(APPLY, principal_types=("User",)), proof=OPERATOR).allowed
    assert check(replace(f, plan=replace(plan, principal_type=None)), APPLY, proof=OPERATOR).refused_by == \
        "principal_types"


def test_the_documented_policy_is_the_schema_and_its_defaults() -> None:
    # given the policy block of docs/policy.md
    import re
    from pathlib import Path

    from remediate.guard import KEYS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block is not None
    # when parsed; then it names every key of the schema, and says the defaults
    policy = parse_policy(block.group(1), "docs/policy.md")
    assert set(policy.to_dict()) == KEYS
    assert policy.to_dict() == policy_from_dict(None).to_dict()
