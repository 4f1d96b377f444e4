"""The emulated tenant's state and ARM's semantics over it (scopes, filters, merges, conflicts).

Everything here runs under one re-entrant lock, so each request sees and leaves a consistent tenant and
every write is atomic. Routes (``routes_*.py``) translate HTTP to these methods and back.
"""

from __future__ import annotations

from typing import Any

from remediate.emulator.snapshot import subscription_id
from remediate.emulator.state_common import (
    ArmError,
    AssignmentFilter,
    decode_token,
    encode_token,
    norm,
    parse_assignment_filter,
    parse_duration,
    parse_time,
)
from remediate.emulator.state_hsm import HsmState
from remediate.emulator.state_pim import PimState
from remediate.emulator.state_resource_graph import ResourceGraphState
from remediate.emulator.state_vaults import VaultState

__all__ = [
    "ArmError",
    "AssignmentFilter",
    "TenantState",
    "decode_token",
    "encode_token",
    "norm",
    "parse_assignment_filter",
    "parse_duration",
    "parse_time",
]


class TenantState(VaultState, PimState, ResourceGraphState, HsmState):
    """The tenant as it stands now, with ARM's rules for reading and changing it. Thread-safe."""

    # ---- the whole tenant -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The tenant now, in snapshot format (for ``--snapshot-out``)."""
        with self.lock:
            self._live()
            self.snap.vaults = list(self.vaults.values())
            self.snap.managed_hsms, self.snap.hsm_role_assignments, self.snap.hsm_role_definitions = \
                self.hsm_snapshot()
            return self.snap.to_dict()

    def subscriptions(self) -> list[str]:
        """Known subscription GUIDs."""
        return [subscription_id(s) for s in self.snap.subscriptions]
