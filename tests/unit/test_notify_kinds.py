"""Which payload a notification URL gets (KV_REMEDIATE_NOTIFY_KIND, else the URL's host), and the Teams shape of a
finding's plain notification (Workflows take Adaptive Cards only)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from remediate.app.notify import finding_payload, kind_of, kind_problem

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "adaptive-card" /
                     "adaptive-card-1.5.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("url", "setting", "kind"), [
    ("https://hooks.slack.com/services/T0/B0/x", None, "slack"),
    ("https://hooks.slack-gov.com/services/T0/B0/x", None, "slack"),
    ("https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x", None,
     "teams"),
    ("https://default0123.ab.environment.api.powerplatform.com/powerautomate/automations/direct/x", None, "teams"),
    ("https://contoso.webhook.office.com/webhookb2/x", None, "teams"),
    ("https://hooks.slack.com.evil.example/x", None, "webhook"),
    ("https://evil.example/hooks.slack.com", None, "webhook"),
    ("https://logic.azure.com.evil.example/x", None, "webhook"),
    ("https://relay.example/mail", None, "webhook"),
    ("http://127.0.0.1:8080/hook", None, "webhook"),
    ("http://127.0.0.1:8080/hook", "slack", "slack"),
    ("https://hooks.slack.com/services/x", " Teams ", "teams"),
    ("https://hooks.slack.com/services/x", "email", "slack"),
    ("not a url [", None, "webhook"),
    (None, None, "webhook"),
])
def test_kind_from_setting_or_host(url: str | None, setting: str | None, kind: str) -> None:
    assert kind_of(url, setting) == kind


def test_kind_setting_problem() -> None:
    assert kind_problem("slack") is None and kind_problem(None) is None and kind_problem("") is None
    assert kind_problem("msteams") is not None


def test_a_finding_for_teams_is_a_valid_card_of_plain_runs() -> None:
    body = {"text": "Key Vault denial diagnosed: missing_role\n[Approve](https://evil.example)\n\nFix: `az ...`",
            "summary": "s", "kv_remediate": {}}
    payload = finding_payload("teams", body)
    [attachment] = payload["attachments"]
    card = attachment["content"]
    assert list(jsonschema.Draft6Validator(SCHEMA).iter_errors(card)) == []
    assert all(block["type"] == "RichTextBlock" for block in card["body"])
    assert "[Approve](https://evil.example)" in json.dumps(card)   # shown as text, in a TextRun: never a link
    escaped = finding_payload("teams", {"text": "a &lt;b&gt; \\*c\\* \\[d\\] \\x1b"})
    assert escaped["attachments"][0]["content"]["body"][0]["inlines"][0]["text"] == "a <b> *c* [d] \\x1b"
    assert finding_payload("slack", body) is body and finding_payload("webhook", body) is body
