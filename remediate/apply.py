"""Apply guarded plans (idempotent, verified, audited, crash-safe) and revoke expired grants.

Only here do plans become changes: the guard's verdict first (pure), then at most one write through
facts.writes (a deterministic role-assignment name, a PIM schedule request with a fresh name, or
``accessPolicies/add`` of exactly the missing permissions), one verifying read, and a record in the grant store
for every applied, already-granted, refused, failed and revoked change.

Crash safety (issue 17): the intent is recorded first (a ``pending`` record holding the write's identity, plan,
alert and expiry), the write is labelled as ours in Azure where Azure allows it (a role assignment's
``description``, a PIM request's ``justification``: "kv-remediate grant <id>; expires <time>"), and the record is
settled after the verifying read. A retry (redelivered message, CLI rerun) meets the open record of the same write
and resumes it: what already reached Azure is adopted with its original expiry, never re-granted or reported as
``already_granted`` (that is only for access we did not create). :func:`reconcile` (the revocation timer,
``revoke --reconcile``) settles intents left ``pending`` by a crash, by reading Azure, revokes what has expired,
and removes expired role assignments labelled as ours whose record was lost.

Grant-store calls are synchronous (SQLite, or the sync Table client) and run in a worker thread, so an apply never
stalls the event loop the worker's other invocations share.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import catalog
from .errors import ApplyError, AzureUnavailableError, InputError
from .facts.writes import ArmWriter, Assignment
from .guard import Policy, check
from .model import AccessPolicyPlan, Cause, Finding, Proof, RoleAssignmentPlan
from .outcome import ApplyOutcome, Expiry
from .plan import assignment_name
from .store._common import iso, parse_iso
from .store.claims import ClaimKey, ClaimStore
from .store.grants import GrantRecord, GrantStore, Outcome, new_grant_id

log = logging.getLogger("kv_remediate.apply")
HOUR = timedelta(hours=1)
GRACE = timedelta(minutes=5)
"""How old a ``pending`` intent must be before the reconciler settles it by reading Azure: longer than one
apply can take (``budget_s``, 120 s), so it never races an apply still running."""
LABEL_PREFIX = "kv-remediate grant "
_LABEL = re.compile(r"^kv-remediate grant ([0-9a-fA-F-]{36}); expires ([^;\s]+)")


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


def label(grant_id: str, expires: datetime | None) -> str:
    """What Azure holds to say a grant is ours: a role assignment's description, a PIM request's justification."""
    return f"{LABEL_PREFIX}{grant_id}; expires {iso(expires) if expires else 'never'}"


def parse_label(text: str | None) -> tuple[str, datetime | None] | None:
    """(grant id, expiry or None for 'never') from a label we wrote; None when the text is not one of ours."""
    m = _LABEL.match(text or "")
    if not m:
        return None
    try:
        return m.group(1).lower(), None if m.group(2) == "never" else parse_iso(m.group(2))
    except ValueError:
        return None


def _ra_key(scope: str, principal_id: str, role_definition_id: str) -> str:
    return "|".join(("ra", scope.rstrip("/").lower(), principal_id.lower(),
                     role_definition_id.rsplit("/", 1)[-1].lower()))


def _ap_key(vault_id: str, object_id: str, add: Mapping[str, Sequence[str]]) -> str:
    perms = sorted(f"{k}:{x.lower()}" for k, v in add.items() for x in v)
    return "|".join(("ap", vault_id.rstrip("/").lower(), object_id.lower(), *perms))


def write_key(plan: RoleAssignmentPlan | AccessPolicyPlan) -> str:
    """The identity of the write a plan makes (case-insensitive ARM ids): one open grant per key."""
    if isinstance(plan, RoleAssignmentPlan):
        return _ra_key(plan.scope, plan.principal_id, plan.role_definition_id)
    return _ap_key(plan.vault_id, plan.object_id, plan.add)


def _summary(f: Finding) -> dict[str, Any]:
    d = f.denial
    return {"cause": f.cause, "occurrences": f.occurrences, "operation": d.operation,
            "principal": d.principal.to_dict(), "vault": d.vault.to_dict(),
            "object": d.object.to_dict() if d.object else None, "source": d.source}


def _new_record(ctx: ApplyContext, f: Finding, outcome: Outcome, **kw: Any) -> GrantRecord:
    plan = f.plan
    proof = ctx.proof_for(f)
    # What entitled the change (the audit row we read, the approval, or the operator's token) stays on the record.
    summary = dict(_summary(f), proof=proof.to_dict() if proof else None)
    base: dict[str, Any] = {"alert_id": ctx.alert_id or f.denial.alert_id,
                            "correlation_id": f.denial.correlation_id, "finding": summary,
                            "plan": plan.to_dict() if plan else None, "actor": ctx.actor}
    if isinstance(plan, RoleAssignmentPlan):
        base.update(vault_id="/".join(plan.scope.split("/")[:9]), principal_id=plan.principal_id, scope=plan.scope,
                    role_definition_id=plan.role_definition_id)
    elif isinstance(plan, AccessPolicyPlan):
        base.update(vault_id=plan.vault_id, principal_id=plan.object_id, scope=plan.vault_id)
    base.update(kw)
    return GrantRecord(outcome=outcome, time=ctx.now, **base)


def _log(record: GrantRecord) -> None:
    log.info("grant %s", record.outcome, extra={"kv_remediate": {
        "event": "grant", "grant_id": record.id, "outcome": record.outcome, "refused_by": record.refused_by,
        "alert_id": record.alert_id, "vault": record.vault_id, "principal": record.principal_id,
        "scope": record.scope, "expires_at": record.expires_at.isoformat() if record.expires_at else None}})


async def _record(ctx: ApplyContext, f: Finding, outcome: Outcome, **kw: Any) -> GrantRecord:
    record = _new_record(ctx, f, outcome, **kw)
    await asyncio.to_thread(ctx.grants.add, record)
    _log(record)
    return record


async def _settle(grants: GrantStore, rec: GrantRecord, outcome: Outcome, **changes: Any) -> GrantRecord:
    """Move ``rec`` on from its current outcome; if someone else settled it first, their record stands."""
    new = replace(rec, outcome=outcome, **changes)
    if not await asyncio.to_thread(grants.settle, rec.id, rec.outcome, new):
        current = await asyncio.to_thread(grants.get, rec.id)
        return current or rec
    _log(new)
    return new


def _applied(rec: GrantRecord, adopted: bool) -> ApplyOutcome:
    return ApplyOutcome(True, "applied", grant_id=rec.id,
                        expiry=Expiry(rec.expires_at.isoformat() if rec.expires_at else None),
                        assignment_id=rec.assignment_id,
                        permissions_added={k: tuple(v) for k, v in rec.permissions_added.items()}
                        if rec.permissions_added else None, adopted=adopted,
                        detail=f"an earlier attempt of this grant ({rec.id}) had already made it; kept as that "
                        "grant, with its original expiry" if adopted else None)


def _reported(rec: GrantRecord) -> ApplyOutcome:
    """The apply outcome for a settled record."""
    if rec.outcome == "applied":
        return _applied(rec, adopted=False)
    if rec.outcome == "refused":
        return ApplyOutcome(False, "refused", refused_by=rec.refused_by, reason=rec.detail, grant_id=rec.id)
    if rec.outcome == "failed":
        return ApplyOutcome(False, "failed", error=rec.detail, grant_id=rec.id)
    return ApplyOutcome(False, rec.outcome, grant_id=rec.id, detail=rec.detail)


async def _take_slot(ctx: ApplyContext, vault_id: str, claimant: str) -> tuple[bool, ClaimKey | None]:
    """One of ``max_grants_per_hour`` slots per vault, claimed atomically across instances (and its key)."""
    if ctx.slots is None:
        return True, None
    for i in range(ctx.policy.max_grants_per_hour):
        key: ClaimKey = ("rate", vault_id.lower(), str(i))
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


async def _present(rec: GrantRecord, writer: ArmWriter) -> bool:
    """Does Azure hold what this record's write would make? Read fresh, for adoption and for the reconciler."""
    plan = rec.plan or {}
    if rec.requests and rec.scope:      # PIM: one of our (single-use) requests took effect
        for name in rec.requests:
            if await writer.pim_request_status(rec.scope, name) == "provisioned":
                return True
        return False
    if rec.role_definition_id and rec.scope and rec.principal_id:
        name = assignment_name(rec.scope, rec.principal_id, rec.role_definition_id.rsplit("/", 1)[-1])
        got = await writer.get_role_assignment(rec.scope, name)
        return got is not None and got.principal_id.lower() == rec.principal_id.lower()
    if rec.permissions_added and rec.vault_id and rec.principal_id:
        have = await writer.entry_permissions(rec.vault_id, rec.principal_id, plan.get("tenant_id"))
        for kind, perms in rec.permissions_added.items():
            held = {x.lower() for x in have.get(kind, [])}
            if "all" not in held and any(p.lower() not in held for p in perms):
                return False
        return True
    return False


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
        done = await _settle(ctx.grants, rec, "already_granted", before={"role_assignment": "present"},
                             after={"role_assignment": "present under another name"}, detail=result.detail)
        return ApplyOutcome(False, "already_granted", grant_id=done.id, detail=result.detail)
    if not await writer.role_assignment_exists(plan.scope, name, plan.role_definition_id, plan.principal_id):
        raise ApplyError(f"assigned {plan.role_name} to {plan.principal_id} at {plan.scope}, but reading it back "
                         f"found no such assignment; grant {rec.id} is recorded as failed; re-run to retry "
                         "(idempotent)")
    run.step = "verified, not yet recorded as applied"
    how = "created" if result.created else "existed under our deterministic name; labelled as this grant"
    done = await _settle(ctx.grants, rec, "applied", before={"role_assignment": None},
                         after={"role_assignment": assignment_id}, assignment_id=assignment_id,
                         detail=f"role assignment {how}")
    return _reported(done) if done.outcome != "applied" else _applied(done, adopted=run.resumed)


async def _apply_pim(f: Finding, plan: RoleAssignmentPlan, writer: ArmWriter, ctx: ApplyContext,
                     run: _Run) -> ApplyOutcome:
    rec = run.rec
    requests = list(rec.requests or [])
    if run.resumed or not requests:   # a request id is single-use in Azure: every request gets a fresh one
        requests.append(str(uuid.uuid4()))
        rec = run.rec = await _settle(ctx.grants, rec, "pending", requests=requests)
    request = requests[-1]
    # Only our own words go to Azure: the catalogue's operation name (or data actions), never the input's spelling.
    op = catalog.operation(f.denial.operation)
    what = op.name if op else ", ".join(f.required.data_actions if f.required else ())
    justification = f"{label(rec.id, rec.expires_at)}; {f.cause} for {what}"
    run.step = f"PIM schedule request {request} sent, not answered"
    result = await writer.pim_assign(plan.scope, request, plan.role_definition_id, plan.principal_id,
                                     ctx.policy.grant_ttl_text or "", justification)
    run.step = f"PIM schedule request {request} answered ({result.status})"
    if result.status == "exists":
        await run.release_slot(ctx)
        done = await _settle(ctx.grants, rec, "already_granted", before={"role_assignment": "present"},
                             detail=f"{result.code}: {result.detail} (an active assignment of this role we did not "
                             "make; nothing was changed)")
        return ApplyOutcome(False, "already_granted", grant_id=done.id, detail=done.detail)
    if result.status == "refused":
        await run.release_slot(ctx)
        done = await _settle(ctx.grants, rec, "refused", refused_by="pim_policy",
                             detail=f"the role's management policy refused the request: {result.code}: "
                             f"{result.detail}; change the policy (e.g. its maximum duration) or the grant_ttl")
        return ApplyOutcome(False, "refused", refused_by="pim_policy", reason=done.detail, grant_id=done.id)
    if result.status == "pending_approval":
        done = await _settle(ctx.grants, rec, "pending_approval",
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
    done = await _settle(ctx.grants, rec, "applied", before={"role_assignment": None},
                         after={"role_assignment": "PIM", "schedule_request": result.request_id},
                         detail="PIM schedule request " + result.request_id)
    return _reported(done) if done.outcome != "applied" else _applied(done, adopted=run.resumed)


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
    done = await _settle(ctx.grants, rec, "applied", after=after)
    return _reported(done) if done.outcome != "applied" else _applied(done, adopted=run.resumed)


async def _run(f: Finding, writer: ArmWriter, ctx: ApplyContext, run: _Run) -> ApplyOutcome:
    """The write, its verifying read and the settling of its record, under the per-finding budget."""
    assert f.plan is not None
    try:
        async with asyncio.timeout(ctx.budget_s):
            if isinstance(f.plan, AccessPolicyPlan):
                return await _apply_access_policy(f, f.plan, writer, ctx, run)
            if ctx.policy.grant_ttl_text and ctx.policy.use_pim:
                return await _apply_pim(f, f.plan, writer, ctx, run)
            return await _apply_rbac(f, f.plan, writer, ctx, run)
    except TimeoutError:
        msg = (f"gave up after {ctx.budget_s:.0f} s at '{run.step}': the write may or may not have reached Azure "
               "and was not verified")
    except (ApplyError, AzureUnavailableError) as exc:
        msg = f"{exc.message} (reached: {run.step})"
    if run.sent:   # the write may have taken effect: one fresh read says which, else the reconciler will
        try:
            if await _present(run.rec, writer):
                done = await _settle(ctx.grants, run.rec, "applied", detail=f"{msg}; yet a fresh read found the "
                                     "write in Azure, so it is recorded as applied")
                return _reported(done) if done.outcome != "applied" else _applied(done, adopted=run.resumed)
        except (ApplyError, AzureUnavailableError) as exc:
            done = await _settle(ctx.grants, run.rec, "pending", detail=f"{msg}; whether it took effect could not be "
                                 f"read ({exc.message}): left pending for the reconciler, which reads Azure")
            return ApplyOutcome(False, "failed", error=done.detail, grant_id=done.id)
    done = await _settle(ctx.grants, run.rec, "failed", detail=msg + "; re-run to retry (idempotent)")
    return _reported(done)


async def _adopt(held: GrantRecord, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome | None:
    """The outcome of an open record of ours whose write reached Azure (adopted: applied, original expiry); None
    when nothing of it is in Azure."""
    if held.outcome == "applied":
        return _applied(held, adopted=True)
    if held.outcome == "pending_approval":
        return await _settle_approval(held, writer, ctx.grants) or _reported(held)
    if await _present(held, writer):
        done = await _settle(ctx.grants, held, "applied", detail=(held.detail or "") +
                             "; adopted by a retry: the write had reached Azure before the attempt stopped")
        return _reported(done) if done.outcome != "applied" else _applied(done, adopted=True)
    return None


async def _resume(f: Finding, held: GrantRecord, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome:
    """A retry met the open record of the same write: adopt what reached Azure, else finish it under that record."""
    return await _adopt(held, writer, ctx) or await _run(f, writer, ctx, _Run(rec=held, resumed=True))


async def _settle_approval(rec: GrantRecord, writer: ArmWriter, grants: GrantStore) -> ApplyOutcome | None:
    """A PIM request awaiting approval: applied once PIM provisioned it, abandoned once it was decided otherwise."""
    statuses = [await writer.pim_request_status(rec.scope or "", r) for r in rec.requests or []]
    if "provisioned" in statuses:
        return _reported(await _settle(grants, rec, "applied", detail=(rec.detail or "") + "; approved"))
    if "pending_approval" in statuses:
        return None
    return _reported(await _settle(grants, rec, "abandoned", detail=(rec.detail or "") +
                                   "; the request was not approved (denied, cancelled or timed out)"))


def _granting_keys(f: Finding) -> list[str]:
    """Write keys of grants of ours that could be what the diagnosis found granting (a retry after a crash sees
    its own write as ALREADY_GRANTED): each direct role assignment that grants, and the access-policy add the
    required permissions would have been."""
    keys = [_ra_key(a.scope, a.principal_id, a.role_definition_id) for a in f.evidence.role_assignments
            if a.grants and a.via == "direct" and a.scope and a.role_definition_id and a.principal_id]
    vault = f.evidence.vault.id if f.evidence.vault else None
    if vault and f.denial.principal.object_id and f.required and f.required.access_policy:
        add = {k: [catalog.canonical_permission(k, p) or p for p in v] for k, v in f.required.access_policy.items()}
        keys.append(_ap_key(vault, f.denial.principal.object_id, add))
    return keys


async def _adopt_granting(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome | None:
    """An ALREADY_GRANTED finding whose grant is an open grant of ours: adopt it (applied, original expiry)."""
    for key in _granting_keys(f):
        held = await asyncio.to_thread(ctx.grants.open_for, key)
        adopted = await _adopt(held, writer, ctx) if held is not None else None
        if adopted is not None:
            return adopted
    return None


async def apply_one(f: Finding, writer: ArmWriter, ctx: ApplyContext) -> ApplyOutcome:
    """Guard, record the intent, write once, verify, settle; the outcome is merged into the finding's JSON."""
    if f.plan is None:
        if f.cause == Cause.ALREADY_GRANTED:
            adopted = await _adopt_granting(f, writer, ctx) if ctx.requested else None
            return adopted or ApplyOutcome(False, "already_granted",
                                           detail="the vault already grants this; nothing to change")
        return ApplyOutcome(False, "no_plan", detail="no grant is the fix for this cause")
    vault_id = f.plan.vault_id if isinstance(f.plan, AccessPolicyPlan) else "/".join(f.plan.scope.split("/")[:9])
    recent = await asyncio.to_thread(ctx.grants.count_applied_since, vault_id, ctx.now - HOUR) if ctx.requested else 0
    verdict = check(f, ctx.policy, recent, requested=ctx.requested, proof=ctx.proof_for(f),
                    own_principals=ctx.own_principals)
    key = write_key(f.plan)
    if verdict.allowed:
        held = await asyncio.to_thread(ctx.grants.open_for, key)
        if held is not None:   # a retry of a write we began: resume it, without a new slot
            return await _resume(f, held, writer, ctx)
    claimant = f"{vault_id}|{f.denial.identity_key()}|{ctx.now}"
    slot: ClaimKey | None = None
    if verdict.allowed:
        won, slot = await _take_slot(ctx, vault_id, claimant)
        if not won:
            verdict = replace(verdict, allowed=False, refused_by="max_grants_per_hour",
                              reason=f"all {ctx.policy.max_grants_per_hour} grant slots of the last hour are taken")
    if not verdict.allowed:
        if ctx.requested and verdict.refused_by not in ("mode", "apply"):
            rec = await _record(ctx, f, "refused", refused_by=verdict.refused_by, detail=verdict.reason)
            return ApplyOutcome(False, "refused", refused_by=verdict.refused_by, reason=verdict.reason,
                                grant_id=rec.id)
        return ApplyOutcome(False, "suggested", refused_by=verdict.refused_by, reason=verdict.reason)
    expires = ctx.now + ctx.policy.grant_ttl if ctx.policy.grant_ttl else None
    kw: dict[str, Any] = {}
    if isinstance(f.plan, AccessPolicyPlan):
        kw["permissions_added"] = {k: list(v) for k, v in f.plan.add.items() if v}
        kw["before"] = next(({k: list(v) for k, v in e.permissions.items()} for e in f.evidence.access_policies
                             if e.via == "direct" and not e.application_id), {}) or {}
    elif ctx.policy.grant_ttl_text and ctx.policy.use_pim:
        kw["requests"] = [str(uuid.uuid4())]
    else:   # the deterministic name is the write's identity in Azure: recorded before the write
        name = assignment_name(f.plan.scope, f.plan.principal_id, f.plan.role_definition_id.rsplit("/", 1)[-1])
        kw["assignment_id"] = f"{f.plan.scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    intent = _new_record(ctx, f, "pending", expires_at=expires, write_key=key,
                         detail="intent recorded; the write was not confirmed", **kw)
    run = _Run(rec=intent, slot=slot, claimant=claimant)
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
    _log(intent)
    return await _run(f, writer, ctx, run)


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
        out.append(replace(f, outcome=lead.shared(
            f"the same plan was handled for another finding in this batch ({lead.grant_id})")))
    return out


# --- revocation ----------------------------------------------------------------------------------------------

async def _owner_elsewhere(record: GrantRecord, got: Assignment, grants: GrantStore) -> str | None:
    """The id of another open grant whose label the assignment now carries (it is theirs to revoke), or None."""
    mark = parse_label(got.description)
    if mark is None or mark[0] == record.id.lower():
        return None
    other = await asyncio.to_thread(grants.get, mark[0])
    return other.id if other is not None and other.is_open else None


async def revoke(record: GrantRecord, writer: ArmWriter, grants: GrantStore, now: datetime,
                 actor: str | None = None, why: str = "expired") -> dict[str, Any]:
    """Undo exactly what one applied grant changed; never a change this function did not make."""
    if record.outcome != "applied":
        return {"grant_id": record.id, "revoked": False, "reason": f"record is '{record.outcome}', not an applied "
                "grant: nothing of ours to undo"}
    if record.revoked_at is not None:
        return {"grant_id": record.id, "revoked": False, "reason": f"already revoked at {record.revoked_at}"}
    detail: str
    if record.requests or (record.detail and record.detail.startswith("PIM")):
        detail = "PIM expires the assignment itself"
    elif record.assignment_id and record.scope:
        name = record.assignment_id.rsplit("/", 1)[-1]
        got = await writer.get_role_assignment(record.scope, name)
        owner = await _owner_elsewhere(record, got, grants) if got is not None else None
        if got is None:
            detail = f"role assignment {record.assignment_id} was already gone"
        elif owner is not None:
            detail = (f"role assignment {record.assignment_id} is now labelled as grant {owner}, which is still open: "
                      "left in place for that grant")
        else:
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
    else:
        return {"grant_id": record.id, "revoked": False, "reason": "record names nothing to undo"}
    if await asyncio.to_thread(grants.mark_revoked, record.id, now, f"{why}: {detail}"):
        await asyncio.to_thread(grants.add, replace(record, id=new_grant_id(), outcome="revoked", time=now, actor=actor,
                                                    revoked_at=now, revoke_detail=f"{why}: revokes {record.id}",
                                                    detail=detail, write_key=None))
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


async def settle_unresolved(writer: ArmWriter, grants: GrantStore, now: datetime,
                            grace: timedelta = GRACE) -> list[dict[str, Any]]:
    """Settle intents a crash left ``pending`` (older than ``grace``) by reading Azure: present -> ``applied``
    with the expiry recorded at intent time; absent -> ``abandoned``. PIM requests awaiting approval are
    re-read: provisioned -> applied, decided otherwise -> abandoned."""
    results: list[dict[str, Any]] = []
    for rec in await asyncio.to_thread(grants.unresolved_before, now - grace):
        try:
            if rec.outcome == "pending_approval":
                out = await _settle_approval(rec, writer, grants)
                if out is not None:
                    results.append({"grant_id": rec.id, "reconciled": out.outcome, "detail": out.detail})
                continue
            if await _present(rec, writer):
                done = await _settle(grants, rec, "applied", detail=f"{rec.detail}; reconciled at {iso(now)}: "
                                     "found in Azure, so the write had taken effect")
            else:
                done = await _settle(grants, rec, "abandoned", detail=f"{rec.detail}; reconciled at {iso(now)}: "
                                     "not in Azure, so the write never took effect")
            results.append({"grant_id": rec.id, "reconciled": done.outcome, "detail": done.detail})
        except (ApplyError, AzureUnavailableError) as exc:
            results.append({"grant_id": rec.id, "reconciled": None, "error": exc.message})
    return results


def _at_or_below(scope: str, vault: str) -> bool:
    s, v = scope.rstrip("/").lower(), vault.rstrip("/").lower()
    return s == v or s.startswith(v + "/")


async def sweep_labelled(writer: ArmWriter, grants: GrantStore, now: datetime,
                         actor: str | None = None) -> list[dict[str, Any]]:
    """Delete expired role assignments labelled as ours whose record cannot revoke them (lost, or not applied).

    Listed per vault we ever began a grant on (ARM's documented list for a scope, no filter: at, above and below
    it), kept only when at or below the vault, named as we name assignments (the deterministic uuid5 of scope,
    principal and role) and labelled "kv-remediate grant <id>; expires <time>" with that time passed. Each
    deletion is recorded as a ``revoked`` record naming the label.
    """
    results: list[dict[str, Any]] = []
    for vault in await asyncio.to_thread(grants.vaults):
        try:
            listed = await writer.list_role_assignments(vault)
        except (ApplyError, AzureUnavailableError) as exc:
            results.append({"vault": vault, "revoked": False, "error": exc.message})
            continue
        for a in listed:
            mark = parse_label(a.description)
            if mark is None or mark[1] is None or mark[1] > now or not _at_or_below(a.scope, vault):
                continue
            if a.name.lower() != assignment_name(a.scope, a.principal_id,
                                                 a.role_definition_id.rsplit("/", 1)[-1]).lower():
                continue   # not a name we would have chosen: not ours, whatever its description says
            rec = await asyncio.to_thread(grants.get, mark[0])
            if rec is not None and rec.is_open:
                continue   # its record revokes it (or settles it first, when still pending)
            try:
                gone = await writer.delete_role_assignment(a.scope, a.name)
            except (ApplyError, AzureUnavailableError) as exc:
                results.append({"grant_id": mark[0], "assignment_id": a.id, "revoked": False, "error": exc.message})
                continue
            state = "missing" if rec is None else f"'{rec.outcome}'"
            detail = (f"{'deleted' if gone else 'already gone:'} role assignment {a.id} labelled as grant {mark[0]} "
                      f"(expired {iso(mark[1])}), whose record is {state}")
            await asyncio.to_thread(grants.add, GrantRecord(
                outcome="revoked", time=now, actor=actor, revoked_at=now, revoke_detail=f"expired: revokes {mark[0]}",
                vault_id=vault, principal_id=a.principal_id, scope=a.scope, role_definition_id=a.role_definition_id,
                assignment_id=a.id, expires_at=mark[1], detail=detail))
            log.info("orphan revoked", extra={"kv_remediate": {"event": "revoke", "grant_id": mark[0],
                                                                "detail": detail}})
            results.append({"grant_id": mark[0], "assignment_id": a.id, "revoked": True, "detail": detail})
    return results


async def reconcile(writer: ArmWriter, grants: GrantStore, now: datetime, actor: str | None = None,
                    grace: timedelta = GRACE) -> list[dict[str, Any]]:
    """The revocation timer's pass (and ``revoke --reconcile``): settle old intents, revoke what has expired,
    then remove expired labelled assignments no record accounts for. Every action is recorded."""
    results = await settle_unresolved(writer, grants, now, grace)
    results += await revoke_expired(writer, grants, now, actor)
    results += await sweep_labelled(writer, grants, now, actor)
    return results
