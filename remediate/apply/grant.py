"""Apply one guarded plan: the guard's verdict, a rate slot, the intent recorded first, one write (role
assignment, PIM schedule request or ``accessPolicies/add``), one verifying read, the record settled; a retry
resumes (adopts) the open record of the same write instead of granting twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .. import catalog
from ..armid import parse_hsm_id
from ..errors import ApplyError, AzureUnavailableError, InputError
from ..facts.writes import ArmWriter
from ..guard import Verdict, check
from ..model import AccessPolicyPlan, Cause, Finding, HsmRoleAssignmentPlan, RoleAssignmentPlan
from ..outcome import ApplyOutcome
from ..plan import assignment_name
from ..store.claims import ClaimKey
from ..store.grants import GrantRecord, GrantStore
from .records import (
    HOUR,
    ApplyContext,
    add_record,
    ap_key,
    applied_outcome,
    hsm_assignment_id,
    hsm_key,
    label,
    log_record,
    new_record,
    present_in_azure,
    ra_key,
    reported,
    resource_of,
    same_backend,
    settle,
    settle_approval,
    write_key,
)


async def _take_slot(ctx: ApplyContext, vault_id: str, claimant: str) -> tuple[bool, ClaimKey | None]:
    """One of ``max_grants_per_hour`` slots per vault, claimed atomically across instances (and its key)."""
    if ctx.slots is None:
        return True, None
    for i in range(ctx.policy.max_grants_per_hour):   # the emulator's slots are its own (ctx.key), never Azure's
        key: ClaimKey = ("rate", ctx.key(vault_id.lower()), str(i))
        if (await ctx.slots.claim(key, HOUR, ctx.now, claimant)).won:
            return True, key
    return False, None


@dataclass
class _Run:
    """One attempt at one grant: the record it settles, how far it got, and the rate slot it holds."""

    rec: GrantRecord
    step: str = "intent recorded; the write was not sent"
    slot: ClaimKey | None = None
    claimant: str = ""
    resumed: bool = False

    @property
    def sent(self) -> bool:
        """The write left us: from here on it may have taken effect in Azure."""
        return not self.step.startswith("intent recorded")

    async def release_slot(self, ctx: ApplyContext) -> None:
        """The write granted nothing (someone else's grant, or refused): the slot goes back."""
        if ctx.slots is not None and self.slot is not None:
            await ctx.slots.release(self.slot, self.claimant)
            self.slot = None


async def _apply_rbac(f: Finding, plan: RoleAssignmentPlan, writer: ArmWriter, ctx: ApplyContext,
                      run: _Run) -> ApplyOutcome:
    rec = run.rec
    role_guid = plan.role_definition_id.rsplit("/", 1)[-1]
    name = assignment_name(plan.scope, plan.principal_id, role_guid)
    assignment_id = f"{plan.scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    run.step = "role assignment PUT sent, not answered"
    result = await writer.create_role_assignment(plan.scope, name, plan.role_definition_id, plan.principal_id,
                                                 plan.principal_type, description=label(rec.id, rec.expires_at))
    run.step = "role assignment PUT answered, not verified"
    if result.conflict:   # the same access under another name: not ours, and not a grant of ours
        await run.release_slot(ctx)
        done = await settle(ctx.grants, rec, "already_granted", before={"role_assignment": "present"},
                             after={"role_assignment": "present under another name"}, detail=result.detail)
        return ApplyOutcome(False, "already_granted", grant_id=done.id, detail=result.detail)
    if not await writer.role_assignment_exists(plan.scope, name, plan.role_definition_id, plan.principal_id):
        raise ApplyError(f"assigned {plan.role_name} to {plan.principal_id} at {plan.scope}, but reading it back "
                         f"found no such assignment; grant {rec.id} is recorded as failed; re-run to retry "
                         "(idempotent)")
    run.step = "verified, not yet recorded as applied"
    how = "created" if result.created else "existed under our deterministic name; labelled as this grant"
    done = await settle(ctx.grants, rec, "applied", before={"role_assignment": None},
                         after={"role_assignment": assignment_id}, assignment_id=assignment_id,
                         detail=f"role assignment {how}")
    return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=run.resumed)


async def _apply_pim(f: Finding, plan: RoleAssignmentPlan, writer: ArmWriter, ctx: ApplyContext,
                     run: _Run) -> ApplyOutcome:
    rec = run.rec
    requests = list(rec.requests or [])
    if run.resumed or not requests:   # a request id is single-use in Azure: every request gets a fresh one
        requests.append(str(uuid.uuid4()))
        rec = run.rec = await settle(ctx.grants, rec, "pending", requests=requests)
    request = requests[-1]
    # Only our own words go to Azure: the catalogue's operation name (or data actions), never the input's spelling.
    op = catalog.operation(f.denial.operation)
    what = op.name if op else ", ".join(f.required.data_actions if f.required else ())
    justification = f"{label(rec.id, rec.expires_at)}; {f.cause} for {what}"
    run.step = f"PIM schedule request {request} sent, not answered"
    result = await writer.pim_assign(plan.scope, request, plan.role_definition_id, plan.principal_id,
                                     duration=ctx.policy.grant_ttl_text or "", justification=justification)
    run.step = f"PIM schedule request {request} answered ({result.status})"
    if result.status == "exists":
        await run.release_slot(ctx)
        done = await settle(ctx.grants, rec, "already_granted", before={"role_assignment": "present"},
                             detail=f"{result.code}: {result.detail} (an active assignment of this role we did not "
                             "make; nothing was changed)")
        return ApplyOutcome(False, "already_granted", grant_id=done.id, detail=done.detail)
    if result.status == "refused":
        await run.release_slot(ctx)
        done = await settle(ctx.grants, rec, "refused", refused_by="pim_policy",
                             detail=f"the role's management policy refused the request: {result.code}: "
                             f"{result.detail}; change the policy (e.g. its maximum duration) or the grant_ttl")
        return ApplyOutcome(False, "refused", refused_by="pim_policy", reason=done.detail, grant_id=done.id)
    if result.status == "pending_approval":
        done = await settle(ctx.grants, rec, "pending_approval",
                             detail=f"PIM schedule request {result.request_id} awaits approval (the role's "
                             "management policy requires an approver); the reconciler records it when it is "
                             "decided")
        return ApplyOutcome(False, "pending_approval", grant_id=done.id, detail=done.detail,
                            request_id=result.request_id)
    if result.status != "provisioned":
        raise ApplyError(f"PIM schedule request {result.request_id} ended as '{result.code}', not Provisioned; "
                         f"grant {rec.id} is recorded as failed; check the request in the portal, then re-run")
    if not await writer.role_assignment_exists(plan.scope, "", plan.role_definition_id, plan.principal_id):
        raise ApplyError(f"PIM provisioned {result.request_id}, but reading back found no assignment of "
                         f"{plan.role_name} to {plan.principal_id} at {plan.scope}; re-run to retry")
    run.step = "verified, not yet recorded as applied"
    done = await settle(ctx.grants, rec, "applied", before={"role_assignment": None},
                         after={"role_assignment": "PIM", "schedule_request": result.request_id},
                         detail="PIM schedule request " + result.request_id)
    return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=run.resumed)


async def _apply_access_policy(f: Finding, plan: AccessPolicyPlan, writer: ArmWriter, ctx: ApplyContext,
                               run: _Run) -> ApplyOutcome:
    rec = run.rec
    add = rec.permissions_added or {}
    run.step = "accessPolicies/add sent, not answered"
    await writer.add_access_policy(plan.vault_id, plan.tenant_id or "", plan.object_id, add)
    run.step = "accessPolicies/add answered, not verified"
    after = await writer.entry_permissions(plan.vault_id, plan.object_id, plan.tenant_id)
    lacking = {k: [p for p in v if p.lower() not in {x.lower() for x in after.get(k, [])} and
                   "all" not in {x.lower() for x in after.get(k, [])}] for k, v in add.items()}
    if any(lacking.values()):
        raise ApplyError(f"added {add} to {plan.object_id}'s entry on {plan.vault_id}, but reading it back lacks "
                         f"{ {k: v for k, v in lacking.items() if v} }; re-run to retry (idempotent)")
    run.step = "verified, not yet recorded as applied"
    done = await settle(ctx.grants, rec, "applied", after=after)
    return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=run.resumed)


async def _apply_hsm(plan: HsmRoleAssignmentPlan, writer: ArmWriter, run: _Run, grants: GrantStore) -> ApplyOutcome:
    """A Managed HSM local role assignment: our custom role first when the plan has one (defined at ``/``, read
    back), then the assignment under our deterministic name, read back (``ensure_assignment`` reads it after its PUT:
    a second read would only add a round trip). Managed HSM has no
    PIM and no description to label an assignment with: the record (and its deterministic name) is what says it is
    ours, and the revocation timer removes it at ``grant_ttl``."""
    rec = run.rec
    role_id = plan.role_definition_id
    if plan.custom_role is not None:
        run.step = f"custom local role {plan.custom_role.name} PUT sent, not answered"
        role = await writer.hsm_define_role(plan.hsm, plan.custom_role.data_actions)
        if role.name.lower() != plan.custom_role.name.lower():   # the guard checked the name; never assign another
            raise ApplyError(f"the HSM defined custom local role {role.name}, not the planned "
                             f"{plan.custom_role.name}; nothing was assigned")
        role_id = role.id
    run.step = "local role assignment PUT sent, not answered"
    write = await writer.hsm_assign(plan.hsm, plan.scope, role_id, plan.principal_id)   # PUT, then a GET back
    run.step = "local role assignment PUT answered, not verified"
    if not write.verified:
        raise ApplyError(f"assigned {plan.role_name} to {plan.principal_id} at {plan.scope} on {plan.hsm_name}, but "
                         f"reading it back found no such assignment; grant {rec.id} is recorded as failed; re-run to "
                         "retry (idempotent)")
    run.step = "verified, not yet recorded as applied"
    assignment_id = write.assignment.id if write.assignment else rec.assignment_id
    how = "created" if write.changed else "existed under our deterministic name; recorded as this grant"
    done = await settle(grants, rec, "applied", before={"hsm_role_assignment": None},
                         after={"hsm_role_assignment": assignment_id, "hsm": plan.hsm, "scope": write.scope},
                         assignment_id=assignment_id, role_definition_id=role_id,
                         detail=f"Managed HSM local role assignment {how}")
    return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=run.resumed)


async def _write(f: Finding, writer: ArmWriter, ctx: ApplyContext, run: _Run) -> ApplyOutcome:
    """The write its plan's kind makes, verified and settled."""
    assert f.plan is not None
    if isinstance(f.plan, HsmRoleAssignmentPlan):
        return await _apply_hsm(f.plan, writer, run, ctx.grants)
    if isinstance(f.plan, AccessPolicyPlan):
        return await _apply_access_policy(f, f.plan, writer, ctx, run)
    if ctx.policy.grant_ttl_text and ctx.policy.use_pim:
        return await _apply_pim(f, f.plan, writer, ctx, run)
    return await _apply_rbac(f, f.plan, writer, ctx, run)


async def _run(f: Finding, writer: ArmWriter, ctx: ApplyContext, run: _Run) -> ApplyOutcome:
    """The write, its verifying read and the settling of its record, under the per-finding budget."""
    try:
        async with asyncio.timeout(ctx.budget_s):
            return await _write(f, writer, ctx, run)
    except TimeoutError:
        msg = (f"gave up after {ctx.budget_s:.0f} s at '{run.step}': the write may or may not have reached Azure "
               "and was not verified")
    except (ApplyError, AzureUnavailableError) as exc:
        msg = f"{exc.message} (reached: {run.step})"
    if run.sent:   # the write may have taken effect: one fresh read says which, else the reconciler will
        try:
            if await present_in_azure(run.rec, writer):
                done = await settle(ctx.grants, run.rec, "applied", detail=f"{msg}; yet a fresh read found the "
                                     "write in Azure, so it is recorded as applied")
                return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=run.resumed)
        except (ApplyError, AzureUnavailableError) as exc:
            done = await settle(ctx.grants, run.rec, "pending", detail=f"{msg}; whether it took effect could not be "
                                 f"read ({exc.message}): left pending for the reconciler, which reads Azure")
            return ApplyOutcome(False, "failed", error=done.detail, grant_id=done.id)
    done = await settle(ctx.grants, run.rec, "failed", detail=msg + "; re-run to retry (idempotent)")
    return reported(done)


async def _adopt(held: GrantRecord, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome | None:
    """The outcome of an open record of ours whose write reached Azure (adopted: applied, original expiry); None
    when nothing of it is in Azure."""
    if held.outcome == "applied":
        return applied_outcome(held, adopted=True)
    if held.outcome == "pending_approval":
        return await settle_approval(held, writer, ctx.grants) or reported(held)
    if await present_in_azure(held, writer):
        done = await settle(ctx.grants, held, "applied", detail=(held.detail or "") +
                             "; adopted by a retry: the write had reached Azure before the attempt stopped")
        return reported(done) if done.outcome != "applied" else applied_outcome(done, adopted=True)
    return None


async def _resume(f: Finding, held: GrantRecord, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome:
    """A retry met the open record of the same write: adopt what reached Azure, else finish it under that record."""
    return await _adopt(held, writer, ctx) or await _run(f, writer, ctx, _Run(rec=held, resumed=True))

def _granting_keys(f: Finding, ctx: ApplyContext) -> list[str]:
    """Write keys of grants of ours that could be what the diagnosis found granting (a retry after a crash sees
    its own write as ALREADY_GRANTED): each direct role assignment that grants, and the access-policy add the
    required permissions would have been."""
    keys = [ctx.key(ra_key(a.scope, a.principal_id, a.role_definition_id)) for a in f.evidence.role_assignments
            if a.grants and a.via == "direct" and a.scope and a.role_definition_id and a.principal_id]
    vault = f.evidence.vault.id if f.evidence.vault else None
    hsm = next((str(h) for h in (parse_hsm_id(x) for x in (vault, f.denial.vault.resource_id) if x) if h), None)
    if hsm is not None:   # a Managed HSM denial: its local assignments (scopes /, /keys, /keys/NAME)
        keys += [ctx.key(hsm_key(hsm, a.scope, a.principal_id, a.role_definition_id))
                 for a in f.evidence.role_assignments if a.grants and a.via == "direct" and a.scope.startswith("/keys")
                 and a.role_definition_id and a.principal_id]
        return keys
    if vault and f.denial.principal.object_id and f.required and f.required.access_policy:
        add = {k: [catalog.canonical_permission(k, p) or p for p in v] for k, v in f.required.access_policy.items()}
        keys.append(ctx.key(ap_key(vault, f.denial.principal.object_id, add)))
    return keys


async def _adopt_granting(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome | None:
    """An ALREADY_GRANTED finding whose grant is an open grant of ours: adopt it (applied, original expiry)."""
    for key in _granting_keys(f, ctx):
        held = await asyncio.to_thread(ctx.grants.open_for, key)
        adopted = await _adopt(held, writer, ctx) if held is not None else None
        if adopted is not None:
            return adopted
    return None


async def _gone(held: GrantRecord, writer: ArmWriter, ctx: ApplyContext) -> bool:
    """An applied grant of this backend whose write Azure (or the emulator) no longer holds: a fresh emulator run
    from the same snapshot, or a grant removed in Azure by hand. Unreadable: not known to be gone."""
    if held.outcome != "applied" or not same_backend(held, ctx.backend):
        return False
    try:
        return not await present_in_azure(held, writer)
    except (ApplyError, AzureUnavailableError):
        return False


async def _repeat_intent(f: Finding, held: GrantRecord, ctx: ApplyContext) -> GrantRecord:
    """The same write made again under its existing record (intent first, as for a new grant): ``pending`` again,
    ``repeats`` counted, ``time`` now (``first_time`` keeps the first), a new expiry and, for PIM, a new
    (single-use) request id. Returns the record as the store holds it (another attempt may have settled it)."""
    kw: dict[str, Any] = {}
    if held.requests is not None:
        kw["requests"] = [*held.requests, str(uuid.uuid4())]
    fresh = new_record(ctx, f, "pending")
    return await settle(ctx.grants, held, "pending", time=ctx.now, first_time=held.first_time or held.time,
                        repeats=held.repeats + 1, finding=fresh.finding, alert_id=fresh.alert_id,
                        correlation_id=fresh.correlation_id, actor=ctx.actor,
                        expires_at=ctx.now + ctx.policy.grant_ttl if ctx.policy.grant_ttl else None,
                        detail="intent recorded (the same write made again); the write was not confirmed", **kw)


async def apply_one(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome:
    """Guard, record the intent, write once, verify, settle; the outcome is merged into the finding's JSON."""
    if f.plan is None:
        return await _without_plan(f, writer, ctx)
    vault_id = resource_of(f.plan)
    recent = await asyncio.to_thread(ctx.grants.count_applied_since, vault_id, ctx.now - HOUR,
                                     ctx.backend) if ctx.requested else 0
    verdict = check(f, ctx.policy, recent, requested=ctx.requested, proof=ctx.proof_for(f),
                    own_principals=ctx.own_principals)
    key = ctx.key(write_key(f.plan))
    repeat: GrantRecord | None = None
    if verdict.allowed:
        held = await asyncio.to_thread(ctx.grants.open_for, key)
        if held is not None and await _gone(held, writer, ctx):
            repeat = held      # the same write again: counted on its record, not recorded twice
        elif held is not None:   # a retry of a write we began: resume it, without a new slot
            return await _resume(f, held, writer, ctx)
    claimant = f"{vault_id}|{f.denial.identity_key()}|{ctx.now}"
    slot: ClaimKey | None = None
    if verdict.allowed:
        won, slot = await _take_slot(ctx, vault_id, claimant)
        if not won:
            verdict = replace(verdict, allowed=False, refused_by="max_grants_per_hour",
                              reason=f"all {ctx.policy.max_grants_per_hour} grant slots of the last hour are taken")
    if not verdict.allowed:
        return await _refused(f, ctx, verdict)
    if repeat is not None:
        return await _write_again(f, repeat, writer, ctx, _Run(rec=repeat, slot=slot, claimant=claimant))
    expires = ctx.now + ctx.policy.grant_ttl if ctx.policy.grant_ttl else None
    intent = new_record(ctx, f, "pending", expires_at=expires, write_key=key,
                        detail="intent recorded; the write was not confirmed", **_intent_fields(f, ctx))
    return await _begin(f, writer, ctx, _Run(rec=intent, slot=slot, claimant=claimant))


async def _without_plan(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome:
    """A finding no grant fixes: already granted (adopting our own labelled grant when applying), or no plan."""
    if f.cause == Cause.ALREADY_GRANTED:
        adopted = await _adopt_granting(f, writer, ctx) if ctx.requested else None
        return adopted or ApplyOutcome(False, "already_granted",
                                       detail="the vault already grants this; nothing to change")
    return ApplyOutcome(False, "no_plan", detail="no grant is the fix for this cause")


async def _refused(f: Finding, ctx: ApplyContext, verdict: Verdict) -> ApplyOutcome:
    """A plan the guard refused: recorded when applying was asked (not for the mode's own refusals), else only
    suggested. A plan the policy routes to a person opens an approval request instead, when there is a store."""
    if verdict.refused_by == "approval" and ctx.requested and ctx.approvals is not None:
        return await _to_approval(f, ctx, verdict)
    if ctx.requested and verdict.refused_by not in ("mode", "apply"):
        rec = await add_record(ctx, f, "refused", refused_by=verdict.refused_by, detail=verdict.reason)
        return ApplyOutcome(False, "refused", refused_by=verdict.refused_by, reason=verdict.reason, grant_id=rec.id)
    return ApplyOutcome(False, "suggested", refused_by=verdict.refused_by, reason=verdict.reason)


async def _to_approval(f: Finding, ctx: ApplyContext, verdict: Verdict) -> ApplyOutcome:
    """A plan every rule allows but the policy routes to a person: an approval request is opened (or the open one
    for the same exact change is joined), nothing is written."""
    from ..approvals.service import propose

    assert ctx.approvals is not None
    got = await propose(ctx.approvals, f, ctx, ctx.proposer)
    if isinstance(got, Verdict):   # exact_write refused it: the guard would have said so first
        return ApplyOutcome(False, "refused", refused_by=got.refused_by, reason=got.reason)
    return ApplyOutcome(False, "pending_approval", refused_by="approval", reason=verdict.reason,
                        approval_id=got.id, detail=f"approval request {got.id} ({got.state}) expires at "
                        f"{got.expires_at.isoformat()}; it needs {got.min_approvals} distinct approver(s)")


async def _write_again(f: Finding, repeat: GrantRecord, writer: ArmWriter, ctx: ApplyContext,
                       run: _Run) -> ApplyOutcome:
    """The same write made again (our grant is gone from Azure): counted on its record, intent first."""
    again = await _repeat_intent(f, repeat, ctx)
    run = replace(run, rec=again)
    if again.outcome != "pending" or again.repeats != repeat.repeats + 1:   # another attempt settled it first
        await run.release_slot(ctx)
        return reported(again)
    log_record(again)
    return await _run(f, writer, ctx, run)


def _intent_fields(f: Finding, ctx: ApplyContext) -> dict[str, Any]:
    """What the intent records about the write before it is made (so a crash can be settled from Azure)."""
    kw: dict[str, Any] = {}
    if isinstance(f.plan, AccessPolicyPlan):
        kw["permissions_added"] = {k: list(v) for k, v in f.plan.add.items() if v}
        kw["before"] = next(({k: list(v) for k, v in e.permissions.items()} for e in f.evidence.access_policies
                             if e.via == "direct" and not e.application_id), {}) or {}
    elif isinstance(f.plan, HsmRoleAssignmentPlan):   # our deterministic name is the write's identity on the HSM
        kw["assignment_id"] = hsm_assignment_id(f.plan.scope, f.plan.principal_id, f.plan.role_definition_id)
        kw["custom_role"] = f.plan.custom_role.name if f.plan.custom_role else None
    elif ctx.policy.grant_ttl_text and ctx.policy.use_pim:
        kw["requests"] = [str(uuid.uuid4())]
    elif isinstance(f.plan, RoleAssignmentPlan):   # the deterministic name is the write's identity in Azure
        name = assignment_name(f.plan.scope, f.plan.principal_id, f.plan.role_definition_id.rsplit("/", 1)[-1])
        kw["assignment_id"] = f"{f.plan.scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    return kw


async def _begin(f: Finding, writer: ArmWriter, ctx: ApplyContext, run: _Run) -> ApplyOutcome:
    """Record the intent (holding the write's key), then write; another attempt holding the key is resumed."""
    intent = run.rec
    try:
        got = await asyncio.to_thread(ctx.grants.begin, intent)
    except InputError as exc:   # a uuid4 id collides only if our own insert landed twice: say what it is
        await run.release_slot(ctx)
        raise ApplyError(f"recording the intent of grant {intent.id} failed ({exc.message}); nothing was "
                         "written to Azure; re-run") from exc
    except BaseException:
        await run.release_slot(ctx)
        raise
    if got.id != intent.id:   # another attempt of the same write holds it (concurrent, or just begun)
        await run.release_slot(ctx)
        return await _resume(f, got, writer, ctx)
    log_record(intent)
    return await _run(f, writer, ctx, run)


def _plan_key(f: Finding) -> tuple[str, ...] | None:
    p = f.plan
    if isinstance(p, RoleAssignmentPlan):
        return ("ra", p.scope.lower(), p.principal_id.lower(), p.role_definition_id.rsplit("/", 1)[-1].lower())
    if isinstance(p, AccessPolicyPlan):
        return ("ap", p.vault_id.lower(), p.object_id.lower(),
                *sorted(f"{k}:{x.lower()}" for k, v in p.add.items() for x in v))
    if isinstance(p, HsmRoleAssignmentPlan):
        return ("hsm", p.hsm.lower(), p.scope.strip("/").lower(), p.principal_id.lower(),
                p.role_definition_id.rsplit("/", 1)[-1].lower())
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
        out.append(replace(f, outcome=lead.shared(
            f"the same plan was handled for another finding in this batch ({lead.grant_id})")))
    return out
