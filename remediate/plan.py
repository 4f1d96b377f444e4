"""Pure least-privilege planning (causes.md): the smallest grant, in the vault's own model, that fixes a denial."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

from . import catalog
from .armid import OBJECT_KINDS, is_object_name, parse_vault_id
from .catalog import RoleDefinition
from .model import (
    GRANT_CAUSES,
    AccessPolicyPlan,
    CustomRolePlan,
    Decision,
    Denial,
    Facts,
    Plan,
    Required,
    RoleAssignmentPlan,
)

ADMIN = "Key Vault Administrator"
NAMESPACE = uuid.UUID("5b0e6bde-7f3a-4b8e-9a53-6b7e2d1c0f11")   # of every name kv-remediate derives


def assignment_name(scope: str, principal_id: str, role_guid: str) -> str:
    """Deterministic role-assignment name (UUID5 of scope, principal and role), so re-applying is a no-op."""
    return str(uuid.uuid5(NAMESPACE, f"{scope.lower()}|{principal_id.lower()}|{role_guid.lower()}"))


def assignable_scope(vault_id: str) -> str:
    """Where a custom role for this vault is assignable: the vault's resource group, not the vault.

    Microsoft's "Understand Azure role definitions" (AssignableScopes): "Although it's possible to create a custom
    role with a resource instance in AssignableScopes using the command line, it's not recommended. [...] create
    your custom roles with AssignableScopes of management group, subscription, or resource group, but assign the
    custom roles with narrow scope, such as resource or resource group." The assignment stays at the vault (or
    object), so what the grantee can do is unchanged.
    """
    vault = parse_vault_id(vault_id)
    if vault is None:
        return vault_id                       # not rendered anyway (UNSAFE); never guess a parent
    return f"/subscriptions/{vault.subscription}/resourceGroups/{vault.resource_group}"


@dataclass(frozen=True)
class PlanOptions:
    """Planning choices that policy can change."""

    object_scope: bool = False


DEFAULT_PLAN = PlanOptions()


@dataclass(frozen=True)
class Candidate:
    """A built-in Key Vault data role with its expanded data actions and sensitivity tier."""

    role: RoleDefinition
    actions: frozenset[str]
    tier: int


@lru_cache(maxsize=1)
def candidates() -> tuple[Candidate, ...]:
    """Roles named ``Key Vault ...`` with data actions, except Key Vault Administrator (causes.md)."""
    out = []
    for r in catalog.builtin_roles():
        if not r.role_name.startswith("Key Vault") or not r.data_actions or r.role_name == ADMIN:
            continue
        acts = catalog.expand(r.data_actions, r.not_data_actions)
        if acts:
            out.append(Candidate(r, acts, max(catalog.tier(a) for a in acts)))
    return tuple(sorted(out, key=lambda c: (c.tier, len(c.actions), c.role.role_name)))


@lru_cache(maxsize=1024)
def least_privileged(actions: tuple[str, ...]) -> Candidate | None:
    """The candidate that grants every action with the lowest top tier, then fewest actions, then by name."""
    wanted = [catalog.canonical_action(a) or a for a in actions]
    for c in candidates():   # already in preference order
        if all(any(catalog.action_matches(a, w) for a in c.actions) for w in wanted):
            return c
    return None


def _role_definition_id(vault_id: str, guid: str) -> str:
    sub = vault_id.split("/")[2]
    return f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def _principal_type(denial: Denial, facts: Facts, *, arm_checks: bool) -> str | None:
    """The grantee's type: Microsoft Graph's answer, never the input's claim where nothing else checks it.

    A role assignment PUT carries ``principalType`` and ARM refuses one that does not match the directory
    (400 ``UnmatchedPrincipalType``), so for RBAC plans the token's ``idtyp`` may stand in when Graph could not
    be asked. An access-policy entry is written as given (ARM checks nothing), so only Graph's type counts there.
    """
    if facts.principal.type is not None:
        return facts.principal.type      # "Group" included: the guard refuses it by name
    if not arm_checks:
        return None
    return {"app": "ServicePrincipal", "user": "User"}.get(denial.principal.kind or "")


def _custom_name(actions: tuple[str, ...], vault_name: str) -> str:
    words = [re.sub(r"[^A-Za-z]", " ", a.split("/vaults/", 1)[-1]).title().replace(" ", "") for a in actions]
    return f"kv-remediate {vault_name} {'+'.join(words)}"[:128]


def custom_role(actions: tuple[str, ...], vault_id: str, vault_name: str, scope: str, *, principal_id: str,
                principal_type: str | None) -> CustomRolePlan:
    """A custom role with exactly the missing data actions, assignable in the vault's resource group (Microsoft advises
    against resource-level assignable scopes) and assigned at the vault or object only."""
    name = _custom_name(actions, vault_name)
    return CustomRolePlan(name, actions, (assignable_scope(vault_id),), scope, principal_id, principal_type)


def rbac_plan(denial: Denial, facts: Facts, required: Required, options: PlanOptions) -> RoleAssignmentPlan | None:
    """Least-privilege role assignment for an RBAC vault."""
    vault = facts.vault
    oid = denial.principal.object_id
    if vault is None or not oid:
        return None
    obj = denial.object
    scope = vault.id
    if options.object_scope and obj and obj.name and obj.kind in OBJECT_KINDS and is_object_name(obj.name):
        scope = f"{vault.id}/{obj.kind}/{obj.name}"
    ptype = _principal_type(denial, facts, arm_checks=True)
    actions = tuple(catalog.canonical_action(a) or a for a in required.data_actions)
    denied_tier = max(catalog.tier(a) for a in actions)
    chosen = least_privileged(actions)
    alternatives: tuple[CustomRolePlan, ...] = ()
    privileged = False
    if chosen is None:
        admin = catalog.builtin_role_by_name(ADMIN)
        assert admin is not None
        role, tier, privileged = admin, 3, True
        alternatives = (custom_role(actions, vault.id, vault.name, scope, principal_id=oid, principal_type=ptype),)
    else:
        role, tier = chosen.role, chosen.tier
        if tier > denied_tier:
            alternatives = (custom_role(actions, vault.id, vault.name, scope, principal_id=oid,
                                        principal_type=ptype),)
    rd_id = _role_definition_id(vault.id, role.name)
    return RoleAssignmentPlan(
        principal_id=oid, principal_type=ptype, scope=scope, role_definition_id=rd_id, role_name=role.role_name,
        tier=tier, privileged=privileged, alternatives=alternatives)


def access_policy_plan(denial: Denial, facts: Facts, missing: dict[str, tuple[str, ...]]) -> AccessPolicyPlan | None:
    """Add exactly the missing permissions to the caller's own entry on an access-policy vault."""
    vault = facts.vault
    oid = denial.principal.object_id
    if vault is None or not oid or not missing:
        return None
    add = {k: tuple(catalog.canonical_permission(k, p) or p for p in v) for k, v in missing.items() if v}
    tier = max((catalog.tier(a) for k, perms in add.items() for p in perms
                for a in catalog.permission_data_actions(k, p)), default=0)
    return AccessPolicyPlan(vault_id=vault.id, tenant_id=vault.tenant_id, object_id=oid, add=add, tier=tier,
                            principal_type=_principal_type(denial, facts, arm_checks=False))


def plan(denial: Denial, decision: Decision, facts: Facts | None, options: PlanOptions = DEFAULT_PLAN) -> Plan | None:
    """The fix for a decision, or None when no grant is the right fix. A Managed HSM denial gets a local role
    (plan_hsm.py), never an access policy or an ARM role."""
    if denial.vault.kind == "managed_hsm":
        from .plan_hsm import hsm_plan

        return hsm_plan(denial, decision, facts)
    if decision.cause not in GRANT_CAUSES or facts is None or facts.vault is None or decision.required is None:
        return None
    if facts.vault.rbac:
        return rbac_plan(denial, facts, decision.required, options)
    missing = dict(decision.detail.missing or decision.required.access_policy)
    return access_policy_plan(denial, facts, missing)
