"""Pure assembly of a finding, explained: decision + plan + the wording from the cause catalogue."""

from __future__ import annotations

from typing import Any

from .catalog import causes
from .decide import decide
from .evidence import AccessPolicyCheck, RoleAssignmentCheck
from .model import (
    GRANT_CAUSES,
    AccessPolicyPlan,
    Cause,
    Decision,
    Denial,
    Facts,
    Finding,
    HsmRoleAssignmentPlan,
    Plan,
    RoleAssignmentPlan,
)
from .plan import DEFAULT_PLAN, PlanOptions, plan
from .render.commands import with_commands
from .render.findings import TYPE_WORDS
from .render.hsm_commands import with_hsm_commands

MODEL_NAMES = {"rbac": "Azure RBAC", "access_policy": "access policies", "hsm_local_rbac": "Managed HSM local RBAC"}


def _who(denial: Denial, facts: Facts | None) -> str:
    """The caller as the evidence names it: display name, type and id when Graph gave them ("app-orders (service
    principal f5cc...)"), else the input's type and id ("application f5cc..."): the wording of the text output."""
    p = denial.principal
    known = facts.principal if facts else None
    name = known.display_name if known else None
    kind = (known.type if known else None) or p.kind
    typ = TYPE_WORDS.get(kind.lower()) if kind else None
    ident = p.upn or p.object_id or p.app_id
    if name and ident:
        return f"{name} ({typ} {ident})" if typ else f"{name} ({ident})"
    if ident:
        return f"{typ or 'principal'} {ident}"
    return name or "the caller"


def _what(denial: Denial, decision: Decision) -> str:
    op = denial.operation
    if decision.required and decision.required.data_actions:
        acts = ", ".join(a.split("/vaults/", 1)[-1].split("/managedHsm/", 1)[-1]
                         for a in decision.required.data_actions)
        return f"{op} ({acts})" if op else acts
    return op or "the operation"


def _object(denial: Denial) -> str | None:
    o = denial.object
    if o is None or not o.name:
        return None
    return f"{o.kind.rstrip('s') if o.kind != 'storage' else 'storage account'} '{o.name}'"


def _context(denial: Denial, decision: Decision, facts: Facts | None, fix: Plan | None) -> dict[str, Any]:
    vault = facts.vault if facts else None
    vname = vault.name if vault else (denial.vault.name or denial.vault.resource_id)
    obj = _object(denial)
    kind = denial.object.kind if denial.object else None
    noun = {"secrets": "secret", "keys": "key", "certificates": "certificate", "storage": "storage account"}.get(
        kind or "", "object")
    ctx: dict[str, Any] = {
        "who": _who(denial, facts), "what": _what(denial, decision),
        "vault": f"vault '{vname}'" if vname else "the vault",
        "vault_cap": f"Vault '{vname}'" if vname else "The vault",
        "message": denial.message or denial.error_code, "upn": denial.principal.upn,
        "message_part": f" ({denial.message or denial.error_code})" if denial.message or denial.error_code else "",
        "app_id": denial.principal.app_id,
        "object_cli": noun if noun in ("secret", "key", "certificate") else kind or "secret|key|certificate",
        "subscription": _subscription(denial.vault.resource_id),
        "caller_ip": denial.caller_ip or "the caller's address",
        "object": f" {obj.split(' ', 1)[1]}" if obj else "", "object_cap": (obj[0].upper() + obj[1:]) if obj
        else f"The {noun}", "object_plain": obj or f"this {noun}",
        "key_op": (denial.operation or "this operation"), "reason": decision.detail.reason or "no rule matched",
    }
    if denial.message and "not permitted" in denial.message.lower():
        words = denial.message.split()
        if len(words) > 1 and words[0].lower() == "operation":
            ctx["key_op"] = words[1]
    tid = denial.principal.tenant_id or (vault.tenant_id if vault else None)
    ctx["tenant_hint"] = f" ({vault.tenant_id})" if vault and vault.tenant_id else (f" (not {tid})" if tid else "")
    if denial.message and "Reason:" in denial.message:
        ctx["limit"] = ": " + denial.message.split("Reason:", 1)[1].strip().rstrip(".")
    else:
        ctx["limit"] = ""
    if vault:
        bits = [f"default action {vault.network_default_action}"] if vault.network_default_action else []
        if vault.public_network_access:
            bits.append(f"public network access {vault.public_network_access}")
        if vault.ip_rules:
            bits.append(f"{len(vault.ip_rules)} IP rule(s)")
        ctx["network"] = f" (vault network rules: {', '.join(bits)})" if bits else ""
    else:
        ctx["network"] = ""
    searched = decision.detail.searched
    ctx["searched"] = f" (searched: {', '.join(searched)})" if searched else ""
    deny = decision.detail.deny
    ctx["deny_name"], ctx["deny_scope"] = (deny.name or deny.id, deny.scope) if deny else (None, None)
    grant = decision.detail.grant
    ctx["grant_role"] = (grant.role_name if isinstance(grant, RoleAssignmentCheck) else None) or "a role"
    ctx["condition"] = grant.condition if isinstance(grant, RoleAssignmentCheck) else None
    ctx["application_id"] = grant.application_id if isinstance(grant, AccessPolicyCheck) else None
    ctx["grant_reason"] = (f"{grant.role_name} at {grant.scope}" if isinstance(grant, RoleAssignmentCheck)
                           else f"access-policy entry for {grant.object_id if grant else None}")
    model = decision.permission_model
    if model:
        other = "access_policy" if model == "rbac" else "rbac"
        ctx["model_name"], ctx["other_model_name"] = MODEL_NAMES[model], MODEL_NAMES[other]
    if isinstance(fix, RoleAssignmentPlan):
        ctx["role"], ctx["scope"] = fix.role_name, fix.scope
    elif isinstance(fix, AccessPolicyPlan):
        ctx["permissions"] = ", ".join(f"{k} {'/'.join(v)}" for k, v in fix.add.items())
    if denial.vault.kind == "managed_hsm":
        ctx.update(_hsm_context(denial, decision, facts, fix))
    return ctx


def _hsm_context(denial: Denial, decision: Decision, facts: Facts | None, fix: Plan | None) -> dict[str, Any]:
    """The values a Managed HSM finding's wording quotes: the HSM by name, its network rules, the scope asked and
    the plan's local role."""
    from .decide_hsm import target_scope

    hsm = facts.hsm if facts else None
    name = hsm.name if hsm else (denial.vault.name or denial.vault.resource_id)
    ctx: dict[str, Any] = {"vault": f"Managed HSM '{name}'" if name else "the Managed HSM",
                           "vault_cap": f"Managed HSM '{name}'" if name else "The Managed HSM",
                           "hsm_name": name or "<hsm name>"}
    if hsm is not None:
        bits = [f"default action {hsm.network_default_action}"] if hsm.network_default_action else []
        if hsm.public_network_access:
            bits.append(f"public network access {hsm.public_network_access}")
        if hsm.ip_rules:
            bits.append(f"{len(hsm.ip_rules)} IP rule(s)")
        ctx["network"] = f" (HSM network rules: {', '.join(bits)})" if bits else ""
    if decision.required and decision.required.data_actions:
        ctx["target"] = target_scope(denial, decision.required.data_actions[0])
    grant = decision.detail.grant
    if isinstance(grant, RoleAssignmentCheck):
        ctx["grant_reason"] = f"local role {grant.role_name} at {grant.scope}"
    if isinstance(fix, HsmRoleAssignmentPlan):
        ctx["role"], ctx["scope"] = fix.role_name, fix.scope
        ctx["custom_part"] = (f" (a custom local role with exactly {', '.join(fix.custom_role.data_actions)}, "
                              "defined at /)" if fix.custom_role else "")
    return ctx


def _subscription(resource_id: str | None) -> str | None:
    """The subscription of a resource id the input named (``/subscriptions/{s}/...``), else None."""
    if not resource_id or not resource_id.lower().startswith("/subscriptions/"):
        return None
    return resource_id[len("/subscriptions/"):].split("/", 1)[0] or None


def variant(denial: Denial, decision: Decision) -> str | None:
    """Which wording of the cause fits this finding's own fields (catalog/causes.py ``VARIANTS``), or None."""
    v = denial.vault
    if v.kind == "managed_hsm" and (v.name or v.resource_id):
        return _hsm_variant(decision)
    return _vault_variant(denial, decision)


def _vault_variant(denial: Denial, decision: Decision) -> str | None:
    cause, p, v = decision.cause, denial.principal, denial.vault
    if cause == Cause.VAULT_NOT_FOUND:
        if not v.name and not v.resource_id:
            return "no_vault"
        return "by_id" if _subscription(v.resource_id) else None
    if cause == Cause.PRINCIPAL_NOT_IDENTIFIED and not p.object_id:
        return "upn" if p.upn else "app" if p.app_id else None
    if cause == Cause.COMPOUND_IDENTITY_REQUIRED:
        grant = decision.detail.grant
        return None if isinstance(grant, AccessPolicyCheck) and grant.application_id else "input"
    if cause == Cause.ALREADY_GRANTED and decision.permission_model == "access_policy":
        return "access_policy"
    return None


_HSM_VARIANTS = frozenset({Cause.AUTH_CHALLENGE, Cause.NETWORK_BLOCKED, Cause.VAULT_NOT_FOUND, Cause.ALREADY_GRANTED,
                           Cause.MISSING_ROLE_ASSIGNMENT})


def _hsm_variant(decision: Decision) -> str | None:
    """A Managed HSM's wording: local RBAC, its network rules; an administrative action gets no plan."""
    from .catalog.hsm import canonical_key_action

    if decision.cause == Cause.MISSING_ROLE_ASSIGNMENT and decision.required and \
            any(canonical_key_action(a) is None for a in decision.required.data_actions):
        return "hsm_admin"
    return "hsm" if decision.cause in _HSM_VARIANTS else None


def _hsm_advice(fix: HsmRoleAssignmentPlan) -> list[str]:
    """What a person should know about an HSM plan: the built-in alternative and an unconfirmed principal type."""
    out = []
    for alt in fix.alternatives:
        out.append(f"No built-in local role grants exactly this: the plan defines a custom local role. The built-in "
                   f"alternative {alt.role_name} (tier {alt.tier}) in plan.alternatives also grants more.")
    if fix.principal_type is None:
        out.append("Microsoft Graph did not confirm the caller's principal type; confirm it before applying.")
    return out


def build_finding(denial: Denial, occurrences: int, facts: Facts | None,
                  options: PlanOptions = DEFAULT_PLAN) -> Finding:
    """Decide, plan and explain one (collapsed) denial."""
    decision = decide(denial, facts)
    fix = plan(denial, decision, facts, options)
    if isinstance(fix, HsmRoleAssignmentPlan):
        fix = with_hsm_commands(fix)
    elif fix is not None and facts is not None and facts.vault is not None:
        fix = with_commands(fix, facts.vault)
    explanation, advice = causes.render(decision.cause, _context(denial, decision, facts, fix),
                                        variant(denial, decision))
    advice_list = list(advice)
    if isinstance(fix, HsmRoleAssignmentPlan):
        advice_list += _hsm_advice(fix)
    if isinstance(fix, RoleAssignmentPlan):
        if fix.privileged:
            advice_list.append("No narrower built-in role covers this action: the plan names Key Vault "
                               "Administrator (privileged; policy refuses it by default). Prefer the custom role in "
                               "plan.alternatives.")
        elif fix.alternatives:
            advice_list.append(f"{fix.role_name} can do more than was denied (tier {fix.tier}); "
                               "plan.alternatives holds a custom role with exactly the missing data actions.")
        if fix.principal_type is None:
            advice_list.append("The caller's principal type is unknown; confirm it before applying.")
    limitations = facts.limitations if facts else ()
    if limitations:
        explanation += " Not checked: " + "; ".join(limitations) + "."
    if decision.cause in GRANT_CAUSES and fix is None and denial.vault.kind != "managed_hsm":
        advice_list.append("No plan: the caller's object id is needed to aim a grant.")
    return Finding(cause=decision.cause, occurrences=occurrences, denial=denial,
                   permission_model=decision.permission_model, required=decision.required,
                   explanation=explanation, plan=fix, advice=tuple(advice_list), evidence=decision.evidence)
