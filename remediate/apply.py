"""Apply guarded plans (idempotent, verified, audited) and revoke expired grants.

Only here do plans become changes: the guard's verdict first (pure), then at most one write through
facts.writes (a deterministic role-assignment name, or ``accessPolicies/add`` of exactly the missing
permissions), one verifying read, and a record in the grant store for every applied, already-granted, refused,
failed and revoked change. Grant-store calls are synchronous (SQLite, or the sync Table client) and run in a
worker thread, so an apply never stalls the event loop the worker's other invocations share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .errors import ApplyError, AzureUnavailableError
from .facts.writes import ArmWriter
from .guard import Policy, check
from .model import AccessPolicyPlan, Finding, Proof, RoleAssignmentPlan
from .render.commands import assignment_name
from .store.claims import ClaimStore
from .store.grants import GrantRecord, GrantStore, Outcome, new_grant_id

log = logging.getLogger("kv_remediate.apply")
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class ApplyContext:
    """Everything an apply run needs besides the findings: policy, stores, who we are and when it is."""

    policy: Policy
    grants: GrantStore
    now: datetime
    requested: bool = True              # `--apply` / `"apply": true`; the worker passes True
    slots: ClaimStore | None = None     # cross-instance max_grants_per_hour slots (Azure Tables in the app)
    actor: str | None = None            # the function's own identity, for the audit trail
    alert_id: str | None = None
    budget_s: float = 120.0             # per finding, under the Functions timeout
    operator: Proof | None = None       # an operator's explicit act (CLI --apply, /api/remediate with the apply
                                        # role): covers every plan of the run; every other rule still holds
    proofs: Mapping[tuple[str | None, ...], Proof] = field(default_factory=dict)
    """Per denial (``Denial.identity_key()``): the audit-log row we read ourselves, or a person's approval."""
    own_principals: frozenset[str] = frozenset()   # the app's own object ids (lower-case): never a grantee

    def proof_for(self, f: Finding) -> Proof | None:
        """What entitles this finding's plan to be applied, if anything (an input never does)."""
        return self.operator or self.proofs.get(f.denial.identity_key())


def _summary(f: Finding) -> dict[str, Any]:
    d = f.denial
    return {"cause": f.cause, "occurrences": f.occurrences, "operation": d.operation,
            "principal": d.principal.to_dict(), "vault": d.vault.to_dict(),
            "object": d.object.to_dict() if d.object else None, "source": d.source}


async def _record(ctx: ApplyContext, f: Finding, outcome: Outcome, **kw: Any) -> GrantRecord:
    plan = f.plan
    base: dict[str, Any] = {"alert_id": ctx.alert_id or f.denial.alert_id,
                            "correlation_id": f.denial.correlation_id, "finding": _summary(f),
                            "plan": plan.to_dict() if plan else None, "actor": ctx.actor}
    if isinstance(plan, RoleAssignmentPlan):
        base.update(vault_id="/".join(plan.scope.split("/")[:9]), principal_id=plan.principal_id, scope=plan.scope,
                    role_definition_id=plan.role_definition_id)
    elif isinstance(plan, AccessPolicyPlan):
        base.update(vault_id=plan.vault_id, principal_id=plan.object_id, scope=plan.vault_id)
    base.update(kw)
    record = GrantRecord(outcome=outcome, time=ctx.now, **base)
    await asyncio.to_thread(ctx.grants.add, record)
    log.info("grant %s", record.outcome, extra={"kv_remediate": {
        "event": "grant", "grant_id": record.id, "outcome": record.outcome, "refused_by": record.refused_by,
        "alert_id": record.alert_id, "vault": record.vault_id, "principal": record.principal_id,
        "scope": record.scope, "expires_at": record.expires_at.isoformat() if record.expires_at else None}})
    return record


def _outcome(applied: bool, outcome: str, **kw: Any) -> dict[str, Any]:
    return {"applied": applied, "refused_by": kw.pop("refused_by", None), "outcome": outcome, **kw}


async def _take_slot(ctx: ApplyContext, vault_id: str, claimant: str) -> bool:
    """One of ``max_grants_per_hour`` slots per vault, claimed atomically across instances."""
    if ctx.slots is None:
        return True
    for i in range(ctx.policy.max_grants_per_hour):
        if (await ctx.slots.claim(("rate", vault_id.lower(), str(i)), HOUR, ctx.now, claimant)).won:
            return True
    return False


async def _apply_rbac(f: Finding, plan: RoleAssignmentPlan, writer: ArmWriter, ctx: ApplyContext,
                      expires: datetime | None) -> dict[str, Any]:
    role_guid = plan.role_definition_id.rsplit("/", 1)[-1]
    name = assignment_name(plan.scope, plan.principal_id, role_guid)
    ttl = ctx.policy.grant_ttl_text
    if ttl and ctx.policy.use_pim:
        result = await writer.pim_assign(plan.scope, name, plan.role_definition_id, plan.principal_id, ttl,
                                         f"kv-remediate: {f.cause} for {f.denial.operation}")
    else:
        result = await writer.create_role_assignment(plan.scope, name, plan.role_definition_id, plan.principal_id,
                                                     plan.principal_type)
    if not await writer.role_assignment_exists(plan.scope, name, plan.role_definition_id, plan.principal_id):
        raise ApplyError(f"assigned {plan.role_name} to {plan.principal_id} at {plan.scope}, but reading it back "
                         "found no such assignment; nothing is recorded as granted; re-run to retry (idempotent)")
    assignment_id = f"{plan.scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    if not result.created:
        rec = await _record(ctx, f, "already_granted", before={"role_assignment": "present"},
                      after={"role_assignment": assignment_id}, detail=result.detail)
        return _outcome(False, "already_granted", grant_id=rec.id, detail=result.detail)
    rec = await _record(ctx, f, "applied", before={"role_assignment": None}, after={"role_assignment": assignment_id},
                  assignment_id=None if ttl and ctx.policy.use_pim else assignment_id, expires_at=expires,
                  detail="PIM schedule request " + result.resource_id if ttl and ctx.policy.use_pim else None)
    return _outcome(True, "applied", grant_id=rec.id, assignment_id=assignment_id,
                    expires_at=expires.isoformat() if expires else None)


async def _apply_access_policy(f: Finding, plan: AccessPolicyPlan, writer: ArmWriter, ctx: ApplyContext,
                               expires: datetime | None) -> dict[str, Any]:
    before: dict[str, Any] = next((e.get("permissions") for e in f.evidence.get("access_policies", [])
                   if e.get("via") == "direct" and not e.get("application_id")), {}) or {}
    add = {k: list(v) for k, v in plan.add.items() if v}
    tenant = plan.tenant_id or ""
    await writer.add_access_policy(plan.vault_id, tenant, plan.object_id, add)
    after = await writer.entry_permissions(plan.vault_id, plan.object_id, plan.tenant_id)
    lacking = {k: [p for p in v if p.lower() not in {x.lower() for x in after.get(k, [])} and
                   "all" not in {x.lower() for x in after.get(k, [])}] for k, v in add.items()}
    if any(lacking.values()):
        raise ApplyError(f"added {add} to {plan.object_id}'s entry on {plan.vault_id}, but reading it back lacks "
                         f"{ {k: v for k, v in lacking.items() if v} }; re-run to retry (idempotent)")
    rec = await _record(ctx, f, "applied", before=before, after=after, permissions_added=add, expires_at=expires)
    return _outcome(True, "applied", grant_id=rec.id, permissions_added=add,
                    expires_at=expires.isoformat() if expires else None)


async def apply_one(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> dict[str, Any]:
    """Guard, write once, verify, record; the outcome is merged into the finding's JSON."""
    if f.plan is None:
        if f.cause == "ALREADY_GRANTED":
            return _outcome(False, "already_granted", detail="the vault already grants this; nothing to change")
        return _outcome(False, "no_plan", detail="no grant is the fix for this cause")
    vault_id = f.plan.vault_id if isinstance(f.plan, AccessPolicyPlan) else "/".join(f.plan.scope.split("/")[:9])
    recent = await asyncio.to_thread(ctx.grants.count_applied_since, vault_id, ctx.now - HOUR) if ctx.requested else 0
    verdict = check(f, ctx.policy, recent, requested=ctx.requested, proof=ctx.proof_for(f),
                    own_principals=ctx.own_principals)
    if verdict.allowed and not await _take_slot(ctx, vault_id, f"{vault_id}|{f.denial.identity_key()}|{ctx.now}"):
        verdict = replace(verdict, allowed=False, refused_by="max_grants_per_hour",
                          reason=f"all {ctx.policy.max_grants_per_hour} grant slots of the last hour are taken")
    if not verdict.allowed:
        if ctx.requested and verdict.refused_by not in ("mode", "apply"):
            rec = await _record(ctx, f, "refused", refused_by=verdict.refused_by, detail=verdict.reason)
            return _outcome(False, "refused", refused_by=verdict.refused_by, reason=verdict.reason, grant_id=rec.id)
        return _outcome(False, "suggested", refused_by=verdict.refused_by, reason=verdict.reason)
    expires = ctx.now + ctx.policy.grant_ttl if ctx.policy.grant_ttl else None
    try:
        async with asyncio.timeout(ctx.budget_s):
            if isinstance(f.plan, RoleAssignmentPlan):
                return await _apply_rbac(f, f.plan, writer, ctx, expires)
            return await _apply_access_policy(f, f.plan, writer, ctx, expires)
    except TimeoutError:
        msg = (f"gave up after {ctx.budget_s:.0f} s: the write may or may not have reached Azure and was not "
               "verified; re-run (the change is idempotent) or check the vault")
        rec = await _record(ctx, f, "failed", detail=msg)
        return _outcome(False, "failed", error=msg, grant_id=rec.id)
    except (ApplyError, AzureUnavailableError) as exc:
        rec = await _record(ctx, f, "failed", detail=exc.message)
        return _outcome(False, "failed", error=exc.message, grant_id=rec.id)


def _plan_key(f: Finding) -> tuple[str, ...] | None:
    p = f.plan
    if isinstance(p, RoleAssignmentPlan):
        return ("ra", p.scope.lower(), p.principal_id.lower(), p.role_definition_id.rsplit("/", 1)[-1].lower())
    if isinstance(p, AccessPolicyPlan):
        return ("ap", p.vault_id.lower(), p.object_id.lower(),
                *sorted(f"{k}:{x.lower()}" for k, v in p.add.items() for x in v))
    return None


async def apply_findings(findings: Sequence[Finding], writer: ArmWriter, ctx: ApplyContext) -> list[Finding]:
    """Apply every distinct plan once (concurrently); findings that share a plan share its outcome."""
    first: dict[tuple[str, ...], int] = {}
    for i, f in enumerate(findings):
        key = _plan_key(f)
        if key is not None:
            first.setdefault(key, i)
    leaders = [i for i, f in enumerate(findings) if _plan_key(f) is None or first[_plan_key(f) or ()] == i]
    done = dict(zip(leaders, await asyncio.gather(*(apply_one(findings[i], writer, ctx) for i in leaders)),
                    strict=True))
    out = []
    for i, f in enumerate(findings):
        if i in done:
            out.append(replace(f, outcome=done[i]))
            continue
        lead = done[first[_plan_key(f) or ()]]
        same = dict(lead, applied=False, outcome="already_granted" if lead.get("outcome") in
                    ("applied", "already_granted") else lead.get("outcome"),
                    detail=f"the same plan was handled for another finding in this batch ({lead.get('grant_id')})")
        out.append(replace(f, outcome=same))
    return out


# --- revocation ----------------------------------------------------------------------------------------------

async def revoke(record: GrantRecord, writer: ArmWriter, grants: GrantStore, now: datetime,
                 actor: str | None = None, why: str = "expired") -> dict[str, Any]:
    """Undo exactly what one applied grant changed; never a change this function did not make."""
    if record.outcome != "applied":
        return {"grant_id": record.id, "revoked": False, "reason": f"record is '{record.outcome}', not an applied "
                "grant: nothing of ours to undo"}
    if record.revoked_at is not None:
        return {"grant_id": record.id, "revoked": False, "reason": f"already revoked at {record.revoked_at}"}
    detail: str
    if record.assignment_id and record.scope:
        name = record.assignment_id.rsplit("/", 1)[-1]
        gone = await writer.delete_role_assignment(record.scope, name)
        detail = f"deleted role assignment {record.assignment_id}" if gone else \
            f"role assignment {record.assignment_id} was already gone"
    elif record.permissions_added and record.vault_id and record.principal_id:
        tenant = (record.plan or {}).get("tenant_id")
        stored = await writer.entry_permissions(record.vault_id, record.principal_id, tenant)
        # ARM's remove matches case-sensitively: send each permission spelled as the vault stores it.
        ours = {k: [s for s in stored.get(k, []) if s.lower() in {p.lower() for p in v}]
                for k, v in record.permissions_added.items()}
        ours = {k: v for k, v in ours.items() if v}
        if ours:
            await writer.remove_access_policy(record.vault_id, tenant or "", record.principal_id, ours)
            left = await writer.entry_permissions(record.vault_id, record.principal_id, tenant)
            still = {k: [p for p in v if p in left.get(k, [])] for k, v in ours.items()}
            if any(still.values()):
                raise ApplyError(f"removing {ours} from {record.principal_id}'s entry on {record.vault_id} did not "
                                 "take; retry the revocation")
        detail = f"removed {ours} from the entry" if ours else "the permissions were already gone"
    elif record.detail and record.detail.startswith("PIM"):
        detail = "PIM expires the assignment itself"
    else:
        return {"grant_id": record.id, "revoked": False, "reason": "record names nothing to undo"}
    if await asyncio.to_thread(grants.mark_revoked, record.id, now, f"{why}: {detail}"):
        await asyncio.to_thread(grants.add, replace(record, id=new_grant_id(), outcome="revoked", time=now, actor=actor,
                                                    revoked_at=now, revoke_detail=f"{why}: revokes {record.id}",
                                                    detail=detail))
    log.info("grant revoked", extra={"kv_remediate": {"event": "revoke", "grant_id": record.id, "detail": detail}})
    return {"grant_id": record.id, "revoked": True, "detail": detail}


async def revoke_expired(writer: ArmWriter, grants: GrantStore, now: datetime,
                         actor: str | None = None) -> list[dict[str, Any]]:
    """Revoke every applied grant whose time limit has passed (the timer and `revoke --expired`)."""
    results = []
    for rec in await asyncio.to_thread(grants.expired, now):
        try:
            results.append(await revoke(rec, writer, grants, now, actor))
        except (ApplyError, AzureUnavailableError) as exc:
            results.append({"grant_id": rec.id, "revoked": False, "error": exc.message})
    return results
