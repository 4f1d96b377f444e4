"""The clients one batch reads through, its caches and its request counter (the base of facts.arm.ArmFacts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..clouds import PUBLIC, Cloud
from ..errors import AzureUnavailableError, clip
from ..model import VaultLookup
from . import resource_graph

if TYPE_CHECKING:
    from ..store.vault_index import VaultIndex
    from .hsm import HsmFacts

from .pipeline import capped_retry_policy, json_pipeline, shared_transport_class

log = logging.getLogger("kv_remediate.facts")
T = TypeVar("T")


class FactClients:
    """The SDK clients and pipelines of one batch (opened on first use, closed together), the per-batch cache
    of reads (concurrent asks share one request) and the request counter."""
    """Reads facts for a batch through the real SDK clients, with per-batch caches and a request counter."""

    # Keyword-only settings, each defaulted; callers (backends, CLI, app, benches, tests) name the few they set
    # through Backend.facts(**kw), so a settings object would only repeat this signature.
    def __init__(self, credential: Any, subscriptions: Sequence[str], *, cloud: Cloud = PUBLIC,  # noqa: PLR0913
                 arm_url: str | None = None, graph_url: str | None = None, connection_verify: str | bool | None = None,
                 graph: bool = True, max_concurrency: int = 32, retry_after_cap_s: float = 30.0,
                 retry_total: int = 10, transport_factory: Callable[[], Any] | None = None,
                 resource_graph: bool = True, resource_graph_top: int = resource_graph.MAX_TOP,
                 index: VaultIndex | None = None, index_scope: str | None = None,
                 hsm_factory: Callable[[], HsmFacts] | None = None) -> None:
        """``subscriptions``: where the ARM fallback searches by name, and the Resource Graph query's filter (empty:
        every subscription the identity can read). ``resource_graph=False`` searches by name through ARM only (the
        behaviour before Resource Graph; for comparison). ``index``: the name -> id index that outlives the batch,
        partitioned by ``index_scope`` (default: the ARM endpoint). ``hsm_factory``: the backend's
        ``Backend.hsm_facts`` (Managed HSM reads and writes on the same backend), opened on first use."""
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
        self._hsm_factory = hsm_factory
        self._hsm: HsmFacts | None = None

    # -- plumbing -------------------------------------------------------------------------------------------

    def _count(self, request: Any) -> None:
        self.requests += 1
        http = getattr(request, "http_request", None)
        url = str(getattr(http, "url", ""))
        api = ("hsm" if ".managedhsm." in url.lower() else "graph" if "/v1.0/" in url else
               "log_analytics" if "/v1/" in url else
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
        return shared_transport_class()(self._arm_inner)

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

    def hsm_facts(self) -> HsmFacts:
        """This batch's Managed HSM facts (the backend's ``hsm_facts()``, opened once, closed with the batch)."""
        if self._hsm is None:
            if self._hsm_factory is None:
                raise AzureUnavailableError("this fact source was made without a Managed HSM backend (Backend.facts "
                                            "passes one); Managed HSM grants cannot be read or written through it")
            self._hsm = self._hsm_factory()
        return self._hsm

    async def close(self) -> None:
        """Close every client this instance opened (after the index writes still running)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._hsm is not None:
            await self._hsm.close()
            self._hsm = None
        for c in [*self._kv.values(), self._auth, self._graph, self._rg]:
            if c is not None:
                await c.close()
        self._kv.clear()
        self._auth = self._graph = self._rg = None
        if self._arm_inner is not None:
            await self._arm_inner.close()
            self._arm_inner = None

    async def __aenter__(self) -> Self:
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
