"""Approval requests, pure: the policy keys, the guard's routing to a person, the hash an approval is bound to,
and the state machine (no clock: every time is given)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediate.approvals import model
from remediate.approvals.model import Act, ApprovalRequest, Approver, Rules
from remediate.errors import PolicyError
from remediate.guard import Policy, check, parse_policy
from remediate.model import Finding, Proof
from tests.unit.test_guard import OID, SUB, VAULT_ID, ap_finding, finding

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ALICE = Approver("aaaaaaaa-1111-4111-8111-111111111111", "Alice")
BOB = Approver("bbbbbbbb-2222-4222-8222-222222222222", "Bob")
CAROL = Approver("cccccccc-3333-4333-8333-333333333333", "Carol")
APPROVE = Policy(mode="approve", scopes=(VAULT_ID,), max_tier=3)
AUDIT = Proof("audit_log", "workspace w row r")


def request(f: Finding | None = None, policy: Policy = APPROVE, **kw: object) -> ApprovalRequest:
    f = f or finding()
    assert f.plan is not None
    change = model.exact_change(f.plan, policy)
    assert isinstance(change, model.ExactChange)
    req = model.new_request("r1", change=change, denial=f.denial, finding={"cause": str(f.cause)}, policy=policy,
                            now=T0)
    return replace(req, **kw)  # type: ignore[arg-type]


def act(who: Approver, verb: str = "approve", **kw: object) -> Act:
    return Act(verb, who, "page", origin="203.0.113.7", **kw)  # type: ignore[arg-type]


# -- the policy keys ------------------------------------------------------------------------------------------------

def test_policy_defaults_and_keys() -> None:
    p = parse_policy("mode: approve\napproval_ttl: PT2H\napprovers: [AAAAAAAA-1111-4111-8111-111111111111]\n"
                     "min_approvals: 1\napprove_above_tier: 1\n", "p.yaml")
    assert (p.mode, p.approval_ttl, p.approvers, p.min_approvals, p.approve_above_tier) == (
        "approve", timedelta(hours=2), (ALICE.object_id,), 1, 1)
    assert Policy().approval_ttl == timedelta(hours=24) and Policy().approval_ttl_text == "PT24H"
    assert parse_policy("mode: approve", "p").to_dict()["approval_ttl"] == "PT24H"


@pytest.mark.parametrize(("tier", "min_approvals", "need"), [(0, None, 1), (1, None, 1), (2, None, 2), (3, None, 2),
                                                             (3, 1, 1), (0, 3, 3)])
def test_required_approvals(tier: int, min_approvals: int | None, need: int) -> None:
    assert Policy(min_approvals=min_approvals).required_approvals(tier) == need


@pytest.mark.parametrize(("text", "key"), [
    ("mode: approved", "mode"), ("approval_ttl: 24h", "approval_ttl"), ("approval_ttl: PT0S", "approval_ttl"),
    ("approvers: [bob]", "approvers"), ("min_approvals: 0", "min_approvals"), ("approve_above_tier: 4",
                                                                              "approve_above_tier"),
    (f"approvers: [{ALICE.object_id}]\nmin_approvals: 2", "min_approvals"),
])
def test_policy_refuses(text: str, key: str) -> None:
    with pytest.raises(PolicyError, match=f"key '{key}'"):
        parse_policy(text, "p.yaml")


# -- the guard routes to a person -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "proof", "rule"), [
    (APPROVE, None, "approval"),                     # mode approve: the approval is the proof
    (APPROVE, AUDIT, "approval"),                    # ... even with audit evidence
    (APPROVE, Proof("operator", "cli"), "approval"),  # an operator's --apply opens a request, it does not approve
    (APPROVE, Proof("approval", "r1"), None),
    (replace(APPROVE, mode="apply", approve_above_tier=0), AUDIT, "approval"),   # tier 1 > 0
    (replace(APPROVE, mode="apply", approve_above_tier=1), AUDIT, None),         # tier 1 is not above 1
    (replace(APPROVE, mode="apply", approve_above_tier=0), None, "evidence"),    # unproven under apply: refused
    (replace(APPROVE, mode="suggest"), None, "mode"),
    (replace(APPROVE, scopes=()), None, "scopes"),   # a plan a rule refuses never becomes a request
    (replace(APPROVE, max_tier=0), None, "max_tier"),
])
def test_guard_routes_to_approval(policy: Policy, proof: Proof | None, rule: str | None) -> None:
    verdict = check(finding(), policy, proof=proof)
    assert (verdict.allowed, verdict.refused_by) == (rule is None, rule)


def test_budget_refuses_before_a_request_opens() -> None:
    assert check(finding(), APPROVE, 20).refused_by == "max_grants_per_hour"
    assert check(finding(), APPROVE, 20, proof=Proof("approval", "r1")).refused_by == "max_grants_per_hour"


def test_approval_verdict_says_how_many() -> None:
    v = check(finding(tier=2), APPROVE)
    assert v.details["min_approvals"] == 2 and "PT24H" in v.reason


# -- the hash an approval is bound to ----------------------------------------------------------------------------

def test_hash_is_canonical() -> None:
    # given the same write spelled with other case
    a = finding()
    assert a.plan is not None
    b = replace(a, plan=replace(a.plan, scope=VAULT_ID.replace("/rg/", "/RG/").replace("kv1", "KV1"),  # type: ignore[arg-type]
                                principal_id=OID.upper()))  # type: ignore[arg-type]
    assert b.plan is not None
    # then the hash is the same
    assert model.plan_hash(a.plan, APPROVE) == model.plan_hash(b.plan, APPROVE) is not None


ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"


@pytest.mark.parametrize("change", [
    lambda f: replace(f.plan, principal_id="22222222-2222-4333-8444-555555555555"),
    lambda f: replace(f.plan, scope=VAULT_ID + "/secrets/db"),
    lambda f: replace(f.plan, role_definition_id=ROLES + "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),  # Secrets Officer
])
def test_hash_changes_with_the_write(change: object) -> None:
    f = finding()
    assert f.plan is not None
    other = change(f)  # type: ignore[operator]
    assert model.plan_hash(f.plan, replace(APPROVE, object_scope=True)) != model.plan_hash(
        other, replace(APPROVE, object_scope=True))


def test_hash_changes_with_ttl_and_permissions() -> None:
    f = ap_finding({"secrets": ("get",)})
    g = ap_finding({"secrets": ("get", "list")})
    assert f.plan is not None and g.plan is not None
    assert model.plan_hash(f.plan, APPROVE) != model.plan_hash(g.plan, APPROVE)
    assert model.plan_hash(f.plan, APPROVE) != model.plan_hash(f.plan, replace(APPROVE, grant_ttl_text="PT8H"))
    # permission order and case do not matter
    h = ap_finding({"secrets": ("List", "GET")})
    assert h.plan is not None and model.plan_hash(g.plan, APPROVE) == model.plan_hash(h.plan, APPROVE)


def test_a_plan_the_guard_refuses_has_no_hash() -> None:
    f = finding(scope=f"/subscriptions/{SUB}")
    assert f.plan is not None and model.plan_hash(f.plan, APPROVE) is None


def test_request_round_trips() -> None:
    req = request()
    step = model.decide(req, act(ALICE, reason="ok"), Rules(), T0 + timedelta(minutes=1))
    back = ApprovalRequest.from_dict(step.request.to_dict())
    assert back == step.request and back.denial == req.denial


# -- the state machine -------------------------------------------------------------------------------------------

def test_one_approval_approves() -> None:
    step = model.decide(request(), act(ALICE), Rules(), T0)
    assert (step.request.state, step.apply, step.changed, step.refused) == ("approved", True, True, None)
    assert step.request.approved_by == (ALICE,) and step.request.decisions[0].origin == "203.0.113.7"


def test_two_distinct_approvers() -> None:
    rules = Rules(min_approvals=2)
    first = model.decide(request(), act(ALICE), rules, T0)
    assert (first.request.state, first.apply) == ("pending", False)
    again = model.decide(first.request, act(Approver(ALICE.object_id.upper())), rules, T0)   # the same person twice
    assert (again.refused, again.changed, again.request.state) == ("repeat", False, "pending")
    second = model.decide(first.request, act(BOB), rules, T0)
    assert (second.request.state, second.apply) == ("approved", True)
    assert second.request.approved_by == (ALICE, BOB)


@pytest.mark.parametrize(("who", "rules", "code"), [
    (Approver(OID), Rules(), "self_approval"),
    (CAROL, Rules(approvers=(ALICE.object_id, BOB.object_id)), "not_an_approver"),
    (Approver("not-a-guid"), Rules(), "bad_identity"),
    (Approver("00000000-0000-0000-0000-000000000000"), Rules(), "bad_identity"),
    (Approver(OID.upper()), Rules(), "self_approval"),   # ids compare case-insensitively
])
def test_refused_approvers(who: Approver, rules: Rules, code: str) -> None:
    step = model.decide(request(), act(who), rules, T0)
    assert (step.refused, step.apply, step.request.state) == (code, False, "pending")
    assert step.request.decisions[-1].refused == code   # the attempt is recorded


def test_the_proposer_may_not_approve() -> None:
    step = model.decide(request(requested_by=ALICE), act(ALICE), Rules(), T0)
    assert step.refused == "requester"


def test_reject_ends_it_and_later_acts_are_refused() -> None:
    rejected = model.decide(request(), act(BOB, "reject", reason="no"), Rules(min_approvals=2), T0)
    assert (rejected.request.state, rejected.request.end) == ("rejected", "rejected")
    assert "no" in (rejected.request.detail or "")
    replay = model.decide(rejected.request, act(ALICE), Rules(), T0)
    assert (replay.refused, replay.request.state, replay.apply) == ("not_pending", "rejected", False)


def test_expiry() -> None:
    req = request()
    assert model.expire(req, T0 + timedelta(hours=23, minutes=59)).changed is False
    late = model.decide(req, act(ALICE), Rules(), T0 + timedelta(hours=24))
    assert (late.refused, late.request.state, late.request.end, late.apply) == ("expired", "expired", "expired",
                                                                                False)


def test_approved_is_single_use() -> None:
    approved = model.decide(request(), act(ALICE), Rules(), T0).request
    double = model.decide(approved, act(BOB), Rules(), T0)
    assert (double.refused, double.apply) == ("not_pending", False)
    done = model.finish(approved, "applied", T0, grant_id="g1")
    assert (done.state, done.end, done.grant_id) == ("applied", "applied", "g1")
    drift = model.finish(approved, "drift", T0, detail="changed")
    assert (drift.state, drift.end) == ("failed", "drift")
    with pytest.raises(ValueError, match="approved"):
        model.finish(done, "applied", T0)


def test_rules_take_the_stricter() -> None:
    req = request(finding(tier=2))
    assert model.rules_for(req, APPROVE).min_approvals == 2
    assert model.rules_for(req, replace(APPROVE, min_approvals=3)).min_approvals == 3
    assert model.rules_for(req, replace(APPROVE, approvers=(ALICE.object_id,))).approvers == (ALICE.object_id,)


def test_refused_attempts_are_capped() -> None:
    req = request()
    for _ in range(model.MAX_ENTRIES + 5):
        req = model.decide(req, act(Approver(OID)), Rules(), T0).request
    assert len(req.decisions) == model.MAX_ENTRIES


@given(st.lists(st.tuples(st.sampled_from([ALICE, BOB, CAROL, Approver(OID)]),
                          st.sampled_from(["approve", "reject"]), st.integers(0, 30)), max_size=12),
       st.integers(1, 3))
def test_any_sequence_applies_at_most_once(acts: list[tuple[Approver, str, int]], need: int) -> None:
    # given any sequence of acts by anyone at any time
    req, applies = request(), 0
    for who, verb, hours in acts:
        step = model.decide(req, act(who, verb), Rules(min_approvals=need), T0 + timedelta(hours=hours))
        applies += step.apply
        req = step.request
        if step.apply:
            assert len(req.approved_by) >= need and OID not in {a.object_id for a in req.approved_by}
    # then the write is applied at most once, and only by enough distinct approvers who are not the grantee
    assert applies <= 1
    assert req.state in ("pending", "approved", "rejected", "expired")


def test_every_demo_denial_round_trips_through_a_request() -> None:
    # given every denial the bundled inputs hold (signals, permissions, objects, alert ids...)
    from importlib import resources

    from remediate.intake import parse_inputs

    demo = resources.files("remediate").joinpath("demo", "inputs")
    parsed = parse_inputs(sorted((f.name, f.read_bytes()) for f in demo.iterdir() if f.is_file()))
    assert parsed.denials
    for d in parsed.denials:
        # when a request holding it is written as JSON and read back
        back = ApprovalRequest.from_dict(request(replace(finding(), denial=d)).to_dict())
        # then the denial is the same typed value
        assert back.denial == d


def test_a_stricter_policy_at_decision_time_is_what_the_request_shows() -> None:
    step = model.decide(request(), act(ALICE), Rules(min_approvals=2), T0)
    assert (step.request.state, step.request.min_approvals) == ("pending", 2)


def test_an_act_cannot_grow_the_request_without_bound() -> None:
    # given acts with an essay for a reason, a crafted origin and display name, and an id that is no GUID
    huge = "x" * 100_000
    req = request()
    for who in (Approver(huge, huge), Approver(OID, huge), Approver(ALICE.object_id, huge)):
        req = model.decide(req, act(who, "reject", reason=huge), Rules(), T0).request
    # then the request stays small (a Table entity holds about 1 MiB)
    assert len(json.dumps(req.to_dict())) < 20_000 and req.state == "rejected"


def test_history_reads_in_order() -> None:
    req = request()
    req = model.decide(req, act(Approver(OID)), Rules(min_approvals=2), T0 + timedelta(minutes=1)).request
    req = model.decide(req, act(ALICE, reason="looks right"), Rules(min_approvals=2), T0 + timedelta(minutes=2)).request
    req = model.decide(req, act(BOB), Rules(min_approvals=2), T0 + timedelta(minutes=3)).request
    req = model.finish(req, "applied", T0 + timedelta(minutes=4), grant_id="g")
    got = [(e.kind, e.who.object_id if e.who else None, e.detail) for e in model.history(req)]
    assert [k for k, _, _ in got] == ["proposed", "refused", "approved", "approved", "applied"]
    assert got[1][2] == "approve refused: self_approval" and got[2][2] == "looks right"
