"""The findings page's view of the approvals core: approval requests as the page shows them, and a decision
posted from the page handed to the core (:func:`remediate.app.approvals.decide`). The only module of the page
that knows the core's types.

Reading never changes anything: pending requests are listed from the store as they are (one past its expiry is
shown expired, with no buttons; the timer ends it), so a GET, whoever or whatever sends it, only reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..approvals.model import ApprovalRequest
    from ..approvals.service import Decided
    from ..render.page import Event, RequestView
    from .approver import Approver
    from .services import Runtime

PENDING_LIMIT = 100
_REFUSAL_STATUS = {"not_found": HTTPStatus.NOT_FOUND, "not_pending": HTTPStatus.CONFLICT,
                   "expired": HTTPStatus.CONFLICT, "self_approval": HTTPStatus.FORBIDDEN,
                   "requester": HTTPStatus.FORBIDDEN, "not_an_approver": HTTPStatus.FORBIDDEN,
                   "bad_identity": HTTPStatus.FORBIDDEN, "wrong_backend": HTTPStatus.CONFLICT,
                   "repeat": HTTPStatus.OK}


@dataclass(frozen=True)
class Csrf:
    """What a decision form's token is bound to: the viewer, their cookie nonce, the time, the key's settings."""

    who: Approver
    nonce: str
    now: datetime
    env: Mapping[str, str]

    def token(self, request_id: str) -> str:
        from .approver import csrf_token, page_key

        return csrf_token(page_key(self.env), approver=self.who.object_id, request_id=request_id, nonce=self.nonce,
                          now=self.now)


@dataclass(frozen=True)
class DecisionOutcome:
    """What the page tells the approver after a POST: HTTP status, title, message and whether it went their way."""

    status: int
    title: str
    message: str
    ok: bool


def _iso(when: datetime | None) -> str | None:
    from ..store.encoding import iso

    return iso(when) if when is not None else None


def view(req: ApprovalRequest, csrf: Csrf | None, now: datetime) -> RequestView:
    """One request as the page shows it; decision forms only while it is pending, unexpired, for an approver."""
    from ..render.page import Decision, RequestView

    state = "expired" if req.state == "pending" and req.expires_at <= now else req.state
    decisions = tuple(Decision(decision=d.verb if d.refused is None else f"{d.verb} refused ({d.refused})",
                               who=(f"{d.approver.display_name} ({d.approver.object_id})" if d.approver.display_name
                                    else d.approver.object_id),
                               time=_iso(d.at), where=" ".join(x for x in (d.channel, d.origin or "") if x),
                               reason=d.reason or "") for d in req.decisions)
    plan = req.finding.get("plan") if isinstance(req.finding, dict) else None
    role = plan.get("role_name") if isinstance(plan, dict) else None
    what = str(role) if role else req.change.kind.replace("_", " ")
    summary = f"{what} for {req.change.principal_id} at {req.change.scope}"
    return RequestView(id=req.id, state=state, created=_iso(req.created_at),
                       expires=_iso(req.expires_at), plan_hash=req.plan_hash, summary=summary, decisions=decisions,
                       approvals_needed=req.min_approvals, approved=len(req.approved_by),
                       end=req.end or "", end_time=_iso(req.ended_at), detail=req.detail or "",
                       grant_id=req.grant_id or "", events=events(req),
                       csrf=csrf.token(req.id) if csrf is not None and state == "pending" else "")


def events(req: ApprovalRequest) -> tuple[Event, ...]:
    """The core's history of a request (:func:`remediate.approvals.model.history`) as the page's events; its
    ``proposed`` reads "requested" (the finding's own "proposed" is the plan)."""
    from ..approvals.model import history
    from ..render.page import Event

    out = []
    for e in history(req):
        who = (f"{e.who.display_name} ({e.who.object_id})" if e.who.display_name else e.who.object_id) \
            if e.who is not None else ""
        where = " ".join(x for x in ("via " + e.channel if e.channel else "", "from " + e.origin if e.origin else "")
                         if x)
        text = "; ".join(x for x in (f"by {who}" if who else "", where, e.detail or "") if x)
        out.append(Event("requested" if e.kind == "proposed" else e.kind, _iso(e.at),
                         f"approval request {req.id}: {text}" if e.kind == "proposed" else text))
    return tuple(out)


async def pending(rt: Runtime, csrf: Csrf | None, now: datetime) -> list[RequestView]:
    """The requests waiting for people, newest first, as stored (nothing is ended or changed here)."""
    store = rt.approvals()
    found = await asyncio.to_thread(store.list, state="pending", limit=PENDING_LIMIT)
    found.sort(key=lambda r: r.created_at, reverse=True)
    return [view(r, csrf, now) for r in found]


async def one(rt: Runtime, approval_id: str) -> ApprovalRequest | None:
    """One request by id (any state), or None (also for an id that is not one)."""
    from . import approvals

    if not approval_id or len(approval_id) > 100:   # noqa: PLR2004 - ids are UUIDs; anything longer is not one
        return None
    return await approvals.get(rt, approval_id)


def request_record(req: ApprovalRequest) -> dict[str, Any]:
    """A request's finding (as it was at proposal) shaped as a findings record, for the page's detail view."""
    f: dict[str, Any] = req.finding if isinstance(req.finding, dict) else {}
    denial: dict[str, Any] = f["denial"] if isinstance(f.get("denial"), dict) else {}
    vault: dict[str, Any] = denial["vault"] if isinstance(denial.get("vault"), dict) else {}
    shown = {**f, "outcome": f.get("outcome") or "pending_approval"}
    return {"id": "", "time": _iso(req.created_at), "cause": f.get("cause"), "vault": vault.get("resource_id")
            or vault.get("name"), "principal": req.change.principal_id, "finding": shown}


async def decide(rt: Runtime, request_id: str, decision: str, who: Approver, *, where: str,
                 reason: str) -> DecisionOutcome:
    """Hand one decision from the page to the core (which re-checks and applies exactly once) and say what
    happened. The approver's identity is the signed-in person's object id; the channel is ``page``, the origin
    the client address."""
    from ..approvals.model import Act
    from ..approvals.model import Approver as CoreApprover
    from . import approvals

    act = Act("approve" if decision == "approve" else "reject", CoreApprover(who.object_id, who.name, who.groups),
              "page", origin=where, reason=reason or None)
    return outcome(await approvals.decide(rt, request_id, act))


def outcome(decided: Decided) -> DecisionOutcome:
    """The page's answer to the core's result (status as the core suggests: 404, 409, 403, else 200)."""
    if decided.status == "refused":
        status = _REFUSAL_STATUS.get(decided.refused or "", HTTPStatus.CONFLICT)
        state = f" (the request is {decided.request.state})" if decided.request is not None else ""
        return DecisionOutcome(int(status), "Not decided", f"{decided.message}{state}; nothing was changed",
                               decided.refused == "repeat")
    titles = {"applied": "Approved and applied", "recorded": "Approval recorded", "rejected": "Rejected",
              "failed": "Approved, not applied"}
    status = HTTPStatus.CONFLICT if decided.status == "failed" else HTTPStatus.OK
    message = decided.message
    req = decided.request
    if req is not None:
        what = f"{view(req, None, req.created_at).summary} (approval request {req.id})"
        ended = f"; {req.detail}" if req.detail and req.detail not in message else ""
        grant = f"; grant {req.grant_id}" if req.grant_id and req.grant_id not in message + ended else ""
        message = f"{what}: {message}{ended}{grant}"
    return DecisionOutcome(int(status), titles.get(decided.status, decided.status), message,
                           decided.status != "failed")
