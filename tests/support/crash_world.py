"""One emulated tenant kept across the attempts of a crash-safety test (no tests here): the ways to grant (role
assignment, PIM, access policy) and the world that runs an apply, the revocation timer, and counts what is held."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from remediate.apply import ApplyContext, reconcile
from remediate.backends import EmulatorRun
from remediate.errors import ApplyError, StorageError
from remediate.facts.writes import ArmWriter
from remediate.guard import policy_from_dict
from remediate.model import Proof
from remediate.service import remediate
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import GrantRecord, GrantStore
from tests.support.demo_apply import APPLY, LEGACY, PAY, denial, entry_of, gid

TTL = timedelta(hours=1)
ORDERS = gid("app-orders")


@dataclass(frozen=True)
class Kind:
    """One way to grant: the policy that selects it, the denial that needs it, and how to see it in the tenant."""

    name: str
    policy: dict[str, Any]
    vault: dict[str, Any]
    write: str          # the ArmWriter method that sends the write
    verify: str         # the ArmWriter method of the verifying read

    def denial(self) -> Any:
        return denial(ORDERS, self.vault, op="SecretGet")

    def grants_in(self, tenant: dict[str, Any]) -> int:
        """How many grants of this kind the principal holds in the emulator now (0 or 1 when all is well)."""
        if self.vault is LEGACY:
            e = entry_of(tenant, "kv-legacy", ORDERS)
            return int(bool(e and "get" in [p.lower() for p in e["permissions"].get("secrets", [])]))
        now = datetime.now(UTC)
        return sum(1 for a in tenant["role_assignments"] if a["properties"]["principalId"].lower() == ORDERS.lower()
                   and not (a.get("expiresOn") and datetime.fromisoformat(a["expiresOn"].replace("Z", "+00:00"))
                            <= now))


KINDS = [
    Kind("role_assignment", dict(APPLY, grant_ttl="PT1H"), PAY, "create_role_assignment", "role_assignment_exists"),
    Kind("pim", dict(APPLY, grant_ttl="PT1H", use_pim=True), PAY, "pim_assign", "role_assignment_exists"),
    Kind("access_policy", dict(APPLY, grant_ttl="PT1H"), LEGACY, "add_access_policy", "entry_permissions"),
]



class World:
    """One emulated tenant kept across the attempts, the timer runs and the assertions."""

    def __init__(self, emu: EmulatorRun, grants: Callable[[], GrantStore], slots: Path, kind: Kind) -> None:
        self.emu, self.grants, self.slots, self.kind = emu, grants, slots, kind
        self.t0 = datetime.now(UTC)
        self.expiry = self.t0 + TTL   # of the grant the first recorded intent made

    def ctx(self, store: GrantStore, at: timedelta = timedelta(0)) -> ApplyContext:
        return ApplyContext(policy=policy_from_dict(self.kind.policy), grants=store,
                            slots=SqliteClaimStore(self.slots), now=self.t0 + at, actor="test",
                            operator=Proof("operator", "test"))

    def attempt(self, store: GrantStore, at: timedelta = timedelta(0)) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            async with self.emu.facts() as facts:
                result = await remediate([self.kind.denial()], facts, self.ctx(store, at))
            outcome = result.findings[0].outcome
            return outcome.to_dict() if outcome else {}
        return asyncio.run(go())

    def timer(self, at: timedelta) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with self.emu.facts() as facts:
                return [r.to_dict() for r in await reconcile(ArmWriter(facts), self.grants(), self.t0 + at,
                                                             actor="timer")]
        return asyncio.run(go())

    def held(self) -> int:
        return self.kind.grants_in(self.emu.emulator.tenant())

    def records(self) -> list[GrantRecord]:
        return self.grants().list()


class Killed(BaseException):
    """The process dies here: no except clause of ours runs (they catch Exception subclasses only)."""


class FaultyStore:
    """A grant store whose chosen call fails once: killed after it took effect, or a StorageError before (the
    crash tests of vault and Managed HSM grants name the fault: ``after_intent``, ``store_fails_on_intent``,
    ``before_applied``, ``store_fails_before_applied``, ``store_down_after_write``; others are the writer's)."""

    def __init__(self, inner: GrantStore, fault: str) -> None:
        self.inner, self.fault, self.fired = inner, fault, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def begin(self, record: GrantRecord) -> GrantRecord:
        if self.fault == "store_fails_on_intent" and not self.fired:
            self.fired = True
            raise StorageError("recording a grant intent failed: injected")
        got = self.inner.begin(record)
        if self.fault == "after_intent" and not self.fired:
            self.fired = True
            raise Killed
        return got

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        if self.fault == "store_down_after_write" and record.outcome != "pending":
            raise StorageError("settling a grant record failed: injected (the store stays down)")
        if record.outcome == "applied" and not self.fired:
            if self.fault == "before_applied":
                self.fired = True
                raise Killed
            if self.fault == "store_fails_before_applied":
                self.fired = True
                raise StorageError("settling a grant record failed: injected")
        return self.inner.settle(id, expect, record)


class CrashWorld(Protocol):
    """What the crash helpers below need of a test world (vault grants: World; Managed HSM grants: HsmWorld)."""

    expiry: datetime
    grants: Callable[[], GrantStore]

    def attempt(self, store: GrantStore, at: timedelta = ...) -> dict[str, Any]: ...
    def records(self) -> list[GrantRecord]: ...


def faulty_attempt(w: CrashWorld, fault: str) -> dict[str, Any] | None:
    """One attempt through a store with ``fault`` (the writer's faults are the caller's monkeypatch): its outcome,
    ``{"outcome": "store_error"}`` when the store failed, None when the process 'died'."""
    store: GrantStore = FaultyStore(w.grants(), fault)  # type: ignore[assignment]
    try:
        return w.attempt(store)
    except Killed:
        return None
    except StorageError:
        return {"outcome": "store_error"}


def assert_trail(w: CrashWorld, *, revoked: bool, hsm: bool = False) -> None:
    """No dangling intent; at most one applied record, with the first intent's expiry (an HSM grant's record says
    so); revoked after it."""
    records = w.records()
    assert not [r for r in records if r.outcome == "pending"], [(r.outcome, r.detail) for r in records]
    applied = [r for r in records if r.outcome == "applied"]
    assert len(applied) <= 1, [(r.id, r.detail) for r in applied]
    for r in applied:
        assert r.is_hsm == hsm and r.expires_at is not None and abs(r.expires_at - w.expiry) < timedelta(seconds=1)
        assert (r.revoked_at is not None) == revoked, (r.revoked_at, r.revoke_detail)
    assert {r.outcome for r in records} <= {"applied", "revoked", "failed", "abandoned"}


def kill_after(m: pytest.MonkeyPatch, method: str, fault: str) -> None:
    """Make ``ArmWriter.<method>`` take effect and then kill the process, once; for ``lost_answer`` the write lands
    and its answer is lost instead (an error we do catch)."""
    original: Callable[..., Awaitable[Any]] = getattr(ArmWriter, method)
    fired = {"done": False}

    async def wrapper(self: ArmWriter, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if not fired["done"]:
            fired["done"] = True
            if fault == "lost_answer":
                raise ApplyError("injected: the connection dropped after the write was sent")
            raise Killed
        return result

    m.setattr(ArmWriter, method, wrapper)
