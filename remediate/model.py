"""The typed core vocabulary: what a denial says, and (later in the flow) what we found and plan.

Frozen dataclasses with ``to_dict`` producing exactly the JSON of ``spec/cli.md`` (schema version 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from .armid import is_guid, is_object_name, is_upn, is_vault_name, is_version, parse_hsm_id, parse_vault_id
from .catalog import RoleDefinition
from .evidence import NO_DETAIL, DecisionDetail, Evidence
from .outcome import ApplyOutcome

if TYPE_CHECKING:
    from .hsm_model import HsmAccess, HsmSetting, ManagedHsm

# The longest user principal name kept from an input (the same 256-character bound intake puts on every id).
# Where an ARM id split on "/" holds the subscription and the resource group:
# "/subscriptions/{sub}/resourceGroups/{rg}".
_SUBSCRIPTION_AT = 2
_RESOURCE_GROUP_AT = 4

PrincipalKind = Literal["app", "user"]


class Cause(StrEnum):
    """Why a request was denied: the stable vocabulary of ``causes.md`` (its wording lives in catalog/causes.py).

    A StrEnum, so the JSON, the store and every comparison see the plain code."""

    AUTH_CHALLENGE = "AUTH_CHALLENGE"
    AUTH_FAILED = "AUTH_FAILED"
    THROTTLED = "THROTTLED"
    NETWORK_BLOCKED = "NETWORK_BLOCKED"
    TRUSTED_SERVICE_DENIED = "TRUSTED_SERVICE_DENIED"
    KEY_OPERATION_NOT_PERMITTED = "KEY_OPERATION_NOT_PERMITTED"
    OBJECT_DISABLED = "OBJECT_DISABLED"
    COMPOUND_IDENTITY_REQUIRED = "COMPOUND_IDENTITY_REQUIRED"
    PRINCIPAL_NOT_IDENTIFIED = "PRINCIPAL_NOT_IDENTIFIED"
    VAULT_NOT_FOUND = "VAULT_NOT_FOUND"
    DENY_ASSIGNMENT = "DENY_ASSIGNMENT"
    CONDITION_NOT_MET = "CONDITION_NOT_MET"
    ALREADY_GRANTED = "ALREADY_GRANTED"
    WRONG_PERMISSION_MODEL = "WRONG_PERMISSION_MODEL"
    MISSING_ROLE_ASSIGNMENT = "MISSING_ROLE_ASSIGNMENT"
    MISSING_ACCESS_POLICY = "MISSING_ACCESS_POLICY"
    HSM_NOT_ACTIVATED = "HSM_NOT_ACTIVATED"
    HSM_ARM_NOT_TRUSTED = "HSM_ARM_NOT_TRUSTED"
    UNKNOWN = "UNKNOWN"


# The causes a grant fixes (and so the only ones that get a plan): defined here once.
GRANT_CAUSES = frozenset({Cause.MISSING_ROLE_ASSIGNMENT, Cause.MISSING_ACCESS_POLICY, Cause.WRONG_PERMISSION_MODEL})
# The causes the input alone decides (status, or the service's own words), before any fact is read.
INPUT_CAUSES = frozenset({Cause.AUTH_CHALLENGE, Cause.AUTH_FAILED, Cause.THROTTLED, Cause.NETWORK_BLOCKED,
                          Cause.TRUSTED_SERVICE_DENIED, Cause.KEY_OPERATION_NOT_PERMITTED, Cause.OBJECT_DISABLED,
                          Cause.COMPOUND_IDENTITY_REQUIRED, Cause.PRINCIPAL_NOT_IDENTIFIED})
ProofKind = Literal["audit_log", "approval", "operator"]


class Signal(StrEnum):
    """What the input itself says about a denial, before any fact is read.

    Intake records these (from Key Vault's own words and the audit row's columns); only ``decide.cause_hint``
    maps them, with the status and the caller, to a Cause. Stable: they travel in the denial JSON and queue
    messages as their plain values."""

    THROTTLED = "throttled"                            # Key Vault's ``Throttled`` code
    AUTH_CHALLENGE = "auth_challenge"                  # AKV10000, "missing a Bearer" token
    NETWORK = "network"                                # firewall, private link, network security perimeter text
    ADDRESS_NOT_AUTHORIZED = "address_not_authorized"  # the audit row's own ``IsAddressAuthorized`` false
    FIRST_PARTY = "first_party"                        # "Access denied to first party service"
    KEY_OPERATION = "key_operation"                    # KeyOperationForbidden, "is not permitted on this key"
    DISABLED = "disabled"                              # SecretDisabled, "not allowed on a disabled" object
    ON_BEHALF_OF = "on_behalf_of"                      # on-behalf-of / compound identity text
    STATUS_ONLY = "status_only"                        # the input carries only a status (a metric alert)
    RELAYED = "relayed"                                # a platform's own report of a refusal (App Service reference
                                                       # status, a connector's message): not Key Vault's status/text
    HSM_ARM_PATH = "hsm_arm_path"                      # a Managed HSM key reached through ARM (an ARM key resource id
                                                       # under managedHSMs, an ARM keys/read|write operation, the
                                                       # setting's name): where to look, never what the setting is


DENIALS_SCHEMA = "kv-remediate/denials@1"
DIAGNOSIS_SCHEMA = "kv-remediate/diagnosis@1"


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: ids are validated GUIDs or None, never partial or masked values."""

    object_id: str | None = None
    app_id: str | None = None
    tenant_id: str | None = None
    upn: str | None = None
    kind: PrincipalKind | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def known(self) -> bool:
        return bool(self.object_id or self.app_id or self.upn)


VaultKind = Literal["vault", "managed_hsm"]
#: A Managed HSM local RBAC scope: ``/``, ``/keys``, ``/keys/NAME`` (what an HSM refusal names after "on").
HSM_SCOPE = re.compile(r"/(?:[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_-]{1,127}){0,2})?")


@dataclass(frozen=True, slots=True)
class VaultRef:
    """The vault as the input names it: a name, a resource id, or both (original case kept).

    ``kind`` is ``vault`` or ``managed_hsm`` (a Managed HSM's local RBAC refusal); ``scope`` is the HSM's local
    scope the refusal names (``/``, ``/keys``, ``/keys/NAME``). Both appear in the JSON only for a Managed HSM:
    absent means a vault (the spec's shape)."""

    name: str | None = None
    resource_id: str | None = None
    kind: VaultKind = "vault"
    scope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "managed_hsm":
            return {"name": self.name, "resource_id": self.resource_id, "kind": self.kind, "scope": self.scope}
        return {"name": self.name, "resource_id": self.resource_id}

    @property
    def key(self) -> str | None:
        """Case-insensitive identity for comparisons and caching."""
        if self.resource_id:
            return self.resource_id.lower()
        return self.name.lower() if self.name else None


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A vault object: ``kind`` is keys, secrets, certificates or storage."""

    kind: str
    name: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version}


@dataclass(frozen=True, slots=True)
class Denial:
    """One denied (401/403/429) Key Vault request, as much as the input tells; unknowns are None."""

    source: str
    status: int | None = None
    error_code: str | None = None
    inner_code: str | None = None
    principal: Principal = field(default_factory=Principal)
    vault: VaultRef = field(default_factory=VaultRef)
    operation: str | None = None
    data_action: str | None = None
    access_policy_permission: dict[str, tuple[str, ...]] | None = None
    object: ObjectRef | None = None
    caller_ip: str | None = None
    time: str | None = None
    correlation_id: str | None = None
    message: str | None = None
    signals: frozenset[Signal] = frozenset()
    alert_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "signals":  # the spec's cause_hint in its place, then the signals it was decided from
                out["cause_hint"] = self.cause_hint
                out["signals"] = sorted(str(s) for s in self.signals)
            else:
                out[f.name] = _plain(getattr(self, f.name))
        if self.access_policy_permission is not None:
            out["access_policy_permission"] = {k: list(v) for k, v in self.access_policy_permission.items()}
        return out

    @property
    def cause_hint(self) -> str | None:
        """The cause the input alone decides (spec/cli.md ``cause_hint``), as ``decide.cause_hint`` maps it."""
        from .decide import cause_hint  # the one mapping of signals to causes; decide is pure and imports model

        hint = cause_hint(self)
        return str(hint) if hint is not None else None

    def with_(self, **changes: Any) -> Denial:
        return replace(self, **changes)

    def canonical(self) -> Denial:
        """This denial with every id and name that is not of Azure's own shape made unknown (None).

        Intake already validates; the core applies this again at its door (``service.diagnose``), so a denial
        from any entry point (queue message, runbook, a future caller) can only point at GUID principals, real
        vault ids and valid object names: nothing crafted reaches an OData filter, a URL or a plan.
        """
        p = self.principal

        def gid(v: str | None) -> str | None:
            return v.lower() if v and is_guid(v) and v.strip("0-") else None

        principal = Principal(object_id=gid(p.object_id), app_id=gid(p.app_id), tenant_id=gid(p.tenant_id),
                              upn=p.upn if p.upn and is_upn(p.upn) else None,
                              kind=p.kind if p.kind in ("app", "user") else None)
        hsm = self.vault.kind == "managed_hsm"
        parse_id = parse_hsm_id if hsm else parse_vault_id
        rid = parse_id(self.vault.resource_id) if self.vault.resource_id else None
        name = self.vault.name if self.vault.name and is_vault_name(self.vault.name) else None
        if rid is not None and name is not None and rid.name.lower() != name.lower():
            rid = None     # the two disagree: keep the name, which is looked up in ARM
        obj = self.object
        if obj is not None:
            obj = None if obj.kind not in PERMISSION_KINDS else ObjectRef(
                obj.kind, obj.name if obj.name and is_object_name(obj.name) else None,
                obj.version.lower() if obj.version and is_version(obj.version) else None)
        v = self.vault
        vault = VaultRef(name, str(rid) if rid else None, "managed_hsm" if hsm else "vault",
                         v.scope if hsm and v.scope and HSM_SCOPE.fullmatch(v.scope) else None)
        if (principal, vault, obj) == (self.principal, self.vault, self.object):
            return self
        return replace(self, principal=principal, vault=vault, object=obj)

    def identity_key(self) -> tuple[str | None, ...]:
        """What makes two denials 'the same request' (principal, vault, object, operation; an HSM's scope)."""
        obj = self.object
        key = (self.principal.object_id or self.principal.app_id or self.principal.upn, self.vault.key,
               obj.kind if obj else None, (obj.name or "").lower() if obj else None,
               (self.operation or self.data_action or "").lower(), str(self.status) if self.status else None)
        # a Managed HSM refusal names its local scope (``/keys/NAME``) where a vault's names the object
        return (*key, (self.vault.scope or "").lower()) if self.vault.kind == "managed_hsm" else key


@dataclass(frozen=True, slots=True)
class RowsLink:
    """Where the audit rows are of an alert whose own payload does not name the caller.

    ``link`` is the alert's Log Analytics API link as intake read it (https, bounded length): it only says where
    to look; the app checks its host and target against its own settings (``facts.loganalytics.link_target``)
    and never runs its query. ``window`` is the ``(start, end)`` the alert evaluated, as the payload says it.
    ``note`` is what intake told a person about these rows (the app replaces it with what it read)."""

    link: str
    window: tuple[str, str] | None = None
    note: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "window": list(self.window) if self.window else None}


@dataclass(frozen=True)
class ParseResult:
    """What intake made of a batch: denials, how many records were not denials, and notes for a person.

    ``rows_links`` runs beside ``denials`` (same order; empty when no denial has one): for a denial from an alert
    that does not name the caller, where that alert's rows are (see ``with_rows_links``)."""

    denials: tuple[Denial, ...]
    skipped: int = 0
    notes: tuple[str, ...] = ()
    rows_links: tuple[RowsLink | None, ...] = ()

    def with_rows_links(self) -> list[tuple[Denial, RowsLink | None]]:
        """Each denial with where its alert's rows are (None: the denial names what it can, nothing to fetch)."""
        links = self.rows_links or (None,) * len(self.denials)
        return list(zip(self.denials, links, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": DENIALS_SCHEMA, "denials": [d.to_dict() for d in self.denials],
                "skipped": self.skipped, "notes": list(self.notes)}


# --- Facts: what Azure says about the vault and the principal (read by facts/, decided on by decide.py) ---

PERMISSION_KINDS = ("keys", "secrets", "certificates", "storage")


@dataclass(frozen=True)
class AccessPolicyEntry:
    """One entry of a vault's access policy, permissions lower-cased for comparison."""

    tenant_id: str
    object_id: str
    application_id: str | None
    permissions: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "object_id": self.object_id, "application_id": self.application_id,
                "permissions": {k: list(v) for k, v in self.permissions.items()}}


@dataclass(frozen=True)
class Vault:
    """The vault as ARM returns it, reduced to what the decision needs."""

    id: str
    name: str
    tenant_id: str | None
    rbac: bool
    access_policies: tuple[AccessPolicyEntry, ...] = ()
    location: str | None = None
    network_default_action: str | None = None
    public_network_access: str | None = None
    network_bypass: str | None = None
    ip_rules: tuple[str, ...] = ()
    virtual_network_rules: int = 0

    @property
    def permission_model(self) -> str:
        return "rbac" if self.rbac else "access_policy"

    @property
    def subscription_id(self) -> str | None:
        parts = self.id.split("/")
        at = _SUBSCRIPTION_AT
        return parts[at] if len(parts) > at and parts[at - 1].lower() == "subscriptions" else None

    @property
    def resource_group(self) -> str | None:
        parts = self.id.split("/")
        at = _RESOURCE_GROUP_AT
        return parts[at] if len(parts) > at and parts[at - 1].lower() == "resourcegroups" else None

    def policies_for(self, object_ids: frozenset[str]) -> list[AccessPolicyEntry]:
        """Entries whose objectId is one of ``object_ids`` (lower-case), via an index, not a scan."""
        idx = self.__dict__.get("_ap_index")
        if idx is None:
            idx = {}
            for e in self.access_policies:
                idx.setdefault(e.object_id.lower(), []).append(e)
            object.__setattr__(self, "_ap_index", idx)
        return [e for oid in object_ids for e in idx.get(oid, ())]


@dataclass(frozen=True)
class RoleAssignment:
    """An RBAC role assignment as ARM returns it."""

    id: str
    scope: str
    role_definition_id: str
    principal_id: str
    principal_type: str | None = None
    condition: str | None = None
    condition_version: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class DenyAssignment:
    """An ARM deny assignment, reduced to what subtracts data actions."""

    id: str
    name: str
    scope: str
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]
    principal_ids: tuple[str, ...]
    exclude_principal_ids: tuple[str, ...]
    do_not_apply_to_child_scopes: bool = False
    description: str | None = None


@dataclass(frozen=True)
class PrincipalInfo:
    """What the directory (or, without Graph, the token) says about the caller."""

    object_id: str | None
    type: str | None = None           # ServicePrincipal | User | Group
    display_name: str | None = None
    app_id: str | None = None
    groups: tuple[str, ...] = ()
    groups_known: bool = False        # False when Graph could not be asked: group grants are unknown

    def ids(self) -> frozenset[str]:
        """The principal and every group it belongs to, lower-case."""
        ids = {g.lower() for g in self.groups}
        if self.object_id:
            ids.add(self.object_id.lower())
        return frozenset(ids)


@dataclass(frozen=True)
class VaultLookup:
    """A vault found (or not) and the subscriptions that were searched for it."""

    vault: Vault | None
    searched: tuple[str, ...]


@dataclass(frozen=True)
class Facts:
    """Everything read from Azure for one denial; the pure decision runs on this alone."""

    vault: Vault | None
    principal: PrincipalInfo
    assignments: tuple[RoleAssignment, ...] = ()          # ARM's assignedTo(): the caller's and its groups'
    roles: Mapping[str, RoleDefinition] = field(default_factory=dict)   # lower-case role GUID -> definition
    deny_assignments: tuple[DenyAssignment, ...] = ()
    searched_subscriptions: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    hsm: ManagedHsm | None = None                         # a Managed HSM denial: the HSM as ARM returned it
    hsm_access: HsmAccess | None = None                   # and its local RBAC at the scopes that reach the key
    hsm_arm_setting: HsmSetting | None = None             # AllowKeyManagementOperationsThroughARM, read only for an
                                                          # ARM-path denial (Signal.HSM_ARM_PATH)


# --- Plans and findings ---

@dataclass(frozen=True)
class Proof:
    """Why a grant may be applied: we read the denial ourselves in the vault's audit log (``audit_log``), a person
    approved this exact plan (``approval``), or an operator asked for it explicitly (``operator``: the CLI's
    ``--apply``, or ``/api/remediate`` called by an identity holding the apply app role).

    An input never carries a Proof: it is made only by the code that read the log, checked the approval or
    authenticated the operator. ``source`` says where (workspace and row time, approver, operator identity).
    """

    kind: ProofKind
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source}


@dataclass(frozen=True)
class Required:
    """What the denied operation needs, in both permission models."""

    data_actions: tuple[str, ...]
    access_policy: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"data_actions": list(self.data_actions),
                "access_policy": {k: list(v) for k, v in self.access_policy.items()}}


@dataclass(frozen=True)
class CustomRolePlan:
    """A custom role with exactly the missing data actions, assignable in the vault's resource group (Microsoft advises
    against resource-level assignable scopes) and assigned at the vault or object only."""

    role_name: str
    data_actions: tuple[str, ...]
    assignable_scopes: tuple[str, ...]
    scope: str
    principal_id: str
    principal_type: str | None
    commands: dict[str, str] = field(default_factory=dict)   # az and Bicep, filled by render.commands

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "custom_role", "role_name": self.role_name, "data_actions": list(self.data_actions),
                "assignable_scopes": list(self.assignable_scopes), "scope": self.scope,
                "principal_id": self.principal_id, "principal_type": self.principal_type,
                "commands": dict(self.commands)}


@dataclass(frozen=True)
class RoleAssignmentPlan:
    """Assign one built-in role to the caller at the vault (or object) scope."""

    principal_id: str
    principal_type: str | None
    scope: str
    role_definition_id: str
    role_name: str
    tier: int
    commands: dict[str, str] = field(default_factory=dict)   # az and Bicep, filled by render.commands
    privileged: bool = False
    alternatives: tuple[CustomRolePlan, ...] = ()
    kind: str = "role_assignment"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "principal_id": self.principal_id, "principal_type": self.principal_type,
            "scope": self.scope, "role_definition_id": self.role_definition_id, "role_name": self.role_name,
            "tier": self.tier, "privileged": self.privileged, "commands": dict(self.commands)}
        if self.alternatives:
            out["alternatives"] = [a.to_dict() for a in self.alternatives]
        return out


@dataclass(frozen=True)
class AccessPolicyPlan:
    """Add exactly the missing permissions to the caller's access-policy entry."""

    vault_id: str
    tenant_id: str | None
    object_id: str
    add: dict[str, tuple[str, ...]]
    tier: int
    commands: dict[str, str] = field(default_factory=dict)   # az and Bicep, filled by render.commands
    application_id: str | None = None
    principal_type: str | None = None     # who the entry is for (policy checks it; ARM does not need it)
    kind: str = "access_policy"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vault_id": self.vault_id, "tenant_id": self.tenant_id,
                "object_id": self.object_id, "application_id": self.application_id,
                "principal_type": self.principal_type,
                "add": {k: list(self.add.get(k, ())) for k in PERMISSION_KINDS}, "tier": self.tier,
                "commands": dict(self.commands)}


@dataclass(frozen=True)
class HsmCustomRolePlan:
    """A Managed HSM custom local role with exactly the missing key data actions: defined at ``/`` (the only scope
    an HSM keeps definitions at), named by ``hsm_model.custom_role_name`` so the same role is defined once per HSM."""

    name: str                      # the role definition's GUID (deterministic from its data actions)
    role_name: str                 # its display name
    data_actions: tuple[str, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role_name": self.role_name, "data_actions": list(self.data_actions),
                "description": self.description}


@dataclass(frozen=True)
class HsmRoleAssignmentPlan:
    """Assign one Managed HSM local role to the caller at an HSM scope (``/keys/NAME``, else ``/keys``).

    ``hsm`` is the HSM's ARM id (read from ARM, never the input's); ``role_definition_id`` is written as the HSM
    writes it (``Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/GUID``). With ``custom_role``
    the role is defined first; ``alternatives`` name a broader built-in (Crypto User) with its tier."""

    hsm: str
    scope: str
    role_definition_id: str
    role_name: str
    principal_id: str
    principal_type: str | None
    tier: int
    custom_role: HsmCustomRolePlan | None = None
    alternatives: tuple[HsmRoleAssignmentPlan, ...] = ()
    commands: dict[str, str] = field(default_factory=dict)   # az and Bicep, filled by render.commands
    kind: str = "hsm_role_assignment"

    @property
    def hsm_name(self) -> str:
        return self.hsm.rstrip("/").rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "hsm": self.hsm, "scope": self.scope, "role_definition_id": self.role_definition_id,
            "role_name": self.role_name, "principal_id": self.principal_id, "principal_type": self.principal_type,
            "tier": self.tier, "commands": dict(self.commands)}
        if self.custom_role is not None:
            out["custom_role"] = self.custom_role.to_dict()
        if self.alternatives:
            out["alternatives"] = [a.to_dict() for a in self.alternatives]
        return out


Plan = RoleAssignmentPlan | AccessPolicyPlan | HsmRoleAssignmentPlan


@dataclass(frozen=True)
class Decision:
    """The pure verdict for one denial: the cause, what was required, and the evidence behind it."""

    cause: Cause
    permission_model: str | None
    required: Required | None
    evidence: Evidence
    detail: DecisionDetail = NO_DETAIL   # values the explanation and advice quote


@dataclass(frozen=True)
class Finding:
    """One diagnosed denial (or several identical ones) with its explanation and fix."""

    cause: Cause
    occurrences: int
    denial: Denial
    permission_model: str | None
    required: Required | None
    explanation: str
    plan: Plan | None
    advice: tuple[str, ...]
    evidence: Evidence
    outcome: ApplyOutcome | None = None   # filled by remediate: applied / refused_by / error

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cause": self.cause, "occurrences": self.occurrences, "denial": self.denial.to_dict(),
            "permission_model": self.permission_model,
            "required": self.required.to_dict() if self.required else None,
            "explanation": self.explanation, "plan": self.plan.to_dict() if self.plan else None,
            "advice": list(self.advice), "evidence": self.evidence.to_dict()}
        if self.outcome is not None:
            out.update(self.outcome.to_dict())
        return out
