"""Slack approvals end to end through the real parts (serve, Azurite, the emulator, the SDK): an alert under
`mode: approve` → an approval request announced as Slack Block Kit → a signed click on POST /api/slack/actions →
the slack-actions queue → the approvals core → the role assignment in the emulator, exactly once → the Slack
message replaced through the click's response_url (a loopback receiver).

And every way a click must not apply: a bad signature, a stale timestamp, a replay, a double click, an unmapped
Slack user, the grantee approving itself, a rejected or expired request, a plan the tenant drifted away from."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from remediate.app import services
from remediate.app.slack import SLACK_QUEUE
from remediate.app.slack_auth import sign
from remediate.localhost.discovery import queue_triggers
from remediate.localhost.pump import QueuePump
from tests.support.app import APP_ORDERS, APP_ORDERS_CLIENT, DEMO, DEMO_SUB, KV_PAYMENTS, NotifyReceiver, audit_row
from tests.support.served_app import WORKSPACE, App, serve_app

SECRET = "slack-signing-secret-for-tests-0123456789"
APPROVER = "0d7e3c4b-1111-4222-8333-944455556666"
PUBLIC = "https://kvr.example.test"


def policy(**over: Any) -> str:
    return json.dumps({"mode": "approve", "scopes": [f"/subscriptions/{DEMO_SUB}"], "grant_ttl": "PT8H", **over})


def _clear(conn: str) -> None:
    with contextlib.suppress(Exception):
        QueueServiceClient.from_connection_string(conn).get_queue_client(SLACK_QUEUE).clear_messages()
    table = TableServiceClient.from_connection_string(conn).get_table_client("approvals")
    with contextlib.suppress(Exception):
        for e in list(table.list_entities(select=["PartitionKey", "RowKey"])):
            table.delete_entity(e["PartitionKey"], e["RowKey"])


class Slack:
    """The app served with Slack configured, a pump for the Slack decision worker and a response_url receiver."""

    def __init__(self, app: App, replies: NotifyReceiver) -> None:
        self.app = app
        self.replies = replies
        [trigger] = [t for t in queue_triggers(app.app) if t.name == "slack_decisions"]
        self.pump = QueuePump(trigger, app.http.loop, retry_delay=0)

    def request_id(self) -> str:
        """The approval request announced on the notification URL (the Approve button's value)."""
        [body] = [b for b in self.app.notify.bodies if "blocks" in b]
        [actions] = [b for b in body["blocks"] if b["type"] == "actions"]
        value: str = actions["elements"][0]["value"]
        return value

    def click(self, request_id: str, action: str = "approve", *, user: str = "U0APPROVER", ts: int | None = None,
              secret: str = SECRET, team: str = "T0TEAM") -> tuple[int, bytes, dict[str, str]]:
        payload = {"type": "block_actions", "user": {"id": user, "username": "ada", "team_id": team},
                   "team": {"id": team}, "response_url": self.replies.url,
                   "actions": [{"action_id": f"kv_remediate_{action}", "block_id": "kv_remediate_approval",
                                "value": request_id, "type": "button"}]}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        stamp = int(time.time()) if ts is None else ts
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(stamp),
                   "X-Slack-Signature": sign(secret, stamp, body)}
        return self.send(body, headers), body, headers

    def send(self, body: bytes, headers: dict[str, str]) -> int:
        status, _ = self.app.post("/api/slack/actions", body, **headers)
        return status

    def decide(self) -> None:
        self.pump.drain(timeout=60)

    def request(self, request_id: str) -> Any:
        from remediate.app import approvals

        return self.app.http.loop.submit(approvals.get(services.get(), request_id)).result(timeout=30)

    def queued(self) -> int:
        q = QueueServiceClient.from_connection_string(self.app.conn).get_queue_client(SLACK_QUEUE)
        return int(q.get_queue_properties().approximate_message_count or 0)


def _serve(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pol: str) -> Iterator[Slack]:
    tenant = json.loads((DEMO / "tenant.json").read_text())
    tenant["log_rows"] = [{**audit_row("2026-11-27T09:05:00Z", oid=APP_ORDERS, appid=APP_ORDERS_CLIENT,
                                       operation="SecretGet", uri="/secrets/orders-db"), "TenantId": WORKSPACE}]
    snapshot = tmp_path / "tenant.json"
    snapshot.write_text(json.dumps(tenant))
    _clear(azurite)
    with NotifyReceiver() as replies:
        for app in serve_app(azurite, snapshot, monkeypatch, KV_REMEDIATE_POLICY=pol,
                             KV_REMEDIATE_AUDIT_WORKSPACES=WORKSPACE, KV_REMEDIATE_NOTIFY_KIND="slack",
                             KV_REMEDIATE_PUBLIC_URL=PUBLIC, KV_REMEDIATE_SLACK_SIGNING_SECRET=SECRET,
                             KV_REMEDIATE_SLACK_APPROVERS=f"U0APPROVER={APPROVER},U0SECOND="
                                                          "11111111-2222-4333-8444-555555555555,"
                                                          f"U0GRANTEE={APP_ORDERS}"):
            yield Slack(app, replies)
    _clear(azurite)


@pytest.fixture
def slack(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slack]:
    yield from _serve(azurite, tmp_path, monkeypatch, policy())


def _assignments() -> list[dict[str, Any]]:
    run = services.get().emulator
    assert run is not None
    return [a for a in run.emulator.tenant()["role_assignments"] if a["properties"]["principalId"] == APP_ORDERS]


def _propose(slack: Slack) -> str:
    """An alert about app-orders' SecretGet on kv-payments, diagnosed by the worker: one pending request."""
    alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
    alert = alert.replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db")
    assert slack.app.post("/api/alerts", alert.encode())[0] == 202
    slack.app.pump.drain(timeout=60)
    request_id = slack.request_id()
    assert slack.request(request_id).state == "pending" and _assignments() == []
    return request_id


def test_signed_click_applies_exactly_once(slack: Slack) -> None:
    # given a pending request announced in Slack with Approve / Reject buttons and an Open link to the page
    request_id = _propose(slack)
    [note] = [b for b in slack.app.notify.bodies if "blocks" in b]
    [actions] = [b for b in note["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["kv_remediate_approve", "kv_remediate_reject",
                                                             "kv_remediate_open"]
    assert actions["elements"][2]["url"] == f"{PUBLIC}/api/findings?approval={request_id}"
    # when a mapped approver clicks Approve (signed by Slack)
    run = services.get().emulator
    assert run is not None
    arm_before = run.emulator.request_count
    status, body, headers = slack.click(request_id)
    # then the endpoint answers without a single Azure call (Slack's 3 s are never spent on ARM): the click is
    # queued, nothing is decided yet
    assert status == 200 and slack.queued() == 1 and run.emulator.request_count == arm_before
    assert _assignments() == [] and slack.request(request_id).decisions == ()
    # when the decision worker runs
    slack.decide()
    # then the role assignment exists once, the request is applied and records who, how and from where
    [assignment] = _assignments()
    req = slack.request(request_id)
    assert req.state == "applied" and assignment["properties"]["scope"].lower() == req.change.scope.lower()
    [entry] = [d for d in req.decisions if d.counted]
    assert (entry.verb, entry.channel, entry.approver.object_id) == ("approve", "slack", APPROVER)
    assert "T0TEAM" in (entry.origin or "")
    # and the Slack message was replaced with the outcome, buttons gone
    [reply] = slack.replies.bodies
    assert reply["replace_original"] is True and reply["text"].startswith("applied")
    assert not [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] != "kv_remediate_open"]

    # when the same request is replayed within the window, and the approver clicks again (double click)
    assert slack.send(body, headers) == 200
    assert slack.click(request_id)[0] == 200
    slack.decide()
    # then nothing more is applied; both acts are recorded as refused (not pending any more)
    assert len(_assignments()) == 1
    req = slack.request(request_id)
    assert req.state == "applied"
    assert [d.refused for d in req.decisions if not d.counted] == ["not_pending", "not_pending"]
    assert all(r["text"].startswith("applied") for r in slack.replies.bodies[1:])


@pytest.mark.parametrize("forgery", ["bad signature", "stale timestamp", "unsigned"])
def test_forged_or_stale_clicks_are_refused_before_anything_is_queued(slack: Slack, forgery: str) -> None:
    request_id = _propose(slack)
    if forgery == "bad signature":
        status = slack.click(request_id, secret="not-the-secret")[0]
    elif forgery == "stale timestamp":
        status = slack.click(request_id, ts=int(time.time()) - 301)[0]
    else:
        status = slack.send(urllib.parse.urlencode({"payload": "{}"}).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})
    # then 401, nothing queued, nothing decided or applied
    assert status == 401 and slack.queued() == 0
    slack.decide()
    assert slack.request(request_id).state == "pending" and _assignments() == []
    assert slack.replies.bodies == []


def test_unmapped_user_is_told_and_nothing_is_decided(slack: Slack) -> None:
    request_id = _propose(slack)
    assert slack.click(request_id, user="U0STRANGER")[0] == 200
    slack.decide()
    [reply] = slack.replies.bodies
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "not an approver" in reply["text"]
    req = slack.request(request_id)
    assert req.state == "pending" and req.decisions == () and _assignments() == []


def test_the_grantee_cannot_approve_its_own_grant(slack: Slack) -> None:
    request_id = _propose(slack)
    slack.click(request_id, user="U0GRANTEE")
    slack.decide()
    req = slack.request(request_id)
    assert req.state == "pending" and [d.refused for d in req.decisions] == ["self_approval"]
    assert _assignments() == [] and slack.replies.bodies[0]["response_type"] == "ephemeral"


def test_rejected_request_is_never_applied(slack: Slack) -> None:
    request_id = _propose(slack)
    slack.click(request_id, "reject", user="U0SECOND")
    slack.decide()
    slack.click(request_id)
    slack.decide()
    req = slack.request(request_id)
    assert req.state == "rejected" and _assignments() == []
    assert slack.replies.bodies[0]["text"].startswith("rejected")
    assert [d.refused for d in req.decisions] == [None, "not_pending"]


def test_plan_drift_between_proposal_and_approval_applies_nothing(slack: Slack) -> None:
    request_id = _propose(slack)
    # given the vault switched to the access-policy model after the request was made
    run = services.get().emulator
    assert run is not None
    with run.emulator.state.lock:
        props = run.emulator.state.vaults[KV_PAYMENTS.lower()]["properties"]
        props["enableRbacAuthorization"] = False
    before = run.emulator.tenant()["vaults"]
    slack.click(request_id)
    slack.decide()
    # then the request failed as drift, nothing was written (no role assignment, no access policy change)
    req = slack.request(request_id)
    assert req.state == "failed" and req.end == "drift" and _assignments() == []
    assert run.emulator.tenant()["vaults"] == before
    assert slack.replies.bodies[0]["text"].startswith("not applied")


@pytest.fixture
def short_lived(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slack]:
    yield from _serve(azurite, tmp_path, monkeypatch, policy(approval_ttl="PT1S"))


def test_expired_request_is_not_applied(short_lived: Slack) -> None:
    request_id = _propose(short_lived)
    time.sleep(1.2)
    short_lived.click(request_id)
    short_lived.decide()
    req = short_lived.request(request_id)
    assert req.state == "expired" and _assignments() == []
    assert [d.refused for d in req.decisions] == ["expired"]
    [reply] = short_lived.replies.bodies
    assert reply["replace_original"] is True and reply["text"].startswith("expired")


def test_two_approvers_clicking_at_once_apply_once(slack: Slack) -> None:
    # given a pending request that needs one approval; when two approvers click Approve at the same moment
    request_id = _propose(slack)
    slack.click(request_id)
    slack.click(request_id, user="U0SECOND")
    assert slack.queued() == 2
    slack.decide()   # the pump runs both messages concurrently
    # then exactly one act counted and applied; the other is refused as no longer pending
    req = slack.request(request_id)
    assert req.state == "applied" and len(_assignments()) == 1
    assert sorted(str(d.refused) for d in req.decisions) == ["None", "not_pending"]
    # and both messages say so: applied, or approved and being applied by the other act
    first, second = sorted(r["text"].split(":")[0] for r in slack.replies.bodies)
    assert first == "applied" and second in ("applied", "approved")


def test_the_open_link_reaches_the_endpoint_and_decides_nothing(slack: Slack) -> None:
    request_id = _propose(slack)
    assert slack.click(request_id, "open")[0] == 200
    assert slack.queued() == 0
    assert slack.request(request_id).decisions == ()


def test_teams_kind_announces_the_request_as_a_valid_adaptive_card(azurite: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "adaptive-card" /
                         "adaptive-card-1.5.json").read_text(encoding="utf-8"))
    # given the Teams kind; when an alert opens an approval request
    for served in _serve(azurite, tmp_path, monkeypatch, policy()):
        monkeypatch.setenv("KV_REMEDIATE_NOTIFY_KIND", "teams")
        services.reset()
        alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
        alert = alert.replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db")
        served.app.post("/api/alerts", alert.encode())
        served.app.pump.drain(timeout=60)
        # then the notification is a Workflows message with one Adaptive Card 1.5 that validates, whose actions
        # only open the findings page of that request
        [body] = served.app.notify.bodies
        [attachment] = body["attachments"]
        card = attachment["content"]
        assert list(jsonschema.Draft6Validator(schema).iter_errors(card)) == []
        [record] = served.app.findings()
        approval_id = record["finding"]["approval_id"]
        assert [a["url"] for a in card["actions"]] == [
            f"{PUBLIC}/api/findings?approval={approval_id}&action=approve",
            f"{PUBLIC}/api/findings?approval={approval_id}&action=reject",
            f"{PUBLIC}/api/findings?approval={approval_id}"]
        assert _assignments() == []


@pytest.mark.parametrize("public", [PUBLIC, ""])
def test_generic_webhook_gets_the_link_only(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           public: str) -> None:
    # given a generic webhook (an e-mail relay); when an alert opens an approval request
    for served in _serve(azurite, tmp_path, monkeypatch, policy()):
        monkeypatch.setenv("KV_REMEDIATE_NOTIFY_KIND", "webhook")
        monkeypatch.setenv("KV_REMEDIATE_PUBLIC_URL", public)
        services.reset()
        alert = (DEMO / "inputs" / "10_log_alert_v2.json").read_text()
        alert = alert.replace('"KeySign"', '"SecretGet"').replace("/keys/orders-signing", "/secrets/orders-db")
        served.app.post("/api/alerts", alert.encode())
        served.app.pump.drain(timeout=60)
        [body] = served.app.notify.bodies
        [record] = served.app.findings()
        approval_id = record["finding"]["approval_id"]
        text = json.dumps(body)
        # then the body carries the page link to open (no approve/reject link, no buttons); without the app's
        # public URL, the text says how to get one
        assert "action=approve" not in text and "blocks" not in body and "attachments" not in body
        if public:
            assert body["kv_remediate"]["open_url"] == f"{PUBLIC}/api/findings?approval={approval_id}"
            assert body["kv_remediate"]["kind"] == "approval_request"
        else:
            assert "KV_REMEDIATE_PUBLIC_URL" in body["text"] and "http" not in body["text"]
