"""Pure decision: one denial plus the facts read for it -> the cause and the evidence behind it.

No I/O, clock or environment. The order follows causes.md: 401 and 429 first, then the 403 causes the input
alone decides, then the permission checks against the vault's own model (with the other model consulted only
to recognise WRONG_PERMISSION_MODEL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import catalog
from .catalog import RoleDefinition
from .model import (
    INPUT_CAUSES,
    AccessPolicyEntry,
    Cause,
    Decision,
    Denial,
    DenyAssignment,
    Facts,
    Required,
    RoleAssignment,
    Signal,
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
    if status == 429 or Signal.THROTTLED in signals:
        return Cause.THROTTLED
    if status == 401:
        if Signal.AUTH_CHALLENGE in signals or (operation == "authentication" and not known):
            return Cause.AUTH_CHALLENGE
        return None if Signal.STATUS_ONLY in signals else Cause.AUTH_FAILED
    if status != 403:
        return None
    for signal, cause in _SIGNAL_CAUSES:
        if signal in signals:
            return cause
    return None if known else Cause.PRINCIPAL_NOT_IDENTIFIED


# The 403 signals in the order causes.md decides them: the first present names the cause.
_SIGNAL_CAUSES = ((Signal.NETWORK, Cause.NETWORK_BLOCKED), (Signal.ADDRESS_NOT_AUTHORIZED, Cause.NETWORK_BLOCKED),
                  (Signal.FIRST_PARTY, Cause.TRUSTED_SERVICE_DENIED),
                  (Signal.KEY_OPERATION, Cause.KEY_OPERATION_NOT_PERMITTED), (Signal.DISABLED, Cause.OBJECT_DISABLED),
                  (Signal.ON_BEHALF_OF, Cause.COMPOUND_IDENTITY_REQUIRED))


def input_cause(denial: Denial) -> Cause | None:
    """The cause when the input alone decides it (status or the service's own words)."""
    hint = cause_hint(denial)
    if denial.status == 401:
        return Cause.AUTH_CHALLENGE if hint == Cause.AUTH_CHALLENGE else Cause.AUTH_FAILED
    if denial.status == 429:
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
    if a == "/" or a == t or t.startswith(a + "/"):
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


_COND_RE = re.compile(
    r"@(?P<src>Resource|Request)\[(?P<attr>[^\]]+)\]\s+(?P<op>StringEquals|StringEqualsIgnoreCase|"
    r"StringStartsWith|StringStartsWithIgnoreCase|StringNotEquals|StringLike)\s+'(?P<val>[^']*)'",
    re.IGNORECASE)
_ACTION_RE = re.compile(r"!?\(?\s*ActionMatches\{'(?P<action>[^']+)'\}", re.IGNORECASE)


def evaluate_condition(condition: str, action: str, object_name: str | None) -> bool | None:
    """Evaluate the common Key Vault ABAC shape on the object name; None when it cannot be evaluated here.

    Handles ``((!(ActionMatches{'A'})) OR (@Resource[...secrets:name] StringEquals 'x'))`` and its
    StringStartsWith / OR-joined variants; anything else (tags, environment, several clauses) is
    reported as not evaluable rather than guessed.
    """
    text = " ".join(condition.split())
    actions = [m.group("action") for m in _ACTION_RE.finditer(text)]
    if not actions:
        return None
    if not any(catalog.action_matches(a, action) for a in actions):
        return True   # the condition only restricts other actions: (!ActionMatches) is true
    clauses = list(_COND_RE.finditer(text))
    rest = _ACTION_RE.sub("", text)
    if not clauses or object_name is None or re.search(r"\band\b", _COND_RE.sub("", rest), re.IGNORECASE):
        return None
    for c in clauses:
        attr = c.group("attr").lower()
        if not attr.endswith(":name") and not attr.endswith("/name"):
            return None
        op, val = c.group("op").lower(), c.group("val")
        name = object_name
        if op in ("stringequals", "stringequalsignorecase"):
            ok = name.lower() == val.lower() if op.endswith("ignorecase") else name == val
        elif op.startswith("stringstartswith"):
            ok = name.lower().startswith(val.lower()) if op.endswith("ignorecase") else name.startswith(val)
        elif op == "stringnotequals":
            ok = name != val
        else:
            return None
        if ok:
            return True
    return False


@dataclass(frozen=True)
class _RbacResult:
    granted: list[dict[str, Any]]
    conditional: list[dict[str, Any]]
    considered: list[dict[str, Any]]
    denies: list[dict[str, Any]]


def _role(facts: Facts, a: RoleAssignment) -> RoleDefinition | None:
    guid = a.role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return facts.roles.get(guid) or catalog.builtin_role(guid)


def rbac_check(denial: Denial, facts: Facts, actions: tuple[str, ...]) -> _RbacResult:
    """Evaluate every assignment and deny assignment against every required data action.

    ``facts.assignments`` are the ones ARM returned for the principal (``assignedTo`` already includes the
    assignments of its groups, transitively), so each applies to the caller; scope and role decide the rest.
    """
    vault = facts.vault
    assert vault is not None
    target = object_scope(vault.id, denial) or vault.id
    ids = facts.principal.ids()
    obj_name = denial.object.name if denial.object else None
    granted, conditional, considered, denies = [], [], [], []
    for a in facts.assignments:
        role = _role(facts, a)
        entry: dict[str, Any] = {"kind": "role_assignment", "id": a.id, "scope": a.scope,
                                 "role_definition_id": a.role_definition_id,
                                 "role_name": role.role_name if role else None,
                                 "principal_id": a.principal_id,
                                 "via": "direct" if facts.principal.object_id and
                                 a.principal_id.lower() == facts.principal.object_id.lower() else "group",
                                 "condition": a.condition, "grants": False}
        if not scope_applies(a.scope, target):
            entry["reason"] = "its scope does not contain this vault or object"
        elif role is None:
            entry["reason"] = "its role definition could not be read"
        else:
            results = [role_grants(role, act) for act in actions]
            entry["reason"] = "; ".join(r for _, r in results)
            if all(ok for ok, _ in results):
                if a.condition:
                    verdicts = [evaluate_condition(a.condition, act, obj_name) for act in actions]
                    verdict = None if None in verdicts else all(verdicts)
                    entry["condition_evaluated"] = verdict
                    if verdict is True:
                        entry["grants"] = True
                        entry["reason"] += "; its condition holds for this object"
                        granted.append(entry)
                    else:
                        entry["reason"] += ("; its ABAC condition does not hold for this request" if verdict is
                                            False else "; its ABAC condition is evaluated per request and could "
                                            "not be evaluated here")
                        conditional.append(entry)
                else:
                    entry["grants"] = True
                    granted.append(entry)
        considered.append(entry)
    for d in facts.deny_assignments:
        hit = any(deny_applies(d, ids, target, act) for act in actions)
        denies.append({"kind": "deny_assignment", "id": d.id, "name": d.name, "scope": d.scope,
                       "applies": hit, "description": d.description})
    return _RbacResult(granted, conditional, considered, denies)


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


def access_policy_check(denial: Denial, facts: Facts, required: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Evaluate the vault's access-policy entries for the caller and its groups."""
    vault = facts.vault
    assert vault is not None
    ids = facts.principal.ids()
    app_id = (denial.principal.app_id or "").lower()
    out: dict[str, Any] = {"granted": [], "compound_only": [], "considered": [], "missing": dict(required)}
    best_missing: dict[str, list[str]] | None = None
    for e in vault.policies_for(ids):
        ok, missing = entry_grants(e, required)
        info: dict[str, Any] = {"kind": "access_policy", "object_id": e.object_id,
                                "application_id": e.application_id, "tenant_id": e.tenant_id,
                                "permissions": {k: list(v) for k, v in e.permissions.items()},
                                "via": "direct" if facts.principal.object_id and
                                e.object_id.lower() == facts.principal.object_id.lower() else "group",
                                "grants": False}
        if vault.tenant_id and e.tenant_id.lower() != vault.tenant_id.lower():
            info["reason"] = f"entry is for tenant {e.tenant_id}, the vault's tenant is {vault.tenant_id}"
        elif not ok:
            info["reason"] = "lacks " + ", ".join(f"{k} {'/'.join(v)}" for k, v in missing.items())
            if info["via"] == "direct" and best_missing is None:
                best_missing = missing
        elif e.application_id and e.application_id.lower() != app_id:
            info["reason"] = (f"compound entry: applies only when application {e.application_id} calls on "
                              "behalf of this principal")
            out["compound_only"].append(info)
        else:
            info["grants"] = True
            info["reason"] = "holds every required permission"
            out["granted"].append(info)
        out["considered"].append(info)
    if best_missing is not None:
        out["missing"] = {k: tuple(v) for k, v in best_missing.items()}
    return out


# --- The decision -------------------------------------------------------------------------------------------

def _evidence(facts: Facts) -> dict[str, Any]:
    p = facts.principal
    ev: dict[str, Any] = {
        "principal": {"object_id": p.object_id, "type": p.type, "display_name": p.display_name,
                      "app_id": p.app_id, "groups": list(p.groups), "groups_known": p.groups_known},
        "vault": None, "role_assignments": [], "access_policies": [], "deny_assignments": [],
        "limitations": list(facts.limitations)}
    v = facts.vault
    if v is not None:
        ev["vault"] = {"id": v.id, "name": v.name, "tenant_id": v.tenant_id, "permission_model": v.permission_model,
                       "network_default_action": v.network_default_action,
                       "public_network_access": v.public_network_access, "bypass": v.network_bypass,
                       "ip_rules": list(v.ip_rules), "virtual_network_rules": v.virtual_network_rules,
                       "access_policy_entries": len(v.access_policies)}
    return ev


def decide(denial: Denial, facts: Facts | None) -> Decision:
    """The cause of one denial. ``facts`` is None when the input alone decides (nothing was read)."""
    required = required_for(denial)
    early = input_cause(denial)
    vault = facts.vault if facts else None
    model = vault.permission_model if vault else None
    evidence = _evidence(facts) if facts else {"limitations": []}
    if early is not None:
        return Decision(early, model, required, evidence)
    if not denial.principal.object_id:
        return Decision(Cause.PRINCIPAL_NOT_IDENTIFIED, model, required, evidence)
    if facts is None or vault is None:
        detail = {"searched": list(facts.searched_subscriptions) if facts else []}
        return Decision(Cause.VAULT_NOT_FOUND, None, required, evidence, detail)
    if required is None or not required.data_actions:
        return Decision(Cause.UNKNOWN, model, required, evidence, {"reason": "the denied operation is not known"})

    rbac = rbac_check(denial, facts, required.data_actions)
    ap = access_policy_check(denial, facts, required.access_policy)
    evidence["role_assignments"] = rbac.considered
    evidence["deny_assignments"] = rbac.denies
    evidence["access_policies"] = ap["considered"]
    if vault.rbac:
        hit = [d for d in rbac.denies if d["applies"]]
        if hit:
            return Decision(Cause.DENY_ASSIGNMENT, model, required, evidence, {"deny": hit[0]})
        if rbac.granted:
            return Decision(Cause.ALREADY_GRANTED, model, required, evidence, {"grant": rbac.granted[0]})
        if rbac.conditional:
            return Decision(Cause.CONDITION_NOT_MET, model, required, evidence, {"grant": rbac.conditional[0]})
        if ap["granted"]:
            return Decision(Cause.WRONG_PERMISSION_MODEL, model, required, evidence,
                            {"held_in": "access_policy", "grant": ap["granted"][0]})
        return Decision(Cause.MISSING_ROLE_ASSIGNMENT, model, required, evidence)
    if ap["granted"]:
        return Decision(Cause.ALREADY_GRANTED, model, required, evidence, {"grant": ap["granted"][0]})
    if ap["compound_only"]:
        return Decision(Cause.COMPOUND_IDENTITY_REQUIRED, model, required, evidence, {"grant": ap["compound_only"][0]})
    missing = {k: tuple(v) for k, v in ap["missing"].items()}
    if rbac.granted:
        return Decision(Cause.WRONG_PERMISSION_MODEL, model, required, evidence,
                        {"held_in": "rbac", "grant": rbac.granted[0], "missing": missing})
    return Decision(Cause.MISSING_ACCESS_POLICY, model, required, evidence, {"missing": missing})
