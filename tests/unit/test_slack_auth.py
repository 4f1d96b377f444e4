"""Slack request signing (HMAC-SHA256 over ``v0:timestamp:raw body``, five-minute window), the typed button click,
and the Slack-user → Entra approver mapping: every way a request could be forged or replayed is refused."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remediate.app.slack_auth import approver_of, approvers, parse_click, sign, team_problem, verify
from remediate.errors import SlackRequestError

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
TS = int(NOW.timestamp())
OID = "0d7e3c4b-1111-4222-8333-944455556666"


def click_body(action_id: str = "kv_remediate_approve", value: str = "apr-1", **over: Any) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions", "user": {"id": "U0APPROVER", "username": "ada", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM", "domain": "contoso"}, "api_app_id": "A0APP", "token": "legacy",
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/abc", "trigger_id": "1.2.3",
        "actions": [{"action_id": action_id, "block_id": "kv_remediate_approval", "value": value, "type": "button",
                     "action_ts": "1765117800.1"}],
        "message": {"text": "x", "blocks": []}, "channel": {"id": "C1", "name": "ops"}}
    payload.update(over)
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def headers(body: bytes, ts: int = TS, secret: str = SECRET) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(secret, ts, body),
            "Content-Type": "application/x-www-form-urlencoded"}


def test_a_signed_click_verifies_and_parses() -> None:
    # given a click signed with the app's secret, now; when verified and parsed
    body = click_body()
    verify(SECRET, headers(body), body, NOW)
    click = parse_click(body)
    # then it is Ada's approve of apr-1, with its response URL
    assert (click.user_id, click.team_id, click.action, click.request_id) == ("U0APPROVER", "T0TEAM", "approve",
                                                                              "apr-1")
    assert click.response_url == "https://hooks.slack.com/actions/T0TEAM/1/abc"


def test_signature_matches_slacks_documented_example() -> None:
    # the worked example of Slack's "Verifying requests from Slack" page: this secret, timestamp and body give
    # this signature
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
            b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
            b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRs"
            b"kXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    assert sign(SECRET, 1531420618, body) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def tampered(body: bytes) -> bytes:
    return body.replace(b"apr-1", b"apr-2")


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong secret", "bad_signature"),
    ("tampered body", "bad_signature"),
    ("no signature", "missing_signature"),
    ("no timestamp", "missing_signature"),
    ("stale by 5 min 1 s", "stale_timestamp"),
    ("future by 5 min 1 s", "stale_timestamp"),
    ("timestamp not digits", "bad_timestamp"),
    ("signature of another timestamp", "bad_signature"),
    ("v1 scheme", "bad_signature"),
    ("upper-case hex", "bad_signature"),
    ("non-ascii signature", "bad_signature"),
])
def test_forged_or_replayed_requests_are_refused(case: str, reason: str) -> None:
    body = click_body()
    h = headers(body)
    if case == "wrong secret":
        h = headers(body, secret="another-secret")
    elif case == "tampered body":
        body = tampered(body)
    elif case == "no signature":
        del h["X-Slack-Signature"]
    elif case == "no timestamp":
        del h["X-Slack-Request-Timestamp"]
    elif case == "stale by 5 min 1 s":
        h = headers(body, ts=TS - 301)
    elif case == "future by 5 min 1 s":
        h = headers(body, ts=TS + 301)
    elif case == "timestamp not digits":
        h["X-Slack-Request-Timestamp"] = f"{TS}.5"
    elif case == "signature of another timestamp":
        h["X-Slack-Request-Timestamp"] = str(TS - 1)
    elif case == "v1 scheme":
        h["X-Slack-Signature"] = "v1=" + h["X-Slack-Signature"][3:]
    elif case == "upper-case hex":
        h["X-Slack-Signature"] = "v0=" + h["X-Slack-Signature"][3:].upper()
    elif case == "non-ascii signature":
        h["X-Slack-Signature"] = "v0=é" + h["X-Slack-Signature"][4:]
    with pytest.raises(SlackRequestError) as err:
        verify(SECRET, h, body, NOW)
    assert err.value.reason == reason and err.value.status == 401


def test_the_window_edge_is_inclusive() -> None:
    body = click_body()
    verify(SECRET, headers(body, ts=TS - 300), body, NOW)
    verify(SECRET, headers(body, ts=TS + 300), body, NOW)
    with pytest.raises(SlackRequestError, match="stale_timestamp"):
        verify(SECRET, headers(body, ts=TS - 300), body, NOW + timedelta(milliseconds=1))


def test_no_secret_refuses_everything() -> None:
    body = click_body()
    with pytest.raises(SlackRequestError) as err:
        verify("", headers(body, secret=""), body, NOW)
    assert err.value.reason == "not_configured" and err.value.status == 401


@pytest.mark.parametrize("body", [
    b"",
    b"payload=not-json",
    b"payload=%7B%7D",
    b"\xff\xfe",
    b"payload=1&payload=2",
    b"other=1",
    click_body(type="view_submission"),
    click_body(action_id="someone_elses_button"),
    click_body(value=""),
    click_body(actions=[]),
    click_body(actions=[{"action_id": "kv_remediate_approve", "value": "a"}] * 2),
    click_body(user={"id": "not a user"}),
    click_body(user={"id": "U1", "username": "x" * 10_000}),
    click_body(value="x" * 3000),
    click_body(value="apr/../other"),
    click_body(value="apr#1"),
    click_body(value="apr\n1"),
    click_body(value="-apr"),
    b"payload=" + b"a" * 70_000,
])
def test_payloads_that_are_not_our_clicks_are_refused(body: bytes) -> None:
    with pytest.raises(SlackRequestError) as err:
        parse_click(body)
    assert err.value.status == 400 and err.value.reason == "bad_payload"


def test_open_and_reject_clicks() -> None:
    assert parse_click(click_body("kv_remediate_reject")).action == "reject"
    assert parse_click(click_body("kv_remediate_open")).action == "open"


def test_only_mapped_users_act_as_their_entra_id() -> None:
    mapping = approvers(f" U0APPROVER={OID.upper()} , W0GRID=11111111-2222-4333-8444-555555555555 ")
    assert mapping == {"U0APPROVER": OID, "W0GRID": "11111111-2222-4333-8444-555555555555"}
    click = parse_click(click_body())
    assert approver_of(click, mapping, None) == OID
    assert approver_of(click, mapping, "T0TEAM") == OID
    stranger = parse_click(click_body(user={"id": "U0STRANGER", "team_id": "T0TEAM"}))
    with pytest.raises(SlackRequestError) as err:
        approver_of(stranger, mapping, None)
    assert err.value.reason == "unmapped_user" and err.value.status == 403 and "not an approver" in err.value.message
    with pytest.raises(SlackRequestError) as err:
        approver_of(click, mapping, "T0OTHER")
    assert err.value.reason == "wrong_team"


@pytest.mark.parametrize("text", ["U1", "U1=not-a-guid", "someone=" + OID, f"U1={OID}=x", f"u0lower={OID}"])
def test_bad_mapping_entries_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="SLACKUSERID=ENTRA-OBJECT-ID"):
        approvers(text)


def test_team_setting_check() -> None:
    assert team_problem("T0TEAM") is None and team_problem(None) is None
    assert team_problem("contoso") is not None


@pytest.mark.parametrize(("url", "ok"), [
    ("https://hooks.slack.com/actions/T0/1/abc", True),
    ("https://hooks.slack-gov.com/actions/T0/1/abc", True),
    ("http://hooks.slack.com/actions/T0/1/abc", False),
    ("https://hooks.slack.com.evil.example/x", False),
    ("https://evil.example/hooks.slack.com", False),
    ("https://hooks.slack.com@evil.example/x", False),
    ("https://169.254.169.254/metadata", False),
    ("http://127.0.0.1:8080/reply", True),
    ("ftp://hooks.slack.com/x", False),
    ("https://[::1", False),
    (None, False),
    ("", False),
])
def test_replies_go_only_to_slack_hooks_or_loopback(url: str | None, ok: bool) -> None:
    from remediate.app.slack import response_url_ok

    assert response_url_ok(url) is ok


def test_a_queued_click_round_trips() -> None:
    from remediate.app.slack import encode_click
    from remediate.app.slack_decide import decode

    click = parse_click(click_body())
    item = decode(encode_click(click, OID, None, NOW))
    assert (item.request_id, item.verb, item.slack_user, item.slack_team, item.approver) == \
        ("apr-1", "approve", "U0APPROVER", "T0TEAM", OID)
    assert item.response_url == "https://hooks.slack.com/actions/T0TEAM/1/abc"


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b'{"schema": "other"}', b"\xff"])
def test_a_queue_message_that_is_not_ours_is_refused(body: bytes) -> None:
    from remediate.app.slack_decide import decode
    from remediate.errors import InputError

    with pytest.raises(InputError):
        decode(body)
