"""The SDKs' models as ours: a vault, a role assignment, a deny assignment, a role definition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..catalog import RoleDefinition
from ..model import AccessPolicyEntry, DenyAssignment, RoleAssignment, Vault

if TYPE_CHECKING:
    pass


def _s(v: Any) -> str | None:
    return None if v is None else str(getattr(v, "value", v))


def vault_from_sdk(v: Any) -> Vault:
    """Our Vault from the SDK's model."""
    p = v.properties
    entries = []
    for e in p.access_policies or []:
        perms = e.permissions
        entries.append(AccessPolicyEntry(
            tenant_id=str(e.tenant_id), object_id=str(e.object_id), application_id=_s(e.application_id),
            permissions={k: tuple(str(_s(x)).lower() for x in (getattr(perms, attr, None) or []))
                         for k, attr in (("keys", "keys_property"), ("secrets", "secrets"),
                                         ("certificates", "certificates"), ("storage", "storage"))}))
    acls = p.network_acls
    return Vault(
        id=str(v.id), name=str(v.name), tenant_id=_s(p.tenant_id), rbac=p.enable_rbac_authorization is True,
        access_policies=tuple(entries), location=_s(v.location),
        network_default_action=_s(acls.default_action) if acls else None,
        public_network_access=_s(getattr(p, "public_network_access", None)),
        network_bypass=_s(acls.bypass) if acls else None,
        ip_rules=tuple(str(r.value) for r in (acls.ip_rules or [])) if acls else (),
        virtual_network_rules=len(acls.virtual_network_rules or []) if acls else 0)


def assignment_from_sdk(a: Any) -> RoleAssignment:
    return RoleAssignment(id=str(a.id), scope=str(a.scope), role_definition_id=str(a.role_definition_id),
                          principal_id=str(a.principal_id), principal_type=_s(a.principal_type),
                          condition=a.condition, condition_version=a.condition_version, name=a.name)


def deny_from_sdk(d: Any) -> DenyAssignment:
    perms = d.permissions or []
    return DenyAssignment(
        id=str(d.id), name=str(d.deny_assignment_name or d.name), scope=str(d.scope),
        data_actions=tuple(x for p in perms for x in (p.data_actions or [])),
        not_data_actions=tuple(x for p in perms for x in (p.not_data_actions or [])),
        principal_ids=tuple(str(p.id) for p in (d.principals or [])),
        exclude_principal_ids=tuple(str(p.id) for p in (d.exclude_principals or [])),
        do_not_apply_to_child_scopes=bool(d.do_not_apply_to_child_scopes), description=d.description)


def role_from_sdk(r: Any) -> RoleDefinition:
    perms = r.permissions or []
    return RoleDefinition(
        id=str(r.id), name=str(r.name), role_name=str(r.role_name or r.name), role_type=str(r.role_type or ""),
        actions=tuple(x for p in perms for x in (p.actions or [])),
        not_actions=tuple(x for p in perms for x in (p.not_actions or [])),
        data_actions=tuple(x for p in perms for x in (p.data_actions or [])),
        not_data_actions=tuple(x for p in perms for x in (p.not_data_actions or [])),
        assignable_scopes=tuple(r.assignable_scopes or ("/",)), description=r.description or "")
