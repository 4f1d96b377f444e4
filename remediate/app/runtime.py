"""The function app's per-process runtime: settings, the fact backend (live Azure or the snapshot emulator), the
storage clients, the webhook authenticator and notifications.

Everything heavy (Azure SDKs, the emulator, storage clients) is created on first use and kept for the life of the
process (one emulator per process, never per request; one queue client per process; the worker's async table
stores once per event loop, since async clients are bound to the loop that opened them). Module-level imports
are the standard library only: the blueprints import this module's constants at cold start.

Settings (app settings / environment):

- ``AzureWebJobsStorage`` (or ``AzureWebJobsStorage__accountName`` / ``__queueServiceUri`` / ``__tableServiceUri``
  / ``__clientId`` for the identity-based connection): the queue ``denials`` and the tables ``claims``/``findings``.
- ``KV_REMEDIATE_SNAPSHOT``: a snapshot file served by the bundled emulator instead of Azure (local and tests only).
- ``AZURE_SUBSCRIPTION_IDS``: the subscriptions to search for vaults (live Azure).
- ``KV_REMEDIATE_DEDUPE_WINDOW``: ISO 8601 duration (default ``PT10M``) in which identical denials are one finding.
- ``KV_REMEDIATE_NOTIFY_URL``: Teams or Slack incoming-webhook URL (https; http only to loopback).
- ``KV_REMEDIATE_WEBHOOK_AUDIENCE`` + ``KV_REMEDIATE_WEBHOOK_TENANT``: require an Entra ID token on ``/api/alerts``.
- ``KV_REMEDIATE_API_AUDIENCE`` + ``KV_REMEDIATE_API_TENANT``: the token (app role ``KvRemediate.Apply``) that
  ``/api/remediate`` needs to apply; without them nothing is applied over HTTP.
- ``KV_REMEDIATE_SELF_OBJECT_ID``: the app's own principal object id(s), comma-separated: never a grantee.
- ``KV_REMEDIATE_POLICY``: the remediation policy (content or a path).
- ``KV_REMEDIATE_AUDIT_WORKSPACES``: comma-separated Log Analytics workspace ids (GUIDs) holding the vaults' audit
  logs: the only workspaces the app reads (alert rows, and the evidence ``mode: apply`` needs).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..armid import is_guid
from ..clouds import CLOUD_SETTING, PUBLIC, Cloud, cloud_from_env
from ..errors import ConfigError

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient as AsyncTableClient
    from azure.storage.queue import QueueClient

    from ..facts.arm import ArmFacts
    from ..facts.loganalytics import LogAnalyticsClient
    from ..guard import Policy
    from ..store.claims import TableClaimStore
    from ..store.findings import TableFindingStore
    from ..store.grants import TableGrantStore
    from ..wiring import EmulatorRun
    from .webhook_auth import WebhookAuthenticator

log = logging.getLogger("kv_remediate.app")

_Store = TypeVar("_Store", "TableClaimStore", "TableFindingStore")

STORAGE_CONNECTION = "AzureWebJobsStorage"
DENIALS_QUEUE = "denials"
POISON_QUEUE = "denials-poison"
CLAIMS_TABLE = "claims"
FINDINGS_TABLE = "findings"
GRANTS_TABLE = "grants"

SNAPSHOT_SETTING = "KV_REMEDIATE_SNAPSHOT"
WINDOW_SETTING = "KV_REMEDIATE_DEDUPE_WINDOW"
NOTIFY_SETTING = "KV_REMEDIATE_NOTIFY_URL"
POLICY_SETTING = "KV_REMEDIATE_POLICY"
SUBSCRIPTIONS_SETTING = "AZURE_SUBSCRIPTION_IDS"
AUDIT_WORKSPACES_SETTING = "KV_REMEDIATE_AUDIT_WORKSPACES"
SELF_SETTING = "KV_REMEDIATE_SELF_OBJECT_ID"
AZURE_HOST_SETTINGS = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")
"""Set by the Functions/App Service host in Azure (never locally): the app runs against a real tenant."""
DEFAULT_WINDOW = timedelta(minutes=10)
DEFAULT_MAX_DEQUEUE = 5
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"

STORAGE_CONNECTIONS = 10
"""Concurrent calls allowed per storage client: the SDK's HTTP pool keeps 10 connections per host; more callers
at once would each open (and then discard) a connection of their own."""

FACTS_BATCH_SECONDS = 1.0
"""How long the worker's invocations share one fact source (its per-batch caches): a burst of messages is one
batch, while a grant made a few seconds ago is always seen."""


@dataclass(frozen=True)
class Problem:
    """A configuration problem for /api/health: the setting and what is wrong, never its value."""

    setting: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"setting": self.setting, "problem": self.problem}


def host_settings(path: Path = HOST_JSON) -> dict[str, Any]:
    """The parts of host.json the app mirrors: queue retry limits and the HTTP route prefix."""
    try:
        host = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        host = {}
    ext = _section(host, "extensions")
    queues, http = _section(ext, "queues"), _section(ext, "http")
    return {"max_dequeue_count": int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE)),
            "batch_size": int(queues.get("batchSize", 16)),
            "new_batch_threshold": int(queues.get("newBatchThreshold", 8)),
            "visibility_timeout": _hms(str(queues.get("visibilityTimeout", "00:00:00"))),
            "route_prefix": str(http.get("routePrefix", "api")).strip("/")}


def _section(value: Any, key: str) -> dict[str, Any]:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def _hms(text: str) -> float:
    """``hh:mm:ss`` (a .NET TimeSpan as host.json writes it) in seconds; 0 when unreadable."""
    try:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return 0.0


def _is_loopback(host: str | None) -> bool:
    return (host or "").lower() in ("127.0.0.1", "localhost", "::1")


def snapshot_in_azure(env: Mapping[str, str]) -> str | None:
    """Why the settings must not run (``KV_REMEDIATE_SNAPSHOT`` on an Azure host), or None."""
    hosts = [k for k in AZURE_HOST_SETTINGS if (env.get(k) or "").strip()]
    if (env.get(SNAPSHOT_SETTING) or "").strip() and hosts:
        return (f"is set on an Azure host ({', '.join(hosts)} present): the app would read a snapshot instead of "
                "the tenant, so it refuses to start; remove the setting")
    return None


@dataclass(frozen=True)
class Settings:
    """The app settings that shape a run, read once per process."""

    snapshot: str | None = None
    subscriptions: tuple[str, ...] = ()
    dedupe_window: timedelta = DEFAULT_WINDOW
    notify_url: str | None = None
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE
    cloud: Cloud | None = PUBLIC        # None: the cloud settings are unusable (health names them)
    self_object_ids: frozenset[str] = frozenset()
    max_denials: int = 100              # KV_REMEDIATE_MAX_DENIALS: denials one alert or request body may yield
    max_principals: int = 50            # KV_REMEDIATE_MAX_PRINCIPALS: distinct principals per batch
    """The app's own principal object ids (lower-case, KV_REMEDIATE_SELF_OBJECT_ID): the guard never grants them."""
    audit_workspaces: tuple[str, ...] = ()
    """KV_REMEDIATE_AUDIT_WORKSPACES: the only Log Analytics workspaces the app reads (lower-case GUIDs)."""
    problems: tuple[Problem, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read (and check) the settings; problems are collected, not raised, so health can list them all."""
        from ..guard import parse_duration

        env = dict(os.environ if env is None else env)
        problems: list[Problem] = []
        snapshot = (env.get(SNAPSHOT_SETTING) or "").strip() or None
        if snapshot and not Path(snapshot).is_file():
            problems.append(Problem(SNAPSHOT_SETTING, "names a file that does not exist"))
        in_azure = snapshot_in_azure(env)
        if in_azure:
            problems.append(Problem(SNAPSHOT_SETTING, in_azure))
        own, own_problem = _self_ids(env)
        if own_problem:
            problems.append(Problem(SELF_SETTING, own_problem))
        caps = _caps(env, problems)
        subs = tuple(s.strip() for s in (env.get(SUBSCRIPTIONS_SETTING) or "").split(",") if s.strip())
        if not snapshot and not subs:
            problems.append(Problem(SUBSCRIPTIONS_SETTING, "is not set: no subscription to search for vaults"))
        window = DEFAULT_WINDOW
        raw_window = (env.get(WINDOW_SETTING) or "").strip()
        if raw_window:
            parsed = parse_duration(raw_window)
            if parsed is None or parsed <= timedelta(0):
                problems.append(Problem(WINDOW_SETTING, "is not a positive ISO 8601 duration (e.g. PT10M); "
                                        "using the default of 10 minutes"))
            else:
                window = parsed
        notify = (env.get(NOTIFY_SETTING) or "").strip() or None
        if notify:
            url = urllib.parse.urlsplit(notify)
            if not (url.scheme == "https" or (url.scheme == "http" and _is_loopback(url.hostname))):
                problems.append(Problem(NOTIFY_SETTING, "must be an https URL (http only to loopback); "
                                        "notifications are off"))
                notify = None
        cloud: Cloud | None = None
        try:
            cloud = cloud_from_env(env)
        except ConfigError as exc:
            problems.append(Problem(exc.setting or CLOUD_SETTING, exc.message.split(": ", 1)[-1] +
                                    "; Azure is not called until it is fixed"))
        workspaces = _guid_list(env, AUDIT_WORKSPACES_SETTING, problems)
        problems.extend(_storage_problems(env))
        problems.extend(_webhook_problems(env))
        problems.extend(_policy_problems(env))
        return cls(snapshot=snapshot, subscriptions=subs, dedupe_window=window, notify_url=notify, cloud=cloud,
                   max_dequeue_count=host_settings()["max_dequeue_count"], self_object_ids=own, **caps,
                   audit_workspaces=workspaces, problems=tuple(problems), env=env)

    @property
    def caps(self) -> dict[str, int]:
        """Intake's caps as ``parse_one``/``parse_inputs`` keywords."""
        return {"max_denials": self.max_denials, "max_principals": self.max_principals}


def _caps(env: Mapping[str, str], problems: list[Problem]) -> dict[str, int]:
    """Intake's caps from their settings (positive integers); an unusable value keeps the default (health)."""
    from ..intake import DEFAULT_MAX_DENIALS, DEFAULT_MAX_PRINCIPALS, MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING

    out = {}
    for key, setting, default in (("max_denials", MAX_DENIALS_SETTING, DEFAULT_MAX_DENIALS),
                                  ("max_principals", MAX_PRINCIPALS_SETTING, DEFAULT_MAX_PRINCIPALS)):
        raw = (env.get(setting) or "").strip()
        if raw and not (raw.isdigit() and 0 < int(raw) <= 1_000_000):
            problems.append(Problem(setting, f"is not a positive integer; using the default of {default}"))
            raw = ""
        out[key] = int(raw) if raw else default
    return out


def _guid_list(env: Mapping[str, str], setting: str, problems: list[Problem]) -> tuple[str, ...]:
    """A comma-separated list of GUIDs (lower-cased, in order); anything else is a problem and is left out."""
    items = [s.strip().lower() for s in (env.get(setting) or "").split(",") if s.strip()]
    good = tuple(dict.fromkeys(s for s in items if is_guid(s)))
    if len(good) < len(set(items)):
        problems.append(Problem(setting, "has entries that are not workspace ids (GUIDs); they are ignored"))
    return good


def _self_ids(env: Mapping[str, str]) -> tuple[frozenset[str], str | None]:
    """The app's own object ids from KV_REMEDIATE_SELF_OBJECT_ID, and a problem (never naming the value)."""
    raw = [x.strip().lower() for x in (env.get(SELF_SETTING) or "").split(",") if x.strip()]
    if any(not is_guid(x) for x in raw):
        return frozenset(x for x in raw if is_guid(x)), "is not a comma-separated list of object ids (GUIDs)"
    if not raw and any((env.get(k) or "").strip() for k in AZURE_HOST_SETTINGS):
        return frozenset(), ("is not set on an Azure host: the guard cannot recognise the app's own identity as a "
                             "grantee; set it to the managed identity's principal (object) id")
    return frozenset(raw), None


def _storage_problems(env: Mapping[str, str]) -> list[Problem]:
    from ..errors import ConfigError
    from ..store.azure import storage_settings

    try:
        storage_settings(env, prefix=STORAGE_CONNECTION)
    except ConfigError as exc:
        return [Problem(STORAGE_CONNECTION, exc.message)]
    return []


def _webhook_problems(env: Mapping[str, str]) -> list[Problem]:
    from .webhook_auth import (
        API_AUDIENCE_SETTING,
        API_TENANT_SETTING,
        AUDIENCE_SETTING,
        TENANT_SETTING,
        tenant_problem,
    )

    out = []
    for aud_s, ten_s, effect in ((AUDIENCE_SETTING, TENANT_SETTING, "/api/alerts refuses every alert"),
                                 (API_AUDIENCE_SETTING, API_TENANT_SETTING, "/api/remediate refuses to apply")):
        audience, tenant = ((env.get(s) or "").strip() for s in (aud_s, ten_s))
        if bool(audience) != bool(tenant):
            missing = ten_s if audience else aud_s
            out.append(Problem(missing, f"is not set while {aud_s if audience else ten_s} is: the token check is "
                               f"half-configured and {effect}; set both or neither"))
        elif tenant and (problem := tenant_problem(tenant)):
            out.append(Problem(ten_s, (problem if problem.startswith("is ") else
                                       "is a domain, not a tenant id (a GUID): token issuers name the tenant by "
                                       "id, so every token would be refused") + f"; {effect}"))
    return out


def _policy_problems(env: Mapping[str, str]) -> list[Problem]:
    from ..errors import RemediateError

    try:
        load_policy(env)
    except RemediateError as exc:
        return [Problem(POLICY_SETTING, exc.message)]
    return []


def load_policy(env: Mapping[str, str] | None = None) -> Policy:
    """The remediation policy from ``KV_REMEDIATE_POLICY`` (content or a file path), else the defaults."""
    from ..guard import load_policy as load

    return load(None, os.environ if env is None else env)


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
        self._policy: Policy | None = None
        self._auth: WebhookAuthenticator | None = authenticator
        self._auth_loaded = authenticator is not None
        self._api_auth: WebhookAuthenticator | None = api_authenticator
        self._api_auth_loaded = api_authenticator is not None
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Batch]] = (
            weakref.WeakKeyDictionary())
        self._credentials: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._slots = {DENIALS_QUEUE: FairSlots(STORAGE_CONNECTIONS)}

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
                from ..wiring import EmulatorRun

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
            from azure.identity.aio import DefaultAzureCredential

            cred = self._credentials[loop] = DefaultAzureCredential()
        return cred

    def new_facts(self) -> ArmFacts:
        """A fresh fact source (one batch) on the configured backend."""
        run = self.emulator
        if run is not None:
            return run.facts()
        from ..errors import ConfigError
        from ..facts.arm import ArmFacts

        if not self.settings.subscriptions:
            raise ConfigError(f"setting {SUBSCRIPTIONS_SETTING} is not set: no subscription to search for vaults")
        if self.settings.cloud is None:
            raise ConfigError(f"setting {CLOUD_SETTING} (or an endpoint override) is unusable; see /api/health")
        return ArmFacts(self._live_credential(), self.settings.subscriptions, cloud=self.settings.cloud)

    @asynccontextmanager
    async def facts(self, *, shared: bool = False) -> AsyncIterator[ArmFacts]:
        """A fact source: a fresh one (closed afterwards), or with ``shared`` the one this event loop's recent
        invocations use (a new one every ``FACTS_BATCH_SECONDS``), so a burst of queue messages is one batch."""
        if not shared:
            facts = self.new_facts()
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
            batch = _Batch(self.new_facts(), now)
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
        from ..facts.loganalytics import LogAnalyticsClient

        run = self.emulator
        if run is not None:
            emu = run.emulator
            return LogAnalyticsClient(emu.async_credential(), base_url=emu.base_url, connection_verify=emu.ca_file)
        if self.settings.cloud is None:
            raise ConfigError(f"setting {CLOUD_SETTING} (or an endpoint override) is unusable; see /api/health")
        return LogAnalyticsClient(self._live_credential(), cloud=self.settings.cloud)

    # -- storage ----------------------------------------------------------------------------------------------

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

    # -- remediation policy and identity ---------------------------------------------------------------------------

    def policy(self) -> Policy:
        """The remediation policy, read once per process; an invalid one raises PolicyError every time, so no
        route or worker acts on it (health lists it)."""
        with self._lock:
            if self._policy is None:
                self._policy = load_policy(self.settings.env)
            return self._policy

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

    def notify(self, payload: dict[str, Any], timeout: float = 5.0) -> bool:
        """POST ``payload`` to KV_REMEDIATE_NOTIFY_URL; False (logged, not raised) when it fails."""
        url = self.settings.notify_url
        if not url:
            return False
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("kv-remediate: the notification to %s failed (%s)", NOTIFY_SETTING, type(exc).__name__)
            return False

    def close(self) -> None:
        """Stop the emulator (if started); other clients are dropped with the process."""
        with self._lock:
            if self._emulator is not None:
                self._emulator.__exit__(None, None, None)
                self._emulator = None


_RUNTIME: Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def get() -> Runtime:
    """The process's runtime, created on first use from the environment."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = Runtime()
        return _RUNTIME


def current() -> Runtime | None:
    """The process's runtime if one was created (nothing is created here)."""
    return _RUNTIME


def install(rt: Runtime) -> Runtime:
    """Make ``rt`` the process's runtime (replacing and closing any other)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is not None and _RUNTIME is not rt:
            _RUNTIME.close()
        _RUNTIME = rt
        return rt


def reset() -> None:
    """Forget the runtime (stopping its emulator) so the next invocation re-reads the settings (tests, serve)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is not None:
            _RUNTIME.close()
        _RUNTIME = None
