"""The fix as commands a person can run: ``az`` (shell-quoted) and Bicep. Ids are validated before rendering.

Every ``az`` line is checked against the real Azure CLI's argument parser (tests/system/test_az_cli_parse.py).
A trailing ``# ...`` shell comment says what the line does and why it is written that way (pasting it runs only
the command).

API versions: every Key Vault control-plane API version before 2026-02-01 retires on 2027-02-27 ("Migrate to a
newer Key Vault API version", learn.microsoft.com/azure/key-vault/general/migrate-api-version), so the Key Vault
calls and Bicep resources below use ``2026-02-01``. Microsoft.Authorization's ``2022-04-01`` is its current stable
version (learn.microsoft.com/rest/api/authorization/versions); none of its versions has a retirement date.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import replace

from .. import armid
from ..model import AccessPolicyPlan, HsmRoleAssignmentPlan, Plan, Vault
from ..plan import NAMESPACE, assignable_scope

_PTYPES = ("ServicePrincipal", "User")
AP_FLAGS = {"keys": "--key-permissions", "secrets": "--secret-permissions", "certificates": "--certificate-permissions",
            "storage": "--storage-permissions"}
UNSAFE = "not rendered: an identifier failed validation"
KEYVAULT_API = "2026-02-01"
AUTHORIZATION_API = "2022-04-01"
_KV_BICEP = f"Microsoft.KeyVault/vaults@{KEYVAULT_API}"


def _guid(v: str | None) -> bool:
    return bool(v) and armid.is_guid(v or "")


def _vault_ok(vault_id: str) -> bool:
    return armid.parse_vault_id(vault_id) is not None


def _scope_ok(scope: str, vault_id: str) -> bool:
    """``scope`` is the vault itself or one valid object in it (armid's rules, compared by whole segments)."""
    grant = armid.parse_grant_scope(scope)
    return grant is not None and armid.segments(str(grant.vault)) == armid.segments(vault_id)


def _bicep_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _vault_parts(vault_id: str) -> tuple[str, str, str]:
    v = armid.parse_vault_id(vault_id)
    assert v is not None, "checked by _vault_ok first"
    return v.subscription, v.resource_group, v.name


def role_assignment(principal_id: str, principal_type: str | None, role_guid: str, role_name: str, *, scope: str,
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
             f"resource vault '{_KV_BICEP}' existing = {{",
             f"  name: {_bicep_str(vault_name)}", "}"]
    target = "vault"
    if tail:
        kind, name = tail.strip("/").split("/", 1)
        child = {"keys": "keys", "secrets": "secrets", "certificates": "certificates"}[kind.lower()]
        lines += [f"resource target 'Microsoft.KeyVault/vaults/{child}@{KEYVAULT_API}' existing = {{",
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


def held_permissions(vault: Vault, object_id: str) -> dict[str, tuple[str, ...]]:
    """What the caller's own entry holds now: the entry ``az keyvault set-policy`` would edit (same objectId, no
    applicationId, the vault's tenant: azure-cli's ``set_policy`` matches on exactly these three)."""
    out: dict[str, list[str]] = {}
    tenant = (vault.tenant_id or "").lower()
    for e in vault.policies_for(frozenset({object_id.lower()})):
        if e.application_id or (tenant and e.tenant_id.lower() != tenant):
            continue
        for kind, perms in e.permissions.items():
            bucket = out.setdefault(kind, [])
            bucket += [p for p in perms if p.lower() not in {b.lower() for b in bucket}]
    return {k: tuple(v) for k, v in out.items() if v}


def _union(held: Mapping[str, tuple[str, ...]], add: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Per kind: every permission the entry holds, then the added ones it lacks (case-insensitive)."""
    out = {k: list(v) for k, v in held.items()}
    for kind, perms in add.items():
        bucket = out.setdefault(kind, [])
        bucket += [p for p in perms if p.lower() not in {b.lower() for b in bucket}]
    return {k: tuple(v) for k, v in out.items() if v}


def _perm_text(perms: Mapping[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{k} {','.join(v)}" for k, v in perms.items() if v) or "nothing"


def access_policy(vault_id: str, vault_name: str, object_id: str, tenant_id: str | None,
                  add: dict[str, tuple[str, ...]], *, held: Mapping[str, tuple[str, ...]] | None = None
                  ) -> dict[str, str]:
    """Add ``add`` to the caller's entry without removing anything it holds (``held``, read from the vault).

    ``az keyvault set-policy --secret-permissions X`` *replaces* the entry's secret list with X (azure-cli's
    ``set_policy``: ``secrets = policy.permissions.secrets if secret_permissions is None else
    secret_permissions``), so pasting only the missing permission would revoke the others. The command is
    therefore ``az rest`` PUT ``accessPolicies/add`` (Vaults_UpdateAccessPolicy, operationKind ``add``), which merges
    server-side: it never drops a permission, even one granted after we read the vault. Only when the vault's
    tenant is unknown (``add`` needs ``tenantId``) is it ``set-policy`` with the union of ``held`` and ``add``.
    """
    if not (_guid(object_id) and _vault_ok(vault_id) and (tenant_id is None or _guid(tenant_id))):
        return {"az": UNSAFE, "bicep": UNSAFE}
    add = {k: tuple(v) for k, v in add.items() if v and k in AP_FLAGS}
    held = dict(held or {})
    after = _union(held, add)
    sub, rg, name = _vault_parts(vault_id)
    if tenant_id:
        body = {"properties": {"accessPolicies": [
            {"tenantId": tenant_id, "objectId": object_id, "permissions": {k: list(v) for k, v in add.items()}}]}}
        url = f"{vault_id}/accessPolicies/add?api-version={KEYVAULT_API}"
        az = shlex.join(["az", "rest", "--method", "put", "--url", url, "--body",
                         json.dumps(body, separators=(",", ":"))])
        az += (f"  # accessPolicies/add merges {_perm_text(add)} into the entry server-side and removes nothing "
               f"(entry now: {_perm_text(held)}); not 'az keyvault set-policy', which replaces each list it is given")
    else:
        cmd = ["az", "keyvault", "set-policy", "--subscription", sub, "--resource-group", rg, "--name", name,
               "--object-id", object_id]
        for kind in add:                       # only the kinds we change; set-policy keeps the others as they are
            cmd += [AP_FLAGS[kind], *after[kind]]
        az = shlex.join(cmd) + (
            f"  # set-policy replaces each list it is given, so each is the union of what the entry held when "
            f"read ({_perm_text(held)}) and {_perm_text(add)}; re-read the entry first if it may have changed")
    perms_bicep = ", ".join(f"{k}: [{', '.join(_bicep_str(p) for p in v)}]" for k, v in add.items())
    tenant = _bicep_str(tenant_id) if tenant_id else "subscription().tenantId"
    bicep = "\n".join([
        f"// add {perms_bicep} for {object_id} (kv-remediate); 'add' merges into the entry, nothing else changes",
        f"resource vault '{_KV_BICEP}' existing = {{", f"  name: {_bicep_str(name)}", "}",
        f"resource addPolicy 'Microsoft.KeyVault/vaults/accessPolicies@{KEYVAULT_API}' = {{",
        "  parent: vault", "  name: 'add'", "  properties: {", "    accessPolicies: [", "      {",
        f"        tenantId: {tenant}", f"        objectId: {_bicep_str(object_id)}",
        f"        permissions: {{ {perms_bicep} }}", "      }", "    ]", "  }", "}"])
    return {"az": az, "bicep": bicep}


def custom_role_guid(role_name: str, vault_id: str) -> str:
    """The custom role definition's name (a GUID), fixed by what it grants and where: re-running is an update."""
    return str(uuid.uuid5(NAMESPACE, f"role|{assignable_scope(vault_id).lower()}|{role_name}"))


def custom_role(role_name: str, actions: tuple[str, ...], vault_id: str, scope: str, *, principal_id: str,
                principal_type: str | None) -> dict[str, str]:
    """A custom role with exactly ``actions`` (assignable in the vault's resource group) and its assignment at
    ``scope``, both by the role's id: nothing looks the new role up by name, which right after creation can
    miss it (role definitions replicate with a delay)."""
    if not (_guid(principal_id) and _vault_ok(vault_id) and _scope_ok(scope, vault_id)):
        return {"az": UNSAFE, "bicep": UNSAFE}
    sub, _, vault_name = _vault_parts(vault_id)
    assignable = assignable_scope(vault_id)
    guid = custom_role_guid(role_name, vault_id)
    role_id = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    description = "Exactly the data actions kv-remediate found missing"
    body = {"properties": {"roleName": role_name, "description": description, "type": "CustomRole",
                           "permissions": [{"actions": [], "notActions": [], "dataActions": list(actions),
                                            "notDataActions": []}],
                           "assignableScopes": [assignable]}}
    create = shlex.join(["az", "rest", "--method", "put", "--url",
                         f"{assignable}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
                         f"?api-version={AUTHORIZATION_API}", "--body", json.dumps(body, separators=(",", ":"))])
    assign = ["az", "role", "assignment", "create", "--assignee-object-id", principal_id]
    if principal_type in _PTYPES:
        assign += ["--assignee-principal-type", principal_type]
    assign += ["--role", role_id, "--scope", scope]
    az = (create + " && " + shlex.join(assign) +
          f"  # PUT creates (or, re-run, updates) the role under the fixed id {guid}, assignable in the resource "
          "group as Microsoft advises; it is assigned by that id, not by name (a just-created role can be missing "
          "from name lookups for a while); if ARM still answers RoleDefinitionDoesNotExist, re-run after a minute")
    acts = ", ".join(_bicep_str(a) for a in actions)
    ptype = principal_type if principal_type in _PTYPES else None
    tail = scope[len(vault_id):]
    lines = [f"// {role_name} for {principal_id} (kv-remediate); deploy to the vault's resource group",
             f"resource vault '{_KV_BICEP}' existing = {{", f"  name: {_bicep_str(vault_name)}", "}"]
    target = "vault"
    if tail:
        kind, name = tail.strip("/").split("/", 1)
        lines += [f"resource target 'Microsoft.KeyVault/vaults/{kind.lower()}@{KEYVAULT_API}' existing = {{",
                  "  parent: vault", f"  name: {_bicep_str(name)}", "}"]
        target = "target"
    lines += [
        f"resource customRole 'Microsoft.Authorization/roleDefinitions@{AUTHORIZATION_API}' = {{",
        f"  name: {_bicep_str(guid)}", "  properties: {",
        f"    roleName: {_bicep_str(role_name)}", f"    description: {_bicep_str(description)}",
        "    type: 'CustomRole'",
        f"    permissions: [ {{ actions: [], notActions: [], dataActions: [ {acts} ], notDataActions: [] }} ]",
        "    assignableScopes: [ resourceGroup().id ]", "  }", "}",
        f"resource grant 'Microsoft.Authorization/roleAssignments@{AUTHORIZATION_API}' = {{",
        f"  name: guid({target}.id, {_bicep_str(principal_id)}, customRole.id)",
        f"  scope: {target}",
        "  properties: {",
        "    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', customRole.name)",
        f"    principalId: {_bicep_str(principal_id)}"]
    if ptype:
        lines.append(f"    principalType: {_bicep_str(ptype)}")
    lines += ["  }", "}"]
    return {"az": az, "bicep": "\n".join(lines)}


def with_commands(fix: Plan, vault: Vault) -> Plan:
    """The plan with its ``az`` and Bicep text, rendered from the plan's data (plan.py builds data only)."""
    if isinstance(fix, HsmRoleAssignmentPlan):
        return fix
    if isinstance(fix, AccessPolicyPlan):
        return replace(fix, commands=access_policy(fix.vault_id, vault.name, fix.object_id, fix.tenant_id, fix.add,
                                                   held=held_permissions(vault, fix.object_id)))
    alternatives = tuple(replace(a, commands=custom_role(a.role_name, a.data_actions, vault.id, a.scope,
                                                         principal_id=a.principal_id,
                                                         principal_type=a.principal_type))
                         for a in fix.alternatives)
    return replace(fix, alternatives=alternatives,
                   commands=role_assignment(fix.principal_id, fix.principal_type,
                                            fix.role_definition_id.rsplit("/", 1)[-1], fix.role_name,
                                            scope=fix.scope, vault_id=vault.id))

