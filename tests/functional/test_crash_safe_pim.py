"""PIM grants (issue 18 item 3): repeatable after expiry, and each answer of Azure its own recorded outcome.

Through the real path (service.remediate -> apply -> the SDK -> the emulator, which answers as Azure does; see the
evidence in remediate/emulator/state.py): a fresh request name per request, 400 RoleAssignmentExists for an
active assignment we did not make, RoleAssignmentRequestPolicyValidationFailed from the role management policy,
and PendingApproval until an approver decides.
"""

from __future__ import annotations

import copy
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remediate.apply import GRACE, parse_label
from remediate.facts.writes import ArmWriter
from tests.support.crash_world import KINDS, ORDERS, TTL, World
from tests.support.demo_apply import TENANT

PIM = KINDS[1]
SUB = TENANT["subscriptions"][0]
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


def requests_of(w: World) -> list[dict[str, Any]]:
    return [r for r in w.emu.emulator.tenant()["role_assignment_schedule_requests"]
            if r["properties"]["principalId"].lower() == ORDERS.lower()]


def with_policy(*rules: dict[str, Any]) -> dict[str, Any]:
    tenant = copy.deepcopy(TENANT)
    tenant["role_management_policies"] = [{"properties": {
        "scope": f"/subscriptions/{SUB}", "roleDefinitionId": SECRETS_USER, "effectiveRules": list(rules)}}]
    return tenant


def expire_now(w: World) -> None:
    """PIM's clock passes the assignment's end (the emulator drops it, as PIM does)."""
    state = w.emu.emulator.state
    with state.lock:
        for a in state.assignments.values():
            if a["properties"]["principalId"].lower() == ORDERS.lower():
                a["expiresOn"] = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_same_grant_can_be_made_again_after_expiry(world_for: Callable[..., World]) -> None:
    # given a PIM grant applied, with its request labelled as ours
    w = world_for(PIM)
    first = w.attempt(w.grants())
    assert first["outcome"] == "applied"
    [req] = requests_of(w)
    assert parse_label(req["properties"]["justification"]) == (first["grant_id"], w.expiry)
    # when it expires in Azure and the timer has recorded that
    expire_now(w)
    w.timer(TTL + timedelta(minutes=5))
    assert w.held() == 0
    # when the same denial comes again; then a new request (a fresh name) grants it again
    again = w.attempt(w.grants(), TTL + timedelta(minutes=10))
    assert again["outcome"] == "applied" and again["grant_id"] != first["grant_id"]
    names = [r["name"] for r in requests_of(w)]
    assert len(names) == 2 and len(set(names)) == 2
    assert w.held() == 1
    records = {r.id: r for r in w.records()}
    assert records[first["grant_id"]].revoked_at is not None and records[again["grant_id"]].revoked_at is None
    assert [set(r.requests or []) for r in (records[first["grant_id"]], records[again["grant_id"]])] == \
        [{names[0]}, {names[1]}]


def test_an_active_assignment_we_did_not_make_is_already_granted(world_for: Callable[..., World]) -> None:
    # given another admin's PIM assignment of the same role made between our diagnosis and our request
    w = world_for(PIM)
    original = ArmWriter.pim_assign

    async def race(self: ArmWriter, scope: str, name: str, *args: Any, **kw: Any) -> Any:
        await original(self, scope, str(uuid.uuid4()), *args, **{**kw, "justification": "someone else"})
        return await original(self, scope, name, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ArmWriter, "pim_assign", race)
        out = w.attempt(w.grants())
    # then the answer (400 RoleAssignmentExists) is already_granted, recorded with ARM's message; the slot is free
    assert out["outcome"] == "already_granted" and "RoleAssignmentExists" in out["detail"], out
    [record] = w.records()
    assert record.outcome == "already_granted" and record.expires_at is not None and record.revoked_at is None
    with sqlite3.connect(w.slots) as conn:
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    # and the timer never revokes it (it is not ours)
    w.timer(TTL + timedelta(minutes=5))
    assert w.held() == 1


def test_the_role_management_policy_refuses_a_longer_grant(world_for: Callable[..., World]) -> None:
    # given a policy whose expiration rule allows at most 30 minutes, and grant_ttl PT1H
    w = world_for(PIM, with_policy({"ruleType": "RoleManagementPolicyExpirationRule", "maximumDuration": "PT30M",
                                    "isExpirationRequired": True, "target": {"caller": "Admin",
                                                                             "level": "Assignment"}}))
    # when applied; then refused by pim_policy with ARM's message, nothing granted, the slot given back
    out = w.attempt(w.grants())
    assert out["outcome"] == "refused" and out["refused_by"] == "pim_policy", out
    assert "ExpirationRule" in out["reason"]
    [record] = w.records()
    assert record.outcome == "refused" and record.refused_by == "pim_policy"
    assert w.held() == 0
    with sqlite3.connect(w.slots) as conn:
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


@pytest.mark.parametrize("approve", [True, False])
def test_pending_approval_is_its_own_outcome_until_decided(world_for: Callable[..., World], approve: bool) -> None:
    # given a policy requiring an approver for admin assignments
    w = world_for(PIM, with_policy({"ruleType": "RoleManagementPolicyApprovalRule",
                                    "setting": {"isApprovalRequired": True},
                                    "target": {"caller": "Admin", "level": "Assignment"}}))
    # when applied; then pending_approval, recorded, and nothing granted yet
    out = w.attempt(w.grants())
    assert out["outcome"] == "pending_approval" and out["applied"] is False, out
    [record] = w.records()
    assert record.outcome == "pending_approval" and w.held() == 0
    # when the message is redelivered meanwhile; then no second request is made
    assert w.attempt(w.grants(), timedelta(minutes=1))["outcome"] == "pending_approval"
    assert len(requests_of(w)) == 1
    # when the approver decides and the timer runs after the grace
    w.emu.emulator.state.decide_schedule_request(requests_of(w)[0]["id"], approve=approve)
    w.timer(GRACE + timedelta(minutes=1))
    # then the record follows the decision: applied (PIM expires it itself), or abandoned with nothing granted
    [record] = w.records()
    assert record.outcome == ("applied" if approve else "abandoned"), record.detail
    assert w.held() == (1 if approve else 0)
