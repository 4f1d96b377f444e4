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

A denial that reached an HSM key through ARM (Signal.HSM_ARM_PATH) also has the HSM's
``AllowKeyManagementOperationsThroughARM`` read, started with the early reads at the implied host (so no extra round
trip) and used by the same rule; no other HSM denial asks for it. With no caller named it is still read (with the HSM
from ARM), since the setting explains ARM's refusal whoever asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from .decide import NEEDS_VAULT_FOR_ADVICE, input_cause
from .decide_hsm import arm_path, key_name
from .hsm_model import ARM_SETTING, HsmAccess, HsmLookup, HsmSetting, ManagedHsm
from .model import Cause, Denial, Facts, PrincipalInfo, VaultRef

T = TypeVar("T")


class HsmFactSource(Protocol):
    """What an HSM diagnosis reads (facts.arm.ArmFacts through facts/hsm_reads.py, on Azure or the emulator)."""

    def hsm_guess(self, ref: VaultRef) -> ManagedHsm | None: ...
    async def find_hsm(self, ref: VaultRef) -> HsmLookup: ...
    async def hsm_access(self, hsm: ManagedHsm, key_name: str | None) -> HsmAccess: ...
    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo: ...
    async def hsm_arm_setting(self, hsm: ManagedHsm) -> HsmSetting: ...


def _started(work: Awaitable[T]) -> asyncio.Future[T]:
    """A read started now; its failure is looked at (never an unretrieved-exception warning) and raised only by
    whoever awaits it."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class _ArmSetting:
    """The ARM-trust setting's read for an ARM-path denial: started at the host the HSM's name implies beside
    ARM's answer, used only when ARM names the same host (else read again at ARM's HSM)."""

    def __init__(self, source: HsmFactSource, guess: ManagedHsm | None, wanted: bool) -> None:
        self._source, self._guess = source, guess
        self._early = _started(source.hsm_arm_setting(guess)) if wanted and guess is not None else None
        self.wanted = wanted

    async def read(self, hsm: ManagedHsm | None) -> HsmSetting | None:
        if not self.wanted or hsm is None or hsm.activated is False:
            return None
        if self._early is not None and self._guess is not None and self._guess.host == hsm.host:
            return await self._early
        return await self._source.hsm_arm_setting(hsm)


async def gather_hsm_facts(denial: Denial, source: HsmFactSource) -> Facts | None:
    """The facts for one Managed HSM denial (None when the input alone decides and nothing needs reading)."""
    early = input_cause(denial)
    oid = denial.principal.object_id
    ref = denial.vault
    arm = arm_path(denial)
    if not ref.key or (not arm and ((early is not None and early not in NEEDS_VAULT_FOR_ADVICE)
                                    or (early is None and not oid))):
        return None
    found = _started(source.find_hsm(ref))
    guess = source.hsm_guess(ref)
    setting = _ArmSetting(source, guess, arm)
    if (early is not None and early != Cause.PRINCIPAL_NOT_IDENTIFIED) or not oid:
        # network: the HSM's rules are quoted; no caller: only an ARM path's setting can still explain it
        lookup = await found
        facts = Facts(vault=None, principal=PrincipalInfo(oid), searched_subscriptions=lookup.searched,
                      hsm=lookup.hsm, hsm_arm_setting=await setting.read(lookup.hsm))
        return replace(facts, limitations=_setting_limitations(facts)) if facts.hsm_arm_setting else facts
    key = key_name(denial)
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
                  hsm_access=access, hsm_arm_setting=await setting.read(hsm))
    return replace(facts, limitations=_limitations(facts, source)) if hsm is not None else facts


def _setting_limitations(facts: Facts) -> tuple[str, ...]:
    """What the ARM-trust setting's read told (an ARM-path denial only): unread, with why."""
    s = facts.hsm_arm_setting
    if s is None:
        return ()
    if s.enabled is True:
        return (f"read the HSM's {ARM_SETTING} setting: true (ARM may manage keys on the caller's behalf), so its "
                "local RBAC decided",)
    if s.enabled is False:
        return ()
    why = s.problem or f"the HSM answered {s.value!r}, not true or false"
    return (f"the HSM's {ARM_SETTING} setting ({why}), so whether it trusts ARM is not known and its local RBAC "
            "decided",)


def _limitations(facts: Facts, source: Any) -> tuple[str, ...]:
    """What Microsoft Graph could not tell that an HSM decision uses, each with why."""
    oid = facts.principal.object_id or ""
    problem = getattr(source, "graph_problem", None)

    def why(call: str, default: str) -> str:
        return (problem(oid, call) if problem else None) or default
    out = list(_setting_limitations(facts))
    if not facts.principal.groups_known:
        out.append(f"group memberships ({why('getMemberGroups', 'Microsoft Graph was not permitted')}), so local "
                   "role assignments naming the caller's groups were not matched")
    if facts.principal.type is None:
        out.append(f"the caller's principal type ({why('getByIds', 'Microsoft Graph could not tell')}; the plan "
                   "names none rather than the input's claim)")
    return tuple(out)
