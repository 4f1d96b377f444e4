"""A grant on a single secret is seen (issue 18 item 4): assignments are asked for with ``atScope() and
assignedTo('{caller}')`` at the denied object's own scope, whose documented result is everything at or above it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from remediate.emulator import Emulator
from remediate.emulator.wire import Response
from remediate.facts.arm import ArmFacts
from remediate.intake import parse_inputs
from remediate.service import diagnose
from tests.support.emulator import ANA, KV_RBAC, SUB, small


class Recording(Emulator):
    """The emulator, keeping the role-assignment lists it was asked for (path, $filter)."""

    def __init__(self) -> None:
        super().__init__(small())
        self.lists: list[tuple[str, str]] = []

    def _dispatch(self, method: str, target: str, raw: bytes) -> Response:
        split = urllib.parse.urlsplit(target)
        if split.path.lower().endswith("/providers/microsoft.authorization/roleassignments"):
            q = dict(urllib.parse.parse_qsl(split.query))
            self.lists.append((urllib.parse.unquote(split.path), q.get("$filter", "")))
        return super()._dispatch(method, target, raw)


@pytest.fixture
def emu() -> Iterator[Recording]:
    e = Recording()
    e.start()
    try:
        yield e
    finally:
        e.stop()


def diagnose_get(emu: Emulator, secret: str) -> dict[str, Any]:
    inputs = [("runbook", json.dumps({"principal_id": ANA, "vault": KV_RBAC, "operation": "SecretGet",
                                      "object": f"secrets/{secret}"}).encode())]

    async def go() -> Any:
        async with ArmFacts(emu.async_credential(), [SUB], arm_url=emu.base_url, graph_url=emu.base_url,
                            transport_factory=emu.async_transport, retry_total=0) as facts:
            return await diagnose(parse_inputs(inputs).denials, facts)
    (finding,) = asyncio.run(go()).findings
    out: dict[str, Any] = finding.to_dict()
    return out


def test_grant_on_the_secret_itself_is_seen(emu: Recording) -> None:
    # given ana holds Key Vault Secrets User on kv-rbac/secrets/db-password only, when a get of it is denied
    f = diagnose_get(emu, "db-password")
    # then the object-scoped grant is found (no vault-wide grant is proposed)
    assert f["cause"] == "ALREADY_GRANTED", f["cause"]
    # and it was asked for with the documented query at the secret's own scope
    assert emu.lists == [(f"{KV_RBAC}/secrets/db-password/providers/Microsoft.Authorization/roleAssignments",
                          f"atScope() and assignedTo('{ANA}')")]
    assert emu.unrouted == []


def test_grant_on_another_secret_does_not_count(emu: Recording) -> None:
    f = diagnose_get(emu, "api-key")
    assert f["cause"] == "MISSING_ROLE_ASSIGNMENT" and f["plan"]["role_name"] == "Key Vault Secrets User"
    assert emu.lists == [(f"{KV_RBAC}/secrets/api-key/providers/Microsoft.Authorization/roleAssignments",
                          f"atScope() and assignedTo('{ANA}')")]
