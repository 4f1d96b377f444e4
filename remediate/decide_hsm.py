"""Pure decision for a Managed HSM denial: the cause, from the HSM as ARM describes it and its local RBAC.

No I/O, clock or environment. A Managed HSM has no access policies and no ARM data-plane roles: its data plane is
authorised by local RBAC only ("The data plane uses a managed HSM-level RBAC (Managed HSM local RBAC), an
authorization system implemented and enforced at the managed HSM level"; "Granting control plane access to a
security principal does not grant the security principal data plane access", Microsoft Learn
managed-hsm/access-control.md). So the order is: what the input alone decides (401, 429, network, no caller), the
HSM not found, the HSM not activated (its security domain not downloaded: "All data plane commands are disabled
until the HSM is activated", azure-sdk-for-net#15720), a key reached through ARM while the HSM does not trust ARM
(its ``AllowKeyManagementOperationsThroughARM`` read false: "Azure Managed HSM does not trust Azure Resource Manager
by default", managed-hsm/authorize-azure-resource-manager.md), then the local role assignments at ``/``, ``/keys`` and
``/keys/{name}`` held by the caller or its groups.
"""

from __future__ import annotations

from functools import lru_cache

from . import catalog
from .catalog.hsm import (
    HSM_PREFIX,
    HsmRoleDefinition,
    action_matches,
    builtin_roles,
    canonical_key_action,
    key_data_actions,
)
from .decide import NOTHING_READ, input_cause
from .evidence import (
    NO_DETAIL,
    DecisionDetail,
    Evidence,
    PrincipalEvidence,
    RoleAssignmentCheck,
    VaultEvidence,
    Via,
)
from .hsm_model import ARM_SETTING, HsmAccess, HsmRoleAssignment, ManagedHsm, key_scope, normalise_scope
from .model import Cause, Decision, Denial, Facts, Required, Signal

HSM_MODEL = "hsm_local_rbac"
"""``permission_model`` of a Managed HSM finding: local RBAC, the only model an HSM's data plane has."""
_VAULT_KEYS = "microsoft.keyvault/vaults/keys/"


@lru_cache(maxsize=1)
def _known_actions() -> dict[str, str]:
    """Every managedHsm data action the package knows (key actions and the built-in roles' own), lower -> spelling."""
    names = [d.name for d in key_data_actions()]
    names += [a for r in builtin_roles() for a in r.data_actions if "*" not in a]
    return {n.lower(): n for n in names}


def hsm_action(denial: Denial) -> str | None:
    """The managedHsm data action that was denied, in its published spelling: the one the input names, or the
    vault key action an audit row's operation maps to (HSM audit rows carry the vault operation names, KeyWrap,
    KeyEncrypt...). Only the package's vocabulary comes out: an unknown action is None, never the input's text."""
    op = catalog.operation(denial.operation)
    for raw in (denial.data_action, *(op.data_actions if op else ())):
        if not raw:
            continue
        low = raw.strip().lower()
        if low.startswith(HSM_PREFIX.lower()):
            return _known_actions().get(low)
        if low.startswith(_VAULT_KEYS):
            rest = "keys/" + low[len(_VAULT_KEYS):]
            found = canonical_key_action(rest) or canonical_key_action(rest + "/action")
            if found:
                return found
    return None


def key_name(denial: Denial) -> str | None:
    """The key the denial is about: the one its local scope names (``/keys/NAME``), else its key object."""
    for scope in (denial.vault.scope, f"/keys/{denial.object.name}" if denial.object and denial.object.kind == "keys"
                  and denial.object.name else None):
        if not scope:
            continue
        try:
            norm = normalise_scope(scope)
        except ValueError:
            continue
        if norm.startswith("/keys/"):
            return norm.split("/", 2)[2]
    return None


def target_scope(denial: Denial, action: str) -> str:
    """Where the action was asked: ``/keys/NAME`` (a key named), ``/keys`` (a key action, no key named), else ``/``."""
    if canonical_key_action(action) is None:
        return "/"
    name = key_name(denial)
    return key_scope(name) if name else "/keys"


def scope_covers(assignment_scope: str, target: str) -> bool:
    """An assignment at ``/`` or ``/keys`` covers every key; one at ``/keys/NAME`` that key only (managed-hsm/
    access-control.md: "/keys/<key-name>: Key-level scope ... for all versions of the specified key only")."""
    try:
        a, t = normalise_scope(assignment_scope).lower(), normalise_scope(target).lower()
    except ValueError:
        return False
    return a in ("/", t) or (a == "/keys" and t.startswith("/keys/"))


def required_hsm(denial: Denial) -> Required | None:
    """What the denied HSM request needs: one managedHsm data action, never an access-policy permission."""
    action = hsm_action(denial)
    return None if action is None else Required((action,), {})


def _reason(role: HsmRoleDefinition | None, action: str, in_scope: bool, scope: str, target: str) -> tuple[bool, str]:
    if not in_scope:
        return False, f"its scope {scope} does not reach {target}"
    if role is None:
        return False, "its role definition is neither listed by the HSM nor a built-in local role"
    match = next((p for p in role.data_actions if action_matches(p, action)), None)
    if match is None:
        return False, f"{role.role_name} has no data action matching {action}"
    excluded = next((p for p in role.not_data_actions if action_matches(p, action)), None)
    if excluded is not None:
        return False, f"{role.role_name} grants {match} but excludes {excluded} (notDataActions)"
    return True, f"{role.role_name} grants it through {match}"


def weigh(access: HsmAccess, principal_ids: frozenset[str], own: str | None, action: str,
          target: str) -> tuple[RoleAssignmentCheck, ...]:
    """Every local assignment held by the caller or one of its groups, weighed against the action at ``target``
    (role definitions as the HSM listed them first, then the package's built-ins)."""
    out = []
    for a in access.for_principals(tuple(principal_ids)):
        role = access.definition(a.role_definition_id)
        grants, reason = _reason(role, action, scope_covers(a.scope, target), a.scope, target)
        out.append(_check(a, role, own, grants, reason))
    return tuple(out)


def _check(a: HsmRoleAssignment, role: HsmRoleDefinition | None, own: str | None, grants: bool,
           reason: str) -> RoleAssignmentCheck:
    via: Via = "direct" if own and a.principal_id.lower() == own.lower() else "group"
    return RoleAssignmentCheck(id=a.id, scope=a.scope, role_definition_id=a.role_definition_id,
                               role_name=role.role_name if role else None, principal_id=a.principal_id, via=via,
                               condition=None, grants=grants, reason=reason)


def hsm_evidence(facts: Facts, checks: tuple[RoleAssignmentCheck, ...] = ()) -> Evidence:
    """The evidence of an HSM decision: the caller, the HSM (as ``vault``, its model local RBAC) and the checks."""
    p = facts.principal
    h: ManagedHsm | None = facts.hsm
    hsm = None if h is None else VaultEvidence(
        id=h.id, name=h.name, tenant_id=h.tenant_id, permission_model=HSM_MODEL,
        network_default_action=h.network_default_action, public_network_access=h.public_network_access,
        bypass=h.network_bypass, ip_rules=tuple(h.ip_rules), virtual_network_rules=h.virtual_network_rules,
        access_policy_entries=0)
    return Evidence(principal=PrincipalEvidence(object_id=p.object_id, type=p.type, display_name=p.display_name,
                                                app_id=p.app_id, groups=tuple(p.groups), groups_known=p.groups_known),
                    vault=hsm, role_assignments=checks, limitations=tuple(facts.limitations))


def arm_path(denial: Denial) -> bool:
    """Whether the denial reached an HSM key through ARM (intake's Signal.HSM_ARM_PATH) and the input alone does
    not decide it otherwise (401, 429, network...): then the HSM's ARM trust can explain it, whoever asked."""
    return Signal.HSM_ARM_PATH in denial.signals and input_cause(denial) in (None, Cause.PRINCIPAL_NOT_IDENTIFIED)


def _hsm_refuses(hsm: ManagedHsm, facts: Facts, *, arm: bool) -> tuple[Cause, DecisionDetail] | None:
    """The HSM itself refusing whatever the caller's roles: not activated, or (a key reached through ARM) not
    trusting ARM, as its AllowKeyManagementOperationsThroughARM read false says. Unread or true: None."""
    if hsm.activated is False:
        return Cause.HSM_NOT_ACTIVATED, DecisionDetail(reason=hsm.activation_status)
    setting = facts.hsm_arm_setting
    if arm and setting is not None and setting.enabled is False:
        return Cause.HSM_ARM_NOT_TRUSTED, DecisionDetail(
            reason=f"{ARM_SETTING} is {setting.value} on Managed HSM {hsm.name}, as its data plane returned it")
    return None


def decide_hsm(denial: Denial, facts: Facts | None) -> Decision:
    """The cause of one Managed HSM denial (``facts`` None: the input alone decides, nothing was read)."""
    required = required_hsm(denial)
    early = _before_grants(denial, facts, required)
    if early is not None:
        return early
    assert facts is not None and facts.hsm is not None and required is not None   # _before_grants saw to it
    if facts.hsm_access is None:
        return Decision(Cause.UNKNOWN, HSM_MODEL, required, hsm_evidence(facts),
                        DecisionDetail(reason="the HSM's local role assignments were not read"))
    action = required.data_actions[0]
    checks = weigh(facts.hsm_access, facts.principal.ids(), facts.principal.object_id, action,
                   target_scope(denial, action))
    evidence = hsm_evidence(facts, checks)
    granted = [c for c in checks if c.grants]
    if granted:
        return Decision(Cause.ALREADY_GRANTED, HSM_MODEL, required, evidence, DecisionDetail(grant=granted[0]))
    return Decision(Cause.MISSING_ROLE_ASSIGNMENT, HSM_MODEL, required, evidence, NO_DETAIL)


def _before_grants(denial: Denial, facts: Facts | None, required: Required | None) -> Decision | None:
    """The decision when local RBAC is not what decides: the input's own cause, no caller, no HSM, an HSM not
    activated, or a data action the package does not know; None when the grants decide."""
    hsm = facts.hsm if facts else None
    model = HSM_MODEL if hsm else None
    evidence = hsm_evidence(facts) if facts else NOTHING_READ
    early = input_cause(denial)
    arm = arm_path(denial)
    if (early is not None and (not arm or facts is None)) or not (denial.principal.object_id or arm):
        return Decision(early or Cause.PRINCIPAL_NOT_IDENTIFIED, model, required, evidence)
    if facts is None or hsm is None:
        detail = DecisionDetail(searched=tuple(facts.searched_subscriptions) if facts else ())
        return Decision(Cause.VAULT_NOT_FOUND, None, required, evidence, detail)
    refused = _hsm_refuses(hsm, facts, arm=arm)
    if refused is not None:
        return Decision(refused[0], model, required, evidence, refused[1])
    if early is not None or not denial.principal.object_id:
        # an ARM path whose caller is not named (or only by app id or UPN), and the HSM trusts ARM or could not say
        return Decision(early or Cause.PRINCIPAL_NOT_IDENTIFIED, model, required, evidence)
    if required is None:
        return Decision(Cause.UNKNOWN, model, None, evidence,
                        DecisionDetail(reason="the denied Managed HSM data action is not known"))
    return None
