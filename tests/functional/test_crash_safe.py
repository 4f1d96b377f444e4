"""Crash-safe grants (issue 17): a fault at every step boundary of an apply, then a retry, then the timer.

Each case runs the real path (service.remediate -> apply -> the SDK -> the bundled emulator) with a fault injected
at one boundary: the process "killed" (a BaseException nothing of ours catches, like SIGKILL nothing runs after),
or the grant store failing. Then the worker's redelivery / a CLI rerun (the same denial again), or only the timer,
and the timer after the expiry. Every case must end with exactly one grant in the emulator while it should exist,
none after its expiry, and a record trail without a dangling ``pending``. Role assignments, PIM requests and
access policies go through the same cases, on SQLite and on Azure Tables (Azurite).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediate.apply import GRACE, parse_label
from remediate.facts.writes import ArmWriter
from remediate.store.grants import EMULATOR, GrantRecord, SqliteGrantStore
from tests.support.crash_world import KINDS, ORDERS, TTL, Kind, World, assert_trail, faulty_attempt, kill_after
from tests.support.demo_apply import APPLY, LEGACY, TENANT

FAULTS = ["after_intent", "after_write", "after_verify", "before_applied", "store_fails_before_applied",
          "store_down_after_write", "store_fails_on_intent", "lost_answer"]


def wrap_writer(monkeypatch: pytest.MonkeyPatch, kind: Kind, fault: str) -> None:
    """Make the writer's write (or verifying read) take effect and then kill the process (once)."""
    method = {"after_write": kind.write, "after_verify": kind.verify, "lost_answer": kind.write}.get(fault)
    if method is not None:
        kill_after(monkeypatch, method, fault)


def first_attempt(w: World, fault: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    """The attempt with the fault; None when the process 'died'."""
    with monkeypatch.context() as m:
        wrap_writer(m, w.kind, fault)
        return faulty_attempt(w, fault)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_fault_then_retry_then_timer(world_for: Callable[[Kind], World], kind: Kind, fault: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fault at one step boundary of the first attempt
    w = world_for(kind)
    first = first_attempt(w, fault, monkeypatch)
    assert w.held() <= 1
    # when the message is redelivered (or the operator re-runs the CLI) a minute later
    again = w.attempt(w.grants(), timedelta(minutes=1))
    # then the principal holds exactly one grant, recorded as applied once, with the first attempt's expiry
    assert again["outcome"] == "applied", again
    assert w.held() == 1
    [applied] = [r for r in w.records() if r.outcome == "applied"]
    assert again["grant_id"] == applied.id
    if first is not None and first.get("outcome") == "store_error" and fault == "store_fails_on_intent":
        w.expiry = w.t0 + timedelta(minutes=1) + TTL   # nothing was recorded or written: the rerun is the grant
    elif fault not in ("after_intent", "lost_answer"):   # the write had reached Azure: adopted, not re-granted
        assert again.get("adopted"), again
    assert_trail(w, revoked=False)
    if kind.name == "role_assignment":   # Azure itself says it is ours, and until when
        a = next(a for a in w.emu.emulator.tenant()["role_assignments"]
                 if a["properties"]["principalId"].lower() == ORDERS.lower())
        assert parse_label(a["properties"]["description"]) == (applied.id, applied.expires_at)
    # when the timer runs before the expiry; then nothing changes
    w.timer(GRACE + timedelta(minutes=1))
    assert w.held() == 1
    # when the timer runs after the expiry; then no grant is left, and the trail says it was revoked
    w.timer(TTL + timedelta(minutes=5))
    if kind.name == "pim":   # PIM removes it itself at the expiry it was asked for
        [a] = [a for a in w.emu.emulator.tenant()["role_assignments"]
               if a["properties"]["principalId"].lower() == ORDERS.lower()]
        end = datetime.fromisoformat(a["expiresOn"].replace("Z", "+00:00"))
        assert abs(end - (w.t0 + TTL)) < timedelta(minutes=2)
    else:
        assert w.held() == 0
    assert_trail(w, revoked=True)


@pytest.mark.parametrize("fault", ["after_intent", "after_write", "after_verify", "before_applied",
                                   "store_down_after_write"])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_fault_then_only_the_timer(world_for: Callable[[Kind], World], kind: Kind, fault: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fault and no retry at all (the message went to the poison queue)
    w = world_for(kind)
    first_attempt(w, fault, monkeypatch)
    wrote = w.held()
    pending = [r.id for r in w.records() if r.outcome == "pending"]
    assert len(pending) == 1, [(r.outcome, r.detail) for r in w.records()]
    # when the timer runs within the grace; then it leaves the intent alone (an apply may still be running)
    w.timer(timedelta(minutes=1))
    assert [r.id for r in w.records() if r.outcome == "pending"] == pending
    # when the timer runs after the grace; then the intent is settled by what Azure holds
    w.timer(GRACE + timedelta(minutes=1))
    outcomes = [r.outcome for r in w.records()]
    assert "pending" not in outcomes
    assert outcomes.count("applied") == wrote and outcomes.count("abandoned") == 1 - wrote
    assert w.held() == wrote
    # when the timer runs after the expiry; then nothing is left
    w.timer(TTL + timedelta(minutes=5))
    if kind.name != "pim":
        assert w.held() == 0
    assert_trail(w, revoked=True)


def test_a_lost_record_is_found_by_its_label_and_revoked(world_for: Callable[[Kind], World],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    # given a role assignment made, then its record lost (only SQLite lets the test lose one row)
    if request.node.callspec.params.get("backend") != "sqlite":
        pytest.skip("the record is deleted straight from the SQLite file")
    w = world_for(KINDS[0])
    first_attempt(w, "after_write", monkeypatch)
    [pending] = w.records()
    w.grants().add(GrantRecord(outcome="refused", time=w.t0, vault_id=pending.vault_id, refused_by="scopes"))
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("DELETE FROM grants WHERE id = ?", (pending.id,))
    assert w.held() == 1
    # when the timer runs before the expiry; then the labelled assignment stays (it has not expired)
    w.timer(GRACE + timedelta(minutes=1))
    assert w.held() == 1
    # when the timer runs after the expiry; then it is deleted, and the deletion is recorded with the label's id
    results = w.timer(TTL + timedelta(minutes=5))
    assert w.held() == 0
    assert [r["grant_id"] for r in results if r.get("revoked")] == [pending.id]
    [revoked] = [r for r in w.records() if r.outcome == "revoked"]
    assert pending.id in (revoked.detail or "") and "missing" in (revoked.detail or "")


def test_someone_elses_assignment_is_already_granted_and_frees_the_slot(world_for: Callable[[Kind], World]) -> None:
    # given the principal holds the role under a name we did not choose, which the diagnosis does not see
    # (it was created between our read and our write), and a policy of one grant per hour
    kind = replace(KINDS[0], policy=dict(KINDS[0].policy, max_grants_per_hour=1))
    w = world_for(kind)

    original = ArmWriter.create_role_assignment

    async def race(self: ArmWriter, scope: str, name: str, *args: Any, **kw: Any) -> Any:
        await original(self, scope, str(uuid.uuid4()), *args)   # another admin, a moment earlier
        return await original(self, scope, name, *args, **kw)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ArmWriter, "create_role_assignment", race)
        out = w.attempt(w.grants())
    # then it is already_granted (not ours: no expiry, never revoked by us), and the hour's only slot is free
    assert out["outcome"] == "already_granted", out
    assert [r.outcome for r in w.records()] == ["already_granted"]
    with sqlite3.connect(w.slots) as conn:
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_cli_revoke_reconcile_settles_and_revokes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from remediate.cli import main

    # given a CLI apply with a one-hour limit (its tenant written out), and an intent a crash left before its write
    tenant, after, final = tmp_path / "t.json", tmp_path / "t2.json", tmp_path / "t3.json"
    tenant.write_text(json.dumps(TENANT))
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(dict(APPLY, grant_ttl="PT1H")))
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"principal_id": ORDERS, "vault": "kv-payments", "operation": "SecretGet"}))
    state = tmp_path / "state.db"
    assert main(["remediate", str(request), "--snapshot", str(tenant), "--snapshot-out", str(after), "--policy",
                 str(policy), "--apply", "--state", str(state), "--output", "json"]) == 0
    capsys.readouterr()
    store = SqliteGrantStore(state)
    t0 = datetime.now(UTC)
    stray = GrantRecord(outcome="pending", time=t0, expires_at=t0 + TTL, vault_id=LEGACY["id"], principal_id=ORDERS,
                        scope=LEGACY["id"], permissions_added={"secrets": ["get"]},
                        write_key="emulator|ap|x|y|secrets:get", backend=EMULATOR,   # left by a --snapshot run
                        detail="intent recorded; the write was not confirmed")
    store.begin(stray)
    # when `revoke --reconcile` runs after the expiry
    monkeypatch.setattr("remediate.cli.commands._now", lambda: t0 + TTL + timedelta(minutes=5))
    assert main(["revoke", "--reconcile", "--snapshot", str(after), "--snapshot-out", str(final), "--state",
                 str(state), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # then the stray intent is abandoned, the grant revoked, and the tenant holds no assignment of ours
    assert {r.get("reconciled") for r in doc["revocations"]} >= {"abandoned"}
    assert [r["revoked"] for r in doc["revocations"] if "revoked" in r] == [True]
    assert store.get(stray.id).outcome == "abandoned"  # type: ignore[union-attr]
    held = [a for a in json.loads(final.read_text())["role_assignments"]
            if a["properties"]["principalId"].lower() == ORDERS.lower()]
    assert held == []
