"""Grant records and their identity: the apply context, the label we write into Azure, the write key of a plan,
recording and settling a grant, the outcome a record reports, and reading back whether its write is in Azure."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ..approvals.model import Approver
from ..facts.writes import ArmWriter
from ..guard import Policy
from ..hsm_model import assignment_name as hsm_assignment_name
from ..hsm_model import normalise_scope
from ..model import AccessPolicyPlan, Finding, HsmRoleAssignmentPlan, Plan, Proof, RoleAssignmentPlan
from ..outcome import ApplyOutcome, Expiry
from ..plan import assignment_name
from ..store.approvals import ApprovalStore
from ..store.claims import ClaimStore
from ..store.encoding import iso, parse_iso
from ..store.grants import MANAGED_HSM, GrantRecord, GrantStore, Outcome

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
    backend: str | None = None
    """Where the writes go: None for live Azure, ``"emulator"`` (store.grants.EMULATOR) for the bundled emulator.
    Part of every write's identity, so a grant made in the emulator is never matched, resumed or repeated by a run
    against Azure, nor the reverse, whichever store both share."""
    approvals: ApprovalStore | None = None
    """Where plans the guard routes to a person (``refused_by: "approval"``) become requests; None: such a plan is
    only suggested."""
    proposer: Approver | None = None
    """The operator whose ``--apply`` (or authenticated ``/api/remediate``) proposes requests: never their approver."""

    def key(self, key: str) -> str:
        """A plan's write key (:func:`write_key`, :func:`ra_key`, :func:`ap_key`) in this run's backend."""
        return f"{self.backend}|{key}" if self.backend else key

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


def ra_key(scope: str, principal_id: str, role_definition_id: str) -> str:
    return "|".join(("ra", scope.rstrip("/").lower(), principal_id.lower(),
                     role_definition_id.rsplit("/", 1)[-1].lower()))


def ap_key(vault_id: str, object_id: str, add: Mapping[str, Sequence[str]]) -> str:
    perms = sorted(f"{k}:{x.lower()}" for k, v in add.items() for x in v)
    return "|".join(("ap", vault_id.rstrip("/").lower(), object_id.lower(), *perms))


def hsm_key(hsm_id: str, scope: str, principal_id: str, role_definition_id: str) -> str:
    """A Managed HSM local role assignment's identity: the HSM, its local scope, the grantee and the role GUID."""
    return "|".join(("hsm", hsm_id.rstrip("/").lower(), _local(scope).lower(), principal_id.lower(),
                     role_definition_id.rsplit("/", 1)[-1].lower()))


def hsm_assignment_id(scope: str, principal_id: str, role_definition_id: str) -> str:
    """The id the HSM gives our assignment: ``{scope}/providers/Microsoft.Authorization/roleAssignments/{name}``
    (``/providers/...`` at ``/``; state_hsm.py cites the recording), under our deterministic name."""
    local = normalise_scope(scope)
    name = hsm_assignment_name(principal_id, local, role_definition_id)
    return f"{'' if local == '/' else local}/providers/Microsoft.Authorization/roleAssignments/{name}"


def write_key(plan: Plan) -> str:
    """The identity of the write a plan makes (case-insensitive ARM ids): one open grant per key."""
    if isinstance(plan, RoleAssignmentPlan):
        return ra_key(plan.scope, plan.principal_id, plan.role_definition_id)
    if isinstance(plan, HsmRoleAssignmentPlan):
        return hsm_key(plan.hsm, plan.scope, plan.principal_id, plan.role_definition_id)
    return ap_key(plan.vault_id, plan.object_id, plan.add)


def _summary(f: Finding) -> dict[str, Any]:
    d = f.denial
    return {"cause": f.cause, "occurrences": f.occurrences, "operation": d.operation,
            "principal": d.principal.to_dict(), "vault": d.vault.to_dict(),
            "object": d.object.to_dict() if d.object else None, "source": d.source}


def resource_of(plan: Plan) -> str:
    """The vault (or Managed HSM) a plan writes on, as its ARM id: a grant record's ``vault_id``, and the resource
    whose hourly grant budget and rate slots the write counts against."""
    if isinstance(plan, AccessPolicyPlan):
        return plan.vault_id
    if isinstance(plan, HsmRoleAssignmentPlan):
        return plan.hsm
    return "/".join(plan.scope.split("/")[:9])


def new_record(ctx: ApplyContext, f: Finding, outcome: Outcome, **kw: Any) -> GrantRecord:
    plan = f.plan
    proof = ctx.proof_for(f)
    # What entitled the change (the audit row we read, the approval, or the operator's token) stays on the record.
    summary = dict(_summary(f), proof=proof.to_dict() if proof else None)
    base: dict[str, Any] = {"alert_id": ctx.alert_id or f.denial.alert_id,
                            "correlation_id": f.denial.correlation_id, "finding": summary,
                            "plan": plan.to_dict() if plan else None, "actor": ctx.actor, "backend": ctx.backend}
    if isinstance(plan, RoleAssignmentPlan):
        base.update(vault_id=resource_of(plan), principal_id=plan.principal_id, scope=plan.scope,
                    role_definition_id=plan.role_definition_id)
    elif isinstance(plan, AccessPolicyPlan):
        base.update(vault_id=plan.vault_id, principal_id=plan.object_id, scope=plan.vault_id)
    elif isinstance(plan, HsmRoleAssignmentPlan):   # the HSM's ARM id is the "vault"; the scope is the local one
        base.update(vault_id=resource_of(plan), principal_id=plan.principal_id, scope=_local(plan.scope),
                    role_definition_id=plan.role_definition_id, resource_kind=MANAGED_HSM)
    base.update(kw)
    return GrantRecord(outcome=outcome, time=ctx.now, **base)


def _local(scope: str) -> str:
    try:
        return normalise_scope(scope)
    except ValueError:   # a refused plan's scope, recorded as it was
        return scope


def log_record(record: GrantRecord) -> None:
    log.info("grant %s", record.outcome, extra={"kv_remediate": {
        "event": "grant", "grant_id": record.id, "outcome": record.outcome, "refused_by": record.refused_by,
        "alert_id": record.alert_id, "vault": record.vault_id, "principal": record.principal_id,
        "scope": record.scope, "expires_at": record.expires_at.isoformat() if record.expires_at else None}})


async def add_record(ctx: ApplyContext, f: Finding, outcome: Outcome, **kw: Any) -> GrantRecord:
    record = new_record(ctx, f, outcome, **kw)
    await asyncio.to_thread(ctx.grants.add, record)
    log_record(record)
    return record


async def settle(grants: GrantStore, rec: GrantRecord, outcome: Outcome, **changes: Any) -> GrantRecord:
    """Move ``rec`` on from its current outcome; if someone else settled it first, their record stands."""
    new = replace(rec, outcome=outcome, **changes)
    if not await asyncio.to_thread(grants.settle, rec.id, rec.outcome, new):
        current = await asyncio.to_thread(grants.get, rec.id)
        return current or rec
    log_record(new)
    return new


def same_backend(rec: GrantRecord, backend: str | None) -> bool:
    """Whether ``rec`` was made where this run writes (live Azure and the emulator are never mixed)."""
    return (rec.backend or None) == (backend or None)


def backend_mismatch(rec: GrantRecord, backend: str | None) -> str:
    """Why a record of the other backend is left alone, and what to run instead."""
    if rec.in_emulator:
        return ("made in the bundled emulator (--snapshot), not in Azure: left alone by a run against Azure; "
                "run the command with --snapshot FILE to act on it there")
    return ("made in Azure, not in the bundled emulator: left alone by a --snapshot run; run the command without "
            "--snapshot to act on it in Azure")


def repeated_detail(rec: GrantRecord) -> str:
    first = rec.first_time or rec.time
    where = "the bundled emulator (each --snapshot run starts from the snapshot again)" if rec.in_emulator else \
        "Azure (it was no longer there)"
    return (f"the same write as grant {rec.id} (first made {iso(first)}) was made again in {where}; recorded on "
            f"that grant, now made {rec.repeats + 1} times, not as a new record")


def applied_outcome(rec: GrantRecord, adopted: bool) -> ApplyOutcome:
    if rec.repeats and not adopted:
        return replace(applied_outcome(replace(rec, repeats=0), adopted), repeats=rec.repeats,
                       detail=repeated_detail(rec))
    return ApplyOutcome(True, "applied", grant_id=rec.id,
                        expiry=Expiry(rec.expires_at.isoformat() if rec.expires_at else None),
                        assignment_id=rec.assignment_id,
                        permissions_added={k: tuple(v) for k, v in rec.permissions_added.items()}
                        if rec.permissions_added else None, adopted=adopted,
                        detail=f"an earlier attempt of this grant ({rec.id}) had already made it; kept as that "
                        "grant, with its original expiry" if adopted else None)


def reported(rec: GrantRecord) -> ApplyOutcome:
    """The apply outcome for a settled record."""
    if rec.outcome == "applied":
        return applied_outcome(rec, adopted=False)
    if rec.outcome == "refused":
        return ApplyOutcome(False, "refused", refused_by=rec.refused_by, reason=rec.detail, grant_id=rec.id)
    if rec.outcome == "failed":
        return ApplyOutcome(False, "failed", error=rec.detail, grant_id=rec.id)
    return ApplyOutcome(False, rec.outcome, grant_id=rec.id, detail=rec.detail)


async def _hsm_present(rec: GrantRecord, writer: ArmWriter) -> bool:
    if not (rec.vault_id and rec.scope and rec.role_definition_id and rec.principal_id):
        return False
    return await writer.hsm_holds(rec.vault_id, rec.scope, rec.role_definition_id, rec.principal_id)


async def present_in_azure(rec: GrantRecord, writer: ArmWriter) -> bool:
    """Does Azure hold what this record's write would make? Read fresh, for adoption and for the reconciler."""
    plan = rec.plan or {}
    if rec.is_hsm:                      # a Managed HSM local role assignment, read on the HSM's data plane
        return await _hsm_present(rec, writer)
    if rec.requests and rec.scope:      # PIM: one of our (single-use) requests took effect
        return "provisioned" in [await writer.pim_request_status(rec.scope, name) for name in rec.requests]
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

async def settle_approval(rec: GrantRecord, writer: ArmWriter, grants: GrantStore) -> ApplyOutcome | None:
    """A PIM request awaiting approval: applied once PIM provisioned it, abandoned once it was decided otherwise."""
    statuses = [await writer.pim_request_status(rec.scope or "", r) for r in rec.requests or []]
    if "provisioned" in statuses:
        return reported(await settle(grants, rec, "applied", detail=(rec.detail or "") + "; approved"))
    if "pending_approval" in statuses:
        return None
    return reported(await settle(grants, rec, "abandoned", detail=(rec.detail or "") +
                                   "; the request was not approved (denied, cancelled or timed out)"))
