"""The fix as commands a person can run: ``az`` (shell-quoted) and Bicep. Ids are validated before rendering."""

from __future__ import annotations

import json
import re
import shlex
import uuid

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_VAULT_ID = re.compile(
    r"^/subscriptions/[0-9a-f-]{36}/resourceGroups/[-\w._()]{1,90}/providers/Microsoft\.KeyVault/vaults/"
    r"[A-Za-z0-9-]{3,24}$", re.IGNORECASE)
_SCOPE_TAIL = re.compile(r"^(/(keys|secrets|certificates)/[A-Za-z0-9-]{1,127})?$", re.IGNORECASE)
_PTYPES = ("ServicePrincipal", "User")
AP_FLAGS = {"keys": "--key-permissions", "secrets": "--secret-permissions", "certificates": "--certificate-permissions",
            "storage": "--storage-permissions"}
UNSAFE = "not rendered: an identifier failed validation"
NAMESPACE = uuid.UUID("5b0e6bde-7f3a-4b8e-9a53-6b7e2d1c0f11")


def _guid(v: str | None) -> bool:
    return bool(v and _GUID.match(v))


def _vault_ok(vault_id: str) -> bool:
    return bool(_VAULT_ID.match(vault_id))


def _scope_ok(scope: str, vault_id: str) -> bool:
    return scope.lower().startswith(vault_id.lower()) and bool(_SCOPE_TAIL.match(scope[len(vault_id):]))


def assignment_name(scope: str, principal_id: str, role_guid: str) -> str:
    """Deterministic role-assignment name (UUID5 of scope, principal and role), so re-applying is a no-op."""
    return str(uuid.uuid5(NAMESPACE, f"{scope.lower()}|{principal_id.lower()}|{role_guid.lower()}"))


def _bicep_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _vault_parts(vault_id: str) -> tuple[str, str, str]:
    p = vault_id.split("/")
    return p[2], p[4], p[8]


def role_assignment(principal_id: str, principal_type: str | None, role_guid: str, role_name: str, scope: str,
                    vault_id: str) -> dict[str, str]:
    """``az role assignment create`` and a Bicep role assignment with a deterministic ``guid()`` name."""
    if not (_guid(principal_id) and _guid(role_guid) and _vault_ok(vault_id) and _scope_ok(scope, vault_id)):
        return {"az": UNSAFE, "bicep": UNSAFE}
    ptype = principal_type if principal_type in _PTYPES else None
    az = ["az", "role", "assignment", "create", "--assignee-object-id", principal_id]
    if ptype:
        az += ["--assignee-principal-type", ptype]
    az += ["--role", role_guid, "--scope", scope]
    _, _, vault_name = _vault_parts(vault_id)
    tail = scope[len(vault_id):]
    lines = [f"// {role_name} for {principal_id} (kv-remediate)",
             "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {",
             f"  name: {_bicep_str(vault_name)}", "}"]
    target = "vault"
    if tail:
        kind, name = tail.strip("/").split("/", 1)
        child = {"keys": "keys", "secrets": "secrets", "certificates": "certificates"}[kind.lower()]
        lines += [f"resource target 'Microsoft.KeyVault/vaults/{child}@2023-07-01' existing = {{",
                  "  parent: vault", f"  name: {_bicep_str(name)}", "}"]
        target = "target"
    lines += [
        "resource grant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {",
        f"  name: guid({target}.id, {_bicep_str(principal_id)}, {_bicep_str(role_guid)})",
        f"  scope: {target}",
        "  properties: {",
        f"    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
        f"{_bicep_str(role_guid)})",
        f"    principalId: {_bicep_str(principal_id)}"]
    if ptype:
        lines.append(f"    principalType: {_bicep_str(ptype)}")
    lines += ["  }", "}"]
    return {"az": shlex.join(az), "bicep": "\n".join(lines)}


def access_policy(vault_id: str, vault_name: str, object_id: str, tenant_id: str | None,
                  add: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """``az keyvault set-policy`` (which adds to the entry) and a Bicep ``accessPolicies/add``."""
    if not (_guid(object_id) and _vault_ok(vault_id) and (tenant_id is None or _guid(tenant_id))):
        return {"az": UNSAFE, "bicep": UNSAFE}
    sub, rg, name = _vault_parts(vault_id)
    az = ["az", "keyvault", "set-policy", "--subscription", sub, "--resource-group", rg, "--name", name,
          "--object-id", object_id]
    for kind, perms in add.items():
        if perms:
            az += [AP_FLAGS[kind], *perms]
    perms_bicep = ", ".join(f"{k}: [{', '.join(_bicep_str(p) for p in v)}]" for k, v in add.items() if v)
    tenant = _bicep_str(tenant_id) if tenant_id else "subscription().tenantId"
    bicep = "\n".join([
        f"// add {perms_bicep} for {object_id} (kv-remediate); 'add' merges into the entry, nothing else changes",
        "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {", f"  name: {_bicep_str(name)}", "}",
        "resource addPolicy 'Microsoft.KeyVault/vaults/accessPolicies@2023-07-01' = {",
        "  parent: vault", "  name: 'add'", "  properties: {", "    accessPolicies: [", "      {",
        f"        tenantId: {tenant}", f"        objectId: {_bicep_str(object_id)}",
        f"        permissions: {{ {perms_bicep} }}", "      }", "    ]", "  }", "}"])
    return {"az": shlex.join(az), "bicep": bicep}


def custom_role(role_name: str, actions: tuple[str, ...], vault_id: str, scope: str, principal_id: str,
                principal_type: str | None) -> dict[str, str]:
    """A custom role definition with exactly ``actions``, assignable only at the vault, and its assignment."""
    if not (_guid(principal_id) and _vault_ok(vault_id) and _scope_ok(scope, vault_id)):
        return {"az": UNSAFE, "bicep": UNSAFE}
    definition = {"Name": role_name, "IsCustom": True,
                  "Description": "Exactly the data actions kv-remediate found missing",
                  "Actions": [], "NotActions": [], "DataActions": list(actions), "NotDataActions": [],
                  "AssignableScopes": [vault_id]}
    create = shlex.join(["az", "role", "definition", "create", "--role-definition", json.dumps(definition)])
    assign = ["az", "role", "assignment", "create", "--assignee-object-id", principal_id]
    if principal_type in _PTYPES:
        assign += ["--assignee-principal-type", principal_type]
    assign += ["--role", role_name, "--scope", scope]
    _, _, vault_name = _vault_parts(vault_id)
    acts = ", ".join(_bicep_str(a) for a in actions)
    bicep = "\n".join([
        "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {", f"  name: {_bicep_str(vault_name)}", "}",
        "resource customRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {",
        f"  name: guid(vault.id, {_bicep_str(role_name)})", "  properties: {",
        f"    roleName: {_bicep_str(role_name)}", "    type: 'CustomRole'",
        f"    permissions: [ {{ actions: [], notActions: [], dataActions: [ {acts} ], notDataActions: [] }} ]",
        "    assignableScopes: [ vault.id ]", "  }", "}"])
    return {"az": create + " && " + shlex.join(assign), "bicep": bicep}
