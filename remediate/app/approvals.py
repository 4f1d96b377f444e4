"""Approval requests in the function app: what the findings page, the Slack interactivity endpoint and the Teams
card link call (one function each), and the plain notification of a new request (notify.py picks the channel's).

The caller authenticates the person first (an Entra ID token with the approver app role, App Service
Authentication's principal headers, a Slack user mapped to an object id) and passes who they are in an
:class:`~remediate.approvals.model.Act`; the core checks everything else (state, expiry, grantee, allow-list,
distinct approvers) and applies exactly once. Links only open the page: nothing here decides on a GET.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .settings import PUBLIC_URL_SETTING

if TYPE_CHECKING:
    from ..approvals.model import Act, ApprovalRequest
    from ..approvals.service import Decided
    from ..guard import Policy
    from .services import Runtime

PAGE_PATH = "/api/findings"


def page_link(env: Mapping[str, str], approval_id: str) -> str | None:
    """The findings page showing one request (``/api/findings?approval=ID``): it only opens the page, where a
    signed-in approver decides with a POST. None when the app's public URL is unknown (set KV_REMEDIATE_PUBLIC_URL)."""
    base = (env.get(PUBLIC_URL_SETTING) or "").strip().rstrip("/")
    if not base and (env.get("WEBSITE_HOSTNAME") or "").strip():
        base = "https://" + str(env.get("WEBSITE_HOSTNAME")).strip()
    if not base:
        return None
    return f"{base}{PAGE_PATH}?{urllib.parse.urlencode({'approval': approval_id})}"


async def decide(rt: Runtime, approval_id: str, act: Act, *, now: datetime | None = None) -> Decided:
    """Record ``act`` on the request and, when it completes the approvals, re-read the tenant and apply exactly the
    approved write (a fresh fact source; the app's grant store, rate slots and own identity). Raises PolicyError
    when the policy is invalid and the act is an approval (nothing is decided then; a reject, which changes nothing
    in Azure, is still recorded, against the allow-list the request was proposed under), and StorageError when
    storage fails."""
    from ..apply import ApplyContext
    from ..approvals import service

    policy = _policy_for(rt, act)
    ctx = ApplyContext(policy=policy, grants=rt.grants(), slots=await rt.claims(), now=now or datetime.now(UTC),
                       requested=True, actor=rt.actor, backend=rt.writes_to,
                       own_principals=frozenset(rt.settings.self_object_ids))
    async with rt.facts() as facts:
        done = await service.decide(rt.approvals(), approval_id, act, facts=facts, ctx=ctx)
    # the channel that announced the request shows how it ended (a Slack click replaces its own message instead)
    if done.status in ("applied", "failed", "rejected") and done.request is not None and act.channel != "slack":
        from .notify import announce_end

        await announce_end(rt, done.request)
    return done


def _policy_for(rt: Runtime, act: Act) -> Policy:
    """The app's policy; for a reject under an invalid policy, the defaults (the request's own allow-list holds)."""
    from ..errors import PolicyError
    from ..guard import Policy

    try:
        return rt.policy()
    except PolicyError:
        if act.verb != "reject":
            raise
        return Policy(source="defaults (the policy is invalid; a reject is still recorded)")


async def get(rt: Runtime, approval_id: str) -> ApprovalRequest | None:
    """One request as stored (any state), or None."""
    from ..approvals import service

    return await service.get(rt.approvals(), approval_id)


async def pending(rt: Runtime, limit: int | None = 100, *, now: datetime | None = None) -> list[ApprovalRequest]:
    """The requests waiting for people, newest first (those past their expiry are ended as ``expired`` first)."""
    from ..approvals import service

    return await service.pending(rt.approvals(), now or datetime.now(UTC), limit)


async def settle_due(*, now: datetime | None = None) -> tuple[list[ApprovalRequest], list[Decided]]:
    """What the timer does with requests: end the pending ones past their expiry (default-deny), and finish the
    ones a crash left ``approved`` (re-read, apply through the intent-first grant records: resumed or adopted,
    never repeated). Nothing is finished under an invalid policy (its PolicyError is raised)."""
    from ..apply import ApplyContext
    from ..approvals import service
    from . import services

    rt = services.get()
    now = now or datetime.now(UTC)
    expired = await service.expire_due(rt.approvals(), now)
    ctx = ApplyContext(policy=rt.policy(), grants=rt.grants(), slots=await rt.claims(), now=now, requested=True,
                       actor=rt.actor, backend=rt.writes_to, own_principals=frozenset(rt.settings.self_object_ids))
    async with rt.facts() as facts:
        finished = await service.resume_approved(rt.approvals(), facts=facts, ctx=ctx)
    from .notify import announce_end

    for req in [*expired, *(d.request for d in finished if d.request is not None)]:
        await announce_end(rt, req)
    return expired, finished


def notification(finding: dict[str, Any], line: dict[str, Any], link: str | None) -> dict[str, Any]:
    """The notification for a finding whose plan waits for approval: the worker's message (cause, who, where,
    why, the exact change) with the request's id, expiry and a link that only OPENS the findings page.

    Minimal and channel-neutral (``text``): what ``notify.approval_message`` sends when the stored request or the
    app's public URL is unknown; otherwise the receiver gets the request's Teams card, Slack blocks or link."""
    from .messages import chat_text
    from .worker import notification as plain

    body = plain(finding, line)
    approval_id = str(finding.get("approval_id") or "")
    lines = [body["text"], f"Waiting for approval: request {chat_text(approval_id)}"
             + (f" ({chat_text(finding.get('detail'))})" if finding.get("detail") else "")]
    lines.append(f"Open to approve or reject: {link}" if link else
                 f"Open the findings page to approve or reject (set {PUBLIC_URL_SETTING} for a link)")
    body["text"] = "\n".join(lines)
    body["approval"] = {"id": approval_id, "link": link}
    return body
