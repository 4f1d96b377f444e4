"""Typed values for Azure Key Vault Managed HSM: the HSM as ARM describes it, its local RBAC scopes, assignments and
definitions as the data plane returns them, and what a write did. Pure: no I/O.

Local RBAC scopes (Microsoft Learn managed-hsm/access-control.md): ``/`` and ``/keys`` are HSM-level, ``/keys/<name>``
applies to every version of that key only. Role definitions live at ``/`` only (rbac.json 7.4: "Managed HSM only
supports '/'").
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from .catalog.hsm import HsmRoleDefinition, builtin_role, canonical_key_action, guid_of

__all__ = ["HsmAccess", "HsmLookup", "HsmRoleAssignment", "HsmRoleDefinition", "HsmSetting", "HsmWrite", "ManagedHsm",
           "assignment_name", "custom_role_name", "key_scope", "normalise_scope", "scopes_for"]

_KEY_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")   # Key Vault object names: 1-127 alphanumerics and dashes
ASSIGNMENT_NAMESPACE = uuid.UUID("6f1c7c3e-2c55-5d0c-9a57-6b5d4f0e4a11")
"""The uuid5 namespace of kv-remediate's HSM role assignment names (never change: revocation finds ours by it)."""


def key_scope(key_name: str) -> str:
    """``/keys/<name>``; a name that is not a Key Vault object name is a ValueError (it never reaches a URL)."""
    if not _KEY_NAME.fullmatch(key_name):   # fullmatch: '$' alone lets a trailing newline through
        raise ValueError(f"{key_name!r} is not a Managed HSM key name (1-127 letters, digits and dashes)")
    return f"/keys/{key_name}"


def normalise_scope(scope: str) -> str:
    """``/``, ``/keys`` or ``/keys/<name>`` from any spelling (``keys``, ``//keys/``, ``/Keys``); else ValueError."""
    s = "/" + "/".join(p for p in scope.strip().split("/") if p)
    match s.split("/")[1:] if s != "/" else []:
        case []:
            return "/"
        case [keys] if keys.lower() == "keys":
            return "/keys"
        case [keys, name] if keys.lower() == "keys":
            return key_scope(name)
    raise ValueError(f"{scope!r} is not a Managed HSM local RBAC scope ('/', '/keys' or '/keys/<name>')")


def scopes_for(key_name: str | None) -> tuple[str, ...]:
    """The scopes whose assignments apply to one key (or to the HSM's keys when no key is named). Listing at ``/``
    does not show key-level assignments (managed-hsm/role-management.md), so each is read."""
    return ("/", "/keys") if key_name is None else ("/", "/keys", key_scope(key_name))


def assignment_name(principal_id: str, scope: str, role_definition_id: str) -> str:
    """Our deterministic assignment name: uuid5 of principal + scope + role GUID (case-insensitive), so a retried or
    repeated grant writes the same assignment and revocation knows which ones are ours."""
    key = f"{principal_id.strip().lower()}|{normalise_scope(scope).lower()}|{guid_of(role_definition_id)}"
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, key))


def custom_role_name(data_actions: tuple[str, ...] | list[str]) -> str:
    """Our deterministic custom role GUID for exactly these data actions (order and case do not matter), so the
    same least-privilege role is defined once per HSM and found again."""
    key = "role|" + "|".join(sorted({(canonical_key_action(a) or a).strip().lower() for a in data_actions}))
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, key))


@dataclass(frozen=True)
class ManagedHsm:
    """A Managed HSM as ARM returns it (``az keyvault show --hsm-name``), reduced to what a diagnosis needs."""

    id: str
    name: str
    hsm_uri: str | None
    tenant_id: str | None = None
    location: str | None = None
    provisioning_state: str | None = None
    status_message: str | None = None
    activation_status: str | None = None        # securityDomainProperties.activationStatus ("Active", "NotActivated")
    initial_admin_object_ids: tuple[str, ...] = ()
    public_network_access: str | None = None
    network_default_action: str | None = None
    network_bypass: str | None = None
    ip_rules: tuple[str, ...] = ()
    virtual_network_rules: int = 0
    enable_purge_protection: bool | None = None

    @property
    def subscription_id(self) -> str:
        return self.id.split("/")[2]

    @property
    def resource_group(self) -> str:
        return self.id.split("/")[4]

    @property
    def host(self) -> str:
        """The lower-case host of ``hsmUri`` ('' when ARM gave none): where its data plane is."""
        return (urlsplit(self.hsm_uri or "").hostname or "").lower()

    @property
    def activated(self) -> bool | None:
        """Whether the security domain is activated (None when ARM did not say)."""
        return None if self.activation_status is None else self.activation_status.lower() == "active"


@dataclass(frozen=True)
class HsmLookup:
    """A Managed HSM found (or not) through ARM, and the subscriptions searched for it."""

    hsm: ManagedHsm | None
    searched: tuple[str, ...] = ()


@dataclass(frozen=True)
class HsmRoleAssignment:
    """One local role assignment as the HSM returns it."""

    id: str
    name: str
    scope: str
    role_definition_id: str
    principal_id: str

    @property
    def role_guid(self) -> str:
        return guid_of(self.role_definition_id)


@dataclass(frozen=True)
class HsmAccess:
    """The local RBAC an HSM holds for a question: every assignment at the scopes read (deduplicated by id), the
    custom definitions, and the built-in definitions as the HSM itself listed them (empty when it listed none)."""

    hsm: str
    scopes: tuple[str, ...]
    assignments: tuple[HsmRoleAssignment, ...]
    custom_definitions: tuple[HsmRoleDefinition, ...]
    builtin_definitions: tuple[HsmRoleDefinition, ...] = ()

    def for_principals(self, principal_ids: tuple[str, ...]) -> tuple[HsmRoleAssignment, ...]:
        """Assignments held by any of these principals (the caller and its groups)."""
        ids = {p.lower() for p in principal_ids}
        return tuple(a for a in self.assignments if a.principal_id.lower() in ids)

    def definition(self, role_definition_id: str) -> HsmRoleDefinition | None:
        """The definition an assignment names: what the HSM listed first, then the package's built-ins."""
        guid = guid_of(role_definition_id)
        for d in (*self.custom_definitions, *self.builtin_definitions):
            if d.name.lower() == guid:
                return d
        return builtin_role(guid)


@dataclass(frozen=True)
class HsmWrite:
    """What one write did: the assignment as read back (None after a delete), whether this call changed the HSM
    (False: it already was as wanted), and whether reading back confirmed it."""

    hsm: str
    scope: str
    name: str
    assignment: HsmRoleAssignment | None
    changed: bool
    verified: bool


ARM_SETTING = "AllowKeyManagementOperationsThroughARM"
"""The HSM data-plane setting that lets ARM (the portal, template deployments) manage keys on behalf of the user;
false by default ("Azure Managed HSM does not trust Azure Resource Manager by default", Microsoft Learn
managed-hsm/authorize-azure-resource-manager.md)."""


@dataclass(frozen=True)
class HsmSetting:
    """One HSM account setting as its data plane returned it (``GET /settings/{name}``: ``{"name", "value",
    "type": "boolean"}``), or why it could not be read (``value`` None, ``problem`` the reason)."""

    hsm: str
    name: str
    value: str | None = None
    setting_type: str | None = None
    problem: str | None = None

    @property
    def enabled(self) -> bool | None:
        """The boolean the HSM holds (None when unread or not a boolean's text)."""
        v = (self.value or "").strip().lower()
        return True if v == "true" else False if v == "false" else None
