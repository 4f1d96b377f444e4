"""The queue worker's half of a Slack click: decide it through the approvals core, then tell Slack.

The click was verified and its user mapped by ``POST /api/slack/actions`` (slack.py). Here: an unmapped user gets
a reply only they see; a mapped one acts as their Entra object id through ``app.approvals.decide`` (state, expiry,
grantee, allow-list, M-of-N, the re-check of the tenant and the exactly-once apply are the core's, and so is the
record of every act, counted or refused). The outcome replaces the Slack message (``replace_original``); a refusal
that leaves the request open for others (not an approver, the grantee, a repeat) is said to the clicker only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from ..approvals.service import Decided
    from .services import Runtime

log = logging.getLogger("kv_remediate.slack")

PERSONAL_REFUSALS = frozenset({"self_approval", "requester", "not_an_approver", "repeat", "bad_identity"})
"""Refusals about the clicker, not the request: the message stays (others may still decide), only they are told."""


class SlackAction(msgspec.Struct, frozen=True):
    """A ``slack-actions`` queue message (written by slack.encode_click)."""

    schema: Literal["kv-remediate/slack-action@1"]
    request_id: str
    verb: Literal["approve", "reject"]
    slack_user: str
    received_at: str
    slack_team: str | None = None
    user_name: str | None = None
    approver: str | None = None
    refused: str | None = None
    response_url: str | None = None


def decode(body: bytes | str) -> SlackAction:
    """The queue message; InputError when it is not one (the host retries, then poisons it)."""
    from ..errors import InputError

    try:
        return msgspec.json.decode(body, type=SlackAction)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InputError("slack-actions message", f"is not a kv-remediate Slack action ({exc})") from exc


_UNMAPPED = ("You are not an approver here: your Slack user is not mapped to an Entra ID approver "
             "(KV_REMEDIATE_SLACK_APPROVERS). Nothing was decided; ask an administrator, or decide on the findings "
             "page signed in.")


def reply_of(item: SlackAction, decided: Decided, env: Any) -> dict[str, Any]:
    """The Slack reply for what the act came to."""
    from ..render.approval_messages import slack_ephemeral, slack_outcome
    from .notify import links_for, notice_for

    req = decided.request
    if decided.status == "refused" and (req is None or decided.refused in PERSONAL_REFUSALS):
        return slack_ephemeral(f"Not counted ({decided.refused}): {decided.message}")
    who = f"{item.user_name or item.slack_user} (Slack)"
    if req is None:   # unreachable: only not_found has no request, and that is personal above
        return slack_ephemeral(decided.message)
    word = {"applied": "applied", "recorded": "approval recorded", "rejected": "rejected",
            "failed": "not applied"}.get(decided.status, req.state)
    detail = decided.message
    if decided.status == "failed" and req.detail:
        detail = f"{decided.message} ({req.end}: {req.detail})"
    if decided.status in ("applied", "recorded", "rejected"):
        detail = f"{'Rejected' if decided.status == 'rejected' else 'Approved'} by {who}. {decided.message}"
    return slack_outcome(notice_for(req), word, detail, links_for(env, req.id))


async def carry_out(rt: Runtime, body: bytes | str, now: datetime | None = None) -> str:
    """Decide one queued click and reply on its ``response_url``; returns what it came to (``unmapped``, a
    ``Decided.status``, or ``policy``). A broken policy decides nothing and says so; storage failures raise (the
    host retries; a retried act on a request already decided is refused by the core, never applied twice)."""
    from ..approvals.model import Act, Approver
    from ..errors import PolicyError
    from ..render.approval_messages import slack_ephemeral
    from . import approvals
    from .notify import post

    item = decode(body)
    if item.approver is None:
        log.warning("kv-remediate slack: %s by Slack user %s refused (%s): nothing decided", item.verb,
                    item.slack_user, item.refused)
        await post(item.response_url, slack_ephemeral(_UNMAPPED))
        return "unmapped"
    name = f"{item.user_name or item.slack_user} (Slack {item.slack_user})"
    act = Act(item.verb, Approver(item.approver, name), "slack",
              origin=f"slack team {item.slack_team or '?'} user {item.slack_user}")
    try:
        decided = await approvals.decide(rt, item.request_id, act, now=now)
    except PolicyError as exc:
        log.error("kv-remediate slack: %s of %s not decided: %s", item.verb, item.request_id, exc.message)
        await post(item.response_url, slack_ephemeral(f"Nothing was decided: the app's policy is invalid "
                                                      f"({exc.message})"))
        return "policy"
    log.info("kv-remediate slack: %s of %s by %s: %s%s", item.verb, item.request_id, item.approver, decided.status,
             f" ({decided.refused})" if decided.refused else "")
    await post(item.response_url, reply_of(item, decided, rt.settings.env))
    return decided.status
