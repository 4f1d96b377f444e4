"""Pure least-privilege planning for a Managed HSM denial: one local role at the narrowest scope, never an access
policy or an ARM role (an HSM has no access policies, and ARM roles reach only its control plane:
managed-hsm/access-control.md).

The candidates are the built-in local roles that can neither manage role assignments or definitions nor touch the
security domain or a whole-HSM backup (Administrator, Crypto Officer and Policy Administrator can make themselves
Administrator: "Assigning roles such as Managed HSM Crypto Officer or Managed HSM Crypto Policy Administrator grants
broad permissions to manage role assignments, including self-assignment of the Managed HSM Administrator role",
managed-hsm/access-control.md). A built-in is the plan when it grants every missing action, its most sensitive key
action is no above the denied tier, and whatever else it grants is read or use (tier <= 1): Crypto Service
Encryption User for wrap/unwrap, Crypto Service Release User for release. Otherwise (encrypt, decrypt, sign, verify:
only Crypto User grants them, and it also grants create, delete and import) the plan is a custom local role with
exactly the missing data actions, defined at ``/`` and assigned at ``/keys/{name}`` (``/keys`` when no key is
named), with the narrowest built-in that covers it as the alternative, with its tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .catalog.hsm import BUILTIN_ID_PREFIX, HsmRoleDefinition, builtin_roles, canonical_key_action, key_data_actions
from .catalog.hsm import tier as action_tier
from .decide_hsm import key_name
from .hsm_model import custom_role_name, key_scope
from .model import Cause, Decision, Denial, Facts, HsmCustomRolePlan, HsmRoleAssignmentPlan

_READ_ONLY_ADMIN = frozenset({"microsoft.keyvault/managedhsm/roleassignments/read/action",
                              "microsoft.keyvault/managedhsm/roledefinitions/read/action"})
"""Non-key actions a candidate may hold: reading who holds what (Crypto User and Crypto Auditor list them)."""
_USE = 1   # tier of read and use actions: what a built-in may grant beyond the denied actions


@dataclass(frozen=True)
class HsmCandidate:
    """A built-in local role a plan may name: its key data actions and the tier of the most sensitive."""

    role: HsmRoleDefinition
    actions: frozenset[str]
    tier: int


def _candidate(role: HsmRoleDefinition) -> HsmCandidate | None:
    """The role as a candidate, or None when it holds anything but key actions and read-only role listing."""
    if any(canonical_key_action(a) is None and a.lower() not in _READ_ONLY_ADMIN for a in role.data_actions):
        return None
    acts = frozenset(d.name for d in key_data_actions() if role.grants(d.name))
    if not acts:
        return None
    return HsmCandidate(role, acts, max(d.tier for d in key_data_actions() if d.name in acts))


def candidates(listed: tuple[HsmRoleDefinition, ...] = ()) -> tuple[HsmCandidate, ...]:
    """The candidate built-ins in preference order (lowest top tier, fewest actions, name), each as the HSM itself
    listed it when it did (its listing wins over package data), else from the package."""
    return _candidates(tuple(sorted(listed, key=lambda r: r.name)))


@lru_cache(maxsize=64)
def _candidates(listed: tuple[HsmRoleDefinition, ...]) -> tuple[HsmCandidate, ...]:
    by_guid = {r.name.lower(): r for r in builtin_roles()}
    by_guid.update({r.name.lower(): r for r in listed if r.builtin})
    found = [c for r in by_guid.values() if (c := _candidate(r)) is not None]
    return tuple(sorted(found, key=lambda c: (c.tier, len(c.actions), c.role.role_name)))


def _doubtful(role: HsmRoleDefinition, action: str) -> bool:
    """Whether the package's own record of this role says Microsoft's doc and a live HSM disagree about this action
    (the Crypto Auditor's ``keys/deletedKeys/delete``): never planned on the doc's word alone. A definition the HSM
    listed carries no anomalies (its answer is the truth)."""
    short = action.rsplit("managedHsm/", 1)[-1].lower()
    return any(short in a.lower() for a in role.anomalies)


def narrowest(actions: tuple[str, ...], listed: tuple[HsmRoleDefinition, ...] = ()) -> HsmCandidate | None:
    """The first candidate granting every action (None when no candidate does)."""
    return next((c for c in candidates(listed)
                 if all(c.role.grants(a) and not _doubtful(c.role, a) for a in actions)), None)


def fits(c: HsmCandidate, actions: tuple[str, ...]) -> bool:
    """Whether a built-in is least privilege for ``actions``: no key action above the denied tier, and nothing
    beyond the denied actions above read or use."""
    denied = max(action_tier(a) for a in actions)
    extra = c.actions - {canonical_key_action(a) for a in actions}
    return c.tier <= denied and all(action_tier(a) <= _USE for a in extra)


def custom_role_plan(actions: tuple[str, ...]) -> HsmCustomRolePlan:
    """The custom local role with exactly ``actions``, named as facts/hsm.ensure_custom_role defines it."""
    acts = tuple(sorted(set(actions)))
    short = ", ".join(a.rsplit("managedHsm/", 1)[-1] for a in acts)
    return HsmCustomRolePlan(
        name=custom_role_name(acts), role_name=f"kv-remediate {short}"[:120], data_actions=acts,
        description="Least-privilege local role defined by kv-remediate: exactly the data actions a denied "
                    "request needed.")


def hsm_plan(denial: Denial, decision: Decision, facts: Facts | None) -> HsmRoleAssignmentPlan | None:
    """The local role assignment that fixes a missing one, or None (another cause, the HSM or the caller not known,
    or an action that is not a key data action: those belong to an HSM administrator's judgement)."""
    if decision.cause != Cause.MISSING_ROLE_ASSIGNMENT or facts is None or facts.hsm is None or \
            decision.required is None or not denial.principal.object_id:
        return None
    actions = tuple(canonical_key_action(a) for a in decision.required.data_actions)
    if not actions or any(a is None for a in actions):
        return None
    wanted = tuple(a for a in actions if a is not None)
    name = key_name(denial)
    scope = key_scope(name) if name else "/keys"
    oid, ptype = denial.principal.object_id, facts.principal.type     # the type only as Microsoft Graph said it
    listed = facts.hsm_access.builtin_definitions if facts.hsm_access else ()
    best = narrowest(wanted, listed)

    def builtin(c: HsmCandidate) -> HsmRoleAssignmentPlan:
        return HsmRoleAssignmentPlan(hsm=facts.hsm.id if facts.hsm else "", scope=scope,
                                     role_definition_id=BUILTIN_ID_PREFIX + c.role.name, role_name=c.role.role_name,
                                     principal_id=oid, principal_type=ptype, tier=c.tier)
    if best is not None and fits(best, wanted):
        return builtin(best)
    custom = custom_role_plan(wanted)
    return HsmRoleAssignmentPlan(
        hsm=facts.hsm.id, scope=scope, role_definition_id=BUILTIN_ID_PREFIX + custom.name, role_name=custom.role_name,
        principal_id=oid, principal_type=ptype, tier=max(action_tier(a) for a in wanted), custom_role=custom,
        alternatives=(builtin(best),) if best is not None else ())
