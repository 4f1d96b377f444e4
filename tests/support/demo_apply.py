"""The demo tenant for the apply tests (no tests here): its vaults, deterministic principal ids, a denial, an
operator's apply context on SQLite, and one remediate run on the emulator that returns what the tenant holds after."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from remediate.apply import ApplyContext
from remediate.backends import EmulatorRun
from remediate.guard import policy_from_dict
from remediate.model import Denial, ObjectRef, Principal, Proof, VaultRef
from remediate.service import remediate
from remediate.store.claims import SqliteClaimStore
from remediate.store.grants import SqliteGrantStore

TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
SUB = TENANT["subscriptions"][0]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def gid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def vault(name: str) -> dict[str, Any]:
    return next(v for v in TENANT["vaults"] if v["name"] == name)


PAY, LEGACY = vault("kv-payments"), vault("kv-legacy")
APPLY = {"mode": "apply", "scopes": [f"/subscriptions/{SUB}"], "principal_types": ["ServicePrincipal", "User"],
         "max_grants_per_hour": 1000}


def denial(oid: str, vault_doc: dict[str, Any], op: str = "SecretGet", obj: str = "db", kind: str = "app") -> Denial:
    return Denial(source="test", status=403, principal=Principal(object_id=oid, kind=kind),  # type: ignore[arg-type]
                  vault=VaultRef(vault_doc["name"], vault_doc["id"]), operation=op, object=ObjectRef("secrets", obj))


def ctx(tmp_path: Path, policy: dict[str, Any] | None = None, now: datetime = NOW, **kw: Any) -> ApplyContext:
    """An operator's explicit apply (like the CLI's --apply), unless the test passes its own proofs."""
    db = tmp_path / "state.db"
    kw.setdefault("operator", Proof("operator", "test"))
    return ApplyContext(policy=policy_from_dict(policy or APPLY), grants=SqliteGrantStore(db),
                        slots=SqliteClaimStore(db), now=now, actor="test", **kw)


def run(tenant: dict[str, Any], denials: list[Denial], c: ApplyContext) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                                                dict[str, Any]]:
    async def go() -> Any:
        with EmulatorRun(tenant) as emu:
            async with emu.facts() as facts:
                result = await remediate(denials, facts, c)
            return result, emu.emulator.tenant()
    result, after = asyncio.run(go())
    return [f.to_dict() for f in result.findings], result.stats.to_dict(), after


def entry_of(tenant: dict[str, Any], vault_name: str, oid: str) -> dict[str, Any] | None:
    v = next(v for v in tenant["vaults"] if v["name"] == vault_name)
    return next((e for e in v["properties"]["accessPolicies"] if e["objectId"].lower() == oid.lower()), None)
