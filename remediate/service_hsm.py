"""Reading what a Managed HSM denial's decision needs (called by service.gather_facts): the HSM from ARM, its local
RBAC at ``/``, ``/keys`` and ``/keys/{name}``, and the caller from Microsoft Graph, all started together.

Round trips, cold, with the HSM's id known: ARM's ``managed_hsms.get`` (one) beside the HSM's 401 challenge and then
its three scope lists and definitions (two, at the host the HSM's name implies: facts/hsm_reads.py ``hsm_guess``)
and Graph's type and groups (one each, in parallel). So two round trips in all, where reading ARM first would take
three. The data-plane answer counts only when ARM's ``hsmUri`` names the same host; otherwise the HSM ARM returned
is read again (and a guess that failed is ignored). The early read is only a read (the role assignment and
definition lists), at a host under the cloud's own HSM suffix (a Microsoft host, never one the input spells out),
through the SDK's challenge protocol, which checks that the challenge's resource matches the host; azure-identity
asks no token for a tenant the credential is not allowed. So an input that names some other HSM costs at most those
reads, whose answer is never used. The caller's groups are always read: local role assignments
to groups are the common way HSM access is given, and reading them later would cost a third round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from .decide import NEEDS_VAULT_FOR_ADVICE, input_cause
from .decide_hsm import key_name
from .hsm_model import HsmAccess, HsmLookup, ManagedHsm
from .model import Denial, Facts, PrincipalInfo, VaultRef

T = TypeVar("T")


class HsmFactSource(Protocol):
    """What an HSM diagnosis reads (facts.arm.ArmFacts through facts/hsm_reads.py, on Azure or the emulator)."""

    def hsm_guess(self, ref: VaultRef) -> ManagedHsm | None: ...
    async def find_hsm(self, ref: VaultRef) -> HsmLookup: ...
    async def hsm_access(self, hsm: ManagedHsm, key_name: str | None) -> HsmAccess: ...
    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo: ...


def _started(work: Awaitable[T]) -> asyncio.Future[T]:
    """A read started now; its failure is looked at (never an unretrieved-exception warning) and raised only by
    whoever awaits it."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def gather_hsm_facts(denial: Denial, source: HsmFactSource) -> Facts | None:
    """The facts for one Managed HSM denial (None when the input alone decides and nothing needs reading)."""
    early = input_cause(denial)
    oid = denial.principal.object_id
    ref = denial.vault
    if (early is not None and early not in NEEDS_VAULT_FOR_ADVICE) or not ref.key or (early is None and not oid):
        return None
    found = _started(source.find_hsm(ref))
    if early is not None or not oid:      # network: the HSM's rules are quoted, nothing else is read
        lookup = await found
        return Facts(vault=None, principal=PrincipalInfo(oid), searched_subscriptions=lookup.searched,
                     hsm=lookup.hsm)
    key = key_name(denial)
    guess = source.hsm_guess(ref)
    early_rbac = _started(source.hsm_access(guess, key)) if guess is not None else None
    meta = _started(source.principal(oid, need_type=True, need_groups=False))
    groups = _started(source.principal(oid, need_type=False, need_groups=True))
    lookup = await found
    hsm = lookup.hsm
    access = None
    if hsm is not None and hsm.activated is not False:   # not activated: its data plane refuses everything
        same = early_rbac is not None and guess is not None and hsm.host == guess.host
        access = await (early_rbac if same and early_rbac is not None else source.hsm_access(hsm, key))
    m, g = await meta, await groups
    principal = PrincipalInfo(object_id=oid, type=m.type, display_name=m.display_name, app_id=m.app_id,
                              groups=g.groups, groups_known=g.groups_known)
    facts = Facts(vault=None, principal=principal, searched_subscriptions=lookup.searched, hsm=hsm,
                  hsm_access=access)
    return replace(facts, limitations=_limitations(facts, source)) if hsm is not None else facts


def _limitations(facts: Facts, source: Any) -> tuple[str, ...]:
    """What Microsoft Graph could not tell that an HSM decision uses, each with why."""
    oid = facts.principal.object_id or ""
    problem = getattr(source, "graph_problem", None)

    def why(call: str, default: str) -> str:
        return (problem(oid, call) if problem else None) or default
    out = []
    if not facts.principal.groups_known:
        out.append(f"group memberships ({why('getMemberGroups', 'Microsoft Graph was not permitted')}), so local "
                   "role assignments naming the caller's groups were not matched")
    if facts.principal.type is None:
        out.append(f"the caller's principal type ({why('getByIds', 'Microsoft Graph could not tell')}; the plan "
                   "names none rather than the input's claim)")
    return tuple(out)
