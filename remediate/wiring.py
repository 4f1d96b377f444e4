"""Builds the fact source for a run: live Azure (DefaultAzureCredential) or a snapshot served by the bundled
emulator. The only module besides the tests that imports the emulator."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .clouds import Cloud, cloud_from_env
from .facts.arm import ArmFacts


def subscriptions_from_env(explicit: Sequence[str] | None = None) -> tuple[str, ...]:
    """``--subscription`` values, else AZURE_SUBSCRIPTION_IDS (comma-separated); empty: every subscription the
    identity can read (Azure Resource Graph finds vaults by name without a list)."""
    if explicit:
        return tuple(explicit)
    raw = os.environ.get("AZURE_SUBSCRIPTION_IDS", "")
    return tuple(s.strip() for s in raw.split(",") if s.strip())


class EmulatorRun:
    """A started emulator serving one snapshot; kept open for the whole run (diagnose, then apply)."""

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
        emu = self.emulator
        kw.setdefault("index_scope", self.index_scope)
        return ArmFacts(emu.async_credential(), self.snapshot.subscriptions, arm_url=emu.base_url,
                        graph_url=emu.base_url, connection_verify=emu.ca_file,
                        transport_factory=emu.async_transport, **kw)


@asynccontextmanager
async def live_facts(subscriptions: Sequence[str], cloud: Cloud | None = None) -> AsyncIterator[ArmFacts]:
    """Facts from Azure with the function's own identity (DefaultAzureCredential), in the cloud ``AZURE_CLOUD``
    and the endpoint settings name (clouds.py). ``subscriptions`` is optional: a filter for Resource Graph and the
    list the ARM fallback searches."""
    from .credentials import async_default_credential

    cloud = cloud or cloud_from_env(os.environ)
    credential = async_default_credential()
    try:
        async with ArmFacts(credential, subscriptions, cloud=cloud) as facts:
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

