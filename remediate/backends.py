"""Which backend a run talks to, in one place for the CLI and the function app: live Azure (the identity's
DefaultAzureCredential, in the configured cloud) or the bundled emulator serving a snapshot; and, for the CLI, which
store keeps grants and rate slots (SQLite, or the Azure Tables the function app writes).

Each backend makes the clients the core reads through (:class:`~remediate.facts.arm.ArmFacts` for ARM and Graph,
:class:`~remediate.facts.loganalytics.LogAnalyticsClient` for audit rows); writes go through
:class:`~remediate.facts.writes.ArmWriter` over whichever fact source was chosen. This is the only module besides
the tests that imports the emulator. Heavy imports happen inside the functions (the app imports this on a cold path).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .clouds import Cloud, cloud_from_env

if TYPE_CHECKING:
    from .facts.arm import ArmFacts
    from .facts.hsm import HsmFacts
    from .facts.loganalytics import LogAnalyticsClient
    from .store.approvals import ApprovalStore
    from .store.azure import StorageSettings
    from .store.claims import ClaimStore
    from .store.grants import GrantStore

STORAGE_SETTING = "KV_REMEDIATE_STORAGE"
"""The CLI's store: when this names a storage connection, grants and slots live in Azure Tables, else SQLite."""


class Backend(Protocol):
    """Where facts are read (and through them, written): Azure or the emulator."""

    def facts(self, **kw: Any) -> ArmFacts:
        """A fresh fact source (ARM and Graph); close it after use."""
        ...

    def log_analytics(self) -> LogAnalyticsClient:
        """A Log Analytics query client; close it after use."""
        ...

    def hsm_facts(self) -> HsmFacts:
        """Managed HSM facts (ARM ``managed_hsms`` and each HSM's local RBAC); close it after use."""
        ...


@dataclass(frozen=True)
class AzureBackend:
    """Live Azure: ``credential`` (the identity's, bound to the caller's event loop), the subscriptions to search
    for vaults, and the cloud's endpoints."""

    credential: Any
    subscriptions: tuple[str, ...]
    cloud: Cloud

    def facts(self, **kw: Any) -> ArmFacts:
        from .facts.arm import ArmFacts

        return ArmFacts(self.credential, self.subscriptions, cloud=self.cloud, **kw)

    def log_analytics(self) -> LogAnalyticsClient:
        from .facts.loganalytics import LogAnalyticsClient

        return LogAnalyticsClient(self.credential, cloud=self.cloud)

    def hsm_facts(self) -> HsmFacts:
        from .facts.hsm import HsmFacts

        return HsmFacts(self.credential, self.subscriptions, cloud=self.cloud)


class EmulatorRun:
    """The bundled emulator serving one snapshot; kept open for the whole run (diagnose, then apply), or for the
    life of the function app's process."""

    def __init__(self, snapshot: str | Path | dict[str, Any]) -> None:
        from .emulator import Emulator
        from .emulator.snapshot import load_snapshot

        self.snapshot = load_snapshot(snapshot)
        self.emulator = Emulator(self.snapshot)
        # The vault index's partition for this run: its tenant is this snapshot's, never another run's.
        self.index_scope = f"emulator:{uuid.uuid4()}"

    def __enter__(self) -> EmulatorRun:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()

    def facts(self, **kw: Any) -> ArmFacts:
        from .facts.arm import ArmFacts

        emu = self.emulator
        kw.setdefault("index_scope", self.index_scope)
        return ArmFacts(emu.async_credential(), self.snapshot.subscriptions, arm_url=emu.base_url,
                        graph_url=emu.base_url, connection_verify=emu.ca_file,
                        transport_factory=emu.async_transport, **kw)

    def log_analytics(self) -> LogAnalyticsClient:
        from .facts.loganalytics import LogAnalyticsClient

        emu = self.emulator
        return LogAnalyticsClient(emu.async_credential(), base_url=emu.base_url, connection_verify=emu.ca_file)

    def hsm_facts(self) -> HsmFacts:
        """The emulator's HSMs: ARM at its base URL, each HSM's data plane at its real host name, which the
        emulator's transport resolves to loopback (nothing else resolves)."""
        from .facts.hsm import HsmFacts

        emu = self.emulator
        return HsmFacts(emu.async_credential(), self.snapshot.subscriptions, arm_url=emu.base_url,
                        transport_factory=emu.async_transport)


# -- the CLI's choice -----------------------------------------------------------------------------------------------

def subscriptions_from_env(explicit: Sequence[str] | None = None) -> tuple[str, ...]:
    """``--subscription`` values, else AZURE_SUBSCRIPTION_IDS (comma-separated); empty: every subscription the
    identity can read (Azure Resource Graph finds vaults by name without a list)."""
    if explicit:
        return tuple(explicit)
    raw = os.environ.get("AZURE_SUBSCRIPTION_IDS", "")
    return tuple(s.strip() for s in raw.split(",") if s.strip())


@asynccontextmanager
async def live_facts(subscriptions: Sequence[str], cloud: Cloud | None = None) -> AsyncIterator[ArmFacts]:
    """Facts from Azure with the caller's own identity (DefaultAzureCredential), in the cloud ``AZURE_CLOUD``
    and the endpoint settings name (clouds.py). ``subscriptions`` is optional: a filter for Resource Graph and the
    list the ARM fallback searches."""
    from .credentials import async_default_credential

    credential = async_default_credential()
    try:
        backend = AzureBackend(credential, tuple(subscriptions), cloud or cloud_from_env(os.environ))
        async with backend.facts() as facts:
            yield facts
    finally:
        await credential.close()


@asynccontextmanager
async def fact_source(snapshot: str | None, subscriptions: Sequence[str] | None = None, *,
                      snapshot_out: str | None = None) -> AsyncIterator[ArmFacts]:
    """Every command's one choice of backend: the bundled emulator serving ``snapshot`` (its tenant written to
    ``snapshot_out`` after a run that did not fail), else Azure in the subscriptions given or configured."""
    if not snapshot:
        async with live_facts(subscriptions_from_env(subscriptions)) as facts:
            yield facts
        return
    with EmulatorRun(snapshot) as run:
        async with run.facts() as facts:
            yield facts
        if snapshot_out:
            Path(snapshot_out).write_text(json.dumps(run.emulator.tenant(), indent=1) + "\n", encoding="utf-8")


def _tables() -> StorageSettings | None:
    if not any(k == STORAGE_SETTING or k.startswith(STORAGE_SETTING + "__") for k in os.environ):
        return None
    from .store.azure import storage_settings

    return storage_settings(prefix=STORAGE_SETTING)


def open_grants(state: str | Path | None) -> GrantStore:
    """The CLI's grant audit store: Azure Tables when KV_REMEDIATE_STORAGE is set, else SQLite at ``state``."""
    settings = _tables()
    if settings is not None:
        from .store.azure import table_client, table_service_client
        from .store.grants import TableGrantStore

        return TableGrantStore(table_client(table_service_client(settings), "grants"))  # type: ignore[return-value]
    from .store.grants import SqliteGrantStore

    return SqliteGrantStore(state)


def open_approvals(state: str | Path | None) -> ApprovalStore:
    """The CLI's approval requests, on the same backend as :func:`open_grants`: Azure Tables (``approvals``, the
    app's) when KV_REMEDIATE_STORAGE is set, else SQLite at ``state``."""
    settings = _tables()
    if settings is not None:
        from .store.approvals_table import TableApprovalStore
        from .store.azure import table_client, table_service_client

        return TableApprovalStore(table_client(table_service_client(settings), "approvals"))
    from .store.approvals import SqliteApprovalStore

    return SqliteApprovalStore(state)


@asynccontextmanager
async def open_slots(state: str | Path | None) -> AsyncIterator[ClaimStore]:
    """The rate-slot store on the same backend as :func:`open_grants`, closed (with its credential) on exit."""
    settings = _tables()
    if settings is None:
        from .store.claims import SqliteClaimStore

        yield SqliteClaimStore(state)
        return
    from .store.azure import async_credential, async_table_client
    from .store.claims import TableClaimStore

    credential = async_credential(settings) if settings.identity_based else None
    try:
        store = TableClaimStore(await async_table_client(settings, "claims", credential=credential))
        try:
            yield store
        finally:
            await store.close()
    finally:
        if credential is not None:
            await credential.close()
