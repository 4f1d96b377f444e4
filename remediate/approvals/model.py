"""Approval requests (issue 11), pure: the typed request bound to one exact write, its hash, and the state
machine that decides what a person's act does to it. No I/O and no clock: ``now`` is always passed in.

States::

    pending --(min_approvals distinct approvers)--> approved --(the write applied, verified)--> applied
       |                                               \\--(drift, already granted, refused, error)--> failed
       +--(any allowed approver rejects)--> rejected
       +--(now >= expires_at)--> expired

Single use: only ``pending`` takes decisions; ``approved`` belongs to the one caller whose compare-and-swap moved
it there (that caller applies); every later act is refused with ``not_pending`` and sees the outcome.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from ..armid import is_guid
from ..guard import Policy, Verdict, exact_write
from ..model import PERMISSION_KINDS, AccessPolicyPlan, Denial, HsmRoleAssignmentPlan, Plan, RoleAssignmentPlan
from ..store.encoding import iso as _iso
from ..store.encoding import parse_iso as _time

ApprovalState = Literal["pending", "approved", "applied", "failed", "rejected", "expired"]
OPEN_STATES: tuple[ApprovalState, ...] = ("pending", "approved")
Channel = Literal["page", "slack", "teams", "cli"]
Verb = Literal["approve", "reject"]
RefusalCode = Literal["not_found", "not_pending", "expired", "bad_identity", "self_approval", "requester",
                      "not_an_approver", "repeat", "wrong_backend"]
"""Why an act did not count: no such request; the request is no longer pending (replay, double click, decided by
someone else); it expired; the identity is not an object id; the approver is the grantee; the approver proposed it
(an operator's ``--apply``); not on the policy's ``approvers`` list; this approver already approved it; the request
was made against the other backend (the bundled emulator vs Azure)."""
EndCode = Literal["applied", "rejected", "expired", "drift", "already_granted", "refused", "error"]
"""How a request ended: ``applied`` (state applied); ``rejected``/``expired`` (those states); and, in state failed,
``drift`` (the tenant, or the plan it yields, changed since the proposal), ``already_granted`` (the access exists
now), ``refused`` (the guard refuses the write today), ``error`` (the write failed or could not be verified)."""
MAX_ENTRIES = 50
"""Decisions recorded per request; past this, refused attempts are no longer appended (the entity stays small)."""


@dataclass(frozen=True, slots=True)
class Approver:
    """A person (or operator) as an Entra ID identity: the object id (``oid``) and, for display, a name.

    ``groups``: the object ids of the person's groups as the caller authenticated them (the token's ``groups``
    claim); an ``approvers`` entry matches the person's own id or one of these. Not recorded (only the oid is)."""

    object_id: str
    display_name: str | None = None
    groups: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "display_name": self.display_name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Approver:
        return cls(str(d["object_id"]), d.get("display_name"))


@dataclass(frozen=True, slots=True)
class Act:
    """What a signed-in person asks of a request, and from where: the caller (page, Slack, Teams, CLI) has
    authenticated ``approver`` already; ``origin`` is the client IP (page, CLI host) or the Slack team id."""

    verb: Verb
    approver: Approver
    channel: Channel
    origin: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One act as recorded on the request: who, when, through which channel and from where, and whether it
    counted (``refused`` says why not)."""

    verb: Verb
    approver: Approver
    channel: Channel
    at: datetime
    origin: str | None = None
    reason: str | None = None
    refused: RefusalCode | None = None

    @property
    def counted(self) -> bool:
        return self.refused is None

    def to_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, "approver": self.approver.to_dict(), "channel": self.channel,
                "at": _iso(self.at), "origin": self.origin, "reason": self.reason, "refused": self.refused}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecisionEntry:
        return cls(d["verb"], Approver.from_dict(d["approver"]), d["channel"], _time(d["at"]), d.get("origin"),
                   d.get("reason"), d.get("refused"))


@dataclass(frozen=True, slots=True)
class ExactChange:
    """The exact write a plan makes, as the approval is bound to it: the grantee, the scope, the role (RBAC) or the
    access-policy permissions, the catalogue's tier, and the grant's lifetime (``grant_ttl``, PIM or not)."""

    kind: str
    principal_id: str
    principal_type: str | None
    scope: str
    tier: int
    role_definition_id: str | None = None
    permissions: Mapping[str, tuple[str, ...]] | None = None
    grant_ttl: str | None = None
    use_pim: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "principal_id": self.principal_id, "principal_type": self.principal_type,
                "scope": self.scope, "tier": self.tier, "role_definition_id": self.role_definition_id,
                "permissions": {k: list(v) for k, v in self.permissions.items()} if self.permissions is not None
                else None, "grant_ttl": self.grant_ttl, "use_pim": self.use_pim}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExactChange:
        perms = d.get("permissions")
        return cls(d["kind"], d["principal_id"], d.get("principal_type"), d["scope"], int(d["tier"]),
                   d.get("role_definition_id"),
                   {k: tuple(v) for k, v in perms.items()} if perms is not None else None, d.get("grant_ttl"),
                   bool(d.get("use_pim")))

    def hash(self) -> str:
        """sha256 (hex) of the canonical JSON of this change (sorted keys, no spaces, ids lower-case)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()


def exact_change(plan: Plan, policy: Policy) -> ExactChange | Verdict:
    """The change a plan makes, canonical (``guard.exact_write``: lower-case ids, catalogue tier, sorted
    permissions), with the policy's grant lifetime; the guard's refusal when the plan is not one we would write."""
    write = exact_write(plan)
    if isinstance(write, Verdict):
        return write
    ttl = policy.grant_ttl_text
    if isinstance(plan, HsmRoleAssignmentPlan):   # the HSM, its local scope, the role, and a custom role's exact
        custom = plan.custom_role                  # data actions
        local = getattr(write.scope, "local", None) or plan.scope   # the guard's normalised /keys[/NAME]
        return ExactChange("hsm_role_assignment", write.principal_id, write.principal_type,
                           f"{str(getattr(write.scope, 'hsm', plan.hsm)).rstrip('/').lower()}{local}", write.tier,
                           role_definition_id=plan.role_definition_id.lower(),
                           permissions={"data_actions": tuple(sorted(custom.data_actions))} if custom else None,
                           grant_ttl=ttl)
    if isinstance(plan, RoleAssignmentPlan):
        return ExactChange("role_assignment", write.principal_id, write.principal_type, str(write.scope).lower(),
                           write.tier, role_definition_id=plan.role_definition_id.lower(), grant_ttl=ttl,
                           use_pim=bool(ttl and policy.use_pim))
    assert isinstance(plan, AccessPolicyPlan)
    perms = {k: tuple(sorted({p.lower() for p in plan.add.get(k, ())})) for k in PERMISSION_KINDS if plan.add.get(k)}
    return ExactChange("access_policy", write.principal_id, write.principal_type, str(write.scope).lower(),
                       write.tier, permissions=perms, grant_ttl=ttl)


def plan_hash(plan: Plan, policy: Policy) -> str | None:
    """The hash an approval is bound to (:meth:`ExactChange.hash`), or None for a plan the guard refuses."""
    change = exact_change(plan, policy)
    return None if isinstance(change, Verdict) else change.hash()


@dataclass(frozen=True)
class ApprovalRequest:
    """One plan waiting for (or decided by) people. ``change`` and ``plan_hash`` are what approving applies;
    ``denial`` is re-diagnosed at approval time (the tenant is read again); ``finding`` is the finding's JSON at
    proposal, for display only (never used to build the write)."""

    id: str
    state: ApprovalState
    plan_hash: str
    change: ExactChange
    denial: Denial
    finding: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    approval_ttl: str
    min_approvals: int
    approvers: tuple[str, ...] = ()        # the policy's allow-list at proposal (empty: any approver)
    requested_by: Approver | None = None   # the operator whose --apply proposed it; None for the app
    alert_id: str | None = None
    backend: str | None = None             # None live Azure, "emulator" the bundled emulator
    decisions: tuple[DecisionEntry, ...] = ()
    ended_at: datetime | None = None
    end: EndCode | None = None
    detail: str | None = None              # why it ended as it did (drift: what changed; error: what failed)
    grant_id: str | None = None            # the grant record of the applied (or attempted) write
    outcome: dict[str, Any] | None = None  # the apply outcome's JSON (outcome.ApplyOutcome.to_dict)
    extra: dict[str, Any] = field(default_factory=dict)   # for callers (e.g. a Slack message's channel/ts)

    @property
    def grantee(self) -> str:
        return self.change.principal_id

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def approved_by(self) -> tuple[Approver, ...]:
        """The distinct approvers whose approval counted, in order."""
        seen: dict[str, Approver] = {}
        for d in self.decisions:
            if d.verb == "approve" and d.counted:
                seen.setdefault(d.approver.object_id, d.approver)
        return tuple(seen.values())

    @property
    def approved_at(self) -> datetime | None:
        """When the last counted approval made it ``approved`` (None while pending)."""
        if self.state == "pending":
            return None
        counted = [d.at for d in self.decisions if d.verb == "approve" and d.counted]
        return counted[-1] if len(counted) >= self.min_approvals else None

    def open_key(self) -> str:
        """At most one open request per exact change and backend (a second denial joins the first request)."""
        return f"{self.backend or 'azure'}|{self.plan_hash}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "plan_hash": self.plan_hash, "change": self.change.to_dict(),
                "denial": self.denial.to_dict(), "finding": self.finding, "created_at": _iso(self.created_at),
                "expires_at": _iso(self.expires_at), "approval_ttl": self.approval_ttl,
                "min_approvals": self.min_approvals, "approvers": list(self.approvers),
                "requested_by": self.requested_by.to_dict() if self.requested_by else None,
                "alert_id": self.alert_id, "backend": self.backend,
                "decisions": [d.to_dict() for d in self.decisions],
                "approved_by": [a.to_dict() for a in self.approved_by],
                "ended_at": _iso(self.ended_at) if self.ended_at else None, "end": self.end, "detail": self.detail,
                "grant_id": self.grant_id, "outcome": self.outcome, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ApprovalRequest:
        """The inverse of :meth:`to_dict` (the stores keep this JSON); ``approved_by`` is derived, not read."""
        from ..app.messages import denial_from_dict

        return cls(id=d["id"], state=d["state"], plan_hash=d["plan_hash"], change=ExactChange.from_dict(d["change"]),
                   denial=denial_from_dict(dict(d["denial"])), finding=dict(d.get("finding") or {}),
                   created_at=_time(d["created_at"]), expires_at=_time(d["expires_at"]),
                   approval_ttl=d["approval_ttl"], min_approvals=int(d["min_approvals"]),
                   approvers=tuple(d.get("approvers") or ()),
                   requested_by=Approver.from_dict(d["requested_by"]) if d.get("requested_by") else None,
                   alert_id=d.get("alert_id"), backend=d.get("backend"),
                   decisions=tuple(DecisionEntry.from_dict(x) for x in d.get("decisions") or ()),
                   ended_at=_time(d["ended_at"]) if d.get("ended_at") else None, end=d.get("end"),
                   detail=d.get("detail"), grant_id=d.get("grant_id"), outcome=d.get("outcome"),
                   extra=dict(d.get("extra") or {}))


@dataclass(frozen=True)
class Rules:
    """Who may decide, as the policy says at decision time: the allow-list (empty: anyone the caller
    authenticated as an approver) and how many distinct approvers it takes."""

    approvers: tuple[str, ...] = ()
    min_approvals: int = 1


def rules_for(request: ApprovalRequest, policy: Policy) -> Rules:
    """The stricter of the request's rules (at proposal) and the policy's now: the allow-list of today's policy
    when it has one, else the one at proposal; the larger number of approvals."""
    allow = policy.approvers or request.approvers
    need = max(request.min_approvals, policy.required_approvals(request.change.tier))
    return Rules(tuple(a.lower() for a in allow), need)


@dataclass(frozen=True)
class Origin:
    """Where a request comes from: the operator who proposed it (None: the app), the alert, the backend."""

    requested_by: Approver | None = None
    alert_id: str | None = None
    backend: str | None = None


def new_request(id: str, *, change: ExactChange, denial: Denial, finding: dict[str, Any], policy: Policy,
                now: datetime, origin: Origin | None = None) -> ApprovalRequest:
    """A pending request for ``change`` that expires ``approval_ttl`` after ``now``."""
    origin = origin or Origin()
    return ApprovalRequest(id=id, state="pending", plan_hash=change.hash(), change=change, denial=denial,
                           finding=finding, created_at=now, expires_at=now + policy.approval_ttl,
                           approval_ttl=policy.approval_ttl_text,
                           min_approvals=policy.required_approvals(change.tier), approvers=policy.approvers,
                           requested_by=origin.requested_by, alert_id=origin.alert_id, backend=origin.backend)


@dataclass(frozen=True)
class Step:
    """What an act did: the request afterwards, whether it must be stored (compare-and-swap on the version
    read), whether this step made it ``approved`` (the caller applies now, exactly once), and why it did not
    count (``refused``), with a sentence for people."""

    request: ApprovalRequest
    changed: bool
    apply: bool = False
    refused: RefusalCode | None = None
    message: str = ""


MAX_REASON = 1000
MAX_ORIGIN = 200
MAX_NAME = 256
"""What one act may add to the request (characters): a reason, an origin, a display name; longer is cut, so a
typed-in essay or a crafted header can never push the request past what its store holds."""


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else (text if len(text) <= limit else text[:limit - 1] + "…")


def _entry(act: Act, now: datetime, refused: RefusalCode | None = None) -> DecisionEntry:
    who = Approver(act.approver.object_id[:MAX_ORIGIN], _cut(act.approver.display_name, MAX_NAME))  # no groups
    return DecisionEntry(act.verb, who, act.channel, now, _cut(act.origin, MAX_ORIGIN),
                         _cut(act.reason, MAX_REASON), refused)


def _refuse(req: ApprovalRequest, act: Act, now: datetime, code: RefusalCode, message: str) -> Step:
    """The act is recorded as refused (while the request has room), nothing else changes."""
    if len(req.decisions) >= MAX_ENTRIES:
        return Step(req, False, refused=code, message=message)
    return Step(replace(req, decisions=(*req.decisions, _entry(act, now, code))), True, refused=code,
                message=message)


def expire(req: ApprovalRequest, now: datetime) -> Step:
    """A pending request whose time has passed becomes ``expired`` (default-deny); anything else is unchanged."""
    if req.state != "pending" or now < req.expires_at:
        return Step(req, False)
    return Step(replace(req, state="expired", ended_at=now, end="expired",
                        detail=f"nobody approved it within {req.approval_ttl}"), True, message="expired")


def _who_refusal(req: ApprovalRequest, act: Act, rules: Rules) -> tuple[RefusalCode, str] | None:
    oid = act.approver.object_id
    if not is_guid(oid) or oid.strip("0-") == "":
        return "bad_identity", "the approver's identity is not an Entra ID object id"
    if rules.approvers and oid not in rules.approvers and not {g.lower() for g in act.approver.groups} & set(
            rules.approvers):
        return "not_an_approver", f"{oid} is not on the policy's approvers list"
    if act.verb == "approve" and oid == req.grantee:
        return "self_approval", "the grantee may not approve a grant to itself"
    if act.verb == "approve" and req.requested_by is not None and oid == req.requested_by.object_id.lower():
        return "requester", "the operator who proposed this change may not approve it too"
    return None


def decide(req: ApprovalRequest, act: Act, rules: Rules, now: datetime) -> Step:
    """What ``act`` does to ``req`` at ``now`` under ``rules`` (pure). The caller stores ``Step.request`` with a
    compare-and-swap when ``Step.changed``, and applies the write only when ``Step.apply`` and the swap won."""
    if is_guid(act.approver.object_id):   # object ids compare (and are recorded) lower-case
        act = replace(act, approver=replace(act.approver, object_id=act.approver.object_id.lower()))
    if req.state != "pending":
        return _refuse(req, act, now, "not_pending", f"this request is already {req.state}; nothing was changed")
    expired = expire(req, now)
    if expired.changed:
        return _refuse(expired.request, act, now, "expired", f"this request expired at {_iso(req.expires_at)}; "
                       "nothing was applied")
    who = _who_refusal(req, act, rules)
    if who is not None:
        return _refuse(req, act, now, *who)
    if act.verb == "reject":
        entry = _entry(act, now)
        ended = replace(req, state="rejected", ended_at=now, end="rejected",
                        detail=f"rejected by {entry.approver.display_name or entry.approver.object_id}"
                        + (f": {entry.reason}" if entry.reason else ""), decisions=(*req.decisions, entry))
        return Step(ended, True, message="rejected; nothing was applied")
    return _approve(req, act, rules, now)


def _approve(req: ApprovalRequest, act: Act, rules: Rules, now: datetime) -> Step:
    """A counted approval: recorded; the one that reaches ``min_approvals`` makes the request ``approved``."""
    if any(a.object_id == act.approver.object_id for a in req.approved_by):
        return Step(req, False, refused="repeat", message="you have already approved this request; it needs "
                    f"{rules.min_approvals} distinct approvers")
    counted = replace(req, decisions=(*req.decisions, _entry(act, now)),
                      min_approvals=max(req.min_approvals, rules.min_approvals))   # what it needs now, shown
    have = len(counted.approved_by)
    if have < rules.min_approvals:
        return Step(counted, True, message=f"approval {have} of {rules.min_approvals} recorded; waiting for "
                    f"{rules.min_approvals - have} more")
    return Step(replace(counted, state="approved"), True, apply=True, message="approved; applying the change")


def finish(req: ApprovalRequest, end: EndCode, now: datetime, *, detail: str | None = None,
           grant_id: str | None = None, outcome: Mapping[str, Any] | None = None) -> ApprovalRequest:
    """An ``approved`` request ends: ``applied`` when ``end`` is, else ``failed`` with the reason."""
    if req.state != "approved":
        raise ValueError(f"finish() takes an approved request, not a {req.state} one")
    return replace(req, state="applied" if end == "applied" else "failed", ended_at=now, end=end, detail=detail,
                   grant_id=grant_id, outcome=dict(outcome) if outcome is not None else None)



HistoryKind = Literal["proposed", "approved", "rejected", "refused", "applied", "failed", "expired"]


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One line of a request's history for people (the findings page, a card): what happened, when, by whom,
    through which channel and from where (``detail``: the reason, why an act was refused, why it ended)."""

    at: datetime
    kind: HistoryKind
    who: Approver | None = None
    channel: Channel | None = None
    origin: str | None = None
    detail: str | None = None


def history(req: ApprovalRequest) -> tuple[HistoryEvent, ...]:
    """The request's history in time order: proposed, every act (counted or refused), how it ended. The grant it
    made (verified, revoked) is the grant record's (``req.grant_id``)."""
    events = [HistoryEvent(req.created_at, "proposed", req.requested_by, None, None,
                           f"needs {req.min_approvals} approval(s) by {_iso(req.expires_at)}")]
    for d in req.decisions:
        kind: HistoryKind = "refused" if d.refused else ("approved" if d.verb == "approve" else "rejected")
        why = f"{d.verb} refused: {d.refused}" if d.refused else None
        detail = "; ".join(x for x in (why, d.reason) if x) or None
        events.append(HistoryEvent(d.at, kind, d.approver, d.channel, d.origin, detail))
    if req.ended_at is not None and req.state in ("applied", "failed", "expired"):
        events.append(HistoryEvent(req.ended_at, req.state, None, None, None, req.detail))  # type: ignore[arg-type]
    return tuple(sorted(events, key=lambda e: e.at))
