"""The bundled HTTPS ARM emulator (``--snapshot``, ``demo`` and the tests): serves a tenant snapshot with ARM's,
Microsoft Graph's and Log Analytics' real shapes to the real SDK clients, with latency and fault injection."""

from __future__ import annotations

from remediate.emulator.credential import AsyncFakeCredential, FakeCredential
from remediate.emulator.server import Emulator
from remediate.emulator.snapshot import EmulatorOptions, Faults, Snapshot, load_snapshot

__all__ = [
           "AsyncFakeCredential",
           "Emulator",
           "EmulatorOptions",
           "FakeCredential",
           "Faults",
           "Snapshot",
           "load_snapshot",
]
