"""Property: for random denials, tenants and policies, an applied change never exceeds its plan and never breaks
a policy rule; every refusal names its rule and changes nothing. Runs through the real SDK and the emulator."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate import catalog
from tests.support.demo_apply import APPLY, LEGACY, PAY, SUB, TENANT, ctx, denial, gid, run

OPS = sorted(o.name for o in catalog.operations() if o.object_kind in ("secrets", "keys", "certificates")
             and o.name[0].isupper())
SCOPES = [f"/subscriptions/{SUB}", PAY["id"], LEGACY["id"], f"/subscriptions/{gid('elsewhere')}"]


def _entries(tenant: dict[str, Any]) -> dict[str, dict[str, set[str]]]:
    v = next(v for v in tenant["vaults"] if v["name"] == "kv-legacy")
    return {e["objectId"].lower(): {k: {p.lower() for p in perms} for k, perms in e["permissions"].items()}
            for e in v["properties"]["accessPolicies"]}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(OPS), rbac=st.booleans(), kind=st.sampled_from(["app", "user"]),
       rules=st.fixed_dictionaries({
           "scopes": st.lists(st.sampled_from(SCOPES), max_size=2),
           "principal_types": st.sets(st.sampled_from(["ServicePrincipal", "User"])).map(sorted),
           "max_tier": st.integers(0, 3), "allow_privileged": st.booleans(), "object_scope": st.booleans(),
           "max_grants_per_hour": st.integers(0, 2)}))
def test_applied_change_never_exceeds_plan_or_policy(*, op: str, rbac: bool, kind: str, rules: dict[str, Any]) -> None:
    policy = dict(APPLY, **rules)
    scopes, types, max_tier, privileged = (rules["scopes"], rules["principal_types"], rules["max_tier"],
                                           rules["allow_privileged"])
    oid = gid(f"prop-{op}-{kind}")
    with tempfile.TemporaryDirectory() as tmp:
        findings, _, after = run(copy.deepcopy(TENANT), [denial(oid, PAY if rbac else LEGACY, op=op, kind=kind)],
                                 ctx(Path(tmp), policy))
    f = findings[0]
    new_ras = [a for a in after["role_assignments"] if a not in TENANT["role_assignments"]]
    before_e, after_e = _entries(TENANT), _entries(after)
    changed_entries = {k: v for k, v in after_e.items() if before_e.get(k) != v}
    plan = f["plan"]
    if not f["applied"]:
        # a refusal names its rule (or there was nothing to apply), and nothing changed
        assert f["refused_by"] or f["outcome"] in ("no_plan", "already_granted")
        assert new_ras == [] and changed_entries == {}
        return
    # an applied change is within every rule ...
    assert plan["tier"] <= max_tier and kind_type(kind) in types
    assert any(plan.get("scope", plan.get("vault_id", "")).lower().startswith(s.lower()) for s in scopes)
    assert not plan.get("privileged") or privileged
    # ... and exactly the plan, nothing more
    if plan["kind"] == "role_assignment":
        assert changed_entries == {} and len(new_ras) == 1
        p = new_ras[0]["properties"]
        assert p["principalId"] == plan["principal_id"] and p["scope"].lower() == plan["scope"].lower()
        assert p["roleDefinitionId"].lower().endswith(plan["role_definition_id"].rsplit("/", 1)[-1].lower())
    else:
        assert new_ras == [] and set(changed_entries) == {oid.lower()}
        added = {k: v - before_e.get(oid.lower(), {}).get(k, set()) for k, v in changed_entries[oid.lower()].items()}
        assert {k: v for k, v in added.items() if v} == {k: {p.lower() for p in v} for k, v in plan["add"].items()
                                                          if v}


def kind_type(kind: str) -> str:
    return "ServicePrincipal" if kind == "app" else "User"
