"""Approval-request messages: the Teams card is valid Adaptive Card 1.5 (the official schema, vendored) and fits
Teams' size limit; the Slack blocks respect Block Kit's limits; attacker-shaped values never become markup, links
or mentions in any format; links only open the findings page."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediate.render.approval_messages import (
    SLACK_APPROVE,
    SLACK_OPEN,
    SLACK_REJECT,
    TEAMS_MAX_BYTES,
    ApprovalNotice,
    fit,
    outcome_payload,
    page_links,
    slack_code,
    slack_escape,
    slack_outcome,
    slack_payload,
    teams_payload,
    webhook_payload,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "adaptive-card" /
                     "adaptive-card-1.5.json").read_text(encoding="utf-8"))
BASE = "https://kvr.example.net"
EXPIRES = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)


def notice(**over: Any) -> ApprovalNotice:
    n = ApprovalNotice(
        request_id="apr-0b8f1c2d", cause="missing_role",
        principal="orders-api (service principal, f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879)",
        vault="kv-payments", object="db-password", operation="SecretGet",
        why="orders-api has no role on kv-payments that allows secrets/getSecret/action.",
        evidence="audit log: 3 denials 09:50-09:53 UTC (AzureDiagnostics)",
        change="az role assignment create --role 'Key Vault Secrets User' --assignee-object-id f5cc68ab-... "
               "--scope /subscriptions/.../vaults/kv-payments/secrets/db-password",
        expires_at=EXPIRES, tier=1)
    return replace(n, **over)


def card(n: ApprovalNotice) -> dict[str, Any]:
    payload = teams_payload(n, page_links(BASE, n.request_id))
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content: dict[str, Any] = attachment["content"]
    return content


def schema_errors(doc: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft6Validator(SCHEMA).iter_errors(doc)]


def strings(obj: Any, key: str | None = None) -> list[tuple[str | None, str]]:
    """Every (key, string) in a JSON value."""
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in strings(v, k)]
    if isinstance(obj, list):
        return [pair for v in obj for pair in strings(v, key)]
    return [(key, obj)] if isinstance(obj, str) else []


def walk(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        return [obj, *[d for v in obj.values() for d in walk(v)]]
    if isinstance(obj, list):
        return [d for v in obj for d in walk(v)]
    return []


ATTACKS = [
    "[Approve](https://evil.example/steal)",
    "<https://evil.example|Approve now>",
    "<!channel> <!here> <@U0ADMIN> <at>admin</at>",
    "*APPROVED* _by_ ~security~ `code` ```block```",
    "a\nfake line\r\n**Approved by admin**",
    "\u202egnp.exe \u200b\u2066x",
    "&amp; &lt;script&gt; <script>alert(1)</script>",
    "https://evil.example/login",
    "x" * 50_000,
]


# --- Teams ---------------------------------------------------------------------------------------------------------

def test_teams_card_is_valid_adaptive_card_1_5() -> None:
    # given a pending request; when it is rendered for Teams
    c = card(notice())
    # then the card validates against the official 1.5 schema and says version 1.5
    assert schema_errors(c) == []
    assert c["version"] == "1.5" and c["type"] == "AdaptiveCard"


def test_schema_check_bites() -> None:
    # given cards the schema forbids (a MessageCard-style field, a TextRun with a bad weight, an action without url)
    good = card(notice())
    bad_run = {**good, "body": [{"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": "x",
                                                                        "weight": "Heavy"}]}]}
    no_url = {**good, "actions": [{"type": "Action.OpenUrl", "title": "Open"}]}
    connector = {**good, "themeColor": "0076D7"}
    # then each is refused: the test really validates
    for doc in (bad_run, no_url, connector):
        assert schema_errors(doc)


def test_teams_actions_only_open_the_page() -> None:
    # given the card's actions
    c = card(notice())
    actions = c["actions"]
    # then Approve, Reject and Open are all Action.OpenUrl to the findings page (no Action.Execute/Submit: a
    # Workflows webhook has no bot to receive them), and nothing else in the card carries a URL
    assert [(a["type"], a["title"]) for a in actions] == [("Action.OpenUrl", "Approve"), ("Action.OpenUrl", "Reject"),
                                                          ("Action.OpenUrl", "Open")]
    urls = [a["url"] for a in actions]
    assert urls == [f"{BASE}/api/findings?approval=apr-0b8f1c2d&action=approve",
                    f"{BASE}/api/findings?approval=apr-0b8f1c2d&action=reject",
                    f"{BASE}/api/findings?approval=apr-0b8f1c2d"]
    assert [d for d in walk(c) if "url" in d and d not in actions] == []


def test_teams_card_carries_the_finding() -> None:
    c = card(notice())
    text = " ".join(s for _, s in strings(c))
    for part in ("missing_role", "orders-api", "kv-payments", "db-password", "SecretGet", "audit log: 3 denials",
                 "Key Vault Secrets User", "2026-12-08 14:00 UTC"):
        assert part in text


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("where", ["principal", "object", "why", "evidence", "change", "operation", "vault"])
def test_teams_attack_values_are_plain_text_runs(where: str, attack: str) -> None:
    # given an attacker-shaped value in any field
    c = card(notice(**{where: attack}))
    # then the card is still valid and within Teams' limit,
    assert schema_errors(c) == []
    assert len(json.dumps({"attachments": [{"content": c}]}).encode()) < TEAMS_MAX_BYTES
    # the value appears only in TextRuns (Markdown is not rendered there), never in a TextBlock,
    for block in walk(c):
        if block.get("type") == "TextBlock":
            assert block["text"] == "Key Vault access: approval needed"
    # no control or bidi character survives, and the only URLs are the page's
    for _, s in strings(c):
        assert not re.search(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069\u200b]", s)
    assert all(a["url"].startswith(f"{BASE}/api/findings?") for a in c["actions"])


def test_teams_payload_fits_28_kb_with_every_field_huge() -> None:
    # given every free text at 100 KB of multi-byte characters
    huge = "é<&>" * 25_000
    c = card(notice(principal=huge, why=huge, evidence=huge, change=huge, object=huge, operation=huge))
    # then the payload stays under Teams' limit and valid, cut with an ellipsis
    assert len(json.dumps({"type": "message", "attachments": [{"content": c}]}).encode()) < TEAMS_MAX_BYTES
    assert schema_errors(c) == []
    assert any(s.endswith("…") for _, s in strings(c))


# --- Slack ---------------------------------------------------------------------------------------------------------

def slack(n: ApprovalNotice) -> dict[str, Any]:
    return slack_payload(n, page_links(BASE, n.request_id))


def test_slack_buttons_name_the_decision_and_the_request() -> None:
    # given the Slack message
    msg = slack(notice())
    [actions] = [b for b in msg["blocks"] if b["type"] == "actions"]
    # then Approve and Reject carry action_id + value = request id; Open is a link to the page
    by_id = {e["action_id"]: e for e in actions["elements"]}
    assert by_id[SLACK_APPROVE]["value"] == by_id[SLACK_REJECT]["value"] == "apr-0b8f1c2d"
    assert "url" not in by_id[SLACK_APPROVE] and "url" not in by_id[SLACK_REJECT]
    assert by_id[SLACK_OPEN]["url"] == f"{BASE}/api/findings?approval=apr-0b8f1c2d"
    assert by_id[SLACK_APPROVE]["style"] == "primary" and by_id[SLACK_REJECT]["style"] == "danger"


def slack_texts(msg: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in walk(msg) if d.get("type") in ("mrkdwn", "plain_text")]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("where", ["principal", "object", "why", "evidence", "change", "operation", "vault"])
def test_slack_attack_values_are_inert(where: str, attack: str) -> None:
    # given an attacker-shaped value in any field
    msg = slack(notice(**{where: attack}))
    for t in slack_texts(msg):
        text = t["text"]
        # then no raw < or > reaches Slack's parser (no link, mention or <!channel>), mrkdwn is verbatim (no
        # auto-links), and no control character survives
        assert "<" not in text and ">" not in text
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069\u200b]", text)
        assert t["type"] == "plain_text" or t["verbatim"] is True
    # every value sits in a code span it cannot close: backticks inside are quotes
    for t in slack_texts(msg):
        if t["type"] == "mrkdwn" and "\n`" in t["text"]:
            span = t["text"].split("\n", 1)[1]
            assert span.startswith("`") and span.endswith("`") and "`" not in span[1:-1]
    # and the fallback text is escaped too
    assert "<" not in msg["text"] and ">" not in msg["text"]


def test_slack_limits_hold_for_huge_values() -> None:
    huge = "&<>" * 40_000
    msg = slack(notice(principal=huge, why=huge, evidence=huge, change=huge, object=huge, request_id="r" * 5000))
    assert len(msg["blocks"]) <= 50
    for block in msg["blocks"]:
        if block["type"] == "section":
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000
            assert len(block["fields"]) <= 10 if "fields" in block else len(block["text"]["text"]) <= 3000
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "actions":
            for e in block["elements"]:
                assert len(e["text"]["text"]) <= 75 and len(e.get("value", "")) <= 2000 and \
                    len(e.get("url", "")) <= 3000
    assert len(msg["text"]) <= 3000
    # an entity is never cut in half
    for t in slack_texts(msg):
        assert not re.search(r"&(a|am|l|g)?…", t["text"]) and not re.search(r"&[a-z]*$", t["text"])


def test_slack_outcome_replaces_the_request_without_buttons() -> None:
    n = notice(principal="<!channel>")
    out = slack_outcome(n, "applied", "Approved by <@U1> & applied once", page_links(BASE, n.request_id))
    assert out["replace_original"] is True
    assert not [e for b in out["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] in (SLACK_APPROVE, SLACK_REJECT)]
    assert all("<" not in t["text"] for t in slack_texts(out)) and "<" not in out["text"]
    assert "Applied" in json.dumps(out)


# --- generic webhook / e-mail --------------------------------------------------------------------------------------

def test_webhook_payload_has_the_link_only() -> None:
    # given the generic payload; then it carries the page link to open, and no approve/reject link
    n = notice()
    body = webhook_payload(n, page_links(BASE, n.request_id))
    urls = re.findall(r"https?://[^\s\"]+", json.dumps(body))
    assert set(urls) == {f"{BASE}/api/findings?approval=apr-0b8f1c2d"}
    assert body["kv_remediate"]["kind"] == "approval_request"
    assert body["kv_remediate"]["expires_at"] == "2026-12-08T14:00:00+00:00"


@pytest.mark.parametrize("attack", ATTACKS)
def test_webhook_payload_escapes_controls(attack: str) -> None:
    n = notice(principal=attack, why=attack)
    body = webhook_payload(n, page_links(BASE, n.request_id))
    for _, s in strings(body):
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", s)
    assert body["text"].count("\n") == 2


# --- helpers -------------------------------------------------------------------------------------------------------

def test_page_links_quote_the_request_id() -> None:
    links = page_links("https://a.example/", "id with&=#/?", "api")
    assert links.open == "https://a.example/api/findings?approval=id+with%26%3D%23%2F%3F"


@pytest.mark.parametrize("limit", [1, 2, 5, 6, 7, 10, 100])
def test_fit_never_cuts_an_entity(limit: int) -> None:
    out = fit("&&&&&&&&&&", limit, slack_escape)
    assert len(out) <= limit
    assert re.fullmatch(r"(&amp;)*…?", out)


def test_slack_code_cannot_be_closed() -> None:
    assert slack_code("a`*b*`c") == "`a'*b*'c`"


# --- any text at all -------------------------------------------------------------------------------------------------

_ANY = st.text(st.characters(codec="utf-8"), max_size=3000)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(principal=_ANY, why=_ANY, change=_ANY, obj=_ANY)
def test_any_text_keeps_every_format_inert_and_within_limits(principal: str, why: str, change: str, obj: str) -> None:
    n = notice(principal=principal, why=why, change=change, object=obj or None)
    links = page_links(BASE, n.request_id)
    # Teams: valid 1.5, under the limit, values only in TextRuns, only our URLs
    c = card(n)
    assert schema_errors(c) == []
    assert len(json.dumps(teams_payload(n, links)).encode()) < TEAMS_MAX_BYTES
    assert [b["text"] for b in walk(c) if b.get("type") == "TextBlock"] == ["Key Vault access: approval needed"]
    assert {a["url"] for a in c["actions"]} == {links.open, links.approve, links.reject}
    # Slack: nothing Slack would parse as a link, mention or command; fields within Block Kit's limits
    msg = slack_payload(n, links)
    for t in slack_texts(msg):
        assert "<" not in t["text"] and ">" not in t["text"] and len(t["text"]) <= 3000
    # generic: one line per fact in the text, the link is ours
    body = webhook_payload(n, links)
    assert body["text"].count("\n") == 2 and body["kv_remediate"]["open_url"] == links.open


@pytest.mark.parametrize("state", ["applied", "failed", "rejected", "expired"])
def test_how_a_request_ended_is_told_in_each_channels_shape(state: str) -> None:
    # given a request that ended, with an attacker-shaped reason
    n = notice(principal="<!channel> *evil* [x](https://evil.example)")
    detail = "drift: <@U123> role changed"
    links = page_links(BASE, n.request_id)
    # then Teams gets a valid Adaptive Card 1.5 of plain TextRuns that says the outcome
    teams = outcome_payload("teams", n, state, detail, links)
    content = teams["attachments"][0]["content"]
    assert schema_errors(content) == []
    words = " ".join(i["text"] for b in content["body"] for i in b["inlines"])
    assert ("not applied" if state == "failed" else state) in words and links.open in words
    # and Slack gets blocks in which nothing from outside is markup (no mention, no link)
    slack = json.dumps(outcome_payload("slack", n, state, detail, links))
    assert "<!channel>" not in slack and "<@U123>" not in slack and "replace_original" not in slack
    # and a generic webhook gets the text, the state and the page link only
    hook = outcome_payload("webhook", n, state, detail, links)
    assert hook["kv_remediate"]["kind"] == "approval_outcome" and hook["kv_remediate"]["state"] == state
    assert hook["kv_remediate"]["open_url"] == links.open
