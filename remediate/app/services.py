"""The function app's per-process services: the fact backend (live Azure or the snapshot emulator, both made by
``remediate.backends``), the storage clients, the webhook authenticators and the policy, created lazily and shared
by every invocation.

Everything heavy (Azure SDKs, the emulator, storage clients) is created on first use and kept for the life of the
process (one emulator per process, never per request; one queue client per process; the worker's async table
stores once per event loop, since async clients are bound to the loop that opened them). Module-level imports
are the standard library only, so importing this module costs nothing at cold start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..clouds import CLOUD_SETTING
from ..errors import ConfigError, clip
from .settings import (
    APPROVALS_TABLE,
    CLAIMS_TABLE,
    DENIALS_QUEUE,
    FINDINGS_TABLE,
    GRANTS_TABLE,
    SNAPSHOT_SETTING,
    STORAGE_CONNECTION,
    VAULT_INDEX_TABLE,
    Problem,
    Settings,
    load_policy,
    snapshot_in_azure,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient as AsyncTableClient
    from azure.storage.queue import QueueClient

    from ..backends import Backend, EmulatorRun
    from ..facts.arm import ArmFacts
    from ..facts.loganalytics import LogAnalyticsClient
    from ..guard import Policy
    from ..store.approvals_table import TableApprovalStore
    from ..store.claims import TableClaimStore
    from ..store.findings import TableFindingStore
    from ..store.grants import TableGrantStore
    from ..store.vault_index import MemoryVaultIndex, TableVaultIndex, VaultIndex
    from .webhook_auth import WebhookAuthenticator

log = logging.getLogger("kv_remediate.app")

_Store = TypeVar("_Store", "TableClaimStore", "TableFindingStore", "TableVaultIndex")

STORAGE_CONNECTIONS = 10
STORAGE_CHECK_TTL_S = 15.0
"""How long /api/health reuses its storage check (a failing storage answers within the 2 s timeout at worst)."""
"""Concurrent calls allowed per storage client: the SDK's HTTP pool keeps 10 connections per host; more callers
at once would each open (and then discard) a connection of their own."""

FACTS_BATCH_SECONDS = 1.0
"""How long the worker's invocations share one fact source (its per-batch caches): a burst of messages is one
batch, while a grant made a few seconds ago is always seen."""


class FairSlots:
    """A counting semaphore that serves waiters first come, first served (a released slot is handed to the
    oldest waiter, never taken by a newcomer), so no caller waits far longer than the others."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def __enter__(self) -> FairSlots:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the holder that hands its slot over
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


@dataclass
class _Batch:
    """One shared fact source and how many invocations are using it."""

    facts: ArmFacts
    born: float
    users: int = 0
    retired: bool = False


@dataclass
class _LoopTables:
    """One event loop's async table stores, and the storage credential they share (identity-based settings)."""

    stores: dict[str, Any] = field(default_factory=dict)
    credential: Any = None


class Runtime:
    """Per-process state shared by every invocation; thread-safe lazy creation."""

    def __init__(self, settings: Settings | None = None, *, authenticator: WebhookAuthenticator | None = None,
                 api_authenticator: WebhookAuthenticator | None = None) -> None:
        """``authenticator`` / ``api_authenticator`` replace the webhook's / the apply role's validator built from
        the settings (e.g. keys from a loopback JWKS in tests)."""
        self.settings = settings or Settings.from_env()
        self._lock = threading.RLock()
        self._emulator: EmulatorRun | None = None
        self._queue: QueueClient | None = None
        self._tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTables] = (
            weakref.WeakKeyDictionary())
        self._grants: TableGrantStore | None = None
        self._approvals: TableApprovalStore | None = None
        self._policy: Policy | None = None
        self._auth: WebhookAuthenticator | None = authenticator
        self._auth_loaded = authenticator is not None
        self._api_auth: WebhookAuthenticator | None = api_authenticator
        self._api_auth_loaded = api_authenticator is not None
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Batch]] = (
            weakref.WeakKeyDictionary())
        self._credentials: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._slots = {DENIALS_QUEUE: FairSlots(STORAGE_CONNECTIONS)}
        self._memory_index: MemoryVaultIndex | None = None
        self._storage_checked: tuple[float, Problem | None] | None = None
        self._index_table_failed = False      # the Table could not be opened once: memory only from then on

    def slot(self, client: str) -> FairSlots:
        """Hold this while calling the sync storage client ``client`` (the `denials` queue, from the HTTP
        threads): at most ``STORAGE_CONNECTIONS`` calls at once, so every call reuses a pooled connection."""
        return self._slots[client]

    # -- fact backend -----------------------------------------------------------------------------------------

    @property
    def emulator(self) -> EmulatorRun | None:
        """The snapshot emulator (started on first use, once per process), or None for live Azure."""
        if not self.settings.snapshot:
            return None
        in_azure = snapshot_in_azure(self.settings.env)
        if in_azure:
            from ..errors import ConfigError

            raise ConfigError(f"setting {SNAPSHOT_SETTING} {in_azure}")
        with self._lock:
            if self._emulator is None:
                from ..backends import EmulatorRun

                run = EmulatorRun(self.settings.snapshot)
                run.__enter__()
                self._emulator = run
                log.info("kv-remediate: serving snapshot %s through the emulator at %s", self.settings.snapshot,
                         run.emulator.base_url)
            return self._emulator

    @property
    def emulator_started(self) -> bool:
        """Whether this process has started the snapshot emulator (it starts on the first fact read)."""
        return self._emulator is not None

    def _live_credential(self) -> Any:
        """The function's identity for this event loop (async credentials are bound to their loop)."""
        loop = asyncio.get_running_loop()
        cred = self._credentials.get(loop)
        if cred is None:
            from ..credentials import async_default_credential

            cred = self._credentials[loop] = async_default_credential()
        return cred

    def backend(self) -> Backend:
        """The configured backend: the snapshot emulator (started once per process), else Azure with this event
        loop's identity (AZURE_SUBSCRIPTION_IDS is optional: Resource Graph finds vaults in every subscription the
        identity reads)."""
        run = self.emulator
        if run is not None:
            return run
        from ..backends import AzureBackend

        if self.settings.cloud is None:
            raise ConfigError(f"setting {CLOUD_SETTING} (or an endpoint override) is unusable; see /api/health")
        return AzureBackend(self._live_credential(), self.settings.subscriptions, self.settings.cloud)

    def new_facts(self, index: VaultIndex | None = None) -> ArmFacts:
        """A fresh fact source (one batch) on the configured backend, with the vault index ``index``."""
        return self.backend().facts(index=index)

    async def vault_index(self) -> VaultIndex:
        """The name -> id index that outlives a batch: the process's memory in front of the Table `vaultindex`
        (this event loop's client); memory alone when storage is not configured or cannot be opened."""
        from ..store.vault_index import LayeredVaultIndex, MemoryVaultIndex, TableVaultIndex

        with self._lock:
            if self._memory_index is None:
                self._memory_index = MemoryVaultIndex()
            memory = self._memory_index
        if self._index_table_failed:
            return memory
        try:
            table = await self._table_store(VAULT_INDEX_TABLE, TableVaultIndex)
        except Exception as exc:  # the index is an optimisation: without storage it is the process's memory only
            self._index_table_failed = True
            log.warning("kv-remediate: vault index table unavailable (%s); keeping the index in memory only",
                        clip(str(exc), 200) or type(exc).__name__)
            return memory
        return LayeredVaultIndex([memory, table])

    @asynccontextmanager
    async def facts(self, *, shared: bool = False) -> AsyncIterator[ArmFacts]:
        """A fact source: a fresh one (closed afterwards), or with ``shared`` the one this event loop's recent
        invocations use (a new one every ``FACTS_BATCH_SECONDS``), so a burst of queue messages is one batch."""
        index = await self.vault_index()
        if not shared:
            facts = self.new_facts(index)
            try:
                yield facts
            finally:
                await facts.close()
            return
        loop = asyncio.get_running_loop()
        batches = self._batches.setdefault(loop, [])
        now = time.monotonic()
        batch = batches[-1] if batches and not batches[-1].retired else None
        if batch is None or now - batch.born > FACTS_BATCH_SECONDS:
            if batch is not None:
                batch.retired = True
            batch = _Batch(self.new_facts(index), now)
            batches.append(batch)
        batch.users += 1
        try:
            yield batch.facts
        finally:
            batch.users -= 1
            if batch.users == 0:
                if batch.retired:
                    await self._close_batch(batches, batch)
                else:  # idle: close it once its time is up, unless someone picked it up again
                    loop.call_later(FACTS_BATCH_SECONDS, lambda: loop.create_task(self._expire(batches, batch)))

    async def _expire(self, batches: list[_Batch], batch: _Batch) -> None:
        if batch.users == 0 and time.monotonic() - batch.born >= FACTS_BATCH_SECONDS:
            batch.retired = True
            await self._close_batch(batches, batch)

    @staticmethod
    async def _close_batch(batches: list[_Batch], batch: _Batch) -> None:
        if batch in batches:
            batches.remove(batch)
            await batch.facts.close()

    async def aclose(self) -> None:
        """Close this event loop's shared fact sources and credential (before the loop stops)."""
        loop = asyncio.get_running_loop()
        for batch in list(self._batches.pop(loop, [])):
            await batch.facts.close()
        cred = self._credentials.pop(loop, None)
        if cred is not None:
            await cred.close()
        tables = self._tables.pop(loop, None)
        if tables is not None:
            for store in tables.stores.values():
                await store.close()
            if tables.credential is not None:
                await tables.credential.close()

    def log_analytics(self) -> LogAnalyticsClient:
        """A Log Analytics query client (close it after use): the emulator's, or Azure's with our identity."""
        return self.backend().log_analytics()

    # -- storage ----------------------------------------------------------------------------------------------

    def storage_problem(self) -> Problem | None:
        """Whether the app's storage answers (a cheap table query, 2 s timeout, no retry), cached for
        ``STORAGE_CHECK_TTL_S`` so /api/health stays fast; None when it answers or is not configured (a missing
        setting is already a settings problem)."""
        with self._lock:
            checked = self._storage_checked
            if checked is not None and time.monotonic() - checked[0] < STORAGE_CHECK_TTL_S:
                return checked[1]
        problem = self._check_storage()
        with self._lock:
            self._storage_checked = (time.monotonic(), problem)
        return problem

    def _check_storage(self) -> Problem | None:
        """One table query and one queue read (the worker's trigger), each 2 s at most and never retried."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from ..store.azure import queue_service_client, storage_cause, table_service_client

        quick = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 2}
        try:
            tables = table_service_client(self._storage(), **quick)
            queues = queue_service_client(self._storage(), **quick)
        except ConfigError:
            return None
        try:
            with tables, queues:
                try:
                    pages = tables.get_table_client(GRANTS_TABLE).query_entities(
                        "PartitionKey eq @pk", parameters={"pk": "health"}, results_per_page=1).by_page()
                    next(iter(pages), None)
                except ResourceNotFoundError:   # answered: the table is created on first use
                    pass
                try:
                    queues.get_queue_client(DENIALS_QUEUE).get_queue_properties()
                except ResourceNotFoundError:   # answered: the queue is created on first use
                    pass
        except AzureError as exc:
            return Problem(STORAGE_CONNECTION, f"storage cannot be used: {storage_cause(exc)}")
        return None

    def _storage(self) -> Any:
        from ..store.azure import storage_settings

        return storage_settings(self.settings.env, prefix=STORAGE_CONNECTION)

    def queue(self) -> QueueClient:
        """The `denials` queue client (created once per process; the queue is created if missing)."""
        with self._lock:
            if self._queue is None:
                from ..store.azure import queue_client, queue_service_client

                self._queue = queue_client(queue_service_client(self._storage()), DENIALS_QUEUE)
            return self._queue

    async def claims(self) -> TableClaimStore:
        """The distributed dedupe store on Table `claims` (this event loop's)."""
        from ..store.claims import TableClaimStore

        return await self._table_store(CLAIMS_TABLE, TableClaimStore)

    async def findings(self) -> TableFindingStore:
        """The findings records on Table `findings` (this event loop's)."""
        from ..store.findings import TableFindingStore

        return await self._table_store(FINDINGS_TABLE, TableFindingStore)

    async def _table_store(self, name: str, make: Callable[[AsyncTableClient], _Store]) -> _Store:
        """This event loop's store on table ``name`` (the table is created on first use)."""
        from ..store.azure import async_credential, async_table_client

        tables = self._tables.setdefault(asyncio.get_running_loop(), _LoopTables())
        stores = tables.stores
        if name not in stores:
            settings = self._storage()
            if settings.identity_based and tables.credential is None:
                tables.credential = async_credential(settings)
            client = await async_table_client(settings, name, credential=tables.credential)
            if name in stores:  # another invocation opened it meanwhile: keep theirs
                await client.close()
            else:
                stores[name] = make(client)
        store: _Store = stores[name]
        return store

    def grants(self) -> TableGrantStore:
        """The grant audit trail on Table `grants` (shared by every instance; max_grants_per_hour counts here)."""
        with self._lock:
            if self._grants is None:
                from ..store.azure import table_client, table_service_client
                from ..store.grants import TableGrantStore

                self._grants = TableGrantStore(table_client(table_service_client(self._storage()), GRANTS_TABLE))
            return self._grants

    def approvals(self) -> TableApprovalStore:
        """Approval requests on Table `approvals` (shared by every instance; ETag compare-and-swap per request)."""
        with self._lock:
            if self._approvals is None:
                from ..store.approvals_table import TableApprovalStore
                from ..store.azure import table_client, table_service_client

                self._approvals = TableApprovalStore(table_client(table_service_client(self._storage()),
                                                                  APPROVALS_TABLE))
            return self._approvals

    # -- remediation policy and identity ---------------------------------------------------------------------------

    def policy(self) -> Policy:
        """The remediation policy, read once per process; an invalid one raises PolicyError every time, so no
        route or worker acts on it (health lists it)."""
        with self._lock:
            if self._policy is None:
                self._policy = load_policy(self.settings.env)
            return self._policy

    @property
    def writes_to(self) -> str | None:
        """Where this app's writes go, for each grant record's identity: "emulator" serving a snapshot, else None
        (Azure)."""
        return "emulator" if self.settings.snapshot else None

    @property
    def actor(self) -> str:
        """Who makes changes, for the audit trail: the app and its managed identity (no secrets)."""
        env = self.settings.env
        if self.settings.snapshot:
            return "kv-remediate (snapshot emulator)"
        site = env.get("WEBSITE_SITE_NAME") or "kv-remediate"
        client = env.get("AZURE_CLIENT_ID")
        return f"{site} (managed identity {client})" if client else f"{site} (system-assigned identity)"

    # -- webhook auth and notifications -------------------------------------------------------------------------

    def authenticator(self) -> WebhookAuthenticator | None:
        """The secure-webhook validator when configured (its key cache lives for the process), else None."""
        with self._lock:
            if not self._auth_loaded:
                from .webhook_auth import authenticator_from_env

                self._auth = authenticator_from_env(self.settings.env)
                self._auth_loaded = True
            return self._auth

    def api_authenticator(self) -> WebhookAuthenticator | None:
        """The apply-role validator for /api/remediate when configured, else None (nothing applied over HTTP)."""
        with self._lock:
            if not self._api_auth_loaded:
                from .webhook_auth import api_authenticator_from_env

                self._api_auth = api_authenticator_from_env(self.settings.env)
                self._api_auth_loaded = True
            return self._api_auth

    async def notify(self, payload: dict[str, Any], timeout: float = 5.0) -> bool:
        """POST ``payload`` to KV_REMEDIATE_NOTIFY_URL; False (logged, not raised) when it fails."""
        from .notify import post

        return await post(self.settings.notify_url, payload, timeout)

    def close(self) -> None:
        """Stop the emulator (if started); other clients are dropped with the process."""
        with self._lock:
            if self._emulator is not None:
                self._emulator.__exit__(None, None, None)
                self._emulator = None


class _Process:
    """The process's one runtime, behind a lock (a holder rather than a module global rebound by ``global``)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.lock = threading.Lock()


_PROCESS = _Process()


def get() -> Runtime:
    """The process's runtime, created on first use from the environment."""
    with _PROCESS.lock:
        if _PROCESS.runtime is None:
            # Application Insights (OpenTelemetry) when APPLICATIONINSIGHTS_CONNECTION_STRING is set: here, on the
            # first invocation, so a cold start never imports it (telemetry.configure_from_env; once per process).
            from .. import telemetry

            telemetry.configure_from_env()
            _PROCESS.runtime = Runtime()
        return _PROCESS.runtime


def current() -> Runtime | None:
    """The process's runtime if one was created (nothing is created here)."""
    return _PROCESS.runtime


def install(rt: Runtime) -> Runtime:
    """Make ``rt`` the process's runtime (replacing and closing any other)."""
    with _PROCESS.lock:
        if _PROCESS.runtime is not None and _PROCESS.runtime is not rt:
            _PROCESS.runtime.close()
        _PROCESS.runtime = rt
        return rt


def reset() -> None:
    """Forget the runtime (stopping its emulator) so the next invocation re-reads the settings (tests, serve)."""
    with _PROCESS.lock:
        if _PROCESS.runtime is not None:
            _PROCESS.runtime.close()
        _PROCESS.runtime = None
