"""The one core function behind `diagnose` (CLI, HTTP, queue worker): denials in, findings out.

It collapses identical denials, reads the facts each distinct denial needs through a ``FactSource`` (the
Azure SDK implementation in facts/, pointed at Azure or at the bundled emulator), and hands them to the
pure decision and plan.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import telemetry
from .catalog import RoleDefinition
from .decide import gathered_facts, next_reads
from .explain import build_finding
from .hsm_model import HsmAccess, HsmLookup, HsmSetting, ManagedHsm
from .model import (
    DIAGNOSIS_SCHEMA,
    Denial,
    DenyAssignment,
    Facts,
    Finding,
    PrincipalInfo,
    RoleAssignment,
    VaultLookup,
    VaultRef,
)
from .plan import PlanOptions
from .reads import (
    FactRead,
    Gathered,
    ReadAssignments,
    ReadDenyAssignments,
    ReadPrincipal,
    ReadRoleDefinitions,
    ReadVault,
)


class FactSource(Protocol):
    """What the diagnosis reads; implemented by facts.arm.ArmFacts (Azure or the emulator)."""

    requests: int
    by_api: dict[str, int]

    @property
    def graph_denied(self) -> bool: ...

    async def resolve_vaults(self, refs: Sequence[VaultRef]) -> None: ...
    def vault_notes(self, refs: Sequence[VaultRef]) -> tuple[str, ...]: ...
    def resolved_id(self, ref: VaultRef) -> str | None: ...
    async def find_vault(self, ref: VaultRef) -> VaultLookup: ...
    async def assignments(self, principal_id: str, scope: str) -> tuple[RoleAssignment, ...]: ...
    async def deny_assignments(self, vault_id: str) -> tuple[DenyAssignment, ...]: ...
    async def role_definitions(self, ids: Sequence[str]) -> dict[str, RoleDefinition]: ...
    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo: ...
    async def user_by_upn(self, upn: str) -> str | None: ...
    # Managed HSM (facts/hsm_reads.py; service_hsm.py reads through these)
    def hsm_guess(self, ref: VaultRef) -> ManagedHsm | None: ...
    async def find_hsm(self, ref: VaultRef) -> HsmLookup: ...
    async def hsm_access(self, hsm: ManagedHsm, key_name: str | None) -> HsmAccess: ...
    async def hsm_arm_setting(self, hsm: ManagedHsm) -> HsmSetting: ...


@dataclass(frozen=True)
class RequestStats:
    """The requests a run made: in all, and per API (arm, graph, log_analytics)."""

    arm_requests: int
    requests_by_api: Mapping[str, int]


@dataclass(frozen=True)
class ApplyStats:
    """What a remediate run changed: ARM writes, outcomes by kind, and the policy's mode."""

    arm_writes: int
    outcomes: Mapping[str, int]
    policy_mode: str


@dataclass(frozen=True)
class DiagnosisStats:
    """What one batch cost and found (``stats`` in the JSON; ``apply`` only for remediate)."""

    requests: RequestStats
    elapsed_ms: int
    denials: int
    findings: int
    causes: Mapping[str, int]
    apply: ApplyStats | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"arm_requests": self.requests.arm_requests,
                               "requests_by_api": dict(self.requests.requests_by_api), "elapsed_ms": self.elapsed_ms,
                               "denials": self.denials, "findings": self.findings, "causes": dict(self.causes)}
        if self.apply is not None:
            out.update(arm_writes=self.apply.arm_writes, outcomes=dict(self.apply.outcomes),
                       policy_mode=self.apply.policy_mode)
        return out


@dataclass(frozen=True)
class Diagnosis:
    """The findings of one batch and what it cost."""

    findings: tuple[Finding, ...]
    stats: DiagnosisStats
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema": DIAGNOSIS_SCHEMA, "findings": [f.to_dict() for f in self.findings],
                "stats": self.stats.to_dict(), "notes": list(self.notes)}


@dataclass(frozen=True)
class DiagnoseOptions:
    """Choices for one batch."""

    plan: PlanOptions = field(default_factory=PlanOptions)


class RequestCount:
    """The requests a source made since this was created: the one place ``arm_requests`` and ``requests_by_api``
    are computed (diagnose and remediate both report them)."""

    def __init__(self, source: FactSource) -> None:
        self._source, self._requests, self._by_api = source, source.requests, dict(source.by_api)

    def since(self) -> RequestStats:
        by_api = {k: v - self._by_api.get(k, 0) for k, v in sorted(self._source.by_api.items())}
        return RequestStats(self._source.requests - self._requests, by_api)


def collapse(denials: Sequence[Denial]) -> list[tuple[Denial, int]]:
    """Identical denials (principal, vault, object, operation, status, hint) become one with a count."""
    counts: Counter[tuple[Any, ...]] = Counter()
    first: dict[tuple[Any, ...], Denial] = {}
    for d in denials:
        key = (*d.identity_key(), d.cause_hint)
        counts[key] += 1
        first.setdefault(key, d)
    return [(first[k], n) for k, n in counts.items()]


async def _perform(read: FactRead, source: FactSource) -> Any:
    """One read through the fact source (which caches it for the batch: concurrent asks share one request)."""
    if isinstance(read, ReadVault):
        return await source.find_vault(read.ref)
    if isinstance(read, ReadAssignments):
        return await source.assignments(read.principal_id, read.scope)
    if isinstance(read, ReadDenyAssignments):
        return await source.deny_assignments(read.vault_id)
    if isinstance(read, ReadRoleDefinitions):
        return await source.role_definitions(read.ids)
    return await source.principal(read.object_id, need_type=not read.groups, need_groups=read.groups)


async def gather_facts(denial: Denial, source: FactSource) -> Facts | None:
    """Read what the decision about one denial needs, and nothing more: start every read the facts so far call
    for (``decide.next_reads``), fold each answer in as it arrives, and ask again until nothing is left.

    A read that fails while still called for raises (a domain error with its remedy); one no longer called for
    (a speculative read, or one made moot by what came back first) is left to finish and its answer ignored.
    A Managed HSM denial has its own reads (service_hsm.py: the HSM, its local RBAC and the caller, together)."""
    if denial.vault.kind == "managed_hsm":
        from .service_hsm import gather_hsm_facts

        return await gather_hsm_facts(denial, source)
    gathered = Gathered()
    started: dict[FactRead, asyncio.Future[Any]] = {}
    answered: set[FactRead] = set()
    while True:
        wanted = next_reads(denial, gathered)
        for read in wanted:
            if read not in started:
                started[read] = asyncio.ensure_future(_perform(read, source))
        waiting = {task: read for read, task in started.items() if read not in answered}
        if not waiting:
            break
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for read, task in started.items():   # folded in the order started
            if task in done:
                answered.add(read)
                if task.exception() is None:
                    gathered = gathered.with_result(read, task.result())
    failed = [exc for read, task in started.items() if read in wanted and (exc := task.exception()) is not None]
    if failed:
        raise failed[0]
    facts = gathered_facts(denial, gathered)
    if facts is None or facts.vault is None or not denial.principal.object_id:
        return facts
    return replace(facts, limitations=_graph_limitations(denial, facts, set(wanted), source))


def _graph_limitations(denial: Denial, facts: Facts, wanted: set[FactRead], source: FactSource) -> tuple[str, ...]:
    """What Microsoft Graph could not tell that the decision needed, each with why (per call: facts.arm)."""
    oid = facts.principal.object_id or ""
    problem = getattr(source, "graph_problem", None)

    def why(call: str, default: str) -> str:
        return (problem(oid, call) if problem else None) or default
    limitations = []
    if ReadPrincipal(oid, groups=True) in wanted and not facts.principal.groups_known:
        limitations.append(f"group memberships ({why('getMemberGroups', 'Microsoft Graph was not permitted')}), so "
                           "access-policy entries and deny assignments naming the caller's groups were not matched")
    if ReadPrincipal(oid, groups=False) in wanted and facts.principal.type is None:
        limitations.append(f"the caller's principal type ({why('getByIds', 'Microsoft Graph could not tell')}; an "
                           "access-policy entry is granted only to a type Graph confirmed, never to one the input "
                           "claims)")
    return tuple(limitations)


Progress = Callable[[int, int], None]
"""Told (done, total) as each distinct denial's facts are read: the CLI's progress line on a terminal."""


async def diagnose(denials: Sequence[Denial], source: FactSource,
                   options: DiagnoseOptions | None = None, *, progress: Progress | None = None,
                   entry: str = "app") -> Diagnosis:
    """Diagnose a batch: one finding per distinct denial, in input order."""
    options = options or DiagnoseOptions()
    start = time.perf_counter()
    count = RequestCount(source)
    unique = collapse([d.canonical() for d in denials])
    # A user the input names only by UPN (an audit row with a redacted object id): one Graph lookup per UPN, so the
    # decision is about the object id Graph gives (never one the input claims); unresolved, a note says why.
    unique, upn_notes = await _identify_users(unique, source)
    # Where the vaults named only by name are: one lookup for the whole batch (Resource Graph, or the index that
    # outlives batches), before any denial's own reads; each denial then starts with the vault's id.
    refs = [d.vault for d, _ in unique if d.vault.kind != "managed_hsm" and _needs_vault(d)]
    await source.resolve_vaults(refs)
    done = 0

    async def read(d: Denial) -> Facts | None:
        nonlocal done
        got = await gather_facts(_located(d, source), source)
        done += 1
        if progress is not None:
            progress(done, len(unique))
        return got

    facts = await asyncio.gather(*(read(d) for d, _ in unique))
    findings = tuple(build_finding(d, n, f, options.plan) for (d, n), f in zip(unique, facts, strict=True))
    causes = Counter(str(f.cause) for f in findings)
    elapsed = (time.perf_counter() - start) * 1000
    stats = DiagnosisStats(count.since(), round(elapsed), len(denials), len(findings), dict(sorted(causes.items())))
    telemetry.record_diagnosis(findings, elapsed, entry, len(denials))
    return Diagnosis(findings, stats, (*upn_notes, *source.vault_notes(refs)))


async def _identify_users(unique: list[tuple[Denial, int]], source: FactSource
                          ) -> tuple[list[tuple[Denial, int]], tuple[str, ...]]:
    """The denials whose caller is known only by UPN, with the object id Microsoft Graph resolves it to (one
    ``GET /users/{upn}`` per distinct UPN, cached by the source), and a note for each UPN it could not resolve."""
    upns = sorted({p.upn for p in (d.principal for d, _ in unique) if p.upn and not p.object_id})
    if not upns:
        return unique, ()
    found = dict(zip(upns, await asyncio.gather(*(source.user_by_upn(u) for u in upns)), strict=True))
    problem = getattr(source, "graph_problem", None)
    notes = tuple(f"{u}: the input names this user only by user principal name, and Microsoft Graph did not resolve "
                  f"it to an object id ({(problem(u, 'getUser') if problem else None) or 'no answer'})"
                  for u in upns if found[u] is None)
    out = []
    for d, n in unique:
        oid = found.get(d.principal.upn or "") if not d.principal.object_id else None
        out.append((d.with_(principal=replace(d.principal, object_id=oid, kind=d.principal.kind or "user")), n)
                   if oid else (d, n))
    return out, notes


def _located(denial: Denial, source: FactSource) -> Denial:
    """The denial as the facts are read for it: with the vault id the batch lookup found (read from Azure, never
    the input's), so its reads start together; the finding still shows the denial as the input gave it."""
    if denial.vault.kind == "managed_hsm":
        return denial     # an HSM is found by its own reads (service_hsm.py), never by the vault lookup
    rid = None if denial.vault.resource_id else source.resolved_id(denial.vault)
    return denial if rid is None else denial.with_(vault=replace(denial.vault, resource_id=rid))


def _needs_vault(denial: Denial) -> bool:
    """Whether gather_facts will look this denial's vault up (decide's own first answer, so the two never drift)."""
    return any(isinstance(r, ReadVault) for r in next_reads(denial, Gathered()))


async def remediate(denials: Sequence[Denial], source: Any, ctx: Any, *, progress: Progress | None = None,
                    entry: str = "app") -> Diagnosis:
    """Diagnose, then apply what policy allows (``ctx`` is an apply.ApplyContext; ``source`` an ArmFacts)."""
    from .apply import apply_findings
    from .facts.writes import ArmWriter

    count, before_writes = RequestCount(source), source.arm_writes
    diagnosis = await diagnose(denials, source, DiagnoseOptions(PlanOptions(object_scope=ctx.policy.object_scope)),
                               progress=progress, entry=entry)
    findings = await apply_findings(diagnosis.findings, ArmWriter(source), ctx)
    telemetry.record_outcomes(findings, bool(ctx.requested), entry)
    outcomes = Counter(str(f.outcome.outcome if f.outcome else None) for f in findings)
    stats = replace(diagnosis.stats, requests=count.since(), apply=ApplyStats(
        source.arm_writes - before_writes, dict(sorted(outcomes.items())), ctx.policy.mode))
    return Diagnosis(tuple(findings), stats, diagnosis.notes)
