"""Slack interactivity requests: the signature check over the raw body, the typed button click, and who may act.

Slack signs each request: ``X-Slack-Signature`` is ``v0=`` + the hex HMAC-SHA256, keyed with the app's signing
secret, of ``v0:{X-Slack-Request-Timestamp}:{raw body}``; a timestamp more than five minutes from now "could be a
replay attack" and is refused (Slack, "Verifying requests from Slack"). The body is hashed exactly as received,
before it is parsed, and compared in constant time (``hmac.compare_digest``). The clock is the caller's.

Interactivity payloads arrive form-encoded with one ``payload`` parameter holding JSON; only a ``block_actions``
click on one of our buttons is read. Slack user ids are not Entra ID identities: only users mapped by the
``KV_REMEDIATE_SLACK_APPROVERS`` setting (``SLACKUSERID=ENTRA-OBJECT-ID``, comma-separated) may act, as that Entra
object id, which the approvals core then checks like any approver (allow-list, never the grantee, M-of-N).
``KV_REMEDIATE_SLACK_TEAM`` (optional) names the one workspace (team id) whose clicks are read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import SlackRequestError

SIGNING_SECRET_SETTING = "KV_REMEDIATE_SLACK_SIGNING_SECRET"
APPROVERS_SETTING = "KV_REMEDIATE_SLACK_APPROVERS"
TEAM_SETTING = "KV_REMEDIATE_SLACK_TEAM"
MAX_SKEW_SECONDS = 300
"""Slack: refuse a request whose timestamp is more than five minutes from the local clock."""
MAX_BODY_BYTES = 64 * 1024
"""A block_actions payload for one of our messages is a few KB; anything far larger is not one."""
_USER = re.compile(r"[UW][A-Z0-9]{2,40}")
_TEAM = re.compile(r"[TE][A-Z0-9]{2,40}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
"""An approval request id as the core makes them (a UUID) and our buttons carry: anything else never reaches the
store (Table keys refuse ``/``, ``#``, ``?`` and control characters)."""
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DECISIONS = {"kv_remediate_approve": "approve", "kv_remediate_reject": "reject"}
OPEN_ACTION = "kv_remediate_open"


def _header(headers: Mapping[str, str] | Any, name: str) -> str:
    value = headers.get(name) or headers.get(name.lower()) or ""
    return str(value).strip()


def verify(secret: str, headers: Mapping[str, str] | Any, body: bytes, now: datetime) -> None:
    """Check Slack's signature on ``body`` (the raw bytes) at ``now``; SlackRequestError (401) names the reason:
    ``missing_signature``, ``bad_timestamp``, ``stale_timestamp`` or ``bad_signature``."""
    if not secret:
        raise SlackRequestError("not_configured", f"Slack requests are refused: {SIGNING_SECRET_SETTING} is not set "
                                "(the app's signing secret, from the Slack app's Basic Information page)")
    timestamp = _header(headers, "X-Slack-Request-Timestamp")
    signature = _header(headers, "X-Slack-Signature")
    if not timestamp or not signature:
        raise SlackRequestError("missing_signature", "Slack request refused (missing_signature): the "
                                "X-Slack-Request-Timestamp and X-Slack-Signature headers are required")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):  # noqa: PLR2004 (digits)
        raise SlackRequestError("bad_timestamp", "Slack request refused (bad_timestamp): X-Slack-Request-Timestamp "
                                "is not a Unix time in seconds")
    if abs(now.timestamp() - int(timestamp)) > MAX_SKEW_SECONDS:
        raise SlackRequestError("stale_timestamp", "Slack request refused (stale_timestamp): its timestamp is more "
                                "than five minutes from this server's clock (a replay, or a clock to fix)")
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise SlackRequestError("bad_signature", "Slack request refused (bad_signature): the signature does not "
                                f"match; check {SIGNING_SECRET_SETTING} against the Slack app's signing secret")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack would send (for local tooling and tests)."""
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SlackClick:
    """One click on one of our buttons: who (Slack user and team), which request, which decision, and where to
    send the outcome (the click's ``response_url``)."""

    user_id: str
    team_id: str | None
    action: str
    """``approve``, ``reject`` or ``open`` (the Open link also reaches the endpoint; nothing is decided)."""
    request_id: str
    response_url: str | None
    user_name: str | None = None


def _bad(problem: str) -> SlackRequestError:
    return SlackRequestError("bad_payload", f"Slack payload refused (bad_payload): {problem}", 400)


def parse_click(body: bytes) -> SlackClick:
    """The click in a verified interactivity body (form-encoded ``payload=<JSON>``); SlackRequestError (400)
    when it is not a ``block_actions`` click on one of our buttons."""
    import msgspec

    from .slack_models import Interaction

    if len(body) > MAX_BODY_BYTES:
        raise _bad(f"the body is {len(body)} bytes, more than a click on our message carries")
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad("the body is not form-encoded UTF-8 with a payload parameter") from exc
    raw = form.get("payload") or []
    if len(raw) != 1:
        raise _bad("the body must carry exactly one payload parameter")
    try:
        interaction = msgspec.json.decode(raw[0], type=Interaction)
    except msgspec.ValidationError as exc:
        raise _bad(f"the payload is not a Slack interaction we read ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise _bad("the payload is not JSON") from exc
    if interaction.type != "block_actions" or len(interaction.actions) != 1:
        raise _bad(f"only a block_actions click on one button is read, not {interaction.type!r} with "
                   f"{len(interaction.actions)} action(s)")
    act = interaction.actions[0]
    action = DECISIONS.get(act.action_id) or ("open" if act.action_id == OPEN_ACTION else None)
    if action is None or not act.value:
        raise _bad("the click is not on a kv-remediate Approve, Reject or Open button")
    if not _REQUEST_ID.fullmatch(act.value):
        raise _bad("the button's value is not an approval request id")
    if not _USER.fullmatch(interaction.user.id):
        raise _bad("the clicking user's id is not a Slack user id")
    team = interaction.team.id if interaction.team else interaction.user.team_id
    return SlackClick(interaction.user.id, team, action, act.value, interaction.response_url,
                      interaction.user.username)


def approvers(text: str | None) -> dict[str, str]:
    """``KV_REMEDIATE_SLACK_APPROVERS`` as {Slack user id: Entra object id (lower-case)}; ValueError names the
    first entry that is not ``SLACKUSERID=OBJECT-ID``."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        user, _, oid = (part.strip() for part in entry.partition("="))
        if not _USER.fullmatch(user) or not _GUID.fullmatch(oid):
            raise ValueError(f"entry {len(out) + 1} is not SLACKUSERID=ENTRA-OBJECT-ID (e.g. U012AB3CD=<guid>)")
        out[user] = oid.lower()
    return out


def team_problem(team: str | None) -> str | None:
    """Why ``KV_REMEDIATE_SLACK_TEAM`` is unusable, or None."""
    if team and not _TEAM.fullmatch(team.strip()):
        return "is not a Slack team id (T… or E…)"
    return None


def approver_of(click: SlackClick, mapping: Mapping[str, str], team: str | None) -> str:
    """The Entra object id the click acts as; SlackRequestError (403, ``unmapped_user`` or ``wrong_team``) when the
    user is not a configured approver or the click came from another workspace."""
    if team and (click.team_id or "") != team.strip():
        raise SlackRequestError("wrong_team", "Slack click refused (wrong_team): it came from a workspace other "
                                f"than {TEAM_SETTING}", 403)
    oid = mapping.get(click.user_id)
    if oid is None:
        raise SlackRequestError("unmapped_user", "You are not an approver here: your Slack user is not mapped to an "
                                f"Entra ID approver ({APPROVERS_SETTING}); ask an administrator, or approve on the "
                                "findings page signed in", 403)
    return oid
