"""Managed HSM grants through apply and revoke (issue 12): the grant-record discipline of vault grants (intent,
one write, read back, settle; resumed and adopted after a crash; idempotent on repeat), revocation of only what we
created, grant_ttl expiry by the timer, and approval-only by default. The real azure-keyvault-administration and
azure-mgmt-keyvault clients run against the emulator, with its fault injection; outcomes are asserted on what the
emulated HSM holds afterwards. Findings are made by hand, carrying plans as the HSM planner builds them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediate.apply import GRACE, ApplyContext, apply_findings, reconcile, revoke
from remediate.backends import EmulatorRun
from remediate.emulator import Faults
from remediate.errors import ApplyError
from remediate.evidence import Evidence
from remediate.facts.writes import ArmWriter
from remediate.guard import policy_from_dict
from remediate.hsm_model import assignment_name, custom_role_name
from remediate.model import (
    Denial,
    Finding,
    HsmCustomRolePlan,
    HsmRoleAssignmentPlan,
    Principal,
    Proof,
    VaultRef,
)
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import EMULATOR, MANAGED_HSM, GrantRecord, GrantStore
from tests.support.crash_world import Killed, assert_trail, faulty_attempt, kill_after
from tests.support.hsm import HSM, HSM_ID, STRANGER, SUB, role_id, tenant

TTL = timedelta(hours=1)
APPLY = {"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "principal_types": ["ServicePrincipal", "User"],
         "max_grants_per_hour": 1000, "grant_ttl": "PT1H"}
APPROVER = Proof("approval", "test approver")
"""A person approved the plan (what approvals/service.py passes): HSM plans are approval-only by default."""
ENCRYPT = ("Microsoft.KeyVault/managedHsm/keys/encrypt/action", "Microsoft.KeyVault/managedHsm/keys/decrypt/action")
FAST = Faults(throttle_rate=0.15, retry_after_s=0, error_rate=0.15, reset_rate=0.1, lost_response_rate=0.5)


def wrap_plan() -> HsmRoleAssignmentPlan:
    """wrap/unwrap: Crypto Service Encryption User at the key."""
    return HsmRoleAssignmentPlan(hsm=HSM_ID, scope="/keys/cmk", role_name="Managed HSM Crypto Service Encryption User",
                                 role_definition_id=role_id("Managed HSM Crypto Service Encryption User"),
                                 principal_id=STRANGER, principal_type="ServicePrincipal", tier=1)


def encrypt_plan(scope: str = "/keys/cmk") -> HsmRoleAssignmentPlan:
    """encrypt/decrypt: no narrow built-in, so our custom role of exactly those actions, assigned at the key."""
    name = custom_role_name(ENCRYPT)
    return HsmRoleAssignmentPlan(
        hsm=HSM_ID, scope=scope, role_name="kv-remediate encrypt, decrypt",
        role_definition_id=f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{name}",
        principal_id=STRANGER, principal_type="ServicePrincipal", tier=1,
        custom_role=HsmCustomRolePlan(name=name, role_name="kv-remediate encrypt, decrypt", data_actions=ENCRYPT))


def release_plan() -> HsmRoleAssignmentPlan:
    return HsmRoleAssignmentPlan(hsm=HSM_ID, scope="/keys/cmk", role_name="Managed HSM Crypto Service Release User",
                                 role_definition_id=role_id("Managed HSM Crypto Service Release User"),
                                 principal_id=STRANGER, principal_type="ServicePrincipal", tier=1)


PLANS = {"wrap": wrap_plan, "encrypt": encrypt_plan, "release": release_plan}


def finding(plan: HsmRoleAssignmentPlan) -> Finding:
    d = Denial(source="test", status=403, principal=Principal(object_id=STRANGER, kind="app"),
               vault=VaultRef(HSM, None, "managed_hsm", plan.scope),
               data_action="Microsoft.KeyVault/managedHsm/keys/wrap/action")
    return Finding("MISSING_ROLE_ASSIGNMENT", 1, d, "rbac", None, "", plan, (), Evidence())  # type: ignore[arg-type]


class HsmWorld:
    """One emulated HSM kept across the attempts, the timer runs and the assertions."""

    def __init__(self, run: EmulatorRun, grants: Callable[[], GrantStore], slots: Path,
                 plan: HsmRoleAssignmentPlan) -> None:
        self.run, self.grants, self.slots, self.plan = run, grants, slots, plan
        self.t0 = datetime.now(UTC)
        self.expiry = self.t0 + TTL
        self.before = self.assignments()

    def ctx(self, store: GrantStore, at: timedelta = timedelta(0), **kw: Any) -> ApplyContext:
        kw.setdefault("proofs", {finding(self.plan).denial.identity_key(): APPROVER})
        return ApplyContext(policy=policy_from_dict(kw.pop("policy", APPLY)), grants=store,
                            slots=SqliteClaimStore(self.slots), now=self.t0 + at, actor="test", backend=EMULATOR,
                            **kw)

    def attempt(self, store: GrantStore, at: timedelta = timedelta(0), **kw: Any) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            async with self.run.facts() as facts:
                [done] = await apply_findings([finding(self.plan)], ArmWriter(facts), self.ctx(store, at, **kw))
            return done.outcome.to_dict() if done.outcome else {}
        return asyncio.run(go())

    def timer(self, at: timedelta) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with self.run.facts() as facts:
                return [r.to_dict() for r in await reconcile(ArmWriter(facts), self.grants(), self.t0 + at,
                                                             actor="timer", backend=EMULATOR)]
        return asyncio.run(go())

    def assignments(self) -> list[dict[str, Any]]:
        return list(self.run.emulator.tenant().get("hsm_role_assignments", {}).get(HSM, []))

    def definitions(self) -> list[dict[str, Any]]:
        return list(self.run.emulator.tenant().get("hsm_role_definitions", {}).get(HSM, []))

    def held(self) -> int:
        """How many local role assignments the grantee holds on the HSM (0 or 1 when all is well)."""
        return sum(1 for a in self.assignments() if a["properties"]["principalId"].lower() == STRANGER)

    def records(self) -> list[GrantRecord]:
        return self.grants().list()


@pytest.fixture
def hsm_world(tmp_path: Path, backend: Callable[[], GrantStore]) -> Iterator[Callable[..., HsmWorld]]:
    runs: list[EmulatorRun] = []

    def make(plan: HsmRoleAssignmentPlan, t: dict[str, Any] | None = None) -> HsmWorld:
        run = EmulatorRun(copy.deepcopy(t or tenant()))
        run.__enter__()
        runs.append(run)
        return HsmWorld(run, backend, tmp_path / "slots.db", plan)

    yield make
    for run in runs:
        run.__exit__(None, None, None)


def ours(w: HsmWorld) -> dict[str, Any]:
    [a] = [a for a in w.assignments() if a["properties"]["principalId"].lower() == STRANGER]
    return a


@pytest.mark.parametrize("kind", sorted(PLANS))
def test_an_hsm_grant_is_applied_once_verified_recorded_and_revoked_at_expiry(
        hsm_world: Callable[..., HsmWorld], kind: str) -> None:
    # given a denied caller with no local role, and a person's approval of the planned grant
    w = hsm_world(PLANS[kind]())
    defs_before = w.definitions()
    # when it is applied, then applied again a minute later
    first = w.attempt(w.grants())
    again = w.attempt(w.grants(), timedelta(minutes=1))
    # then the HSM holds exactly one assignment, under our deterministic name, at the key, of the planned role
    assert first["outcome"] == "applied" and first["applied"] is True, first
    assert again["outcome"] == "applied" and again["grant_id"] == first["grant_id"], again
    a = ours(w)
    role = a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
    assert a["properties"]["scope"] == "/keys/cmk" and role == w.plan.role_definition_id.rsplit("/", 1)[-1]
    assert a["name"] == assignment_name(STRANGER, "/keys/cmk", role)
    # and, for encrypt, our custom role exists with exactly the missing actions
    if kind == "encrypt":
        [mine] = [d for d in w.definitions() if d["name"] == custom_role_name(ENCRYPT)]
        assert sorted(mine["properties"]["permissions"][0]["dataActions"]) == sorted(ENCRYPT)
        assert not mine["properties"]["permissions"][0]["notDataActions"]
    else:
        assert w.definitions() == defs_before
    # and one applied record says it is an HSM grant, with its HSM, local scope, assignment and expiry
    [rec] = [r for r in w.records() if r.outcome == "applied"]
    assert rec.is_hsm and rec.resource_kind == MANAGED_HSM and rec.vault_id == HSM_ID and rec.scope == "/keys/cmk"
    assert rec.assignment_id == a["id"] and rec.expires_at == w.expiry
    assert rec.custom_role == (custom_role_name(ENCRYPT) if kind == "encrypt" else None)
    # when the timer runs before the expiry; then nothing changes
    w.timer(GRACE + timedelta(minutes=1))
    assert w.held() == 1
    # when the timer runs after the expiry; then our assignment is gone and everything else is as before
    w.timer(TTL + timedelta(minutes=5))
    assert w.assignments() == w.before
    # and our custom role is kept (a definition grants nothing; others may use it)
    assert len(w.definitions()) == len(defs_before) + (kind == "encrypt")
    [rec] = [r for r in w.records() if r.outcome == "applied"]
    assert rec.revoked_at is not None
    [undo] = [r for r in w.records() if r.outcome == "revoked"]
    assert "deleted local role assignment" in (undo.detail or "") and HSM in (undo.detail or "")


def test_audit_log_alone_is_approval_only_and_changes_nothing(hsm_world: Callable[..., HsmWorld]) -> None:
    # given an HSM plan whose denial we read in the audit log ourselves, and the default policy (not unattended)
    w = hsm_world(encrypt_plan())
    defs = w.definitions()
    f = finding(w.plan)
    proof = {f.denial.identity_key(): Proof("audit_log", "workspace w, row t")}
    out = w.attempt(w.grants(), operator=None, proofs=proof)
    # then it is refused for approval, recorded, and the HSM is unchanged
    assert (out["outcome"], out["refused_by"]) == ("refused", "approval"), out
    assert w.assignments() == w.before and w.definitions() == defs
    assert [(r.outcome, r.refused_by) for r in w.records()] == [("refused", "approval")]
    # when the policy says HSM plans may be applied unattended; then the audit log applies it
    out = w.attempt(w.grants(), operator=None, proofs=proof, policy=dict(APPLY, hsm_unattended=True))
    assert out["outcome"] == "applied", out
    assert w.held() == 1


def test_revoke_deletes_only_what_we_created(hsm_world: Callable[..., HsmWorld]) -> None:
    # given our grant applied, and the same role held by another principal, and the grantee's own other role
    w = hsm_world(wrap_plan())
    w.attempt(w.grants())
    [rec] = [r for r in w.records() if r.outcome == "applied"]

    async def go(record: GrantRecord) -> Any:
        async with w.run.facts() as facts:
            return await revoke(record, ArmWriter(facts), w.grants(), w.t0, backend=EMULATOR)
    # when it is revoked, and revoked again
    first = asyncio.run(go(rec))
    again = asyncio.run(go(w.grants().get(rec.id)))  # type: ignore[arg-type]
    # then only our assignment went, once
    assert first.revoked and first.deleted, first
    assert not again.revoked and "already revoked" in (again.reason or "")
    assert w.assignments() == w.before
    # and a grant record of ours whose assignment now holds other content is left alone (never deleted blindly)
    w.attempt(w.grants(), timedelta(minutes=2))
    [live] = [r for r in w.records() if r.outcome == "applied" and r.revoked_at is None]
    t = w.run.emulator
    name = assignment_name(STRANGER, "/keys/cmk", wrap_plan().role_definition_id)
    with t._state.lock:   # someone rewrites the assignment under our name with another role (the HSM allows it)
        t._state.hsm_assignments[HSM][name]["properties"]["roleDefinitionId"] = role_id("Managed HSM Crypto User")
    with pytest.raises(ApplyError, match="other content"):
        asyncio.run(go(live))
    assert w.held() == 1


# -- crash safety: a fault at every step boundary, then a retry, then the timer --------------------------------

FAULTS = ["after_intent", "after_role", "after_write", "after_verify", "before_applied",
          "store_fails_before_applied", "store_down_after_write", "lost_answer"]


def kill_between_put_and_read_back(m: pytest.MonkeyPatch) -> None:
    """The process dies after the assignment's PUT, before its read-back: the second read of ensure_assignment."""
    from remediate.facts.hsm import HsmFacts

    original = HsmFacts.read_assignment
    calls = {"n": 0}

    async def wrapper(self: HsmFacts, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:   # the first read is ensure's "is it there already", the second its read-back
            raise Killed
        return await original(self, *args, **kwargs)

    m.setattr(HsmFacts, "read_assignment", wrapper)


def wrap_writer(m: pytest.MonkeyPatch, fault: str) -> None:
    """Make the writer's step take effect, then kill the process (once), or lose its answer."""
    if fault == "after_write":
        kill_between_put_and_read_back(m)
        return
    method = {"after_role": "hsm_define_role", "after_verify": "hsm_assign", "lost_answer": "hsm_assign"}.get(fault)
    if method is not None:
        kill_after(m, method, fault)


def first_attempt(w: HsmWorld, fault: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    with monkeypatch.context() as m:
        wrap_writer(m, fault)
        return faulty_attempt(w, fault)


def assert_hsm_trail(w: HsmWorld, *, revoked: bool) -> None:
    assert_trail(w, revoked=revoked, hsm=True)


@pytest.mark.parametrize(("kind", "fault"), [(k, f) for k in ("wrap", "encrypt") for f in FAULTS
                                              if f != "after_role" or k == "encrypt"])   # only a custom role is defined
def test_fault_then_retry_then_timer(hsm_world: Callable[..., HsmWorld], kind: str, fault: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fault at one step boundary of the first attempt
    w = hsm_world(PLANS[kind]())
    first_attempt(w, fault, monkeypatch)
    assert w.held() <= 1
    # when the same finding is applied again a minute later (redelivery, CLI rerun)
    again = w.attempt(w.grants(), timedelta(minutes=1))
    # then the grantee holds exactly one assignment, recorded as applied once, with the first attempt's expiry
    assert again["outcome"] == "applied", again
    assert w.held() == 1
    [applied] = [r for r in w.records() if r.outcome == "applied"]
    assert again["grant_id"] == applied.id
    if fault in ("after_write", "after_verify", "before_applied", "store_fails_before_applied",
                 "store_down_after_write"):
        assert again.get("adopted"), again        # the write had reached the HSM: adopted, not re-granted
    assert_hsm_trail(w, revoked=False)
    # when the timer runs before the expiry; then nothing changes
    w.timer(GRACE + timedelta(minutes=1))
    assert w.held() == 1
    # when the timer runs after the expiry; then the HSM holds what it held before
    w.timer(TTL + timedelta(minutes=5))
    assert w.assignments() == w.before
    assert_hsm_trail(w, revoked=True)


@pytest.mark.parametrize("fault", ["after_intent", "after_write", "after_verify", "before_applied",
                                   "store_down_after_write"])
def test_fault_then_only_the_timer(hsm_world: Callable[..., HsmWorld], fault: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fault and no retry at all
    w = hsm_world(encrypt_plan())
    first_attempt(w, fault, monkeypatch)
    wrote = w.held()
    assert len([r for r in w.records() if r.outcome == "pending"]) == 1
    # when the timer runs within the grace; then the intent is left alone
    w.timer(timedelta(minutes=1))
    assert [r.outcome for r in w.records()].count("pending") == 1
    # when the timer runs after the grace; then it is settled by what the HSM holds
    w.timer(GRACE + timedelta(minutes=1))
    outcomes = [r.outcome for r in w.records()]
    assert "pending" not in outcomes
    assert outcomes.count("applied") == wrote and outcomes.count("abandoned") == 1 - wrote
    # when the timer runs after the expiry; then nothing of ours is left
    w.timer(TTL + timedelta(minutes=5))
    assert w.assignments() == w.before
    assert_hsm_trail(w, revoked=True)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)   # the HSM is under test: one store is enough
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_apply_and_revoke_under_injected_faults(hsm_world: Callable[..., HsmWorld], seed: int) -> None:
    # given an HSM that throttles, fails, resets connections and loses half the write answers (after applying them)
    w = hsm_world(encrypt_plan())
    defs = len(w.definitions())
    w.run.emulator.configure(faults=FAST, seed=seed)
    # when the grant is applied three times, then expires
    outs = [w.attempt(w.grants(), timedelta(minutes=i)) for i in range(3)]
    held = w.held()
    w.timer(TTL + timedelta(minutes=5))
    w.timer(TTL + timedelta(minutes=10))   # a second pass: idempotent
    w.run.emulator.configure(faults=Faults())
    # then it was applied once (every attempt the same grant), and afterwards only our custom role remains
    assert [o["outcome"] for o in outs] == ["applied"] * 3, outs
    assert len({o["grant_id"] for o in outs}) == 1 and held == 1
    assert w.assignments() == w.before and len(w.definitions()) == defs + 1
    assert_hsm_trail(w, revoked=True)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)   # the HSM is under test: one store is enough
def test_an_hsm_that_refuses_our_identity_fails_the_grant_and_changes_nothing(
        hsm_world: Callable[..., HsmWorld]) -> None:
    # given the HSM sees the function as a Crypto Auditor (it reads local RBAC, it cannot change it)
    from tests.support.hsm import AUDITOR

    t = tenant()
    t["emulator"] = {"hsm_caller": AUDITOR}
    w = hsm_world(encrypt_plan(), t)
    defs = w.definitions()
    # when the grant is applied
    out = w.attempt(w.grants())
    # then it failed, saying which data action the HSM refused and what to assign, and the HSM is unchanged
    assert out["outcome"] == "failed", out
    assert "roleDefinitions/write/action" in out["error"] and "Policy Administrator" in out["error"]
    assert w.assignments() == w.before and w.definitions() == defs
    assert [r.outcome for r in w.records()] == ["failed"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)   # the HSM is under test: one store is enough
def test_findings_sharing_an_hsm_plan_share_one_grant(hsm_world: Callable[..., HsmWorld]) -> None:
    w = hsm_world(wrap_plan())

    async def go() -> list[Finding]:
        async with w.run.facts() as facts:
            return await apply_findings([finding(wrap_plan()), finding(wrap_plan())], ArmWriter(facts),
                                        w.ctx(w.grants()))
    first, second = asyncio.run(go())
    assert first.outcome is not None and second.outcome is not None
    assert first.outcome.outcome == "applied" and second.outcome.grant_id == first.outcome.grant_id
    assert w.held() == 1 and [r.outcome for r in w.records()] == ["applied"]


def test_a_retry_diagnosed_already_granted_adopts_our_open_grant(hsm_world: Callable[..., HsmWorld],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # given the first attempt died after its assignment reached the HSM (its record left pending)
    from remediate.evidence import RoleAssignmentCheck
    from remediate.model import Cause, VaultRef

    w = hsm_world(wrap_plan())
    first_attempt(w, "after_write", monkeypatch)
    assert w.held() == 1
    # when the retry's diagnosis finds the caller already granted (by our assignment), so it has no plan
    a = ours(w)
    check = RoleAssignmentCheck(id=a["id"], scope="/keys/cmk", role_definition_id=a["properties"]["roleDefinitionId"],
                                role_name="Managed HSM Crypto Service Encryption User", principal_id=STRANGER,
                                via="direct", condition=None, grants=True, reason="grants wrap")
    f = finding(wrap_plan())
    f = Finding(Cause.ALREADY_GRANTED, 1, f.denial.with_(vault=VaultRef(HSM, HSM_ID, "managed_hsm", "/keys/cmk")),
                "rbac", None, "", None, (), Evidence(role_assignments=(check,)))

    async def go() -> Finding:
        async with w.run.facts() as facts:
            [done] = await apply_findings([f], ArmWriter(facts), w.ctx(w.grants(), timedelta(minutes=1)))
            return done
    done = asyncio.run(go())
    # then our open grant is adopted: applied, with the first intent's expiry, and still one assignment
    assert done.outcome is not None and done.outcome.outcome == "applied" and done.outcome.adopted, done.outcome
    assert w.held() == 1
    assert_hsm_trail(w, revoked=False)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)   # the HSM is under test: one store is enough
def test_cli_revoke_of_an_hsm_grant_goes_through_the_backends_hsm_facts(
        hsm_world: Callable[..., HsmWorld], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from remediate.cli import main
    from remediate.store.grants import SqliteGrantStore

    # given an HSM grant made in the emulator, recorded in the CLI's state file, and the tenant written out
    w = hsm_world(encrypt_plan())
    out = w.attempt(w.grants())
    assert out["outcome"] == "applied"
    snap, after, state = tmp_path / "t.json", tmp_path / "t2.json", tmp_path / "state.db"
    snap.write_text(json.dumps(w.run.emulator.tenant()))
    assert state.exists() and SqliteGrantStore(state).get(out["grant_id"]) is not None
    # when `kv-remediate revoke --grant ID` runs on that snapshot
    code = main(["revoke", "--grant", out["grant_id"], "--snapshot", str(snap), "--snapshot-out", str(after),
                 "--state", str(state), "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    # then the assignment is gone from the HSM, our custom role is kept, and the grant is recorded as revoked
    assert code == 0 and [r["revoked"] for r in doc["revocations"]] == [True], doc
    t2 = json.loads(after.read_text())
    assert [a for a in t2["hsm_role_assignments"][HSM] if a["properties"]["principalId"].lower() == STRANGER] == []
    assert custom_role_name(ENCRYPT) in {d["name"] for d in t2["hsm_role_definitions"][HSM]}
    assert SqliteGrantStore(state).get(out["grant_id"]).revoked_at is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(("changes", "rule"), [
    ({"scope": "/"}, "scopes"),
    ({"scope": "/keys/../x"}, "scopes"),
    ({"scope": "/keys/cmk\n/"}, "scopes"),
    ({"hsm": HSM_ID + "/keys"}, "scopes"),
    ({"role_definition_id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                            "33413926-3206-4cdd-b39a-83574fe37a17"}, "permissions"),
    ({"role_definition_id": role_id("Managed HSM Policy Administrator")}, "allow_privileged"),
    ({"principal_id": "33333333-0000-0000-0000-000000000001"}, "principals.caller"),
])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)   # the HSM is under test: one store is enough
def test_a_widened_plan_is_refused_recorded_and_never_reaches_the_hsm(
        hsm_world: Callable[..., HsmWorld], changes: dict[str, str], rule: str) -> None:
    # given a plan widened one way, an operator's apply and a policy that allows the rest
    from dataclasses import replace as changed

    w = hsm_world(changed(wrap_plan(), **changes))
    w.run.emulator.reset_count()
    # when it is applied
    out = w.attempt(w.grants())
    # then it is refused by the rule that owns it, recorded, and no request reached the HSM (or ARM)
    assert (out["outcome"], out["refused_by"]) == ("refused", rule), out
    assert [(r.outcome, r.refused_by) for r in w.records()] == [("refused", rule)]
    assert w.run.emulator.request_count == 0 and w.assignments() == w.before
