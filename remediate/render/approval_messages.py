"""Approval-request messages for the chat channels (pure): a Teams Workflows-webhook payload carrying an Adaptive
Card 1.5, a Slack Block Kit message with Approve / Reject buttons, and a generic webhook / e-mail body with the
link only; plus the Slack message that replaces the request once it is decided.

Every value that came from outside (names, texts, the finding's explanation) is attacker-shaped and is made inert
for the format it lands in:

- Teams: values go only into ``TextRun``s of a ``RichTextBlock`` ("Text to display. Markdown is not supported.",
  Adaptive Cards schema explorer, TextRun), never into a ``TextBlock`` or a ``Fact`` (both render Markdown in Teams,
  msteams-docs cards-format: "Markdown is supported in Adaptive Card Textblock field, and Fact.Title and
  Fact.Value"), so no ``[text](url)`` a value carries becomes a link. The card's only URLs are ours.
- Slack: values sit in code spans of ``mrkdwn`` text with ``verbatim: true`` (no auto-linking of URLs, channel
  names or mentions), ``&``, ``<`` and ``>`` entity-escaped (Slack's "Escaping text" rule, which also defuses
  ``<!channel>`` and ``<https://x|y>``) and backticks made quotes, so no value can close the span and bold itself
  into "Approved".
- Everywhere: control characters are written as escapes (no new lines, no bidi flips).

Links only OPEN the findings page (link scanners follow links and even submit forms): approving is a POST from
that page by a signed-in person. Teams Workflows cannot send ``Action.Execute`` to an app without a bot, so all
three Teams actions are ``Action.OpenUrl``. Slack's buttons call the interactivity endpoint instead, which checks
Slack's signature and maps the Slack user to an Entra ID approver (app/slack.py).

Limits respected by truncating values (before escaping, so an entity is never cut in half):
Teams "message size limit is approximately 28 KB" (connector reference), Slack Block Kit's section text 3,000,
field 2,000, button text 75, button value 2,000, header 150, url 3,000 characters, 50 blocks, 10 fields.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
TEAMS_MAX_BYTES = 28 * 1024
"""Teams' message size limit ("approximately 28 KB"); the payload is kept under ``TEAMS_BUDGET``."""
TEAMS_BUDGET = 24 * 1024
SLACK_SECTION_TEXT = 3000
SLACK_FIELD_TEXT = 2000
SLACK_BUTTON_VALUE = 2000
SLACK_URL = 3000
SLACK_FALLBACK_TEXT = 3000
SLACK_APPROVE = "kv_remediate_approve"
SLACK_REJECT = "kv_remediate_reject"
SLACK_OPEN = "kv_remediate_open"
SLACK_BLOCK = "kv_remediate_approval"
ELLIPSIS = "…"
_CONTROL_ESCAPES = {i: f"\\x{i:02x}" for i in range(0x20)} | {0x7F: "\\x7f"} | {
    c: f"\\u{c:04x}" for c in (*range(0x80, 0xA0), 0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
                               *range(0x2028, 0x202F), *range(0x2060, 0x2070), 0xFEFF)}
_CONTROL_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


@dataclass(frozen=True)
class ApprovalNotice:
    """What a person needs to decide one approval request: the finding (cause, who, where, what, why, evidence)
    and the exact change it would make, with its expiry. Every text field is shown as data, never as markup."""

    request_id: str
    cause: str
    principal: str
    """Who would be granted: display name, type and object id, as the finding names them."""
    vault: str
    operation: str
    why: str
    evidence: str
    change: str
    """The exact write, in words or as the az command that makes it."""
    expires_at: datetime
    object: str | None = None
    tier: int | None = None


@dataclass(frozen=True)
class ApprovalLinks:
    """The findings-page URLs a message carries: each only opens the page (the decision is a POST there)."""

    open: str
    approve: str
    reject: str


def page_links(base_url: str, request_id: str, route_prefix: str = "api") -> ApprovalLinks:
    """The findings page's URLs of a request from the app's base URL: ``{base}/{prefix}/findings?approval=ID``
    (the format of ``app.approvals.page_link``, which the app uses)."""
    base = base_url.rstrip("/")
    prefix = f"/{route_prefix.strip('/')}" if route_prefix.strip("/") else ""
    return links_from_open(f"{base}{prefix}/findings?{urllib.parse.urlencode({'approval': request_id})}")


def links_from_open(open_url: str) -> ApprovalLinks:
    """The one place the decision links are derived: the page's URL for the request opens it; ``&action=approve``
    / ``&action=reject`` open it at that decision (still a page view: the page asks for the POST)."""
    return ApprovalLinks(open_url, f"{open_url}&action=approve", f"{open_url}&action=reject")


def inert(value: object) -> str:
    """A value as plain text: control and invisible formatting characters written as escapes."""
    return ("" if value is None else str(value)).translate(_CONTROL_ESCAPES)


def fit(value: str, limit: int, escape: Callable[[str], str] = inert) -> str:
    """``escape(value)`` in at most ``limit`` characters: when too long, the longest prefix of the raw value
    whose escaped form fits with an ellipsis (an escape sequence or entity is never cut)."""
    out = escape(value)
    if len(out) <= limit:
        return out
    lo, hi = 0, len(value)
    while lo < hi:   # longest n with len(escape(value[:n]) + "…") <= limit
        mid = (lo + hi + 1) // 2
        if len(escape(value[:mid])) + len(ELLIPSIS) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return escape(value[:lo]) + ELLIPSIS if limit >= len(ELLIPSIS) else ""


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rows(n: ApprovalNotice) -> list[tuple[str, str]]:
    rows = [("Cause", n.cause), ("Who", n.principal), ("Vault", n.vault)]
    if n.object:
        rows.append(("Object", n.object))
    rows += [("Operation", n.operation), ("Why", n.why), ("Evidence", n.evidence)]
    if n.tier is not None:
        rows.append(("Risk tier", str(n.tier)))
    rows.append(("Expires", _when(n.expires_at)))
    return rows


# --- Teams ---------------------------------------------------------------------------------------------------------

def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _card(n: ApprovalNotice, links: ApprovalLinks, cap: int) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": "Key Vault access: approval needed", "weight": "Bolder", "size": "Medium",
         "wrap": True, "style": "heading"},
    ]
    for label, value in _rows(n):
        body.append({"type": "RichTextBlock", "inlines": [_run(f"{label}: ", weight="Bolder"),
                                                          _run(fit(value, cap))]})
    body.append({"type": "RichTextBlock", "inlines": [_run("The exact change: ", weight="Bolder")]})
    body.append({"type": "RichTextBlock", "inlines": [_run(fit(n.change, cap), fontType="Monospace")]})
    body.append({"type": "RichTextBlock", "inlines": [_run(
        "Approve and Reject open the findings page; the decision is made there, signed in.", isSubtle=True)]})
    return {
        "type": "AdaptiveCard", "$schema": CARD_SCHEMA, "version": CARD_VERSION, "body": body,
        "actions": [
            {"type": "Action.OpenUrl", "title": "Approve", "url": links.approve, "style": "positive"},
            {"type": "Action.OpenUrl", "title": "Reject", "url": links.reject, "style": "destructive"},
            {"type": "Action.OpenUrl", "title": "Open", "url": links.open},
        ],
    }


def teams_payload(n: ApprovalNotice, links: ApprovalLinks, budget: int = TEAMS_BUDGET) -> dict[str, Any]:
    """The body a Teams Workflows "When a Teams webhook request is received" trigger takes: a message with one
    Adaptive Card 1.5 attachment, kept under ``budget`` bytes of JSON (long values are cut, shortest cap that
    fits)."""
    cap = 4000
    while True:
        payload = {"type": "message", "attachments": [
            {"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": _card(n, links, cap)}]}
        if len(json.dumps(payload).encode()) <= budget or cap <= 16:  # noqa: PLR2004 (the smallest cap tried)
            return payload
        cap //= 2


def text_card(text: str, budget: int = TEAMS_BUDGET) -> dict[str, Any]:
    """A Teams Workflows message with ``text`` as a card: one plain ``TextRun`` per line (no Markdown), cut to
    fit ``budget`` bytes."""
    cap = 4000
    while True:
        body = [{"type": "RichTextBlock", "inlines": [_run(fit(line, cap) or " ")]}
                for line in text.splitlines()[:40]] or [{"type": "RichTextBlock", "inlines": [_run(" ")]}]
        card = {"type": "AdaptiveCard", "$schema": CARD_SCHEMA, "version": CARD_VERSION, "body": body}
        payload = {"type": "message", "attachments": [
            {"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}
        if len(json.dumps(payload).encode()) <= budget or cap <= 16:  # noqa: PLR2004 (the smallest cap tried)
            return payload
        cap //= 2


# --- Slack ---------------------------------------------------------------------------------------------------------

def slack_escape(value: object) -> str:
    """Slack's escaping for text it parses: ``&``, ``<``, ``>`` as entities (after control characters)."""
    return inert(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _in_code(value: object) -> str:
    return slack_escape(value).replace("`", "'")


def slack_code(value: object, limit: int = SLACK_SECTION_TEXT) -> str:
    """A value as a ``mrkdwn`` code span of at most ``limit`` characters: escaped, backticks made quotes, so it
    can neither close the span nor format itself."""
    return "`" + fit(str(value), limit - 2, _in_code) + "`"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": False}


def _field(label: str, value: str, limit: int = SLACK_FIELD_TEXT) -> dict[str, Any]:
    head = f"*{label}*\n"
    return _mrkdwn(head + slack_code(value, limit - len(head)))


def _summary(n: ApprovalNotice) -> str:
    where = n.vault + (f" ({n.object})" if n.object else "")
    return f"Key Vault access approval needed: {n.principal} on {where}: {n.operation} ({n.cause})"


def slack_blocks(n: ApprovalNotice, links: ApprovalLinks) -> list[dict[str, Any]]:
    """The request's blocks: header, facts, the exact change, the buttons (``action_id`` names the decision,
    ``value`` the request id) and an Open link."""
    rows = [(label, value) for label, value in _rows(n) if label not in ("Why", "Evidence")]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain("Key Vault access: approval needed")},
        {"type": "section", "fields": [_field(label, value) for label, value in rows][:10]},
        {"type": "section", "text": _field("Why", n.why, SLACK_SECTION_TEXT)},
        {"type": "section", "text": _field("Evidence", n.evidence, SLACK_SECTION_TEXT)},
        {"type": "section", "text": _field("The exact change", n.change, SLACK_SECTION_TEXT)},
    ]
    value = n.request_id[:SLACK_BUTTON_VALUE]
    confirm = {"title": _plain("Approve this grant?"), "confirm": _plain("Approve"), "deny": _plain("Cancel"),
               "text": _mrkdwn("This applies exactly the change shown, once.")}
    blocks.append({"type": "actions", "block_id": SLACK_BLOCK, "elements": [
        {"type": "button", "action_id": SLACK_APPROVE, "text": _plain("Approve"), "style": "primary",
         "value": value, "confirm": confirm},
        {"type": "button", "action_id": SLACK_REJECT, "text": _plain("Reject"), "style": "danger", "value": value},
        {"type": "button", "action_id": SLACK_OPEN, "text": _plain("Open"), "url": links.open[:SLACK_URL],
         "value": value},
    ]})
    return blocks


def slack_payload(n: ApprovalNotice, links: ApprovalLinks) -> dict[str, Any]:
    """A Slack incoming-webhook / ``chat.postMessage`` body: the blocks and a plain fallback ``text``."""
    return {"text": fit(_summary(n), SLACK_FALLBACK_TEXT, slack_escape), "blocks": slack_blocks(n, links)}


def slack_outcome(n: ApprovalNotice | None, outcome: str, detail: str, links: ApprovalLinks | None = None
                  ) -> dict[str, Any]:
    """The ``response_url`` body that replaces the request message with its outcome (buttons gone): the outcome
    (``approved``, ``applied``, ``rejected``, ``refused``, ...) and why, in words; ``n`` is None when the request
    could not be read."""
    head = f"*{slack_escape(outcome.capitalize())}*: " + fit(detail, SLACK_SECTION_TEXT - 200, slack_escape)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _mrkdwn(head)}]
    if n is not None:
        blocks.insert(0, {"type": "section", "text": _mrkdwn(fit(_summary(n), SLACK_SECTION_TEXT, slack_escape))})
    if links is not None:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "action_id": SLACK_OPEN, "text": _plain("Open"), "url": links.open[:SLACK_URL]}]})
    text = fit(f"{outcome}: {detail}", SLACK_FALLBACK_TEXT, slack_escape)
    return {"replace_original": True, "response_type": "in_channel", "text": text, "blocks": blocks}


def slack_ephemeral(detail: str) -> dict[str, Any]:
    """A reply only the clicking user sees, the request message left as it is (an unmapped user, say)."""
    return {"replace_original": False, "response_type": "ephemeral",
            "text": fit(detail, SLACK_FALLBACK_TEXT, slack_escape)}


def outcome_text(n: ApprovalNotice, state: str, detail: str | None) -> str:
    """One line saying how a request ended (``applied``, ``failed``, ``rejected``, ``expired``) and why."""
    where = n.vault + (f" ({n.object})" if n.object else "")
    word = "not applied" if state == "failed" else state
    return f"Approval request {n.request_id} ({n.principal} on {where}: {n.operation}): {word}" + \
        (f". {detail}" if detail else "")


def outcome_payload(kind: str, n: ApprovalNotice, state: str, detail: str | None,
                    links: ApprovalLinks | None) -> dict[str, Any]:
    """The message that says how a request a channel announced ended, for a receiver of ``kind``. Posted as a new
    message: a Teams Workflows webhook's card cannot be updated without a bot, and an incoming webhook cannot
    edit what it posted (a Slack click replaces its own message instead, through its ``response_url``)."""
    text = outcome_text(n, state, detail)
    if kind == "teams":
        return text_card(text + (f"\nOpen: {links.open}" if links else ""))
    if kind == "slack":
        body = slack_outcome(n, "not applied" if state == "failed" else state, detail or state, links)
        return {"text": body["text"], "blocks": body["blocks"]}
    return {"text": inert(text) + (f"\nOpen: {links.open}" if links else ""), "kv_remediate": {
        "kind": "approval_outcome", "request_id": inert(n.request_id), "state": state,
        "detail": fit(detail or "", 4000), "open_url": links.open if links else None}}


# --- generic webhook / e-mail --------------------------------------------------------------------------------------

def webhook_payload(n: ApprovalNotice, links: ApprovalLinks) -> dict[str, Any]:
    """A generic webhook (or e-mail relay) body: plain text with the page link only, ``approval: {id, link}`` (as
    the core's plain notification has it), and the facts as JSON (control characters escaped; a receiver renders
    them as it must)."""
    text = "\n".join([inert(_summary(n)), f"Expires: {_when(n.expires_at)}",
                      f"Open the request to approve or reject it (signed in): {links.open}"])
    facts = {label.lower().replace(" ", "_"): fit(value, 4000) for label, value in _rows(n)}
    return {"text": text, "approval": {"id": inert(n.request_id), "link": links.open}, "kv_remediate": {
        "kind": "approval_request", "request_id": inert(n.request_id), "open_url": links.open,
        "expires_at": n.expires_at.astimezone(UTC).isoformat(), "change": fit(n.change, 4000), **facts}}



# --- from a finding's JSON -----------------------------------------------------------------------------------------

def _get(d: Any, *path: str) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _principal(finding: dict[str, Any]) -> str:
    ev = _get(finding, "evidence", "principal") or {}
    oid = ev.get("object_id") or _get(finding, "denial", "principal", "object_id") or "unknown caller"
    name, kind = ev.get("display_name"), ev.get("type")
    if name:
        return f"{name} ({kind + ', ' if kind else ''}{oid})"
    return str(oid)


def evidence_summary(finding: dict[str, Any]) -> str:
    """The evidence tree in one line: what was read and what it showed (the page shows the tree itself)."""
    ev = finding.get("evidence") or {}
    parts = []
    if isinstance(ev.get("vault"), dict):
        parts.append(f"vault permission model {ev['vault'].get('permission_model')}")
    ras = ev.get("role_assignments") or []
    if ras or isinstance(ev.get("vault"), dict):
        parts.append(f"{len(ras)} role assignment(s) checked, {sum(1 for a in ras if a.get('grants'))} grant(s)")
    aps = ev.get("access_policies") or []
    if aps:
        parts.append(f"{len(aps)} access-policy entr(ies) checked")
    denies = [d for d in ev.get("deny_assignments") or [] if d.get("applies")]
    if denies:
        parts.append(f"{len(denies)} deny assignment(s) apply")
    audit = ev.get("audit_log")
    if isinstance(audit, dict):
        parts.append("audit log: the denial was read by the app" if audit.get("proof") else
                     f"audit log: {audit.get('limitation') or 'not read'}")
    parts += [str(x) for x in (ev.get("limitations") or [])[:3]]
    return "; ".join(parts) or "the input alone (nothing read from Azure)"


def change_text(finding: dict[str, Any]) -> str:
    """The exact write in one line: the plan's az command, else its kind, role or permissions and scope."""
    plan = finding.get("plan") or {}
    az = _get(plan, "commands", "az")
    if az:
        return str(az)
    what = plan.get("role_name") or plan.get("permissions") or plan.get("data_actions") or ""
    return f"{plan.get('kind', 'change')} {what} at {plan.get('scope', '?')}".strip()


def notice_of(finding: dict[str, Any], *, request_id: str, expires_at: datetime, tier: int | None = None,
              change: str | None = None) -> ApprovalNotice:
    """The notice of an approval request from its finding's JSON (``Finding.to_dict``)."""
    denial = finding.get("denial") or {}
    obj = denial.get("object") or {}
    vault = _get(finding, "evidence", "vault", "name") or _get(denial, "vault", "name") or "an unknown vault"
    return ApprovalNotice(
        request_id=request_id, cause=str(finding.get("cause") or "unknown"), principal=_principal(finding),
        vault=str(vault), operation=str(denial.get("operation") or "a request"),
        why=str(finding.get("explanation") or ""), evidence=evidence_summary(finding),
        change=change or change_text(finding), expires_at=expires_at,
        object=f"{obj.get('kind')}/{obj.get('name')}" if obj.get("name") else None, tier=tier)
