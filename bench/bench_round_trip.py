"""One cold diagnosis in as few round trips as the facts allow (issue 16, "One round trip"): requests and time at
100 ms injected emulator latency, vault id known, for the shapes whose reads used to run one after another.

- groups needed: an RBAC vault with a deny assignment naming a group, the caller's type given: the groups are
  read once the vault and deny assignments show they could matter (target <= 4 requests, <= 250 ms);
- groups needed: the second round trip stays (the groups are known to matter only once the vault and deny
  assignments are in; reading them always would add a Graph request to every diagnosis);
- type unknown, groups not needed: the caller's type (Graph) is read speculatively with the ARM reads (was read
  after them: two round trips, now one);
- custom role + groups needed: the role definition and the groups are read together once the assignments are in
  (were read one after the other: three round trips, now two);
- access-policy vault: type and groups (both Graph) together once the vault shows its model and entries.

Each run starts its own emulator (cold caches); the figure is the median of five runs after one warm-up.
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import uuid
from importlib import resources
from typing import Any

from remediate.backends import EmulatorRun
from remediate.model import Denial, ObjectRef, Principal, PrincipalKind, VaultRef
from remediate.service import diagnose

NS = uuid.UUID("0f5a6c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
TENANT: dict[str, Any] = json.loads(resources.files("remediate").joinpath("demo", "tenant.json").read_text())
SUB = TENANT["subscriptions"][0]
PAY = next(v for v in TENANT["vaults"] if v["name"] == "kv-payments")
LEGACY = next(v for v in TENANT["vaults"] if v["name"] == "kv-legacy")
CUSTOM = "cccccccc-0000-4000-8000-000000000001"
RUNS = 5


def gid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def tenant(*, custom_role: bool) -> dict[str, Any]:
    """The demo tenant, plus a deny assignment on kv-payments naming a group (so the caller's groups could
    matter) and, optionally, a custom role the caller holds there."""
    t = copy.deepcopy(TENANT)
    group = gid("bench-deny-group")
    t["deny_assignments"].append({
        "id": f"{PAY['id']}/providers/Microsoft.Authorization/denyAssignments/{gid('bench-deny')}",
        "name": gid("bench-deny"), "type": "Microsoft.Authorization/denyAssignments",
        "properties": {"denyAssignmentName": "bench-no-key-purge", "description": "bench",
                       "permissions": [{"actions": [], "notActions": [], "notDataActions": [],
                                        "dataActions": ["Microsoft.KeyVault/vaults/keys/purge/action"]}],
                       "scope": PAY["id"], "doNotApplyToChildScopes": False,
                       "principals": [{"id": group, "type": "Group"}], "excludePrincipals": [],
                       "isSystemProtected": False}})
    if custom_role:
        role_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM}"
        t["role_definitions"].append({
            "id": role_id, "name": CUSTOM, "type": "Microsoft.Authorization/roleDefinitions",
            "roleName": "Bench Secret Lister", "roleType": "CustomRole", "description": "bench",
            "assignableScopes": [f"/subscriptions/{SUB}"],
            "permissions": [{"actions": [], "notActions": [], "notDataActions": [],
                             "dataActions": ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"]}]})
        t["role_assignments"].append({
            "id": f"{PAY['id']}/providers/Microsoft.Authorization/roleAssignments/{gid('bench-ra')}",
            "name": gid("bench-ra"), "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"scope": PAY["id"], "roleDefinitionId": role_id, "principalId": gid("app-orders"),
                           "principalType": "ServicePrincipal", "condition": None, "conditionVersion": None}})
    t["emulator"] = {"latency_ms": 100}
    return t


def denial(vault: dict[str, Any], kind: PrincipalKind | None) -> Denial:
    return Denial(source="bench", status=403, principal=Principal(object_id=gid("app-orders"), kind=kind),
                  vault=VaultRef(vault["name"], vault["id"]), operation="SecretGet",
                  object=ObjectRef("secrets", "db-password"))


def cold(snapshot: dict[str, Any], d: Denial) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        with EmulatorRun(snapshot) as emu:
            async with emu.facts() as facts:
                doc: dict[str, Any] = (await diagnose([d], facts)).to_dict()
                return doc
    return asyncio.run(go())


def measure(label: str, snapshot: dict[str, Any], d: Denial, target: str = "") -> None:
    cold(snapshot, d)   # warm-up: imports, TLS contexts
    runs = [cold(snapshot, d) for _ in range(RUNS)]
    stats = runs[0]["stats"]
    ms = statistics.median(r["stats"]["elapsed_ms"] for r in runs)
    print(f"{label}: {stats['arm_requests']} requests {stats['requests_by_api']}, median {ms:.0f} ms "
          f"({runs[0]['findings'][0]['cause']}){target}")


def main() -> None:
    plain, custom = tenant(custom_role=False), tenant(custom_role=True)
    demo = dict(copy.deepcopy(TENANT), emulator={"latency_ms": 100})
    measure("cold diagnosis, groups needed, vault id known, type given", plain, denial(PAY, "app"),
            " (target <= 4 requests, <= 250 ms)")
    measure("cold diagnosis, type unknown, groups not needed, vault id known", demo, denial(PAY, None))
    measure("cold diagnosis, custom role + groups needed, vault id known", custom, denial(PAY, "app"))
    measure("cold diagnosis, access-policy vault (type and groups needed), vault id known", plain,
            denial(LEGACY, "app"))


if __name__ == "__main__":
    main()
