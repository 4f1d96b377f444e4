"""Slack interactivity: ``POST /api/slack/actions`` (the Slack app's Interactivity Request URL) and the queue
worker that carries out the click.

Slack cannot send a function key, so the route is anonymous and Slack's request signature is the authentication:
verified over the raw body before anything is parsed (slack_auth.py; bad, missing or stale → 401, nothing read,
nothing queued). Slack wants an answer within 3 seconds ("you only have 3 seconds to respond before Slack
registers a timeout error"); an approval re-reads the tenant and applies and verifies a write through ARM, which
no one can promise in 3 s. So the route only checks, maps the Slack user to an Entra ID approver and puts the click
on the queue ``slack-actions`` (one Storage call), then answers 200 at once; the queue worker ``slack_decisions``
calls the approvals core's decide (re-check, exactly-once apply, every decision and refusal recorded there) and
replaces the Slack message with the outcome through the click's ``response_url`` (Slack accepts up to 5 replies
within 30 minutes). A replayed or doubled click reaches the core as a second act on a request no longer pending:
refused and recorded, nothing applied twice. The Open button also calls here: answered 200, nothing decided.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func

from .settings import STORAGE_CONNECTION

if TYPE_CHECKING:
    from .services import Runtime
    from .slack_auth import SlackClick

log = logging.getLogger("kv_remediate.slack")

bp = func.Blueprint()
SLACK_QUEUE = "slack-actions"
MESSAGE_SCHEMA = "kv-remediate/slack-action@1"
SLACK_HOOK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
"""Where a click's ``response_url`` may point (Slack's and GovSlack's); http(s) to loopback too (local, tests)."""


def response_url_ok(url: str | None) -> bool:
    """Whether the app may POST the outcome to ``url``: https on Slack's hooks host, or loopback."""
    if not url:
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.scheme == "https" and host in SLACK_HOOK_HOSTS:
        return True
    return parts.scheme in ("http", "https") and host in ("127.0.0.1", "localhost", "::1")


def _queue(rt: Runtime) -> Any:
    """The ``slack-actions`` queue client of this runtime (created, with the queue, on first use; kept on the
    runtime, so a new runtime with other settings gets its own)."""
    client = getattr(rt, "_slack_queue", None)
    if client is None:
        from ..store.azure import queue_client, queue_service_client, storage_settings

        service = queue_service_client(storage_settings(rt.settings.env, prefix=STORAGE_CONNECTION))
        client = queue_client(service, SLACK_QUEUE)
        setattr(rt, "_slack_queue", client)  # noqa: B010 (Runtime is another module's; an attribute of ours)
    return client


def encode_click(click: SlackClick, approver: str | None, refused: str | None, now: datetime) -> str:
    """The queue message of one verified click: who (Slack user, team, the mapped Entra object id or why there is
    none), which request, which verb, where to answer, when it arrived."""
    return json.dumps({"schema": MESSAGE_SCHEMA, "request_id": click.request_id, "verb": click.action,
                       "slack_user": click.user_id, "slack_team": click.team_id, "user_name": click.user_name,
                       "approver": approver, "refused": refused, "response_url": click.response_url,
                       "received_at": now.astimezone(UTC).isoformat()})


def accept(rt: Runtime, headers: Any, body: bytes, now: datetime) -> bool:
    """Verify, parse and queue one Slack request; True when a decision was queued (False for Open). Raises
    SlackRequestError for a request that is refused outright (nothing queued)."""
    from ..errors import SlackRequestError
    from ..store.azure import storage_errors, target_of
    from .slack_auth import (
        APPROVERS_SETTING,
        SIGNING_SECRET_SETTING,
        TEAM_SETTING,
        approver_of,
        approvers,
        parse_click,
        verify,
    )

    env = rt.settings.env
    verify((env.get(SIGNING_SECRET_SETTING) or "").strip(), headers, body, now)
    click = parse_click(body)
    if click.action == "open":
        return False
    if not response_url_ok(click.response_url):
        raise SlackRequestError("bad_payload", "Slack payload refused (bad_payload): its response_url is not a "
                                "Slack hooks URL", 400)
    try:
        mapping = approvers(env.get(APPROVERS_SETTING))
    except ValueError:
        log.error("kv-remediate slack: %s is unusable; every Slack click is refused until it is fixed",
                  APPROVERS_SETTING)
        mapping = {}
    approver: str | None = None
    refused: str | None = None
    try:
        approver = approver_of(click, mapping, (env.get(TEAM_SETTING) or "").strip() or None)
    except SlackRequestError as exc:
        refused = exc.reason
        log.warning("kv-remediate slack: click by %s refused (%s)", click.user_id, exc.reason)
    queue = _queue(rt)
    with storage_errors("queueing a Slack click", target_of(queue, f"queue '{SLACK_QUEUE}'")):
        queue.send_message(encode_click(click, approver, refused, now))
    return True


@bp.function_name("slack_actions")
@bp.route(route="slack/actions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def slack_actions(req: func.HttpRequest) -> func.HttpResponse:
    """Slack's interactivity request: 200 (empty) once the click is verified and queued; 401 for a missing, bad
    or stale signature (and for every request while ``KV_REMEDIATE_SLACK_SIGNING_SECRET`` is unset), 400 for a
    payload that is not a click on our buttons, 503 when storage is down. Nothing is decided here."""
    from ..errors import SlackRequestError
    from . import services
    from .responses import error_response, from_exception

    try:
        accept(services.get(), req.headers, req.get_body() or b"", datetime.now(UTC))
    except SlackRequestError as exc:
        said = {"event": "kv-remediate.slack_refused", "reason": exc.reason, "status": exc.status}
        log.warning("kv-remediate slack: request refused (%s): nothing queued or decided", exc.reason,
                    extra={"custom_dimensions": said})
        return error_response(exc.status, exc.code, exc.message)
    except Exception as exc:
        return from_exception(exc, "slack_actions")
    return func.HttpResponse(status_code=200)


@bp.function_name("slack_decisions")
@bp.queue_trigger(arg_name="msg", queue_name=SLACK_QUEUE, connection=STORAGE_CONNECTION)
async def slack_decisions(msg: func.QueueMessage) -> None:
    """Carry out one queued Slack click (approvals core) and replace the Slack message with the outcome."""
    from . import services
    from .slack_decide import carry_out

    await carry_out(services.get(), msg.get_body())
