"""Canonical Azure resource ids for the places a grant may land: a vault, or one key, secret or certificate in it.

Pure value types. A grant's scope is accepted only when it parses here exactly, segment by segment: a real
subscription GUID, a resource group name by ARM's rule, a vault name by Key Vault's rule, and an object name by
Key Vault's object rule. Nothing here decodes: an encoded ``%2F..`` or a backslash is simply not a valid name, so
no HTTP client can later turn the string into another path.

Rules (Microsoft Learn, "Naming rules and restrictions for Azure resources"):
- resource group: 1-90 characters, alphanumerics (unicode letters allowed), underscores, parentheses, hyphens,
  periods, not ending in a period;
- Key Vault vault: 3-24 characters, alphanumerics and hyphens, starting with a letter, ending with a letter or
  digit, no consecutive hyphens;
- Key Vault keys, secrets, certificates: 1-127 characters, ``^[0-9a-zA-Z-]+$`` (Key Vault's object name rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OBJECT_KINDS = ("keys", "secrets", "certificates")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
GUID_PATTERN = f"^{_GUID.pattern}$"
"""A whole GUID as a JSON Schema ``pattern`` (the schemas' GUID type: ``msgspec.Meta(pattern=GUID_PATTERN)``)."""
# \w without re.ASCII: unicode letters and digits and underscore; never '/', '%', '\\', '.' at the end, or controls.
_RESOURCE_GROUP = re.compile(r"[-\w.()]{0,89}[-\w()]")
_VAULT_NAME = re.compile(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]")
OBJECT_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9a-fA-F]{32}")


def is_guid(text: str) -> bool:
    """A well-formed GUID (any case)."""
    return _GUID.fullmatch(text) is not None


def is_vault_name(text: str) -> bool:
    """A name Key Vault accepts for a vault."""
    return _VAULT_NAME.fullmatch(text) is not None


def is_version(text: str) -> bool:
    """An object version as Key Vault issues them (32 hex digits)."""
    return _VERSION.fullmatch(text) is not None


# Entra ID user principal names: a user name of letters, digits and ' . - _ ! # ^ ~ (and the leading $ Graph's
# user-get page documents), not ending in '.', then '@' and a domain (learn.microsoft.com/entra/identity/
# authentication/concept-password-ban-bad-combined-policy, "UserPrincipalName"); a guest's #EXT# fits.
_UPN = re.compile(r"[A-Za-z0-9'_!#^~$-](?:[A-Za-z0-9'._!#^~$-]{0,111}[A-Za-z0-9'_!#^~$-])?"
                  r"@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def is_upn(text: str) -> bool:
    """A user principal name Entra ID can hold: nothing that could reach another Graph route (/, ?, %, quotes)."""
    return _UPN.fullmatch(text) is not None


def is_object_name(text: str) -> bool:
    """A name Key Vault accepts for a key, secret or certificate."""
    return OBJECT_NAME.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class VaultId:
    """``/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.KeyVault/vaults/{n}``, validated."""

    subscription: str
    resource_group: str
    name: str

    def __str__(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{self.name}")


@dataclass(frozen=True, slots=True)
class GrantScope:
    """Where a grant lands: the vault itself, or one object in it (``kind``/``name`` both set)."""

    vault: VaultId
    kind: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        return str(self.vault) if self.kind is None else f"{self.vault}/{self.kind}/{self.name}"


# Segments of a vault id split on "/": "", "subscriptions", {sub}, "resourceGroups", {rg}, "providers",
# "Microsoft.KeyVault", "vaults" (or "managedHSMs"), {name}; an object scope adds {kind} and {name}.
VAULT_ID_SEGMENTS = 9
OBJECT_SCOPE_SEGMENTS = VAULT_ID_SEGMENTS + 2


def parse_vault_id(text: str) -> VaultId | None:
    """The vault id when ``text`` is exactly one (no trailing path, no empty or dot segments), else None."""
    parts = text.split("/")
    if len(parts) != VAULT_ID_SEGMENTS:
        return None
    return _vault(parts)


def _vault(parts: list[str]) -> VaultId | None:
    empty, subs, sub, rgs, rg, providers, namespace, vaults, name = parts[:9]
    if (empty or subs.lower() != "subscriptions" or rgs.lower() != "resourcegroups" or providers.lower() != "providers"
            or namespace.lower() != "microsoft.keyvault" or vaults.lower() != "vaults"):
        return None
    if not is_guid(sub) or not _RESOURCE_GROUP.fullmatch(rg) or not _VAULT_NAME.fullmatch(name):
        return None
    return VaultId(sub, rg, name)


def parse_grant_scope(text: str) -> GrantScope | None:
    """A vault id, or a vault id followed by ``/{keys|secrets|certificates}/{valid name}``; anything else None."""
    parts = text.split("/")
    if len(parts) not in (VAULT_ID_SEGMENTS, OBJECT_SCOPE_SEGMENTS):
        return None
    vault = _vault(parts)
    if vault is None:
        return None
    if len(parts) == VAULT_ID_SEGMENTS:
        return GrantScope(vault)
    kind, name = parts[9], parts[10]
    if kind not in OBJECT_KINDS or not is_object_name(name):
        return None
    return GrantScope(vault, kind, name)


def segments(resource_id: str) -> tuple[str, ...]:
    """The id's segments, lower-case, without empty ones (ARM compares ids case-insensitively)."""
    return tuple(s.lower() for s in resource_id.split("/") if s)


def within(resource_id: str, prefix: str) -> bool:
    """Whether ``resource_id`` is ``prefix`` or lies below it, compared by whole segments (never as text)."""
    inner, outer = segments(resource_id), segments(prefix)
    return bool(outer) and inner[:len(outer)] == outer


@dataclass(frozen=True, slots=True)
class HsmId:
    """``/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.KeyVault/managedHSMs/{n}``, validated (Managed
    HSM pool names follow the vault rule: 3-24 alphanumerics and hyphens, a letter first)."""

    subscription: str
    resource_group: str
    name: str

    def __str__(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.KeyVault/managedHSMs/{self.name}")


def parse_hsm_id(text: str) -> HsmId | None:
    """The Managed HSM id when ``text`` is exactly one, else None (same segment rules as :func:`parse_vault_id`)."""
    parts = text.split("/")
    if len(parts) != VAULT_ID_SEGMENTS or parts[7].lower() != "managedhsms":
        return None
    vault = _vault([*parts[:7], "vaults", parts[8]])
    return HsmId(vault.subscription, vault.resource_group, vault.name) if vault else None


@dataclass(frozen=True, slots=True)
class HsmGrantScope:
    """Where a Managed HSM grant lands: one HSM (its ARM id) and a local RBAC scope under it, ``/keys`` or
    ``/keys/{name}`` (never ``/``: an assignment there also covers the HSM's role assignments and definitions)."""

    hsm: HsmId
    local: str
    kind: None = None      # the policy's object_scope rule is for vault objects; an HSM key scope is the narrow one

    def __str__(self) -> str:
        return str(self.hsm)

