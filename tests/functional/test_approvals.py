"""Approval requests end to end through the core: a denial under ``mode: approve`` opens a request, people decide
it, and the approval that completes it re-reads the (emulated) tenant and applies exactly the approved write once.

Real parts: the emulator behind the real SDK clients (what the tenant holds is asserted), the grant store and rate
slots on SQLite, and the approval store on each real backend (Azurite's Table ``approvals``, a SQLite file)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from remediate.apply import ApplyContext
from remediate.approvals import service
from remediate.approvals.model import Act, Approver
from remediate.backends import EmulatorRun
from remediate.guard import policy_from_dict
from remediate.service import remediate
from remediate.store.approvals import ApprovalStore, SqliteApprovalStore
from remediate.store.approvals_table import TableApprovalStore
from remediate.store.azure import table_client
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import SqliteGrantStore
from tests.functional.test_telemetry import Recorded
from tests.support.demo_apply import LEGACY, NOW, PAY, SUB, TENANT, denial, entry_of, gid

APPROVE = {"mode": "approve", "scopes": [f"/subscriptions/{SUB}"], "principal_types": ["ServicePrincipal", "User"],
           "max_grants_per_hour": 1000, "max_tier": 3}
ORDERS = gid("app-orders")
ALICE = Approver(gid("alice"), "Alice Doe")
BOB = Approver(gid("bob"), "Bob Roe")
CAROL = Approver("cccccccc-3333-4333-8333-333333333333", "Carol")
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


@pytest.fixture(params=["sqlite", "table"])
def approvals(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ApprovalStore]]:
    """An approval store factory on each real backend (each call: a new client on the same data)."""
    if request.param == "sqlite":
        yield lambda: SqliteApprovalStore(tmp_path / "state.db")
        return
    svc: TableServiceClient = request.getfixturevalue("table_service")
    name = "approvals" + uuid.uuid4().hex[:12]
    yield lambda: TableApprovalStore(table_client(svc, name))
    svc.delete_table(name)


class Tenant:
    """The emulated tenant, carried from one run (proposal, each approval) to the next, and the stores."""

    def __init__(self, tmp: Path, store: Callable[[], ApprovalStore], policy: dict[str, Any] | None = None) -> None:
        self.tenant = copy.deepcopy(TENANT)
        self.tmp, self.store, self.policy = tmp, store, dict(policy or APPROVE)
        self.runs = 0

    def ctx(self, now: Any = NOW, **kw: Any) -> ApplyContext:
        db = self.tmp / "state.db"
        return ApplyContext(policy=policy_from_dict(self.policy), grants=SqliteGrantStore(db),
                            slots=SqliteClaimStore(db), now=now, actor="test", approvals=self.store(), **kw)

    def propose(self, *denials: Any, **kw: Any) -> list[dict[str, Any]]:
        """remediate --apply on the denials: under mode approve, requests open and nothing is written."""
        async def go() -> Any:
            with EmulatorRun(self.tenant) as emu:
                async with emu.facts() as facts:
                    result = await remediate(list(denials or [denial(ORDERS, PAY)]), facts, self.ctx(**kw))
                return result, emu.emulator.tenant()
        result, self.tenant = asyncio.run(go())
        return [f.to_dict() for f in result.findings]

    def decide(self, *acts: tuple[str, Act], now: Any = NOW) -> list[service.Decided]:
        """The acts, all at once (concurrently, each with its own store client and fact source), on one tenant."""
        async def go() -> Any:
            with EmulatorRun(self.tenant) as emu:
                async def one(id: str, act: Act) -> service.Decided:
                    async with emu.facts() as facts:
                        return await service.decide(self.store(), id, act, facts=facts, ctx=self.ctx(now))
                got = await asyncio.gather(*(one(i, a) for i, a in acts))
                return got, emu.emulator.tenant()
        got, self.tenant = asyncio.run(go())
        return list(got)

    def assignments(self, oid: str = ORDERS) -> list[dict[str, Any]]:
        return [a for a in self.tenant["role_assignments"] if a["properties"]["principalId"].lower() == oid.lower()]


def approve(who: Approver, channel: str = "page") -> Act:
    return Act("approve", who, channel, origin="198.51.100.4")  # type: ignore[arg-type]


def test_denial_becomes_a_request_then_one_approval_applies_it_once(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    # given a denial under mode approve
    [f] = t.propose()
    # then nothing is written: the finding waits for approval, with its request
    assert (f["outcome"], f["refused_by"], f["applied"]) == ("pending_approval", "approval", False)
    assert t.assignments() == []
    req = t.store().get(f["approval_id"])
    assert req is not None and req.request.state == "pending" and req.request.grantee == ORDERS
    assert req.request.change.role_definition_id is not None
    assert req.request.change.role_definition_id.endswith(SECRETS_USER)
    assert req.request.finding["cause"] == "MISSING_ROLE_ASSIGNMENT" and req.request.min_approvals == 1
    # when a person approves it
    [d] = t.decide((f["approval_id"], approve(ALICE)))
    # then exactly that write is applied, verified and recorded with the approval as its proof
    assert d.status == "applied" and d.request is not None and d.request.state == "applied"
    [ra] = t.assignments()
    assert ra["properties"]["roleDefinitionId"].endswith(SECRETS_USER)
    assert ra["properties"]["scope"].lower() == PAY["id"].lower()
    grants = SqliteGrantStore(tmp_path / "state.db").list()
    assert [g.outcome for g in grants] == ["applied"] and d.request.grant_id == grants[0].id
    assert grants[0].finding is not None and grants[0].finding["proof"]["kind"] == "approval"
    assert ALICE.object_id in grants[0].finding["proof"]["source"]
    entry = d.request.decisions[0]
    assert (entry.approver, entry.channel, entry.origin, entry.refused) == (ALICE, "page", "198.51.100.4", None)
    # when the same approval is replayed (a double click, a resent callback)
    [again] = t.decide((f["approval_id"], approve(ALICE)), (f["approval_id"], approve(BOB, "slack")))[:1]
    # then it is refused, sees the outcome, and nothing more is written
    assert (again.status, again.refused) == ("refused", "not_pending")
    assert again.request is not None and again.request.state == "applied"
    assert len(t.assignments()) == 1 and len(SqliteGrantStore(tmp_path / "state.db").list()) == 1


def test_the_same_plan_again_joins_the_open_request(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [a] = t.propose()
    [b] = t.propose(denial(ORDERS, PAY, obj="other"))   # another secret, the same vault-scope role
    assert a["approval_id"] == b["approval_id"]
    assert len(t.store().list()) == 1


def test_concurrent_approvals_apply_exactly_once(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    people = [Approver(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"approver-{i}"))) for i in range(6)]
    # when six people approve at the same moment
    got = t.decide(*((f["approval_id"], approve(p)) for p in people))
    # then exactly one of them applies it; the others are refused and see the same outcome
    assert sorted(d.status for d in got) == ["applied"] + ["refused"] * 5
    assert {d.refused for d in got if d.status == "refused"} == {"not_pending"}
    assert len(t.assignments()) == 1
    assert [g.outcome for g in SqliteGrantStore(tmp_path / "state.db").list()] == ["applied"]
    final = t.store().get(f["approval_id"])
    assert final is not None and final.request.state == "applied" and len(final.request.approved_by) == 1


def test_min_approvals_two_distinct_people(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals, dict(APPROVE, min_approvals=2))
    [f] = t.propose()
    [first] = t.decide((f["approval_id"], approve(ALICE)))
    assert first.status == "recorded" and t.assignments() == []
    [same] = t.decide((f["approval_id"], approve(ALICE, "slack")))    # the same person again does not count
    assert (same.status, same.refused) == ("refused", "repeat") and t.assignments() == []
    [second] = t.decide((f["approval_id"], approve(BOB, "teams")))
    assert second.status == "applied" and len(t.assignments()) == 1
    assert second.request is not None and second.request.approved_by == (ALICE, BOB)


def test_tier_two_needs_two_by_default(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose(denial(ORDERS, PAY, op="SecretSet"))    # Secrets Officer: tier above 1
    got = t.store().get(f["approval_id"])
    assert got is not None and got.request.change.tier >= 2 and got.request.min_approvals == 2


@pytest.mark.parametrize(("who", "policy", "code"), [
    (Approver(ORDERS), {}, "self_approval"),
    (CAROL, {"approvers": [ALICE.object_id, BOB.object_id]}, "not_an_approver"),
])
def test_refused_approvers_apply_nothing(tmp_path: Path, approvals: Any, who: Approver, policy: dict[str, Any],
                                        code: str) -> None:
    t = Tenant(tmp_path, approvals, dict(APPROVE, **policy))
    [f] = t.propose()
    [d] = t.decide((f["approval_id"], approve(who)))
    assert (d.status, d.refused) == ("refused", code) and t.assignments() == []
    assert d.request is not None and d.request.state == "pending"
    assert d.request.decisions[-1].refused == code      # the attempt is on the record


def test_rejection_ends_it(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    [r] = t.decide((f["approval_id"], Act("reject", BOB, "cli", origin="host-1", reason="not this week")))
    assert r.status == "rejected" and r.request is not None and "not this week" in (r.request.detail or "")
    [late] = t.decide((f["approval_id"], approve(ALICE)))
    assert (late.status, late.refused) == ("refused", "not_pending") and t.assignments() == []


def test_expiry(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals, dict(APPROVE, approval_ttl="PT1H"))
    [f] = t.propose()
    [d] = t.decide((f["approval_id"], approve(ALICE)), now=NOW + timedelta(hours=1, seconds=1))
    assert (d.status, d.refused) == ("refused", "expired") and t.assignments() == []
    assert d.request is not None and (d.request.state, d.request.end) == ("expired", "expired")
    # and a sweep ends pending requests past their time (listing shows none waiting)
    [g] = t.propose()
    assert g["approval_id"] != f["approval_id"]
    assert asyncio.run(service.pending(t.store(), NOW + timedelta(hours=2))) == []


def test_tenant_drift_the_grant_exists_now(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    # given someone grants the role by hand after the proposal
    t.tenant["role_assignments"].append({
        "id": f"{PAY['id']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        "properties": {"scope": PAY["id"], "principalId": ORDERS, "principalType": "ServicePrincipal",
                       "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                                           + SECRETS_USER}})
    [d] = t.decide((f["approval_id"], approve(ALICE)))
    # then nothing is written and the request ends saying why
    assert d.status == "failed" and d.request is not None and d.request.end == "already_granted"
    assert len(t.assignments()) == 1 and SqliteGrantStore(tmp_path / "state.db").list() == []


def test_tenant_drift_the_vault_changed_model(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    # given the vault moved to access policies after the proposal (the plan would now be another write)
    vault = next(v for v in t.tenant["vaults"] if v["name"] == "kv-payments")
    vault["properties"]["enableRbacAuthorization"] = False
    [d] = t.decide((f["approval_id"], approve(ALICE)))
    assert d.status == "failed" and d.request is not None and d.request.end == "drift"
    assert "kind" in (d.request.detail or "")
    assert t.assignments() == [] and entry_of(t.tenant, "kv-payments", ORDERS) is None


def test_policy_drift_refuses(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    t.policy = dict(APPROVE, scopes=[LEGACY["id"]])   # the vault is no longer in scope
    [d] = t.decide((f["approval_id"], approve(ALICE)))
    assert d.status == "failed" and d.request is not None and d.request.end == "refused"
    assert t.assignments() == []


def test_access_policy_request(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose(denial(gid("alice"), LEGACY, op="SecretSet", kind="user"))
    before = copy.deepcopy(entry_of(t.tenant, "kv-legacy", gid("alice")))
    [first] = t.decide((f["approval_id"], approve(BOB)))       # set is tier 2: two approvers by default
    assert first.status == "recorded" and entry_of(t.tenant, "kv-legacy", gid("alice")) == before
    [d] = t.decide((f["approval_id"], approve(CAROL)))
    assert d.status == "applied"
    after = entry_of(t.tenant, "kv-legacy", gid("alice"))
    assert before is not None and after is not None
    assert set(after["permissions"]["secrets"]) - set(before["permissions"]["secrets"]) == {"set"}


def test_a_crash_after_approval_is_finished_by_resume(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    # given the approval won its compare-and-swap, then the process died before applying
    store = t.store()
    got = store.get(f["approval_id"])
    assert got is not None
    from remediate.approvals import model

    step = model.decide(got.request, approve(ALICE), model.Rules(), NOW)
    assert step.apply and store.swap(step.request, got.version) is not None

    async def go(now: Any) -> Any:
        with EmulatorRun(t.tenant) as emu:
            async with emu.facts() as facts:
                done = await service.resume_approved(t.store(), facts=facts, ctx=t.ctx(now))
            return done, emu.emulator.tenant()
    # when the timer runs within the grace period nothing happens; after it, the apply is finished once
    soon, t.tenant = asyncio.run(go(NOW + timedelta(minutes=1)))
    assert soon == [] and t.assignments() == []
    later, t.tenant = asyncio.run(go(NOW + timedelta(minutes=6)))
    assert [d.status for d in later] == ["applied"] and len(t.assignments()) == 1


def test_without_a_store_it_is_refused_by_approval(tmp_path: Path, approvals: Any) -> None:
    # given a plan the policy routes to a person, but no approval store to open a request in
    t = Tenant(tmp_path, approvals)
    c = replace(t.ctx(), approvals=None)

    async def go() -> Any:
        with EmulatorRun(t.tenant) as emu:
            async with emu.facts() as facts:
                return await remediate([denial(ORDERS, PAY)], facts, c)
    [g] = asyncio.run(go()).findings
    assert g.outcome is not None and (g.outcome.outcome, g.outcome.refused_by) == ("refused", "approval")
    assert t.store().list() == []


ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"   # Key Vault Administrator


@pytest.mark.parametrize("tamper", ["wider_change", "other_grantee", "display_only"])
def test_a_tampered_request_applies_only_what_the_tenant_calls_for(tmp_path: Path, approvals: Any,
                                                                   tamper: str) -> None:
    # given someone with write access to the store rewrites a pending request before it is approved
    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    store = t.store()
    got = store.get(f["approval_id"])
    assert got is not None
    req = got.request
    if tamper == "wider_change":      # the approved change says Administrator (and its hash matches it)
        change = replace(req.change, role_definition_id=req.change.role_definition_id.replace(  # type: ignore[union-attr]
            SECRETS_USER, ADMIN))
        req = replace(req, change=change, plan_hash=change.hash())
    elif tamper == "other_grantee":   # the stored denial names someone else
        req = replace(req, denial=denial(gid("app-partner"), PAY))
    else:                             # the finding shown to people says Administrator
        shown = {**req.finding["plan"], "role_name": "Key Vault Administrator", "role_definition_id": ADMIN}
        req = replace(req, finding={**req.finding, "plan": shown})
    assert store.swap(req, got.version) is not None
    # when it is approved
    [d] = t.decide((f["approval_id"], approve(ALICE)))
    everyone = [a for a in t.tenant["role_assignments"] if a not in TENANT["role_assignments"]]
    # then only the write the re-read tenant calls for can be made, and only if it is the one that was hashed
    if tamper == "display_only":
        assert d.status == "applied"
        assert [a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for a in everyone] == [SECRETS_USER]
    else:
        assert d.status == "failed" and d.request is not None and d.request.end == "drift"
        assert everyone == []


def test_a_new_denial_never_joins_a_request_past_its_time(tmp_path: Path, approvals: Any) -> None:
    t = Tenant(tmp_path, approvals, dict(APPROVE, approval_ttl="PT1H"))
    [f] = t.propose()
    # when the same plan is proposed again after the first request's time passed (no sweep ran in between)
    [g] = t.propose(now=NOW + timedelta(hours=2))
    # then a new request is opened, and the old one is expired
    assert g["approval_id"] != f["approval_id"]
    old = t.store().get(f["approval_id"])
    assert old is not None and old.request.state == "expired"


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    from remediate import telemetry

    r = Recorded()
    telemetry.enable(r.meters, r.tracers)
    try:
        yield r
    finally:
        telemetry.disable()


def test_approval_acts_are_counted_and_traced(recorded: Recorded, tmp_path: Path) -> None:
    # given telemetry on, a request opened under mode approve, then a refused act and the approval that applies it
    t = Tenant(tmp_path, lambda: SqliteApprovalStore(tmp_path / "state.db"))
    [f] = t.propose()
    t.decide((f["approval_id"], Act("approve", Approver(ORDERS), "slack")))
    t.decide((f["approval_id"], approve(ALICE)))
    # then each act is counted by what it came to, and traced with the request it was about
    assert recorded.sums("kv_remediate.approvals", "status") == Counter({"refused": 1, "applied": 1})
    assert recorded.sums("kv_remediate.approvals", "refused") == Counter({"self_approval": 1, "": 1})
    spans = [dict(s.attributes or {}) for s in recorded.spans.get_finished_spans()
             if s.name == "kv-remediate approval"]
    assert [(s["approval_id"], s["state"], s["channel"]) for s in spans] == [
        (f["approval_id"], "pending", "slack"), (f["approval_id"], "applied", "page")]


def test_many_instances_opening_the_same_change_open_one_request(tmp_path: Path, approvals: Any) -> None:
    # given twelve instances that each diagnosed a denial needing the same write, opening its request at once
    from concurrent.futures import ThreadPoolExecutor

    from remediate.approvals import model

    t = Tenant(tmp_path, approvals)
    [f] = t.propose()
    first = t.store().get(f["approval_id"])
    assert first is not None
    base = first.request
    # (the first request ended, so its change is free again)
    assert t.store().swap(replace(base, state="expired", end="expired", ended_at=NOW), first.version) is not None
    fresh = [replace(base, id=str(uuid.uuid4()), decisions=()) for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda r: t.store().open(r), fresh))
    # then they all hold the same one request, and only it exists besides the ended one
    assert len({g.id for g in got}) == 1
    assert [r.state for r in t.store().list(state="pending")] == ["pending"]
    assert model.OPEN_STATES == ("pending", "approved")


@pytest.mark.parametrize(("above", "expect"), [(0, "pending_approval"), (1, "applied")])
def test_mode_apply_routes_only_plans_above_the_tier(tmp_path: Path, approvals: Any, above: int,
                                                     expect: str) -> None:
    # given mode apply with approve_above_tier, and the denial proven by the audit log (SecretGet: tier 1)
    from remediate.model import Proof

    t = Tenant(tmp_path, approvals, dict(APPROVE, mode="apply", approve_above_tier=above))
    d = denial(ORDERS, PAY)
    [f] = t.propose(d, proofs={d.canonical().identity_key(): Proof("audit_log", "workspace w row r")})
    # then a plan above the tier waits for a person, one at or below it is applied on the evidence
    assert f["outcome"] == expect
    assert len(t.assignments()) == (expect == "applied")
    if expect == "pending_approval":
        [done] = t.decide((f["approval_id"], approve(ALICE)))
        assert done.status == "applied" and len(t.assignments()) == 1


def test_a_managed_hsm_plan_is_approved_once(tmp_path: Path) -> None:
    """The demo's HSM inputs: HSM plans are approval-only by default, so under mode apply with audit evidence they
    become requests, and one approval applies each, once."""
    from importlib import resources

    from remediate.intake import parse_inputs
    from remediate.model import Proof

    demo = resources.files("remediate").joinpath("demo", "inputs")
    files = [f for f in demo.iterdir() if "hsm" in f.name.lower()]
    assert len(files) == 2, "the demo has an encrypt and a wrap denial on its Managed HSM"
    parsed = parse_inputs(sorted((f.name, f.read_bytes()) for f in files))
    t = Tenant(tmp_path, lambda: SqliteApprovalStore(tmp_path / "state.db"), dict(APPROVE, mode="apply"))
    proofs = {d.canonical().identity_key(): Proof("audit_log", "workspace w row r") for d in parsed.denials}
    def count() -> int:
        return sum(len(v) for v in (t.tenant.get("hsm_role_assignments") or {}).values())
    before = count()
    found = t.propose(*parsed.denials, proofs=proofs)
    assert found and all((f["outcome"], f["refused_by"]) == ("pending_approval", "approval") for f in found)
    assert count() == before
    for f in found:
        first, again = t.decide((f["approval_id"], approve(ALICE))), t.decide((f["approval_id"], approve(BOB)))
        assert first[0].status == "applied" and (again[0].status, again[0].refused) == ("refused", "not_pending")
    assert count() == before + len(found)
