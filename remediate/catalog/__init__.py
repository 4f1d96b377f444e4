"""Permission knowledge as data: operations, data actions, access-policy permissions, built-in roles, tiers.

Built from Microsoft's published references by ``tools/build_catalog.py``; loaded once, read-only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from importlib import resources
from typing import Any

KV_PREFIX = "Microsoft.KeyVault/vaults/"
OBJECT_KINDS = ("keys", "secrets", "certificates", "storage")


@dataclass(frozen=True)
class Operation:
    """One Key Vault data-plane operation: log name, REST call, access-policy permission, data actions."""

    name: str
    method: str
    path: str
    object_kind: str
    access_policy: dict[str, tuple[str, ...]]
    data_actions: tuple[str, ...]
    basis: str


@dataclass(frozen=True)
class RoleDefinition:
    """A role definition as ARM returns it (built-in or custom), reduced to what access decisions need."""

    id: str
    name: str
    role_name: str
    role_type: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]
    assignable_scopes: tuple[str, ...] = ("/",)
    description: str = ""


def _load(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def operations() -> tuple[Operation, ...]:
    """Every known operation, including REST-only ones under their SDK alias (e.g. ``release``)."""
    out = []
    for o in _load("operations.json"):
        out.append(Operation(
            name=o["operation"] or o["alias"], method=o["method"], path=o["path"], object_kind=o["object_kind"],
            access_policy={k: tuple(v) for k, v in o["access_policy"].items()},
            data_actions=tuple(o["data_actions"]), basis=o["basis"]))
    return tuple(out)


@lru_cache(maxsize=1)
def _by_name() -> dict[str, Operation]:
    return {o.name.lower(): o for o in operations()}


def operation(name: str | None) -> Operation | None:
    """The operation with this diagnostic-log OperationName (case-insensitive), if known."""
    return _by_name().get(name.lower()) if name else None


def nearest_operations(name: str, limit: int = 3) -> list[str]:
    """Operation names close to an unknown ``name``, best first (``decrypt`` -> ``KeyDecrypt``): names that end
    with or contain it, then difflib's close matches; for "did you mean" in an error, never to pick one."""
    want = "".join(ch for ch in name.lower() if ch.isalnum())
    if not want:
        return []
    names = {o.name.lower(): o.name for o in operations()}
    ends = sorted((n for n in names if n.endswith(want)), key=len)
    contains = sorted((n for n in names if want in n and n not in ends), key=len)
    close = get_close_matches(want, list(names), n=limit, cutoff=0.6)
    out: list[str] = []
    for n in (*ends, *contains, *close):
        if names[n] not in out:
            out.append(names[n])
    return out[:limit]


@lru_cache(maxsize=1)
def _by_action() -> dict[str, list[Operation]]:
    idx: dict[str, list[Operation]] = {}
    for o in operations():
        for a in o.data_actions:
            idx.setdefault(a.lower(), []).append(o)
    return idx


def operations_for_action(action: str) -> list[Operation]:
    """Operations whose RBAC check is this data action."""
    return list(_by_action().get(action.lower(), []))


@lru_cache(maxsize=1)
def _permissions() -> dict[str, Any]:
    data: dict[str, Any] = _load("permissions.json")
    return data


def canonical_permission(kind: str, perm: str) -> str | None:
    """The ARM spelling of an access-policy permission (``wrapkey`` -> ``wrapKey``), or None if unknown."""
    for p in _permissions()["canonical"].get(kind, []):
        if p.lower() == perm.lower():
            return str(p)
    return None


def permission_data_actions(kind: str, perm: str) -> tuple[str, ...]:
    """Data actions Microsoft maps an access-policy permission to."""
    for row in _permissions()["mapping"]:
        if row["kind"] == kind and row["permission"].lower() == perm.lower():
            return tuple(row["data_actions"])
    return ()


def permissions_for_action(action: str) -> dict[str, tuple[str, ...]]:
    """Access-policy permissions that map to a data action (e.g. ``keys/read`` -> keys get)."""
    out: dict[str, list[str]] = {}
    for row in _permissions()["mapping"]:
        if any(a.lower() == action.lower() for a in row["data_actions"]):
            out.setdefault(row["kind"], []).append(row["permission"])
    return {k: tuple(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def data_actions() -> dict[str, int]:
    """Every Key Vault vault data action (canonical case) -> sensitivity tier."""
    return {d["name"]: int(d["tier"]) for d in _load("data_actions.json")}


@lru_cache(maxsize=1)
def _canonical_action() -> dict[str, str]:
    return {a.lower(): a for a in data_actions()}


def canonical_action(action: str) -> str | None:
    """The published spelling of a data action, or None when it is not a Key Vault data action."""
    return _canonical_action().get(action.strip().strip("'\"").lower())


def tier(action: str) -> int:
    """Sensitivity tier of one data action (causes.md): 0 read metadata, 1 use, 2 change, 3 destroy."""
    known = data_actions().get(canonical_action(action) or "")
    if known is not None:
        return known
    a = action.lower()
    if a.endswith(("/delete", "/purge/action")):
        return 3
    if a.endswith("/read"):
        return 0
    return 2


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.IGNORECASE)


def action_matches(pattern: str, action: str) -> bool:
    """ARM action matching: case-insensitive, ``*`` matches any run of characters including ``/``."""
    if "*" not in pattern:
        return pattern.lower() == action.lower()
    return _pattern(pattern).match(action) is not None


def expand(patterns: tuple[str, ...] | list[str], excluded: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """Key Vault data actions a list of (wildcard) patterns grants, minus the excluded patterns."""
    return frozenset(a for a in data_actions()
                     if any(action_matches(p, a) for p in patterns)
                     and not any(action_matches(n, a) for n in excluded))


def _role(r: dict[str, Any]) -> RoleDefinition:
    perms = r.get("permissions") or []
    def col(key: str) -> tuple[str, ...]:
        return tuple(x for p in perms for x in (p.get(key) or []))
    return RoleDefinition(
        id=r["id"], name=r["name"], role_name=r["roleName"], role_type=r.get("roleType", "BuiltInRole"),
        actions=col("actions"), not_actions=col("notActions"), data_actions=col("dataActions"),
        not_data_actions=col("notDataActions"), assignable_scopes=tuple(r.get("assignableScopes") or ("/",)),
        description=r.get("description") or "")


@lru_cache(maxsize=1)
def builtin_roles() -> tuple[RoleDefinition, ...]:
    """The built-in role definitions shipped as package data (never fetched from Azure)."""
    return tuple(_role(r) for r in _load("roles.json"))


@lru_cache(maxsize=1)
def _builtin_by_guid() -> dict[str, RoleDefinition]:
    return {r.name.lower(): r for r in builtin_roles()}


def builtin_role(role_definition_id: str) -> RoleDefinition | None:
    """A built-in role by id in any form (bare GUID, provider path or subscription-scoped path)."""
    guid = role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return _builtin_by_guid().get(guid)


def builtin_role_by_name(role_name: str) -> RoleDefinition | None:
    """A built-in role by its display name (case-insensitive)."""
    for r in builtin_roles():
        if r.role_name.lower() == role_name.lower():
            return r
    return None
