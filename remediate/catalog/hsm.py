"""Managed HSM local RBAC as package data: the built-in local roles and the ``managedHsm`` key data actions.

Built by ``tools/build_hsm_catalog.py`` from ../shared/reference/managed-hsm/README.md (Microsoft Learn
managed-hsm/built-in-roles.md; the 7.4 rbac.json). The doc has known anomalies (each role's ``anomalies``: the
Crypto Auditor's ``keys/deletedKeys/delete``, the Crypto Officer's missing export row, actions a live HSM lists that
the doc does not). The HSM's own answer wins: role definitions listed at ``/`` (facts/hsm.py) replace these, which
are the fallback when the list cannot be read. Loaded once, read-only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

HSM_PREFIX = "Microsoft.KeyVault/managedHsm/"
BUILTIN_ID_PREFIX = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
"""How an HSM writes a built-in role's id (a live listing recorded in azure-sdk-for-js keyvault-admin
``recording_can_create_read_and_delete_role_assignments``: no leading slash)."""


@dataclass(frozen=True)
class HsmRoleDefinition:
    """A Managed HSM local role definition (built-in ``AKVBuiltInRole`` or ``CustomRole``), as the HSM returns it."""

    id: str
    name: str                      # the GUID
    role_name: str
    role_type: str                 # "AKVBuiltInRole" | "CustomRole"
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...] = ()
    assignable_scopes: tuple[str, ...] = ("/",)
    description: str = ""
    anomalies: tuple[str, ...] = ()  # where Microsoft's doc and a live HSM disagree (package data only)

    @property
    def builtin(self) -> bool:
        return self.role_type.lower() == "akvbuiltinrole"

    def grants(self, action: str) -> bool:
        """True when this role grants ``action`` (wildcards as ARM matches them; notDataActions subtract)."""
        return any(action_matches(p, action) for p in self.data_actions) and \
            not any(action_matches(p, action) for p in self.not_data_actions)


@dataclass(frozen=True)
class HsmDataAction:
    """One ``Microsoft.KeyVault/managedHsm/keys/...`` data action and its sensitivity tier (0 read .. 3 destroy)."""

    name: str
    tier: int


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath("data", "hsm_roles.json").read_text(encoding="utf-8"))
    return data


@lru_cache(maxsize=1)
def builtin_roles() -> tuple[HsmRoleDefinition, ...]:
    """The nine built-in local roles (package data, never fetched)."""
    data = _load()
    prefix = str(data["id_prefix"])
    return tuple(HsmRoleDefinition(
        id=prefix + r["name"], name=r["name"], role_name=r["roleName"], role_type=r["roleType"],
        data_actions=tuple(r["dataActions"]), not_data_actions=tuple(r["notDataActions"]),
        assignable_scopes=tuple(r["assignableScopes"]), anomalies=tuple(r.get("anomalies") or ()))
        for r in data["roles"])


@lru_cache(maxsize=1)
def _by_guid() -> dict[str, HsmRoleDefinition]:
    return {r.name.lower(): r for r in builtin_roles()}


def guid_of(role_definition_id: str) -> str:
    """The GUID at the end of a role definition id in any form (bare, ``Microsoft.KeyVault/providers/...``,
    ``/providers/...``), lower-cased."""
    return role_definition_id.strip().rstrip("/").rsplit("/", 1)[-1].lower()


def builtin_role(role_definition_id: str) -> HsmRoleDefinition | None:
    """A built-in local role by id in any form."""
    return _by_guid().get(guid_of(role_definition_id))


def builtin_role_by_name(role_name: str) -> HsmRoleDefinition | None:
    """A built-in local role by its display name (case-insensitive)."""
    return next((r for r in builtin_roles() if r.role_name.lower() == role_name.strip().lower()), None)


@lru_cache(maxsize=1)
def key_data_actions() -> tuple[HsmDataAction, ...]:
    """Every ``managedHsm`` key data action, with its tier."""
    return tuple(HsmDataAction(d["name"], int(d["tier"])) for d in _load()["key_data_actions"])


def canonical_key_action(action: str) -> str | None:
    """The published spelling of a managedHsm key data action (case-insensitive; bare ``keys/...`` accepted)."""
    a = action.strip().strip("'\"")
    if not a.lower().startswith(HSM_PREFIX.lower()):
        a = HSM_PREFIX + a.lstrip("/")
    return next((d.name for d in key_data_actions() if d.name.lower() == a.lower()), None)


def tier(action: str) -> int:
    """Sensitivity tier of a managedHsm data action (unknown actions: 2, change)."""
    name = canonical_key_action(action)
    return next((d.tier for d in key_data_actions() if d.name == name), 2)


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.IGNORECASE)


def action_matches(pattern: str, action: str) -> bool:
    """Case-insensitive action match; ``*`` matches any run of characters including ``/``."""
    return pattern.lower() == action.lower() if "*" not in pattern else _pattern(pattern).match(action) is not None


PRIVILEGED_TIER = 3
_RBAC_READS = frozenset(HSM_PREFIX.lower() + a for a in ("roleassignments/read/action", "roledefinitions/read/action"))


def action_weight(action: str) -> tuple[int, bool]:
    """(tier, privileged) of one local role data action. A catalogued ``keys/...`` action has its tier; reading the
    HSM's role assignments or definitions is tier 0 (it changes nothing); anything else (writing or deleting role
    assignments or definitions, the security domain, full-HSM backup and restore, a wildcard, an action the
    catalogue does not know) is privileged, tier 3: a holder of ``roleAssignments/write`` can make itself
    Administrator ("Assigning roles such as Managed HSM Crypto Officer or Managed HSM Crypto Policy Administrator
    grants broad permissions to manage role assignments, including self-assignment of the Managed HSM Administrator
    role", managed-hsm/access-control.md)."""
    key = canonical_key_action(action) if "*" not in action else None
    if key is not None:
        return tier(key), False
    if action.strip().lower() in _RBAC_READS:
        return 0, False
    return PRIVILEGED_TIER, True


def role_weight(data_actions: tuple[str, ...] | list[str]) -> tuple[int, bool]:
    """(highest tier, any privileged) over a local role's data actions; an empty role is privileged (unknown)."""
    weights = [action_weight(a) for a in data_actions]
    if not weights:
        return PRIVILEGED_TIER, True
    return max(t for t, _ in weights), any(p for _, p in weights)
