"""Finding vaults (and Managed HSMs) named by name, host or id: Azure Resource Graph for the whole batch, the
name -> id index that outlives it, and the ARM fallback; the vault itself is always read from ARM."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..armid import is_vault_name, parse_hsm_id, parse_vault_id
from ..errors import AzureUnavailableError
from ..model import Vault, VaultLookup, VaultRef
from . import resource_graph

if TYPE_CHECKING:
    pass

from .clients import FactClients, T
from .convert import vault_from_sdk
from .pipeline import READ_METHODS

EVERY_READABLE = "every subscription the identity can read (Azure Resource Graph)"
"""What ``VaultLookup.searched`` names when Resource Graph searched the whole tenant."""
_VAULT_ID = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.KeyVault/vaults/([^/]+)$",
                       re.IGNORECASE)
log = logging.getLogger("kv_remediate.facts")


class VaultLocator(FactClients):
    """Where the batch's vaults are, and the vaults themselves (ARM)."""

    # -- vaults ---------------------------------------------------------------------------------------------

    async def find_vault(self, ref: VaultRef) -> VaultLookup:
        """The vault by resource id (one GET), or by name: where Resource Graph (or the index) says it is, then one
        GET; when that finds nothing, one list per configured subscription (cached)."""
        if ref.resource_id:
            m = _VAULT_ID.match(ref.resource_id.rstrip("/"))
            if m:
                sub, _, name = m.groups()
                vault = await self._vault_at(ref.resource_id)
                if vault is not None:
                    return VaultLookup(vault, (sub,))
                if not (self.subscriptions or self._rg_enabled):
                    return VaultLookup(None, (sub,))
                ref = VaultRef(name=name)
        if not ref.name:
            return VaultLookup(None, ())
        return await self._find_by_name(ref.name)

    async def _vault_at(self, resource_id: str) -> Vault | None:
        m = _VAULT_ID.match(resource_id.rstrip("/"))
        if m is None:
            return None
        sub, rg, name = m.groups()
        return await self._once(("vault", resource_id.lower()), lambda: self._get_vault(sub, rg, name))

    async def _find_by_name(self, name: str) -> VaultLookup:
        """One lookup per name per batch, shared by every denial naming it (outside the request semaphore: it
        only waits for reads that take their own slot)."""
        key = name.lower()
        task = self._by_name.get(key)
        if task is None:
            task = self._by_name[key] = asyncio.ensure_future(self._lookup_name(name))
        return await task

    async def _lookup_name(self, name: str) -> VaultLookup:
        key = name.lower()
        # A GET is made once per id per batch (_vault_at): an id the input named and ARM refused is not asked again.
        ids, tried = await self._resolve(key), set[str]()
        for again in (False, True):
            for rid in ids:
                if rid.lower() in tried:
                    continue
                tried.add(rid.lower())
                vault = await self._vault_at(rid)
                if vault is not None:
                    if again:
                        self._remember(key, vault.id)
                    return VaultLookup(vault, (rid.split("/")[2],))
                # Resource Graph (or the index) named a place where ARM has no vault: deleted or moved since.
                await self._forget(key)
                self._notes[key] = (f"vault {name}: Resource Graph or the vault index placed it at {rid}, where ARM "
                                    "has no vault (deleted or moved since)")
            if again or key not in self._from_index or not self._rg_enabled:
                break
            self._from_index.discard(key)        # the index was stale: ask Resource Graph itself once
            try:
                rows = await self._query_graph([key])
            except AzureUnavailableError:
                rows = []
            ids = tuple(r.id for r in rows if r.kind == "vault" and r.name.lower() == key)
        if not self._rg_enabled:
            return await self._search_arm(name)
        scope = ", ".join(self.subscriptions) if self.subscriptions else EVERY_READABLE
        lookup = await self._search_arm(name)
        why = self._notes.get(key) or (f"vault {name}: Azure Resource Graph found no vault of this name in {scope}; "
                                       "it lags ARM by a few minutes for new vaults")
        if lookup.vault is not None:
            self._notes[key] = f"{why}; found through ARM in subscription {lookup.vault.id.split('/')[2]}"
            self._remember(key, lookup.vault.id)
        elif self.subscriptions:
            self._notes[key] = f"{why}; not found through ARM either ({len(self.subscriptions)} subscriptions listed)"
        else:
            self._notes[key] = (f"{why}; no subscription is configured for the ARM search (AZURE_SUBSCRIPTION_IDS "
                                "or --subscription), so ARM was not searched")
        searched = self.subscriptions or (EVERY_READABLE,)
        return VaultLookup(lookup.vault, searched if lookup.vault is None else lookup.searched)

    async def _search_arm(self, name: str) -> VaultLookup:
        """Today's search by name: list the vaults of each configured subscription, one after another (cached)."""
        for sub in self.subscriptions:
            vaults = await self._once(("vaults", sub.lower()), lambda s=sub: self._list_vaults(s))  # type: ignore[misc]
            found = vaults.get(name.lower())
            if found is not None:
                return VaultLookup(found, self.subscriptions)
        return VaultLookup(None, self.subscriptions)

    # -- where vaults are: Resource Graph and the index ------------------------------------------------------

    def vault_notes(self, refs: Sequence[VaultRef]) -> tuple[str, ...]:
        """How the vaults ``refs`` name were found when it was not the plain way (the ARM fallback, a stale index
        entry, a failed Resource Graph query), for the diagnosis's ``notes``."""
        names = dict.fromkeys(n.lower() for n in (_name_of(r) for r in refs) if n)
        return tuple(self._notes[n] for n in names if n in self._notes)

    def resolved_id(self, ref: VaultRef) -> str | None:
        """The id :meth:`resolve_vaults` found for a vault named only by name (one, and already known), else None."""
        future = self._resolving.get((ref.name or "").lower()) if ref.name and not ref.resource_id else None
        if future is None or not future.done() or future.cancelled() or len(future.result()) != 1:
            return None
        return future.result()[0]

    async def resolve_vaults(self, refs: Sequence[VaultRef]) -> None:
        """Learn where every vault named only by name is, for the whole batch at once: the index first, then one
        Resource Graph query (per 500 names, paged) for the rest. Later :meth:`find_vault` calls use the answer;
        concurrent callers share it."""
        names = [n for n in dict.fromkeys(r.name.lower() for r in refs if r.name and not r.resource_id)
                 if is_vault_name(n) and n not in self._resolving]
        if not names or not self._rg_enabled:
            return
        loop = asyncio.get_running_loop()
        futures = {n: loop.create_future() for n in names}
        self._resolving.update(futures)
        try:
            found = await self._lookup(names)
        except BaseException as exc:
            for f in futures.values():
                if not f.done():
                    f.set_result(())
            if not isinstance(exc, Exception):
                raise
            return
        for n, f in futures.items():
            if not f.done():
                f.set_result(found.get(n, ()))

    async def _resolve(self, name: str) -> tuple[str, ...]:
        if self._rg_enabled and name not in self._resolving:
            await self.resolve_vaults([VaultRef(name=name)])
        future = self._resolving.get(name)
        return await future if future is not None else ()

    async def _lookup(self, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        if self._index is not None:
            hits = await asyncio.gather(*(self._index_get(n) for n in names))
            for n, rid in zip(names, hits, strict=True):
                if rid is not None:
                    out[n] = (rid,)
                    self._from_index.add(n)
        missing = [n for n in names if n not in out]
        if not missing:
            return out
        rows: list[resource_graph.GraphRow] = []
        try:
            for got in await asyncio.gather(*(self._once(("rg", *part), lambda p=part: self._query_graph(p))  # type: ignore[misc]
                                              for part in resource_graph.chunks(missing))):
                rows += got
        except AzureUnavailableError as exc:
            for n in missing:
                self._notes[n] = f"vault {n}: {exc.message}"
            return out
        for row in rows:
            if row.kind == "vault" and row.name.lower() in missing:
                out[row.name.lower()] = (*out.get(row.name.lower(), ()), row.id)
        for n in missing:
            if len(out.get(n, ())) == 1:
                self._remember(n, out[n][0])
        return out

    async def locate(self, targets: Sequence[str]) -> dict[str, tuple[resource_graph.GraphRow, ...]]:
        """Where vaults and Managed HSMs are, by name (``kv1``), data-plane host (``kv1.vault.azure.net``,
        ``hsm1.managedhsm.azure.net``, any cloud's suffix) or resource id: one Resource Graph query for the names and
        hosts and one for the ids (per 500, paged). Each target maps to the rows found for it (empty when none, or
        when the target is none of the three); Resource Graph's failure is an AzureUnavailableError."""
        by_name: dict[str, list[str]] = {}
        by_id: dict[str, list[str]] = {}
        kinds: dict[str, str | None] = {}
        for t in dict.fromkeys(targets):
            if t.startswith("/"):
                if parse_vault_id(t) or parse_hsm_id(t):
                    by_id.setdefault(t.lower(), []).append(t)
                continue
            host = resource_graph.target_from_host(t) if "." in t else None
            name = host.name if host else (t.lower() if is_vault_name(t) else None)
            if name is not None:
                by_name.setdefault(name, []).append(t)
                kinds[t] = host.kind if host else None
        named, identified = await asyncio.gather(
            asyncio.gather(*(self._query_graph(p) for p in resource_graph.chunks(list(by_name)))),
            asyncio.gather(*(self._query_graph(ids=p) for p in resource_graph.chunks([i[0] for i in by_id.values()]))))
        out: dict[str, tuple[resource_graph.GraphRow, ...]] = {t: () for t in targets}
        for row in (r for rows in named for r in rows):
            for t in by_name.get(row.name.lower(), ()):
                if kinds.get(t) in (None, row.kind):
                    out[t] = (*out[t], row)
        for row in (r for rows in identified for r in rows):
            for t in by_id.get(row.id.lower(), ()):
                out[t] = (*out[t], row)
        return out

    async def _query_graph(self, names: Sequence[str] = (), *, ids: Sequence[str] = ()
                           ) -> list[resource_graph.GraphRow]:
        """One Resource Graph query (all pages) for ``names`` or ``ids``; failures are AzureUnavailableError."""
        from azure.core.exceptions import HttpResponseError as _HttpError

        query = resource_graph.build_query(names=names, ids=ids)
        try:
            return await resource_graph.query_rows(
                self.resource_graph_client(), query, subscriptions=self.subscriptions, top=self._rg_top,
                retry_on_methods=READ_METHODS)   # the query only reads: retried like a GET
        except (_HttpError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
            raise AzureUnavailableError(
                f"Azure Resource Graph did not answer ({resource_graph.error_summary(exc)}); searched through ARM "
                "instead (the identity needs Reader on the subscriptions or a management group above them)") from exc

    async def _index_get(self, name: str) -> str | None:
        assert self._index is not None
        try:
            return await self._index.get(self._index_scope, name)
        except Exception:   # the index is an optimisation: a store that fails is a miss, never a failed diagnosis
            log.warning("vault index: reading %s failed; asking Resource Graph", name, exc_info=True)
            return None

    def _remember(self, name: str, resource_id: str) -> None:
        if self._index is not None:
            self._spawn(self._index.put(self._index_scope, name, resource_id), f"writing {name}")

    async def _forget(self, name: str) -> None:
        if self._index is not None:
            try:
                await self._index.forget(self._index_scope, name)
            except Exception:
                log.warning("vault index: forgetting %s failed", name, exc_info=True)

    def _spawn(self, work: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.warning("vault index: %s failed", what, exc_info=True)
        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _get_vault(self, sub: str, rg: str, name: str) -> Vault | None:
        # 403: the vault exists but we may not read it; reported as VAULT_NOT_FOUND with the remedy.
        async def call() -> Vault | None:
            return vault_from_sdk(await self.keyvault_client(sub).vaults.get(rg, name))
        return await self._read(f"reading vault {name} in subscription {sub}", call, None, (403, 404))

    async def _list_vaults(self, sub: str) -> dict[str, Vault]:
        async def call() -> dict[str, Vault]:
            out: dict[str, Vault] = {}
            async for v in self.keyvault_client(sub).vaults.list_by_subscription():
                vault = vault_from_sdk(v)
                out[vault.name.lower()] = vault
                self._tasks.setdefault(("vault", vault.id.lower()), _done(vault))
            return out
        return await self._read(f"listing vaults in subscription {sub}", call, {}, (403, 404))


def _name_of(ref: VaultRef) -> str | None:
    if ref.name:
        return ref.name
    m = _VAULT_ID.match((ref.resource_id or "").rstrip("/"))
    return m.group(3) if m else None


def _done(value: T) -> asyncio.Future[T]:
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut
