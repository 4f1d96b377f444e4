"""The one core function behind `diagnose` (CLI, HTTP, queue worker): denials in, findings out.

It collapses identical denials, reads the facts each distinct denial needs through a ``FactSource`` (the
Azure SDK implementation in facts/, pointed at Azure or at the bundled emulator), and hands them to the
pure decision and plan.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .catalog import RoleDefinition
from .decide import EVERYONE, decide, input_cause, object_scope
from .explain import build_finding
from .model import (
    DIAGNOSIS_SCHEMA,
    Cause,
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

NEEDS_VAULT_FOR_ADVICE = frozenset({Cause.NETWORK_BLOCKED, Cause.TRUSTED_SERVICE_DENIED})


class FactSource(Protocol):
    """What the diagnosis reads; implemented by facts.arm.ArmFacts (Azure or the emulator)."""

    requests: int
    by_api: dict[str, int]

    @property
    def graph_denied(self) -> bool: ...

    async def find_vault(self, ref: VaultRef) -> VaultLookup: ...
    async def assignments(self, principal_id: str, scope: str) -> tuple[RoleAssignment, ...]: ...
    async def deny_assignments(self, vault_id: str) -> tuple[DenyAssignment, ...]: ...
    async def role_definitions(self, ids: Sequence[str]) -> dict[str, RoleDefinition]: ...
    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo: ...


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


def _groups_could_matter(facts: Facts) -> bool:
    """Whether the principal's groups could change the verdict (entries or denies naming other ids)."""
    vault = facts.vault
    own = (facts.principal.object_id or "").lower()
    if vault is not None and any(e.object_id.lower() != own for e in vault.access_policies):
        return True
    return any(p.lower() not in (own, EVERYONE) for d in facts.deny_assignments for p in d.principal_ids)


async def gather_facts(denial: Denial, source: FactSource) -> Facts | None:
    """Read what the decision about one denial needs, and nothing more."""
    early = input_cause(denial)
    if early is not None and early not in NEEDS_VAULT_FOR_ADVICE:
        return None
    if not denial.vault.key:
        return None
    oid = denial.principal.object_id
    if early is None and not oid:
        return None
    ref = denial.vault
    known_id = ref.resource_id
    ra_task = deny_task = None
    if early is None and oid and known_id:
        # The vault id is known: start every independent read at once. Assignments are asked for at the denied
        # object's own scope (atScope() there returns everything at or above it: facts.arm.ArmFacts.assignments).
        ra_task = asyncio.ensure_future(source.assignments(oid, object_scope(known_id, denial) or known_id))
        deny_task = asyncio.ensure_future(source.deny_assignments(known_id))
    lookup = await source.find_vault(ref)
    vault = lookup.vault
    if vault is None or early is not None or not oid:
        # Reads already started are shared through the source's cache; let them finish, never cancel them.
        await asyncio.gather(*(t for t in (ra_task, deny_task) if t is not None), return_exceptions=True)
        return Facts(vault=vault, principal=PrincipalInfo(oid), searched_subscriptions=lookup.searched)
    if ra_task is None or vault.id.lower() != (known_id or "").lower():
        ra_task = asyncio.ensure_future(source.assignments(oid, object_scope(vault.id, denial) or vault.id))
        deny_task = asyncio.ensure_future(source.deny_assignments(vault.id))
    assert deny_task is not None
    assignments, denies = await asyncio.gather(ra_task, deny_task)
    roles = await source.role_definitions([a.role_definition_id for a in assignments])
    facts = Facts(vault=vault, principal=PrincipalInfo(oid), assignments=assignments, roles=roles,
                  deny_assignments=denies, searched_subscriptions=lookup.searched)
    # Access-policy entries are written as given (ARM checks no type), so their grantee's type must be Graph's,
    # never the input's claim; RBAC writes are checked by ARM against principalType, so a claim may stand in.
    need_type = denial.principal.kind is None or not vault.rbac
    first = decide(denial, facts)
    need_groups = first.cause != Cause.ALREADY_GRANTED and _groups_could_matter(facts)
    if not (need_type or need_groups):
        return facts
    info = await source.principal(oid, need_type=need_type, need_groups=need_groups)
    limitations = []
    problem = getattr(source, "graph_problem", None)   # per Graph call: why it told nothing (facts.arm)

    def why(call: str, default: str) -> str:
        return (problem(oid, call) if problem else None) or default
    if need_groups and not info.groups_known:
        limitations.append(f"group memberships ({why('getMemberGroups', 'Microsoft Graph was not permitted')}), so "
                           "access-policy entries and deny assignments naming the caller's groups were not matched")
    if need_type and info.type is None and (denial.principal.kind is None or not vault.rbac):
        limitations.append(f"the caller's principal type ({why('getByIds', 'Microsoft Graph could not tell')}; an "
                           "access-policy entry is granted only to a type Graph confirmed, never to one the input "
                           "claims)")
    return Facts(vault=vault, principal=info, assignments=assignments, roles=roles, deny_assignments=denies,
                 searched_subscriptions=lookup.searched, limitations=tuple(limitations))


async def diagnose(denials: Sequence[Denial], source: FactSource,
                   options: DiagnoseOptions | None = None) -> Diagnosis:
    """Diagnose a batch: one finding per distinct denial, in input order."""
    options = options or DiagnoseOptions()
    start = time.perf_counter()
    count = RequestCount(source)
    unique = collapse([d.canonical() for d in denials])
    facts = await asyncio.gather(*(gather_facts(d, source) for d, _ in unique))
    findings = tuple(build_finding(d, n, f, options.plan) for (d, n), f in zip(unique, facts, strict=True))
    causes = Counter(str(f.cause) for f in findings)
    stats = DiagnosisStats(count.since(), round((time.perf_counter() - start) * 1000), len(denials), len(findings),
                           dict(sorted(causes.items())))
    return Diagnosis(findings, stats)


async def remediate(denials: Sequence[Denial], source: Any, ctx: Any) -> Diagnosis:
    """Diagnose, then apply what policy allows (``ctx`` is an apply.ApplyContext; ``source`` an ArmFacts)."""
    from .apply import apply_findings
    from .facts.writes import ArmWriter

    count, before_writes = RequestCount(source), source.arm_writes
    diagnosis = await diagnose(denials, source, DiagnoseOptions(PlanOptions(object_scope=ctx.policy.object_scope)))
    findings = await apply_findings(diagnosis.findings, ArmWriter(source), ctx)
    outcomes = Counter(str(f.outcome.outcome if f.outcome else None) for f in findings)
    stats = replace(diagnosis.stats, requests=count.since(), apply=ApplyStats(
        source.arm_writes - before_writes, dict(sorted(outcomes.items())), ctx.policy.mode))
    return Diagnosis(tuple(findings), stats, diagnosis.notes)
