"""Azure Resource Graph's view of the tenant: an index of the vaults that lags ARM.

Resource Graph is a copy of ARM kept up to date by change notifications, "typically within minutes" for new
resources; the emulator models the lag explicitly: the snapshot's ``emulator.resource_graph_unindexed`` (vault
names or ids) are in ARM but not yet in Resource Graph, and a vault ARM no longer has (a test deletes it from
``vaults``) stays in Resource Graph's copy (``graph_rows``) until ``sync_resource_graph()``.
"""

from __future__ import annotations

from typing import Any

from remediate.emulator.snapshot import subscription_id
from remediate.emulator.state_common import TenantBase, norm


def graph_row(vault: dict[str, Any]) -> dict[str, Any]:
    """A vault as a Resource Graph ``resources`` row (type and resource group lower-case, as Resource Graph
    writes them; the id and name as ARM holds them)."""
    vid = str(vault["id"])
    parts = vid.split("/")
    return {"id": vid, "name": str(vault.get("name") or parts[-1]), "type": str(vault.get("type") or
            "Microsoft.KeyVault/vaults").lower(), "subscriptionId": parts[2].lower(), "resourceGroup": parts[4].lower(),
            "location": vault.get("location"), "tenantId": (vault.get("properties") or {}).get("tenantId")}


class ResourceGraphState(TenantBase):
    """The rows Resource Graph answers from, and the scopes a query may name."""

    _graph_rows: dict[str, dict[str, Any]] | None = None

    def graph_rows(self) -> list[dict[str, Any]]:
        """Every row Resource Graph holds now (copied at first use, then only on :meth:`sync_resource_graph`)."""
        with self.lock:
            if self._graph_rows is None:
                self.sync_resource_graph()
            assert self._graph_rows is not None
            return list(self._graph_rows.values())

    def sync_resource_graph(self) -> None:
        """Resource Graph catches up with ARM, except for the vaults still listed as not yet indexed."""
        lagging = {x.lower() for x in self.snap.emulator.resource_graph_unindexed}
        with self.lock:
            hsms: dict[str, dict[str, Any]] = getattr(self, "hsms", {})
            self._graph_rows = {k: graph_row(v) for k, v in {**self.vaults, **hsms}.items()
                                if k not in lagging and str(v.get("name", "")).lower() not in lagging}

    def graph_subscriptions(self, subscriptions: list[str] | None, management_groups: list[str] | None) -> set[str]:
        """The subscriptions a query covers: those named, those under the named management groups (at any depth),
        or, with neither, every subscription of the tenant (all the caller can read)."""
        known = {subscription_id(s).lower() for s in self.snap.subscriptions}
        known |= {s.lower() for m in self.snap.management_groups for s in m.subscriptions}
        if not subscriptions and not management_groups:
            return known
        out = {s.lower() for s in subscriptions or []}
        for mg in management_groups or []:
            target = norm(f"/providers/Microsoft.Management/managementGroups/{mg}")
            out |= {sub for sub, first in self._sub_mg.items() if target in self._mg_chain(first)}
        return out
