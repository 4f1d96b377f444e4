"""The only place that reads Azure: ARM (Key Vault, Authorization) through the real async SDK clients, and
Microsoft Graph through a small azure-core pipeline. Live Azure and the bundled emulator are the two backends;
they differ only in base URLs, TLS trust and the credential.

Everything is cached for the lifetime of one instance (one batch), and concurrent asks for the same fact share
one request: each vault once, deny assignments once per vault, assignments once per (principal, scope),
custom role definitions once, built-in role definitions never (package data).

Vaults named only by name are found with Azure Resource Graph (facts/resource_graph.py): one query for every name of
the batch, across every subscription the identity can read (``subscriptions``, when given, is only a filter). The
answer is where the vault is; its properties are then read from ARM. When Resource Graph finds nothing (it lags ARM
by minutes for new vaults) or fails, the configured subscriptions are searched through ARM as before, and the
lookup says so (:meth:`ArmFacts.vault_notes`). The name -> id resolution may outlive the batch (``index``:
store/vault_index.py); a 404 from ARM for an indexed id forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from .. import catalog
from ..armid import is_vault_name, parse_hsm_id, parse_vault_id
from ..catalog import RoleDefinition
from ..clouds import PUBLIC, Cloud
from ..errors import AzureUnavailableError, clip
from ..model import AccessPolicyEntry, DenyAssignment, PrincipalInfo, RoleAssignment, Vault, VaultLookup, VaultRef
from . import resource_graph

if TYPE_CHECKING:
    from ..store.vault_index import VaultIndex

log = logging.getLogger("kv_remediate.facts")
T = TypeVar("T")
EVERY_READABLE = "every subscription the identity can read (Azure Resource Graph)"
"""What ``VaultLookup.searched`` names when Resource Graph searched the whole tenant."""
_VAULT_ID = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.KeyVault/vaults/([^/]+)$",
                       re.IGNORECASE)
GRAPH_CALLS = {"getByIds": "POST /v1.0/directoryObjects/getByIds",
               "getMemberGroups": "POST /v1.0/directoryObjects/{id}/getMemberGroups",
               "transitiveMemberOf": "GET /v1.0/{users|servicePrincipals}/{id}/transitiveMemberOf/"
                                     "microsoft.graph.group"}
GRAPH_PERMISSION = {"getByIds": "Directory.Read.All", "getMemberGroups": "Directory.Read.All",  # per the docs pages
                    "transitiveMemberOf": "Directory.Read.All"}
_GRAPH_COLLECTION = {"User": "users", "ServicePrincipal": "servicePrincipals"}
_SIZE_LIMIT = "Directory_ResultSizeLimitExceeded"
GRAPH_TYPES = {"#microsoft.graph.serviceprincipal": "ServicePrincipal", "#microsoft.graph.user": "User",
               "#microsoft.graph.group": "Group"}


def _s(v: Any) -> str | None:
    return None if v is None else str(getattr(v, "value", v))


def vault_from_sdk(v: Any) -> Vault:
    """Our Vault from the SDK's model."""
    p = v.properties
    entries = []
    for e in p.access_policies or []:
        perms = e.permissions
        entries.append(AccessPolicyEntry(
            tenant_id=str(e.tenant_id), object_id=str(e.object_id), application_id=_s(e.application_id),
            permissions={k: tuple(str(_s(x)).lower() for x in (getattr(perms, attr, None) or []))
                         for k, attr in (("keys", "keys_property"), ("secrets", "secrets"),
                                         ("certificates", "certificates"), ("storage", "storage"))}))
    acls = p.network_acls
    return Vault(
        id=str(v.id), name=str(v.name), tenant_id=_s(p.tenant_id), rbac=p.enable_rbac_authorization is True,
        access_policies=tuple(entries), location=_s(v.location),
        network_default_action=_s(acls.default_action) if acls else None,
        public_network_access=_s(getattr(p, "public_network_access", None)),
        network_bypass=_s(acls.bypass) if acls else None,
        ip_rules=tuple(str(r.value) for r in (acls.ip_rules or [])) if acls else (),
        virtual_network_rules=len(acls.virtual_network_rules or []) if acls else 0)


def assignment_from_sdk(a: Any) -> RoleAssignment:
    return RoleAssignment(id=str(a.id), scope=str(a.scope), role_definition_id=str(a.role_definition_id),
                          principal_id=str(a.principal_id), principal_type=_s(a.principal_type),
                          condition=a.condition, condition_version=a.condition_version, name=a.name)


def deny_from_sdk(d: Any) -> DenyAssignment:
    perms = d.permissions or []
    return DenyAssignment(
        id=str(d.id), name=str(d.deny_assignment_name or d.name), scope=str(d.scope),
        data_actions=tuple(x for p in perms for x in (p.data_actions or [])),
        not_data_actions=tuple(x for p in perms for x in (p.not_data_actions or [])),
        principal_ids=tuple(str(p.id) for p in (d.principals or [])),
        exclude_principal_ids=tuple(str(p.id) for p in (d.exclude_principals or [])),
        do_not_apply_to_child_scopes=bool(d.do_not_apply_to_child_scopes), description=d.description)


def role_from_sdk(r: Any) -> RoleDefinition:
    perms = r.permissions or []
    return RoleDefinition(
        id=str(r.id), name=str(r.name), role_name=str(r.role_name or r.name), role_type=str(r.role_type or ""),
        actions=tuple(x for p in perms for x in (p.actions or [])),
        not_actions=tuple(x for p in perms for x in (p.not_actions or [])),
        data_actions=tuple(x for p in perms for x in (p.data_actions or [])),
        not_data_actions=tuple(x for p in perms for x in (p.not_data_actions or [])),
        assignable_scopes=tuple(r.assignable_scopes or ("/",)), description=r.description or "")


READ_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
"""azure-core's idempotent methods plus POST, for POST calls that only read (Graph getByIds, getMemberGroups)."""


def capped_retry_policy(cap_s: float, total: int) -> Any:
    """The SDK's retry policy, honouring Retry-After but never sleeping longer than ``cap_s`` per retry."""
    from azure.core.pipeline.policies import AsyncRetryPolicy

    class CappedRetryPolicy(AsyncRetryPolicy):  # type: ignore[misc,type-arg]
        def get_retry_after(self, response: Any) -> float | None:
            after = super().get_retry_after(response)
            return None if after is None else min(float(after), cap_s)

    # Each kind of failure (status, read, connect) may use the whole budget: under an alert storm ARM throttles
    # in runs, and every write is idempotent, so retrying is always safe; the per-invocation budget bounds it.
    return CappedRetryPolicy(retry_total=total, retry_status=total, retry_read=total, retry_connect=total,
                             retry_backoff_factor=0.2, retry_backoff_max=cap_s)


def json_pipeline(base_url: str, credential: Any, scope: str, *, count: Callable[[Any], None],
                  retry_policy: Any, transport: Any = None, connection_verify: str | bool | None = None) -> Any:
    """A small azure-core pipeline for the JSON APIs without a management SDK (Microsoft Graph, Log Analytics):
    bearer token for ``scope``, retries, request counting, JSON decoding."""
    from azure.core import AsyncPipelineClient
    from azure.core.pipeline.policies import (
        AsyncBearerTokenCredentialPolicy,
        ContentDecodePolicy,
        CustomHookPolicy,
        HeadersPolicy,
        RequestIdPolicy,
        UserAgentPolicy,
    )
    from azure.core.pipeline.transport import AioHttpTransport

    from .. import __version__

    if transport is None:
        transport = AioHttpTransport(**({} if connection_verify is None else {"connection_verify": connection_verify}))
    return AsyncPipelineClient(
        base_url=base_url,
        policies=[RequestIdPolicy(), HeadersPolicy({"Accept": "application/json"}),
                  UserAgentPolicy(f"kv-remediate/{__version__}"), retry_policy,
                  AsyncBearerTokenCredentialPolicy(credential, scope), CustomHookPolicy(raw_request_hook=count),
                  ContentDecodePolicy()],
        transport=transport)


class ArmFacts:
    """Reads facts for a batch through the real SDK clients, with per-batch caches and a request counter."""

    def __init__(self, credential: Any, subscriptions: Sequence[str], *, cloud: Cloud = PUBLIC,
                 arm_url: str | None = None, graph_url: str | None = None, connection_verify: str | bool | None = None,
                 graph: bool = True, max_concurrency: int = 32, retry_after_cap_s: float = 30.0,
                 retry_total: int = 10, transport_factory: Callable[[], Any] | None = None,
                 resource_graph: bool = True, resource_graph_top: int = resource_graph.MAX_TOP,
                 index: VaultIndex | None = None, index_scope: str | None = None) -> None:
        """``subscriptions``: where the ARM fallback searches by name, and the Resource Graph query's filter (empty:
        every subscription the identity can read). ``resource_graph=False`` searches by name through ARM only (the
        behaviour before Resource Graph; for comparison). ``index``: the name -> id index that outlives the batch,
        partitioned by ``index_scope`` (default: the ARM endpoint)."""
        self._credential = credential
        self.subscriptions = tuple(subscriptions)
        self._cloud = cloud      # endpoints and token audiences; arm_url/graph_url point them elsewhere (emulator)
        self._arm_url = (arm_url or cloud.arm).rstrip("/")
        self._graph_url = (graph_url or cloud.graph).rstrip("/")
        self._verify = connection_verify
        self._graph_enabled = graph
        self._retry_cap = retry_after_cap_s
        self._transport_factory = transport_factory   # one keep-alive transport per client (emulator TLS trust)
        self._retry_total = retry_total
        self._sem = asyncio.Semaphore(max_concurrency)
        self._arm_inner: Any = None                                # the ARM clients' one transport (pool)
        self._tasks: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._kv: dict[str, Any] = {}
        self._auth: Any = None
        self._graph: Any = None
        self.requests = 0
        self.by_api: dict[str, int] = {}
        self.arm_writes = 0
        self._graph_refused: dict[str, str] = {}                 # call -> why (401/403: skip that call from now on)
        self._graph_problems: dict[tuple[str, str], str] = {}    # (call, object id) -> why it told nothing
        self._size_limited: set[str] = set()                     # objects in more groups than getMemberGroups returns
        self._rg_enabled = resource_graph
        self._rg_top = resource_graph_top
        self._rg: Any = None
        self._index = index
        self._index_scope = index_scope or self._arm_url.lower()
        self._resolving: dict[str, asyncio.Future[tuple[str, ...]]] = {}  # vault name -> ids Resource Graph found
        self._from_index: set[str] = set()                       # names whose id came from the index
        self._notes: dict[str, str] = {}                         # vault name -> how it was (not) found
        self._by_name: dict[str, asyncio.Future[VaultLookup]] = {}  # vault name -> its lookup in this batch
        self._background: set[asyncio.Task[None]] = set()        # index writes still running

    # -- plumbing -------------------------------------------------------------------------------------------

    def _count(self, request: Any) -> None:
        self.requests += 1
        http = getattr(request, "http_request", None)
        url = str(getattr(http, "url", ""))
        api = ("graph" if "/v1.0/" in url else "log_analytics" if "/v1/" in url else
               "resource_graph" if "/providers/microsoft.resourcegraph/" in url.lower() else "arm")
        self.by_api[api] = self.by_api.get(api, 0) + 1
        if api == "arm" and str(getattr(http, "method", "GET")).upper() in ("PUT", "PATCH", "POST", "DELETE"):
            self.arm_writes += 1

    def _client_kwargs(self) -> dict[str, Any]:
        return {"raw_request_hook": self._count, "base_url": self._arm_url,
                "credential_scopes": [self._cloud.arm_scope],
                "retry_policy": capped_retry_policy(self._retry_cap, self._retry_total),
                "transport": self._arm_transport()}

    def _arm_transport(self) -> Any:
        """The batch's one ARM transport, shared by every ARM client of the batch.

        Every ARM client (a vault client per subscription, authorization, Resource Graph) talks to the same host,
        so they share one connection pool: a vault in a subscription not seen before reuses a warm keep-alive
        connection instead of opening its own (a TLS handshake each; 50 vaults in 50 subscriptions were 50 pools).
        The transport is what it was per client (``transport_factory``'s, else azure-core's ``AioHttpTransport``
        with ``connection_verify`` and the environment's proxy settings); each client gets a handle whose close
        leaves it open, and :meth:`close` closes it once."""
        if self._arm_inner is None:
            if self._transport_factory is not None:
                self._arm_inner = self._transport_factory()
            else:
                from azure.core.pipeline.transport import AioHttpTransport

                self._arm_inner = AioHttpTransport(
                    **({} if self._verify is None else {"connection_verify": self._verify}))
        return _shared_transport_class()(self._arm_inner)

    def keyvault_client(self, subscription: str) -> Any:
        client = self._kv.get(subscription.lower())
        if client is None:
            from azure.mgmt.keyvault.aio import KeyVaultManagementClient

            client = KeyVaultManagementClient(self._credential, subscription, **self._client_kwargs())
            self._kv[subscription.lower()] = client
        return client

    def authorization_client(self) -> Any:
        if self._auth is None:
            from azure.mgmt.authorization.aio import AuthorizationManagementClient

            sub = self.subscriptions[0] if self.subscriptions else "00000000-0000-0000-0000-000000000000"
            self._auth = AuthorizationManagementClient(self._credential, sub, **self._client_kwargs())
        return self._auth

    def resource_graph_client(self) -> Any:
        """The async ``ResourceGraphClient`` (API version 2022-10-01, facts/resource_graph.py)."""
        if self._rg is None:
            from azure.mgmt.resourcegraph.aio import ResourceGraphClient

            self._rg = ResourceGraphClient(self._credential, api_version=resource_graph.API_VERSION,
                                           **self._client_kwargs())
        return self._rg

    def _graph_client(self) -> Any:
        if self._graph is None:
            transport = self._transport_factory() if self._transport_factory else None
            self._graph = json_pipeline(self._graph_url, self._credential, self._cloud.graph_scope,
                                        count=self._count, transport=transport, connection_verify=self._verify,
                                        retry_policy=capped_retry_policy(self._retry_cap, self._retry_total))
        return self._graph

    async def close(self) -> None:
        """Close every client this instance opened (after the index writes still running)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for c in [*self._kv.values(), self._auth, self._graph, self._rg]:
            if c is not None:
                await c.close()
        self._kv.clear()
        self._auth = self._graph = self._rg = None
        if self._arm_inner is not None:
            await self._arm_inner.close()
            self._arm_inner = None

    async def __aenter__(self) -> ArmFacts:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _once(self, key: tuple[str, ...], make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once per key for this batch; concurrent callers share the same request."""
        task = self._tasks.get(key)
        if task is None:
            async def guarded() -> T:
                async with self._sem:
                    return await make()
            task = asyncio.ensure_future(guarded())
            self._tasks[key] = task
        result: T = await task
        return result

    async def _read(self, what: str, call: Callable[[], Awaitable[T]], absent: T,
                    absent_codes: tuple[int, ...] = (404,)) -> T:
        """Run one read; ``absent`` for the statuses that mean "not there (for us)", else a domain error."""
        try:
            return await call()
        except ResourceNotFoundError:
            return absent
        except HttpResponseError as exc:
            if exc.status_code in absent_codes:
                return absent
            raise self._unavailable(what, exc) from exc
        except (ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
            raise self._unavailable(what, exc) from exc

    @staticmethod
    def _unavailable(what: str, exc: Exception) -> AzureUnavailableError:
        if isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) in (401, 403):
            why = "Azure refused the function's own identity"
            todo = "check the credential (AZURE_CLIENT_ID / managed identity) and that it has Reader on the scope"
        else:
            why = "Azure could not be reached"
            todo = "check network access to management.azure.com and retry"
        return AzureUnavailableError(f"{what}: {why} ({type(exc).__name__}: {clip(str(exc), 200)}); "
                                     f"{todo}")

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

    # -- RBAC -----------------------------------------------------------------------------------------------

    async def assignments(self, principal_id: str, scope: str) -> tuple[RoleAssignment, ...]:
        """Assignments that apply at ``scope`` (the denied object's own scope, or the vault's) for the principal
        and its groups: ``atScope() and assignedTo('{id}')`` listed at that scope.

        Only documented semantics are relied on. The REST reference of Role Assignments - List For Scope
        (2022-04-01) says "Use $filter=atScope() to return all role assignments at or above the scope", and
        role-assignments-list-rest.md lists ``atScope() and assignedTo('{objectId}')`` as a supported
        combination; ``assignedTo`` includes the principal's (transitive) groups. It is what the Azure CLI sends
        for ``az role assignment list --assignee X --scope S`` (azure-cli role/custom.py
        ``_search_role_assignments``: ``f = 'atScope()'`` then ``f + " and assignedTo('{}')"``). Nothing
        documents that ``assignedTo()`` without ``atScope()`` at a resource scope includes assignments *below*
        it, so a grant on one secret/key/certificate is found by asking at that object's scope, never by
        asking at the vault and hoping. Root ('/') and subscription items come back with their own ids (the
        recorded ``atScope()`` list in tests/fixtures/recordings/04_*). One request per (principal, scope).
        """
        async def call() -> tuple[RoleAssignment, ...]:
            flt = f"atScope() and assignedTo('{principal_id}')"
            return tuple([assignment_from_sdk(a) async for a in
                          self.authorization_client().role_assignments.list_for_scope(scope, filter=flt)])

        async def fetch() -> tuple[RoleAssignment, ...]:
            return await self._read(f"listing role assignments of {principal_id} at {scope}", call, ())
        return await self._once(("ra", principal_id.lower(), scope.rstrip("/").lower()), fetch)

    async def deny_assignments(self, vault_id: str) -> tuple[DenyAssignment, ...]:
        """Deny assignments at, above and below the vault (one request per vault)."""
        async def call() -> tuple[DenyAssignment, ...]:
            return tuple([deny_from_sdk(d) async for d in
                          self.authorization_client().deny_assignments.list_for_scope(vault_id)])

        async def fetch() -> tuple[DenyAssignment, ...]:
            return await self._read(f"listing deny assignments at {vault_id}", call, ())
        return await self._once(("deny", vault_id.lower()), fetch)

    async def role_definitions(self, ids: Sequence[str]) -> dict[str, RoleDefinition]:
        """Definitions by lower-case GUID: built-ins from package data, custom ones fetched once each."""
        out: dict[str, RoleDefinition] = {}
        custom = []
        for rid in dict.fromkeys(ids):
            guid = rid.rstrip("/").rsplit("/", 1)[-1].lower()
            builtin = catalog.builtin_role(guid)
            if builtin is not None:
                out[guid] = builtin
            else:
                custom.append((guid, rid))

        async def fetch(rid: str) -> RoleDefinition | None:
            async def call() -> RoleDefinition | None:
                return role_from_sdk(await self.authorization_client().role_definitions.get_by_id(rid))
            return await self._read(f"reading role definition {rid}", call, None)

        got = await asyncio.gather(*(self._once(("rd", g), lambda r=r: fetch(r)) for g, r in custom))  # type: ignore[misc]
        for (guid, _), rd in zip(custom, got, strict=True):
            if rd is not None:
                out[guid] = rd
        return out

    # -- Microsoft Graph --------------------------------------------------------------------------------------
    #
    # Two documented calls, each needing what its page says (application permissions, least privileged first):
    #   POST /v1.0/directoryObjects/getByIds                (type, name)  Directory.Read.All
    #       learn.microsoft.com/graph/api/directoryobject-getbyids: "Directory.Read.All" is the least privileged
    #   POST /v1.0/directoryObjects/{id}/getMemberGroups    (groups)      Directory.Read.All
    #       learn.microsoft.com/graph/api/directoryobject-getmembergroups, "Group memberships for a directory
    #       object": Directory.Read.All (the type-specific tables, e.g. User.Read.All + GroupMember.Read.All,
    #       apply to /users/{id}/getMemberGroups, whose type we would have to know first). The function is
    #       transitive; with ``securityEnabledOnly: false`` it returns every group (and directory role) id, up to
    #       11,000 (beyond: 400 Directory_ResultSizeLimitExceeded).
    # (``GET /directoryObjects/{id}/transitiveMemberOf`` is not a Graph route: transitiveMemberOf exists only
    # under /users, /groups, /servicePrincipals, /devices and /contacts.)
    # Every Graph read is optional: any failure becomes a limitation on the finding that needed it, never an
    # abort, and a refusal (401/403) skips later calls *of the same kind* only.

    @property
    def graph_denied(self) -> bool:
        """True once Graph refused any call (401/403)."""
        return bool(self._graph_refused)

    def graph_problem(self, object_id: str, call: str) -> str | None:
        """Why ``call`` ("getByIds" | "getMemberGroups") told nothing about ``object_id``, or None."""
        if not self._graph_enabled:
            return "Microsoft Graph reads are turned off for this run"
        return self._graph_problems.get((call, object_id.lower())) or self._graph_refused.get(call)

    def _graph_failed(self, call: str, object_ids: Sequence[str], status: int | None, code: str,
                      message: str) -> None:
        what = GRAPH_CALLS[call]
        if status in (401, 403):
            self._graph_refused[call] = (
                f"Microsoft Graph refused {what} ({status} {code}: {clip(message, 160)}); grant the function's "
                f"identity the application permission {GRAPH_PERMISSION[call]} (admin consent) to read this")
            return
        if status is None:
            why = f"Microsoft Graph could not be reached for {what} ({code}: {clip(message, 160)})"
        elif code == "Directory_ResultSizeLimitExceeded":
            why = (f"Microsoft Graph answered {status} {code} to {what}: the caller is in more than 11,000 groups, "
                   "more than getMemberGroups returns")
        elif status == 404:
            why = f"Microsoft Graph has no directory object with this id ({what}: {status} {code})"
        else:
            why = f"Microsoft Graph answered {status} {code} to {what} ({clip(message, 160)})"
        for oid in object_ids:
            self._graph_problems[(call, oid.lower())] = why
            if code == _SIZE_LIMIT:
                self._size_limited.add(oid.lower())

    async def _graph_json(self, call: str, object_ids: Sequence[str], method: str, url: str,
                          body: Any = None) -> Any:
        """One Graph call; the decoded JSON, or None after recording why (never raises for Graph's answer)."""
        from azure.core.rest import HttpRequest

        if not self._graph_enabled or call in self._graph_refused:
            return None
        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        try:
            # Graph's POSTs here (getByIds, getMemberGroups) only read: retried like GETs after a 429 or a dropped
            # connection (azure-core's per-request retry_on_methods; by default it retries only idempotent methods).
            response = await self._graph_client().send_request(request, retry_on_methods=READ_METHODS)
            await response.read()
        except ClientAuthenticationError as exc:
            self._graph_failed(call, object_ids, 401, "TokenUnavailable", str(exc).splitlines()[0] if str(exc) else "")
            return None
        except (ServiceRequestError, ServiceResponseError) as exc:
            self._graph_failed(call, object_ids, None, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return None
        if response.status_code >= 400:
            code, message = _graph_error(response)
            self._graph_failed(call, object_ids, response.status_code, code, message)
            return None
        try:
            return response.json()
        except ValueError:
            self._graph_failed(call, object_ids, response.status_code, "InvalidJson", "the body is not JSON")
            return None

    async def _get_by_ids(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        page = await self._graph_json("getByIds", ids, "POST", f"{self._graph_url}/v1.0/directoryObjects/getByIds",
                                      {"ids": list(ids), "types": ["user", "servicePrincipal", "group"]})
        values = page.get("value") if isinstance(page, dict) else None
        return {str(o.get("id")).lower(): o for o in (values if isinstance(values, list) else [])
                if isinstance(o, dict) and o.get("id")}

    async def display_names(self, object_ids: Sequence[str]) -> dict[str, str]:
        """Display names for many principals in one Graph call (for tables a person reads); {} without Graph."""
        ids = sorted({i.lower() for i in object_ids if i})[:1000]
        if not ids:
            return {}
        found = await self._get_by_ids(ids)
        return {k: str(o["displayName"]) for k, o in found.items() if o.get("displayName")}

    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo:
        """Type, name and transitive groups from Graph, asking only for what the decision needs; each call that
        fails leaves its part unknown (see :meth:`graph_problem`) and the other part intact."""
        if not (need_type or need_groups):
            return PrincipalInfo(object_id)

        async def info() -> dict[str, Any] | None:
            return (await self._get_by_ids([object_id])).get(object_id.lower())

        async def groups() -> list[str] | None:
            page = await self._graph_json(
                "getMemberGroups", [object_id], "POST",
                f"{self._graph_url}/v1.0/directoryObjects/{object_id}/getMemberGroups", {"securityEnabledOnly": False})
            values = page.get("value") if isinstance(page, dict) else None
            if not isinstance(values, list):
                if page is not None:
                    self._graph_failed("getMemberGroups", [object_id], 200, "UnexpectedBody", "no 'value' list")
                if object_id.lower() in self._size_limited:
                    return await paged_groups()
                return None
            return [str(g) for g in values if isinstance(g, str) and g.lower() != object_id.lower()]

        async def paged_groups() -> list[str] | None:
            # getMemberGroups stops at 11,000 groups; its docs name the workaround: the transitive memberOf list
            # of the object's own type (users / servicePrincipals), cast to groups and paged.
            meta = await self._once(("gp", object_id.lower()), info)
            collection = _GRAPH_COLLECTION.get(GRAPH_TYPES.get(str((meta or {}).get("@odata.type", "")).lower(), ""))
            if collection is None:
                return None
            url: str | None = (f"{self._graph_url}/v1.0/{collection}/{object_id}/transitiveMemberOf/"
                               "microsoft.graph.group?$select=id&$top=999")
            found: list[str] = []
            while url:
                page = await self._graph_json("transitiveMemberOf", [object_id], "GET", url)
                values = page.get("value") if isinstance(page, dict) else None
                if not isinstance(values, list):
                    return None
                found += [str(g["id"]) for g in values if isinstance(g, dict) and g.get("id")]
                link = page.get("@odata.nextLink") if isinstance(page, dict) else None
                url = str(link) if link else None
            self._graph_problems.pop(("getMemberGroups", object_id.lower()), None)
            return found

        meta, grp = await asyncio.gather(
            self._once(("gp", object_id.lower()), info) if need_type else _none(),
            self._once(("gg", object_id.lower()), groups) if need_groups else _none())
        first = meta or {}
        return PrincipalInfo(
            object_id=object_id, type=GRAPH_TYPES.get(str(first.get("@odata.type", "")).lower()),
            display_name=first.get("displayName"), app_id=first.get("appId"),
            groups=tuple(grp or ()), groups_known=grp is not None)


def _graph_error(response: Any) -> tuple[str, str]:
    """(code, message) of Graph's error body ``{"error": {"code", "message", "innerError"}}``, tolerating others."""
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        return str(err.get("code") or "Unknown"), str(err.get("message") or "")
    return f"HTTP{response.status_code}", ""


async def _none() -> None:
    return None


_SHARED: Any = None


def _shared_transport_class() -> Any:
    """A handle on a transport several clients share: sends through it, never opens or closes it for them
    (azure-core imported lazily, like every SDK here)."""
    global _SHARED
    if _SHARED is None:
        from azure.core.pipeline.transport import AsyncHttpTransport

        class SharedTransport(AsyncHttpTransport):  # type: ignore[misc,type-arg]
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            async def __aenter__(self) -> Any:
                await self._inner.open()
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            async def open(self) -> None:
                await self._inner.open()

            async def close(self) -> None:
                return None        # the owner (ArmFacts.close) closes the shared transport once

            async def send(self, request: Any, **kwargs: Any) -> Any:
                return await self._inner.send(request, **kwargs)

            async def sleep(self, duration: float) -> None:
                await self._inner.sleep(duration)

        _SHARED = SharedTransport
    return _SHARED


def _name_of(ref: VaultRef) -> str | None:
    if ref.name:
        return ref.name
    m = _VAULT_ID.match((ref.resource_id or "").rstrip("/"))
    return m.group(3) if m else None


def _done(value: T) -> asyncio.Future[T]:
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut
