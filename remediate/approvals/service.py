"""Approval requests, with side effects: open one for a plan the guard routes to a person, decide one (recording
the act with a compare-and-swap, and for the approval that completes it, re-reading the tenant and applying exactly
the approved write through the normal apply path), expire the ones whose time has passed, list them.

The store is synchronous (Tables' sync client, SQLite) and runs in a worker thread, as the grant store does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from ..errors import StorageError
from ..guard import Verdict
from ..model import Cause, Finding, Proof
from . import model
from .model import Act, ApprovalRequest, Approver, EndCode, RefusalCode, Rules, Step

if TYPE_CHECKING:
    from ..apply.records import ApplyContext
    from ..facts.arm import ArmFacts
    from ..outcome import ApplyOutcome
    from ..store.approvals import ApprovalStore, Versioned

log = logging.getLogger("kv_remediate.approvals")
_TRIES = 50
_REFUSAL_TRIES = 3
STALE_APPROVED = timedelta(minutes=5)
"""How long a request may sit in ``approved`` (its apply crashed mid-way) before :func:`resume_approved` finishes
it: longer than one apply may take (``ApplyContext.budget_s``)."""

DecidedStatus = Literal["recorded", "applied", "failed", "rejected", "refused"]


@dataclass(frozen=True)
class Decided:
    """What one act came to: ``recorded`` (an approval counted, more are needed), ``applied`` (this act completed
    the approvals and the write was applied and verified), ``failed`` (it completed them but nothing was applied:
    see ``request.end``/``request.detail``), ``rejected``, or ``refused`` (the act did not count: ``refused``
    says why; for ``not_pending`` the request shows the outcome someone else reached). ``request`` is the request
    afterwards (None only for ``not_found``); ``outcome`` the apply outcome when this act applied."""

    status: DecidedStatus
    request: ApprovalRequest | None
    message: str
    refused: RefusalCode | None = None
    outcome: ApplyOutcome | None = None


def _id() -> str:
    import uuid

    return str(uuid.uuid4())


async def propose(store: ApprovalStore, finding: Finding, ctx: ApplyContext,
                  requested_by: Approver | None = None) -> ApprovalRequest | Verdict:
    """Open (or join) the request for ``finding``'s plan, which the guard routed to approval; the guard's refusal
    when the plan is not one we would write (never a request then)."""
    assert finding.plan is not None
    change = model.exact_change(finding.plan, ctx.policy)
    if isinstance(change, Verdict):
        return change
    doc = finding.to_dict()
    doc.pop("outcome", None)
    origin = model.Origin(requested_by, ctx.alert_id or finding.denial.alert_id, ctx.backend)
    request = model.new_request(_id(), change=change, denial=finding.denial, finding=doc, policy=ctx.policy,
                                now=ctx.now, origin=origin)
    got = await asyncio.to_thread(store.open, request)
    if got.id != request.id and got.state == "pending" and ctx.now >= got.expires_at:
        await _swap_loop(store, got.id, lambda r: model.expire(r, ctx.now))   # never join a request past its time
        got = await asyncio.to_thread(store.open, request)
    log.info("approval %s %s", got.id, "opened" if got.id == request.id else "joined", extra={"kv_remediate": {
        "event": "approval", "approval_id": got.id, "state": got.state, "plan_hash": got.plan_hash,
        "principal": got.grantee, "scope": got.change.scope}})
    return got


async def get(store: ApprovalStore, id: str) -> ApprovalRequest | None:
    """The request (as stored; a pending one past its expiry is shown as it is until :func:`expire_due`)."""
    got = await asyncio.to_thread(store.get, id)
    return got.request if got else None


async def expire_due(store: ApprovalStore, now: datetime) -> list[ApprovalRequest]:
    """Every pending request whose time has passed becomes ``expired`` (default-deny); returns those it ended."""
    ended = []
    for req in await asyncio.to_thread(store.list, state="pending", limit=None):
        if now >= req.expires_at:
            done = await _swap_loop(store, req.id, lambda r: model.expire(r, now))
            if done is not None and done.request.state == "expired" and done.changed:
                ended.append(done.request)
    return ended


async def pending(store: ApprovalStore, now: datetime, limit: int | None = 100) -> list[ApprovalRequest]:
    """The requests still waiting for people (expired ones are ended first), newest first."""
    await expire_due(store, now)
    return await asyncio.to_thread(store.list, state="pending", limit=limit)


async def _swap_loop(store: ApprovalStore, id: str, step_of: Any) -> Step | None:
    """Read, compute the step, compare-and-swap; again on a lost race. None when the request does not exist.

    A refused act is recorded as best effort: after a few lost races (many people clicking at once) it is answered
    from the latest read without being appended, so a crowd of late clicks cannot starve each other; a counted act
    (an approval, a reject, the end of a request) is retried until it lands or ``_TRIES`` is spent."""
    for attempt in range(_TRIES):
        got: Versioned | None = await asyncio.to_thread(store.get, id)
        if got is None:
            return None
        step: Step = step_of(got.request)
        if not step.changed:
            return step
        if step.refused is not None and attempt >= _REFUSAL_TRIES:
            log.info("approval %s: a refused act (%s) was not recorded after %d lost races", id, step.refused,
                     attempt)
            return replace(step, request=got.request, changed=False)
        if await asyncio.to_thread(store.swap, step.request, got.version) is not None:
            return step
    raise StorageError(f"approval request {id} kept changing under {_TRIES} attempts to update it; retry")


async def decide(store: ApprovalStore, id: str, act: Act, *, facts: ArmFacts | None,
                 ctx: ApplyContext) -> Decided:
    """Record ``act`` on request ``id`` (see :func:`_decide`), counted in telemetry by what it came to."""
    from .. import telemetry

    done = await _decide(store, id, act, facts=facts, ctx=ctx)
    telemetry.record_approval(done.status, done.request, act.channel, act.approver.object_id.lower()[:64],
                              done.refused)
    return done


async def _decide(store: ApprovalStore, id: str, act: Act, *, facts: ArmFacts | None,
                  ctx: ApplyContext) -> Decided:
    """Record ``act`` on request ``id`` at ``ctx.now`` and, when it completes the approvals, apply the write.

    ``facts`` must be a fresh fact source (nothing cached from before the approval: the tenant is read again);
    ``ctx`` the apply context of a normal run (policy, grant store, rate slots, backend, own principals), its
    ``now`` the time of the act (``facts`` may be None for a reject, which reads nothing). Exactly once: only the
    act whose compare-and-swap moved the request to
    ``approved`` applies; concurrent and later acts are refused (``not_pending``) and see the outcome."""
    if act.verb == "approve" and facts is None:
        raise ValueError("decide() needs a fact source for an approval (it re-reads the tenant and applies)")
    first = await asyncio.to_thread(store.get, id)
    if first is None:
        return Decided("refused", None, f"there is no approval request {id}", refused="not_found")
    if (first.request.backend or None) != (ctx.backend or None):
        where = "the bundled emulator" if first.request.backend else "Azure"
        return Decided("refused", first.request, f"request {id} is about a change in {where}; decide it with a run "
                       "against the same backend", refused="wrong_backend")
    step = await _swap_loop(store, id, lambda r: model.decide(r, act, model.rules_for(r, ctx.policy), ctx.now))
    assert step is not None
    log.info("approval %s: %s by %s via %s: %s", id, act.verb, act.approver.object_id, act.channel,
             step.refused or step.request.state, extra={"kv_remediate": {
                 "event": "approval_decision", "approval_id": id, "verb": act.verb,
                 "approver": act.approver.object_id, "channel": act.channel, "origin": act.origin,
                 "refused": step.refused, "state": step.request.state}})
    if step.refused is not None:
        return Decided("refused", step.request, step.message, refused=step.refused)
    if not step.apply:
        status: DecidedStatus = "rejected" if step.request.state == "rejected" else "recorded"
        return Decided(status, step.request, step.message)
    assert facts is not None
    return await _carry_out(store, step.request, facts=facts, ctx=ctx)


async def _carry_out(store: ApprovalStore, req: ApprovalRequest, *, facts: ArmFacts,
                     ctx: ApplyContext) -> Decided:
    """The approved request's write: re-diagnose the stored denial, compare the plan's hash, apply exactly that
    write with the approval as its proof, and end the request with what happened."""
    end, detail, outcome = await _apply_approved(req, facts=facts, ctx=ctx)
    doc = outcome.to_dict() if outcome is not None else None
    grant_id = outcome.grant_id if outcome is not None else None

    def finish(r: ApprovalRequest) -> Step:
        if r.state != "approved":
            return Step(r, False)
        return Step(model.finish(r, end, ctx.now, detail=detail, grant_id=grant_id, outcome=doc), True)
    step = await _swap_loop(store, req.id, finish)
    final = step.request if step is not None else req
    log.info("approval %s ended: %s (%s)", req.id, end, detail or "", extra={"kv_remediate": {
        "event": "approval_end", "approval_id": req.id, "end": end, "grant_id": grant_id}})
    status: DecidedStatus = "applied" if end == "applied" else "failed"
    message = f"the change was applied and verified (grant {grant_id})" + (f"; {detail}" if detail else "") \
        if end == "applied" else (detail or end)
    return Decided(status, final, message, outcome=outcome)


def _drift(old: model.ExactChange, new: model.ExactChange) -> str:
    a, b = old.to_dict(), new.to_dict()
    changed = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b.get(k)]
    return "the plan changed since it was proposed (" + "; ".join(changed) + "); nothing was applied"


async def _apply_approved(req: ApprovalRequest, *, facts: ArmFacts,
                          ctx: ApplyContext) -> tuple[EndCode, str | None, ApplyOutcome | None]:
    from ..apply import apply_one
    from ..errors import RemediateError
    from ..facts.writes import ArmWriter
    from ..plan import PlanOptions
    from ..service import DiagnoseOptions, diagnose

    try:
        got = await diagnose([req.denial], facts, DiagnoseOptions(PlanOptions(object_scope=ctx.policy.object_scope)),
                             entry="approval")
    except RemediateError as exc:
        return "error", f"the tenant could not be read again ({exc.message}); nothing was applied", None
    finding = got.findings[0]
    if finding.plan is None:
        if finding.cause == Cause.ALREADY_GRANTED:
            return "already_granted", "the access exists now; nothing was applied", None
        return "drift", f"the denial is now diagnosed as {finding.cause}, which no grant fixes; nothing was applied", \
            None
    change = model.exact_change(finding.plan, ctx.policy)
    if isinstance(change, Verdict):
        return "refused", f"{change.refused_by}: {change.reason}", None
    if change.hash() != req.plan_hash:
        return "drift", _drift(req.change, change), None
    names = ", ".join(f"{a.display_name} ({a.object_id})" if a.display_name else a.object_id for a in req.approved_by)
    proof = Proof("approval", f"approval {req.id} by {names}")
    actx = replace(ctx, requested=True, operator=None, proofs={finding.denial.identity_key(): proof},
                   alert_id=req.alert_id, approvals=None)
    outcome = await apply_one(finding, ArmWriter(facts), actx)
    return _end_of(outcome), outcome.reason or outcome.error or outcome.detail, outcome


def _end_of(outcome: ApplyOutcome) -> EndCode:
    if outcome.applied:
        return "applied"
    if outcome.outcome == "already_granted":
        return "already_granted"
    if outcome.outcome in ("refused", "suggested"):
        return "refused"
    return "error"


async def resume_approved(store: ApprovalStore, *, facts: ArmFacts, ctx: ApplyContext,
                          older_than: timedelta = STALE_APPROVED) -> list[Decided]:
    """Finish requests left ``approved`` by a crash between the approval and the end of its apply (the revocation
    timer calls this): the apply path's intent-first records make the write resume or be adopted, never repeat."""
    out = []
    for req in await asyncio.to_thread(store.list, state="approved", limit=None):
        at = req.approved_at
        if (req.backend or None) == (ctx.backend or None) and at is not None and at <= ctx.now - older_than:
            out.append(await _carry_out(store, req, facts=facts, ctx=ctx))
    return out


__all__ = ["STALE_APPROVED", "Decided", "DecidedStatus", "Rules", "decide", "expire_due", "get", "pending",
           "propose", "resume_approved"]
