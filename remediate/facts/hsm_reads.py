"""The diagnosis's Managed HSM reads (a base of facts.arm.ArmFacts): the HSM through ARM and its local RBAC, through
facts/hsm.py's :class:`~remediate.facts.hsm.HsmFacts` on the same credential, endpoints and transport, cached for
the batch and counted with the batch's other requests (``by_api["hsm"]`` for the HSM's own data plane).

Finding the HSM: by resource id, ``managed_hsms.get``; by name or host, Azure Resource Graph (the same query that
finds vaults, facts/locate.py) and then ``managed_hsms.get`` for its properties, else the configured subscriptions'
``managed_hsms.list_by_subscription`` when Resource Graph finds nothing or fails.

Speed: an HSM's data plane is at ``https://{name}.{the cloud's HSM suffix}``, so :meth:`HsmReads.hsm_guess` gives
the host the name implies and the diagnosis starts reading local RBAC there while ARM is still being asked (the
HSM's 401 challenge and the three scope lists take two round trips of their own). That answer is used only when ARM
then names the same ``hsmUri`` host; the grant is always aimed at the HSM ARM returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..armid import is_vault_name, parse_hsm_id
from ..errors import AzureUnavailableError, HsmAccessDeniedError
from ..hsm_model import ARM_SETTING, HsmAccess, HsmLookup, HsmSetting, ManagedHsm
from ..model import VaultRef
from .clients import FactClients

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .hsm import HsmFacts
    from .resource_graph import GraphRow


class HsmReads(FactClients):
    """Managed HSM lookups and local RBAC reads for one batch (each once per batch, shared by concurrent asks)."""

    _hsm: HsmFacts | None = None

    if TYPE_CHECKING:   # facts/locate.py's VaultLocator, beside this base in ArmFacts
        async def locate(self, targets: Sequence[str]) -> dict[str, tuple[GraphRow, ...]]: ...

    def hsm_client(self) -> HsmFacts:
        """The batch's HsmFacts: this batch's credential, ARM endpoint, TLS trust and transport, counted here."""
        if self._hsm is None:
            from .hsm import HsmFacts

            self._hsm = HsmFacts(self._credential, self.subscriptions, cloud=self._cloud, arm_url=self._arm_url,
                                 connection_verify=self._verify, transport_factory=self._transport_factory,
                                 retry_after_cap_s=self._retry_cap, retry_total=self._retry_total, count=self._count)
        return self._hsm

    async def close(self) -> None:
        if self._hsm is not None:
            await self._hsm.close()
            self._hsm = None
        await super().close()

    def hsm_guess(self, ref: VaultRef) -> ManagedHsm | None:
        """The HSM a name implies (its data plane at ``{name}.{hsm suffix}``), to start reading before ARM answers;
        None without a valid name. Never aimed at: only an ARM answer with the same host makes its reads count."""
        name = ref.name or (h.name if (h := parse_hsm_id(ref.resource_id or "")) else None)
        if not name or not is_vault_name(name):
            return None
        return ManagedHsm(id="", name=name, hsm_uri=f"https://{name.lower()}.{self._cloud.hsm_suffix}/")

    async def find_hsm(self, ref: VaultRef) -> HsmLookup:
        """The HSM by resource id, else by name (Resource Graph, then the configured subscriptions)."""
        key = ("hsm", (ref.resource_id or ref.name or "").lower())
        return await self._once(key, lambda: self._find_hsm(ref))

    async def _find_hsm(self, ref: VaultRef) -> HsmLookup:
        client = self.hsm_client()
        hid = parse_hsm_id(ref.resource_id or "")
        if hid is not None:
            return HsmLookup(await client.get_hsm(str(hid)), (hid.subscription,))
        if not ref.name:
            return HsmLookup(None, ())
        if self._rg_enabled:
            try:
                rows = [r for r in (await self.locate([ref.name])).get(ref.name, ()) if r.kind == "hsm"]
            except AzureUnavailableError:
                rows = []
            if len(rows) == 1:
                got = await client.get_hsm(rows[0].id)
                if got is not None:
                    return HsmLookup(got, (rows[0].id.split("/")[2],))
        return HsmLookup(await client.find_hsm(ref.name) if self.subscriptions else None, self.subscriptions)

    async def hsm_access(self, hsm: ManagedHsm, key_name: str | None) -> HsmAccess:
        """The HSM's local RBAC for one key (or its keys): ``/``, ``/keys`` (and ``/keys/{key}``) with the role
        definitions, once per (host, key) for the batch."""
        key = ("hsm-rbac", hsm.host, (key_name or "").lower())
        return await self._once(key, lambda: self.hsm_client().local_rbac(hsm, key_name))

    async def hsm_arm_setting(self, hsm: ManagedHsm) -> HsmSetting:
        """The HSM's ``AllowKeyManagementOperationsThroughARM``, once per host for the batch; a refusal or failure
        to read it is a HsmSetting with the reason (``problem``), for the diagnosis to state as a limitation."""
        key = ("hsm-setting", hsm.host, ARM_SETTING.lower())
        return await self._once(key, lambda: self._arm_setting(hsm))

    async def _arm_setting(self, hsm: ManagedHsm) -> HsmSetting:
        try:
            return await self.hsm_client().read_setting(hsm, ARM_SETTING)
        except HsmAccessDeniedError as exc:
            return HsmSetting(hsm.name, ARM_SETTING, problem=(
                f"Managed HSM {hsm.name} refused the function's identity {exc.data_action or 'the settings read'}: "
                "to read it, assign the identity a local role holding Microsoft.KeyVault/managedHsm/settings/read/"
                "action at / (a live HSM lists it in Managed HSM Administrator; a custom local role with only that "
                "action is narrower)"))
        except AzureUnavailableError as exc:
            return HsmSetting(hsm.name, ARM_SETTING, problem=str(exc))
