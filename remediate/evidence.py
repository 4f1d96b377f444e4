"""The evidence behind a decision, typed: what was read and how each grant and deny was weighed.

decide.py builds these (pure), explain.py and render/ read them, apply/ finds its own earlier grants in them, and
the worker adds what the audit-log read found. Each ``to_dict`` gives exactly the JSON of ``spec/cli.md``
(``finding.evidence``), key for key and in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .model import Proof

Via = Literal["direct", "group"]


@dataclass(frozen=True, slots=True)
class PrincipalEvidence:
    """The caller as the directory (or, without Graph, the input) described it."""

    object_id: str | None
    type: str | None
    display_name: str | None
    app_id: str | None
    groups: tuple[str, ...]
    groups_known: bool

    def to_dict(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "type": self.type, "display_name": self.display_name,
                "app_id": self.app_id, "groups": list(self.groups), "groups_known": self.groups_known}


@dataclass(frozen=True, slots=True)
class VaultEvidence:
    """The vault as ARM returned it, reduced to what a person checks."""

    id: str
    name: str
    tenant_id: str | None
    permission_model: str
    network_default_action: str | None
    public_network_access: str | None
    bypass: str | None
    ip_rules: tuple[str, ...]
    virtual_network_rules: int
    access_policy_entries: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tenant_id": self.tenant_id,
                "permission_model": self.permission_model, "network_default_action": self.network_default_action,
                "public_network_access": self.public_network_access, "bypass": self.bypass,
                "ip_rules": list(self.ip_rules), "virtual_network_rules": self.virtual_network_rules,
                "access_policy_entries": self.access_policy_entries}


@dataclass(frozen=True, slots=True)
class RoleAssignmentCheck:
    """One role assignment weighed against the request: does it grant, and why (or why not).

    ``condition_evaluated`` is set only when the role grants every action and the assignment carries an ABAC
    condition: True/False when it was evaluated, None when it could not be here."""

    id: str
    scope: str
    role_definition_id: str
    role_name: str | None
    principal_id: str
    via: Via
    condition: str | None
    grants: bool
    reason: str
    condition_checked: bool = False
    condition_evaluated: bool | None = None
    kind: Literal["role_assignment"] = "role_assignment"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "scope": self.scope,
                               "role_definition_id": self.role_definition_id, "role_name": self.role_name,
                               "principal_id": self.principal_id, "via": self.via, "condition": self.condition,
                               "grants": self.grants, "reason": self.reason}
        if self.condition_checked:
            out["condition_evaluated"] = self.condition_evaluated
        return out


@dataclass(frozen=True, slots=True)
class AccessPolicyCheck:
    """One access-policy entry (the caller's or a group's) weighed against the required permissions."""

    object_id: str
    application_id: str | None
    tenant_id: str
    permissions: Mapping[str, tuple[str, ...]]
    via: Via
    grants: bool
    reason: str
    kind: Literal["access_policy"] = "access_policy"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "object_id": self.object_id, "application_id": self.application_id,
                "tenant_id": self.tenant_id, "permissions": {k: list(v) for k, v in self.permissions.items()},
                "via": self.via, "grants": self.grants, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class DenyCheck:
    """One deny assignment and whether it subtracts the request."""

    id: str
    name: str
    scope: str
    applies: bool
    description: str | None
    kind: Literal["deny_assignment"] = "deny_assignment"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "scope": self.scope, "applies": self.applies,
                "description": self.description}


GrantCheck = RoleAssignmentCheck | AccessPolicyCheck


@dataclass(frozen=True, slots=True)
class AuditLogEvidence:
    """What the app's own audit-log read found for a denial: the proof, or why there is none."""

    proof: Proof | None
    limitation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"proof": self.proof.to_dict() if self.proof else None}
        if self.limitation and self.proof is None:
            out["limitation"] = self.limitation
        return out


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything a decision rests on. ``read`` is False when the input alone decided (nothing was read from
    Azure): then only the limitations (and the audit-log read, in the app) are shown."""

    principal: PrincipalEvidence | None = None
    vault: VaultEvidence | None = None
    role_assignments: tuple[RoleAssignmentCheck, ...] = ()
    access_policies: tuple[AccessPolicyCheck, ...] = ()
    deny_assignments: tuple[DenyCheck, ...] = ()
    limitations: tuple[str, ...] = ()
    read: bool = True
    audit_log: AuditLogEvidence | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.read:
            out = {"principal": self.principal.to_dict() if self.principal else None,
                   "vault": self.vault.to_dict() if self.vault else None,
                   "role_assignments": [a.to_dict() for a in self.role_assignments],
                   "access_policies": [a.to_dict() for a in self.access_policies],
                   "deny_assignments": [d.to_dict() for d in self.deny_assignments]}
        out["limitations"] = list(self.limitations)
        if self.audit_log is not None:
            out["audit_log"] = self.audit_log.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class DecisionDetail:
    """The values the explanation and the plan quote, per cause (each field set only where it applies)."""

    reason: str | None = None                         # UNKNOWN: why no rule matched
    searched: tuple[str, ...] = ()                    # VAULT_NOT_FOUND: the subscriptions searched
    deny: DenyCheck | None = None                     # DENY_ASSIGNMENT: the deny that applies
    grant: GrantCheck | None = None                   # what already grants (or would, but for a condition)
    held_in: Literal["rbac", "access_policy"] | None = None   # WRONG_PERMISSION_MODEL: the model holding it
    missing: Mapping[str, tuple[str, ...]] | None = None      # access-policy permissions the caller lacks


NO_DETAIL = DecisionDetail()
"""The detail of a cause that quotes nothing (frozen, so one instance serves every decision)."""
