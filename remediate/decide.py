"""Pure decision: one denial plus the facts read for it -> the cause and the evidence behind it.

No I/O, clock or environment. The order follows causes.md: 401 and 429 first, then the 403 causes the input
alone decides, then the permission checks against the vault's own model (with the other model consulted only
to recognise WRONG_PERMISSION_MODEL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus

from . import catalog
from .abac import evaluate_condition
from .catalog import RoleDefinition
from .evidence import (
    NO_DETAIL,
    AccessPolicyCheck,
    DecisionDetail,
    DenyCheck,
    Evidence,
    PrincipalEvidence,
    RoleAssignmentCheck,
    VaultEvidence,
    Via,
)
from .model import (
    INPUT_CAUSES,
    AccessPolicyEntry,
    Cause,
    Decision,
    Denial,
    DenyAssignment,
    Facts,
    PrincipalInfo,
    Required,
    RoleAssignment,
    Signal,
)
from .reads import (
    FactRead,
    Gathered,
    ReadAssignments,
    ReadDenyAssignments,
    ReadPrincipal,
    ReadRoleDefinitions,
    ReadVault,
)

EVERYONE = "00000000-0000-0000-0000-000000000000"   # deny assignments use the nil GUID for "all principals"


def required_for(denial: Denial) -> Required | None:
    """What the denied operation needs in both models, from the catalogue's mapping alone; None when unknown.

    The input only says *which* operation was denied (by name, or by a data action the catalogue knows); the
    permissions, data actions and so the tier always come from the catalogue, never from words in the input (an
    error text saying "secrets all permission" plans nothing of the kind).
    """
    op = catalog.operation(denial.operation)
    if op is not None:
        return Required(op.data_actions, dict(op.access_policy)) if op.data_actions else None
    action = catalog.canonical_action(denial.data_action) if denial.data_action else None
    if action is None:
        return None
    # Microsoft's published mapping of the data action to access-policy permissions (never 'all': it maps to none).
    perms = {k: tuple(p for p in v if p.lower() != "all") for k, v in catalog.permissions_for_action(action).items()}
    return Required((action,), {k: v for k, v in perms.items() if v})


def cause_hint(denial: Denial) -> Cause | None:
    """The cause the input alone decides (causes.md): its status, the signals intake recorded and whether it
    names the caller; None when the input does not decide. The one mapping of signals to causes, rendered as the
    denial JSON's ``cause_hint``."""
    return _hint(denial.status, frozenset(denial.signals), denial.principal.known, (denial.operation or "").lower())


@lru_cache(maxsize=2048)
def _hint(status: int | None, signals: frozenset[Signal], known: bool, operation: str) -> Cause | None:
    if status == HTTPStatus.TOO_MANY_REQUESTS or Signal.THROTTLED in signals:
        return Cause.THROTTLED
    if status == HTTPStatus.UNAUTHORIZED:
        if Signal.AUTH_CHALLENGE in signals or (operation == "authentication" and not known):
            return Cause.AUTH_CHALLENGE
        # a metric's status alone, or a platform's 401 for what its own words call a permission refusal (a Logic
        # Apps connector): not a token problem the input decides
        return None if Signal.STATUS_ONLY in signals or Signal.RELAYED in signals else Cause.AUTH_FAILED
    if status != HTTPStatus.FORBIDDEN:
        return None
    for signal, cause in _SIGNAL_CAUSES:
        if signal in signals:
            return cause
    # a platform's own report (App Service's AccessToKeyVaultDenied: permission or network) decides nothing
    return None if known or Signal.RELAYED in signals else Cause.PRINCIPAL_NOT_IDENTIFIED


# The 403 signals in the order causes.md decides them: the first present names the cause.
_SIGNAL_CAUSES = ((Signal.NETWORK, Cause.NETWORK_BLOCKED), (Signal.ADDRESS_NOT_AUTHORIZED, Cause.NETWORK_BLOCKED),
                  (Signal.FIRST_PARTY, Cause.TRUSTED_SERVICE_DENIED),
                  (Signal.KEY_OPERATION, Cause.KEY_OPERATION_NOT_PERMITTED), (Signal.DISABLED, Cause.OBJECT_DISABLED),
                  (Signal.ON_BEHALF_OF, Cause.COMPOUND_IDENTITY_REQUIRED))


def input_cause(denial: Denial) -> Cause | None:
    """The cause when the input alone decides it (status or the service's own words)."""
    hint = cause_hint(denial)
    if denial.status == HTTPStatus.UNAUTHORIZED:
        if hint is None and Signal.RELAYED in denial.signals:
            return None  # a connector's 401 for a permission refusal: the vault and its grants decide
        return Cause.AUTH_CHALLENGE if hint == Cause.AUTH_CHALLENGE else Cause.AUTH_FAILED
    if denial.status == HTTPStatus.TOO_MANY_REQUESTS:
        return Cause.THROTTLED
    if hint in INPUT_CAUSES:
        return hint
    return None


# --- RBAC ---------------------------------------------------------------------------------------------------

def _norm_scope(scope: str) -> str:
    return scope.rstrip("/").lower() or "/"


def object_scope(vault_id: str, denial: Denial) -> str | None:
    """The object's own RBAC scope (``.../vaults/V/secrets/S``) when the denial names one."""
    obj = denial.object
    if obj is None or not obj.name or obj.kind not in ("keys", "secrets", "certificates"):
        return None
    return f"{vault_id}/{obj.kind}/{obj.name}"


def scope_applies(assignment_scope: str, target: str) -> bool:
    """An assignment at ``assignment_scope`` applies at ``target`` when it is the same scope or above it."""
    a, t = _norm_scope(assignment_scope), _norm_scope(target)
    if a in ("/", t) or t.startswith(a + "/"):
        return True
    # Management groups sit above subscriptions; the facts layer only returns the ones above this vault.
    return a.startswith("/providers/microsoft.management/managementgroups/")


def role_grants(role: RoleDefinition, action: str) -> tuple[bool, str]:
    """Whether a role grants a data action, with the reason in words."""
    match = next((p for p in role.data_actions if catalog.action_matches(p, action)), None)
    if match is None:
        return False, f"{role.role_name} has no data action matching {action}"
    excluded = next((p for p in role.not_data_actions if catalog.action_matches(p, action)), None)
    if excluded is not None:
        return False, f"{role.role_name} grants {match} but excludes {excluded} (notDataActions)"
    return True, f"{role.role_name} grants it through {match}"


def deny_applies(deny: DenyAssignment, principal_ids: frozenset[str], target: str, action: str) -> bool:
    """A deny assignment subtracts the action when its scope, principals and actions all cover the request."""
    if deny.do_not_apply_to_child_scopes:
        if _norm_scope(deny.scope) != _norm_scope(target):
            return False
    elif not scope_applies(deny.scope, target):
        return False
    ids = {p.lower() for p in deny.principal_ids}
    if EVERYONE not in ids and not (ids & principal_ids):
        return False
    if {p.lower() for p in deny.exclude_principal_ids} & principal_ids:
        return False
    covered = any(catalog.action_matches(p, action) for p in deny.data_actions)
    return covered and not any(catalog.action_matches(p, action) for p in deny.not_data_actions)


@dataclass(frozen=True)
class RbacResult:
    """Every assignment and deny assignment weighed: the ones that grant, grant but for a condition, all."""

    granted: tuple[RoleAssignmentCheck, ...]
    conditional: tuple[RoleAssignmentCheck, ...]
    considered: tuple[RoleAssignmentCheck, ...]
    denies: tuple[DenyCheck, ...]


def _role(facts: Facts, a: RoleAssignment) -> RoleDefinition | None:
    guid = a.role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return facts.roles.get(guid) or catalog.builtin_role(guid)


def _via(facts: Facts, principal_id: str) -> Via:
    own = facts.principal.object_id
    return "direct" if own and principal_id.lower() == own.lower() else "group"


def _weigh_assignment(facts: Facts, a: RoleAssignment, target: str, actions: tuple[str, ...],
                      obj_name: str | None) -> RoleAssignmentCheck:
    """One assignment against the request: scope, role, then (when it would grant) its ABAC condition."""
    role = _role(facts, a)
    grants, checked, verdict = False, False, None
    if not scope_applies(a.scope, target):
        reason = "its scope does not contain this vault or object"
    elif role is None:
        reason = "its role definition could not be read"
    else:
        results = [role_grants(role, act) for act in actions]
        reason = "; ".join(r for _, r in results)
        if all(ok for ok, _ in results):
            if not a.condition:
                grants = True
            else:
                verdicts = [evaluate_condition(a.condition, act, obj_name) for act in actions]
                checked, verdict = True, None if None in verdicts else all(verdicts)
                grants = verdict is True
                reason += ("; its condition holds for this object" if grants else
                           "; its ABAC condition does not hold for this request" if verdict is False else
                           "; its ABAC condition is evaluated per request and could not be evaluated here")
    return RoleAssignmentCheck(id=a.id, scope=a.scope, role_definition_id=a.role_definition_id,
                               role_name=role.role_name if role else None, principal_id=a.principal_id,
                               via=_via(facts, a.principal_id), condition=a.condition, grants=grants, reason=reason,
                               condition_checked=checked, condition_evaluated=verdict)


def rbac_check(denial: Denial, facts: Facts, actions: tuple[str, ...]) -> RbacResult:
    """Evaluate every assignment and deny assignment against every required data action.

    ``facts.assignments`` are the ones ARM returned for the principal (``assignedTo`` already includes the
    assignments of its groups, transitively), so each applies to the caller; scope and role decide the rest.
    """
    vault = facts.vault
    assert vault is not None
    target = object_scope(vault.id, denial) or vault.id
    ids = facts.principal.ids()
    obj_name = denial.object.name if denial.object else None
    considered, granted, conditional = [], [], []
    for a in facts.assignments:
        check = _weigh_assignment(facts, a, target, actions, obj_name)
        considered.append(check)
        if check.grants:
            granted.append(check)
        elif check.condition_checked:
            conditional.append(check)
    denies = tuple(DenyCheck(id=d.id, name=d.name, scope=d.scope, description=d.description,
                             applies=any(deny_applies(d, ids, target, act) for act in actions))
                   for d in facts.deny_assignments)
    return RbacResult(tuple(granted), tuple(conditional), tuple(considered), denies)


# --- Access policies ------------------------------------------------------------------------------------------

def entry_grants(entry: AccessPolicyEntry, required: dict[str, tuple[str, ...]]) -> tuple[bool, dict[str, list[str]]]:
    """Whether an entry holds every required permission; returns what is missing per kind."""
    missing: dict[str, list[str]] = {}
    for kind, perms in required.items():
        held = {p.lower() for p in entry.permissions.get(kind, ())}
        lacking = [p for p in perms if "all" not in held and p.lower() not in held]
        if lacking:
            missing[kind] = lacking
    return not missing, missing


@dataclass(frozen=True)
class AccessPolicyResult:
    """The caller's and its groups' entries weighed: those that grant, those only for a compound identity, all,
    and what the caller's own entry lacks (the required permissions when it has none)."""

    granted: tuple[AccessPolicyCheck, ...]
    compound_only: tuple[AccessPolicyCheck, ...]
    considered: tuple[AccessPolicyCheck, ...]
    missing: Mapping[str, tuple[str, ...]]


def access_policy_check(denial: Denial, facts: Facts, required: dict[str, tuple[str, ...]]) -> AccessPolicyResult:
    """Evaluate the vault's access-policy entries for the caller and its groups."""
    vault = facts.vault
    assert vault is not None
    ids = facts.principal.ids()
    app_id = (denial.principal.app_id or "").lower()
    granted, compound, considered = [], [], []
    best_missing: dict[str, list[str]] | None = None
    for e in vault.policies_for(ids):
        ok, missing = entry_grants(e, required)
        via, grants, compound_only = _via(facts, e.object_id), False, False
        if vault.tenant_id and e.tenant_id.lower() != vault.tenant_id.lower():
            reason = f"entry is for tenant {e.tenant_id}, the vault's tenant is {vault.tenant_id}"
        elif not ok:
            reason = "lacks " + ", ".join(f"{k} {'/'.join(v)}" for k, v in missing.items())
            if via == "direct" and best_missing is None:
                best_missing = missing
        elif e.application_id and e.application_id.lower() != app_id:
            compound_only = True
            reason = (f"compound entry: applies only when application {e.application_id} calls on behalf of this "
                      "principal")
        else:
            grants, reason = True, "holds every required permission"
        info = AccessPolicyCheck(object_id=e.object_id, application_id=e.application_id, tenant_id=e.tenant_id,
                                 permissions=e.permissions, via=via, grants=grants, reason=reason)
        if grants:
            granted.append(info)
        elif compound_only:
            compound.append(info)
        considered.append(info)
    lacking = required if best_missing is None else best_missing
    return AccessPolicyResult(tuple(granted), tuple(compound), tuple(considered),
                              {k: tuple(v) for k, v in lacking.items()})


# --- The decision -------------------------------------------------------------------------------------------

def _evidence(facts: Facts, rbac: RbacResult | None = None, ap: AccessPolicyResult | None = None) -> Evidence:
    p = facts.principal
    v = facts.vault
    vault = None if v is None else VaultEvidence(
        id=v.id, name=v.name, tenant_id=v.tenant_id, permission_model=v.permission_model,
        network_default_action=v.network_default_action, public_network_access=v.public_network_access,
        bypass=v.network_bypass, ip_rules=tuple(v.ip_rules), virtual_network_rules=v.virtual_network_rules,
        access_policy_entries=len(v.access_policies))
    return Evidence(principal=PrincipalEvidence(object_id=p.object_id, type=p.type, display_name=p.display_name,
                                                app_id=p.app_id, groups=tuple(p.groups), groups_known=p.groups_known),
                    vault=vault, role_assignments=rbac.considered if rbac else (),
                    access_policies=ap.considered if ap else (), deny_assignments=rbac.denies if rbac else (),
                    limitations=tuple(facts.limitations))


NOTHING_READ = Evidence(read=False)


def decide(denial: Denial, facts: Facts | None) -> Decision:
    """The cause of one denial. ``facts`` is None when the input alone decides (nothing was read). A Managed HSM
    denial is decided by its own rules (decide_hsm.py: local RBAC only)."""
    if denial.vault.kind == "managed_hsm":
        from .decide_hsm import decide_hsm

        return decide_hsm(denial, facts)
    required = required_for(denial)
    early = input_cause(denial)
    vault = facts.vault if facts else None
    if facts is None or vault is None or early is not None or not denial.principal.object_id or \
            required is None or not required.data_actions:
        return _decided_without_grants(denial, facts, required, early)
    rbac = rbac_check(denial, facts, required.data_actions)
    ap = access_policy_check(denial, facts, required.access_policy)
    evidence = _evidence(facts, rbac, ap)
    if vault.rbac:
        cause, detail = _rbac_vault_cause(rbac, ap)
    else:
        cause, detail = _access_policy_vault_cause(rbac, ap)
    return Decision(cause, vault.permission_model, required, evidence, detail)


def _decided_without_grants(denial: Denial, facts: Facts | None, required: Required | None,
                            early: Cause | None) -> Decision:
    """The decision when the grants are not what decides: the input's own cause, no caller, no vault, or an
    operation the catalogue does not know."""
    vault = facts.vault if facts else None
    model = vault.permission_model if vault else None
    evidence = _evidence(facts) if facts else NOTHING_READ
    if early is not None:
        return Decision(early, model, required, evidence)
    if not denial.principal.object_id:
        return Decision(Cause.PRINCIPAL_NOT_IDENTIFIED, model, required, evidence)
    if facts is None or vault is None:
        detail = DecisionDetail(searched=tuple(facts.searched_subscriptions) if facts else ())
        return Decision(Cause.VAULT_NOT_FOUND, None, required, evidence, detail)
    return Decision(Cause.UNKNOWN, model, required, evidence,
                    DecisionDetail(reason="the denied operation is not known"))


def _rbac_vault_cause(rbac: RbacResult, ap: AccessPolicyResult) -> tuple[Cause, DecisionDetail]:
    """On an RBAC vault: a deny assignment, the role already held, a condition not met, the grant held as an
    access policy (ignored by this vault), else a missing role assignment."""
    hit = [d for d in rbac.denies if d.applies]
    if hit:
        return Cause.DENY_ASSIGNMENT, DecisionDetail(deny=hit[0])
    if rbac.granted:
        return Cause.ALREADY_GRANTED, DecisionDetail(grant=rbac.granted[0])
    if rbac.conditional:
        return Cause.CONDITION_NOT_MET, DecisionDetail(grant=rbac.conditional[0])
    if ap.granted:
        return Cause.WRONG_PERMISSION_MODEL, DecisionDetail(held_in="access_policy", grant=ap.granted[0])
    return Cause.MISSING_ROLE_ASSIGNMENT, NO_DETAIL


def _access_policy_vault_cause(rbac: RbacResult, ap: AccessPolicyResult) -> tuple[Cause, DecisionDetail]:
    """On an access-policy vault: the permission already held, held only by a compound entry, held as a role
    (ignored by this vault), else a missing access policy."""
    if ap.granted:
        return Cause.ALREADY_GRANTED, DecisionDetail(grant=ap.granted[0])
    if ap.compound_only:
        return Cause.COMPOUND_IDENTITY_REQUIRED, DecisionDetail(grant=ap.compound_only[0])
    if rbac.granted:
        return Cause.WRONG_PERMISSION_MODEL, DecisionDetail(held_in="rbac", grant=rbac.granted[0], missing=ap.missing)
    return Cause.MISSING_ACCESS_POLICY, DecisionDetail(missing=ap.missing)


# --- What to read next ----------------------------------------------------------------------------------------

# Input causes whose advice quotes the vault (its network rules): the vault is read for them, nothing else.
NEEDS_VAULT_FOR_ADVICE = frozenset({Cause.NETWORK_BLOCKED, Cause.TRUSTED_SERVICE_DENIED})


def groups_could_matter(facts: Facts) -> bool:
    """Whether the principal's groups could change the verdict (entries or denies naming other ids)."""
    vault = facts.vault
    own = (facts.principal.object_id or "").lower()
    if vault is not None and any(e.object_id.lower() != own for e in vault.access_policies):
        return True
    return any(p.lower() not in (own, EVERYONE) for d in facts.deny_assignments for p in d.principal_ids)


def next_reads(denial: Denial, gathered: Gathered) -> tuple[FactRead, ...]:
    """Every read the facts gathered so far call for (those already started or answered included), so that
    independent reads run together: one round trip where the input allows it.

    The vault, its assignments and deny assignments start together when the vault id is known; the caller's
    type (Graph) starts with them when the input does not say it (it is then always needed once the vault is
    found); role definitions as soon as the assignments are in; the caller's groups as soon as the vault and deny
    assignments show they could matter and the caller's own grants do not already decide ALREADY_GRANTED, and
    speculatively while custom role definitions are still being read (its answer is then used only if those roles
    leave the verdict open). A read no longer called for once more is known is ignored, never cancelled (the
    fact source shares it with the batch's other denials).
    """
    early = input_cause(denial)
    oid = denial.principal.object_id
    if (early is not None and early not in NEEDS_VAULT_FOR_ADVICE) or not denial.vault.key or \
            (early is None and not oid):
        return ()
    reads: list[FactRead] = [ReadVault(denial.vault)]
    if early is not None or not oid:
        return tuple(reads)
    known = denial.vault.resource_id
    typed = denial.principal.kind is not None
    if gathered.lookup is None:
        if known:
            reads += [ReadAssignments(oid, object_scope(known, denial) or known), ReadDenyAssignments(known)]
        if not typed:
            reads.append(ReadPrincipal(oid, groups=False))
        return tuple(reads)
    vault = gathered.lookup.vault
    if vault is None:
        return tuple(reads)
    vault_id = known if known and known.lower() == vault.id.lower() else vault.id
    scope = object_scope(vault_id, denial) or vault_id
    reads += [ReadAssignments(oid, scope), ReadDenyAssignments(vault_id)]
    # Access-policy entries are written as given (ARM checks no type), so their grantee's type must be Graph's,
    # never the input's claim; RBAC writes are checked by ARM against principalType, so a claim may stand in.
    if not typed or not vault.rbac:
        reads.append(ReadPrincipal(oid, groups=False))
    assignments = gathered.assignments.get(scope.rstrip("/").lower())
    denies = gathered.deny_assignments.get(vault_id.lower())
    if assignments is None or denies is None:
        return tuple(reads)
    ids = tuple(dict.fromkeys(a.role_definition_id for a in assignments))
    reads.append(ReadRoleDefinitions(ids))
    facts = Facts(vault=vault, principal=PrincipalInfo(oid), assignments=assignments, roles=gathered.roles,
                  deny_assignments=denies)
    # More roles only add grants, so ALREADY_GRANTED on the roles known so far is final.
    if groups_could_matter(facts) and decide(denial, facts).cause != Cause.ALREADY_GRANTED:
        reads.append(ReadPrincipal(oid, groups=True))
    return tuple(reads)


def gathered_facts(denial: Denial, gathered: Gathered) -> Facts | None:
    """The facts of a finished gather: only the answers the facts still call for (a speculative read that turned
    out not to be needed is left out, so the finding is the same as if it had never been made)."""
    wanted = set(next_reads(denial, gathered))
    if gathered.lookup is None:
        return None
    vault = gathered.lookup.vault
    oid = denial.principal.object_id
    searched = gathered.lookup.searched
    if vault is None or oid is None or input_cause(denial) is not None:
        return Facts(vault=vault, principal=PrincipalInfo(oid), searched_subscriptions=searched)
    scope = next(r.scope for r in wanted if isinstance(r, ReadAssignments))
    vault_id = next(r.vault_id for r in wanted if isinstance(r, ReadDenyAssignments))
    meta = gathered.principal if ReadPrincipal(oid, groups=False) in wanted else None
    grp = gathered.groups if ReadPrincipal(oid, groups=True) in wanted else None
    principal = PrincipalInfo(object_id=oid, type=meta.type if meta else None,
                              display_name=meta.display_name if meta else None, app_id=meta.app_id if meta else None,
                              groups=grp.groups if grp else (), groups_known=grp.groups_known if grp else False)
    return Facts(vault=vault, principal=principal, assignments=gathered.assignments[scope.rstrip("/").lower()],
                 roles=gathered.roles, deny_assignments=gathered.deny_assignments[vault_id.lower()],
                 searched_subscriptions=searched)
