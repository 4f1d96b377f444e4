"""Notifications: a finding's summary, or an approval request, POSTed to ``KV_REMEDIATE_NOTIFY_URL`` in the shape
its receiver takes (``KV_REMEDIATE_NOTIFY_KIND``):

- ``teams``: a Teams Workflows webhook ("When a Teams webhook request is received"): a message with one Adaptive
  Card 1.5 (Workflows take Adaptive Cards only; Office 365 connectors and their MessageCard are retired);
- ``slack``: a Slack incoming webhook: Block Kit (approval requests carry Approve / Reject buttons, handled by
  ``POST /api/slack/actions``);
- ``webhook``: anything else (a Logic App that mails, a ticketing hook): ``{"text", "kv_remediate": {...}}`` with
  the findings-page link only.

Unset, the kind is read from the URL's host: ``hooks.slack.com`` is Slack; Power Automate / Logic Apps hosts
(``*.logic.azure.com``, ``*.powerplatform.com``, ``*.powerautomate.com``) and ``*.webhook.office.com`` are Teams;
anything else is a generic webhook.

Best effort by design: a failed notification is logged (never the URL, which is a secret) and never fails the
invocation that sent it. Sent with aiohttp, the worker's own HTTP client, on its event loop.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .settings import NOTIFY_SETTING

if TYPE_CHECKING:
    from ..approvals.model import ApprovalRequest
    from ..render.approval_messages import ApprovalLinks, ApprovalNotice
    from .services import Runtime

log = logging.getLogger("kv_remediate.app")

KIND_SETTING = "KV_REMEDIATE_NOTIFY_KIND"
Kind = Literal["teams", "slack", "webhook"]
KINDS: tuple[Kind, ...] = ("teams", "slack", "webhook")
_TEAMS_SUFFIXES = (".logic.azure.com", ".powerplatform.com", ".powerautomate.com", ".webhook.office.com",
                   ".logic.azure.us", ".logic.azure.cn")
_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")


def kind_problem(value: str | None) -> str | None:
    """Why ``KV_REMEDIATE_NOTIFY_KIND`` is unusable, or None."""
    text = (value or "").strip().lower()
    if text and text not in KINDS:
        return "is not teams, slack or webhook; the kind is taken from the URL's host"
    return None


def kind_of(url: str | None, setting: str | None = None) -> Kind:
    """The receiver's kind: the setting when it names one, else read from the URL's host."""
    text = (setting or "").strip().lower()
    for kind in KINDS:
        if text == kind:
            return kind
    try:
        host = (urllib.parse.urlsplit(url or "").hostname or "").lower()
    except ValueError:
        host = ""
    if host in _SLACK_HOSTS:
        return "slack"
    if host.endswith(_TEAMS_SUFFIXES):
        return "teams"
    return "webhook"


def kind_from_env(env: Mapping[str, str], url: str | None) -> Kind:
    return kind_of(url, env.get(KIND_SETTING))


def approval_payload(kind: Kind, notice: ApprovalNotice, links: ApprovalLinks) -> dict[str, Any]:
    """The body announcing one approval request to a receiver of ``kind``."""
    from ..render import approval_messages as approvals

    if kind == "teams":
        return approvals.teams_payload(notice, links)
    if kind == "slack":
        return approvals.slack_payload(notice, links)
    return approvals.webhook_payload(notice, links)


def finding_payload(kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    """A finding's notification (``{"text", "summary", "kv_remediate"}``, already inert) for ``kind``: Teams
    Workflows take only Adaptive Cards, so there the text becomes a card (one plain TextRun per line)."""
    if kind != "teams":
        return body
    import html
    import re

    from ..render.approval_messages import text_card

    # the text was made inert for Markdown chats (messages.chat_text: entities, backslashed marks); a TextRun
    # renders no Markdown at all, so the marks are shown as they were (control characters stay escaped)
    plain = re.sub(r"\\([*~\[\]])", r"\1", html.unescape(str(body.get("text") or "")))
    return text_card(plain)


def notice_for(req: ApprovalRequest) -> ApprovalNotice:
    """The request as the channels show it (its finding at proposal, its expiry and risk tier)."""
    from ..render.approval_messages import notice_of

    return notice_of(req.finding, request_id=req.id, expires_at=req.expires_at, tier=req.change.tier)


def links_for(env: Any, request_id: str) -> ApprovalLinks | None:
    """The findings-page links of a request; None when the app's public URL is unknown."""
    from ..render.approval_messages import links_from_open
    from .approvals import page_link

    url = page_link(env, request_id)
    return links_from_open(url) if url else None


async def approval_message(rt: Runtime, doc: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
    """The notification of a finding whose plan waits for approval (``doc["approval_id"]``): the request's card,
    blocks or link for the configured kind; the core's plain message when the request or the app's public URL
    (``KV_REMEDIATE_PUBLIC_URL``) is unknown."""
    from . import approvals

    kind = kind_from_env(rt.settings.env, rt.settings.notify_url)
    approval_id = str(doc["approval_id"])
    req = await approvals.get(rt, approval_id)
    links = links_for(rt.settings.env, approval_id)
    if req is None or links is None:
        return finding_payload(kind, approvals.notification(doc, line, links.open if links else None))
    return approval_payload(kind, notice_for(req), links)


async def announce_end(rt: Runtime, req: ApprovalRequest) -> bool:
    """Tell the notification receiver how a request it announced ended (applied, not applied and why, rejected,
    expired); False when nothing was sent (no receiver, or the post failed: logged, never raised). Not for Slack
    clicks, which replace their own message."""
    if not rt.settings.notify_url or req.state not in ("applied", "failed", "rejected", "expired"):
        return False
    from ..render.approval_messages import outcome_payload

    kind = kind_from_env(rt.settings.env, rt.settings.notify_url)
    payload = outcome_payload(kind, notice_for(req), req.state, req.detail, links_for(rt.settings.env, req.id))
    return await rt.notify(payload)


async def post(url: str | None, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST ``payload`` as JSON to ``url``; False (logged, not raised) when there is no URL or the call fails
    (connection, timeout, or a status of 400 or more). Proxy settings of the environment apply, as for any
    outbound call to the internet."""
    if not url:
        return False
    import aiohttp

    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=True) as session,
                    session.post(url, json=payload, raise_for_status=True) as response):
            await response.read()
        return True
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log.warning("kv-remediate: the notification to %s failed (%s)", NOTIFY_SETTING, type(exc).__name__)
        return False
