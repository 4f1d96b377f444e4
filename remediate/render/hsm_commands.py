"""A Managed HSM plan as commands a person can run: ``az keyvault role ... --hsm-name`` (shell-quoted). Pure.

Local RBAC is the HSM's data plane ("an authorization system implemented and enforced at the managed HSM level",
Microsoft Learn managed-hsm/access-control.md): Microsoft.KeyVault's ARM resource types for an HSM (managedHSMs,
managedHSMs/keys, managedHSMs/privateEndpointConnections) hold no local role assignments or definitions, and a
Microsoft.Authorization role assignment on the HSM's resource id grants only its control plane. So there is no
Bicep for these plans: the ``bicep`` text says so and names what to run instead.

The custom role is written with ``az keyvault role definition update`` carrying our deterministic ``name``: the
Azure CLI's ``create`` ignores a ``name`` in the JSON and lets the SDK pick a random GUID, while ``update`` passes
it to ``set_role_definition``, a PUT at ``/`` that creates or replaces the definition of that name (azure-cli
keyvault/custom.py ``_create_update_role_definition``). The assignment names the role by GUID (the CLI turns a GUID
into ``Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{guid}``, ``_resolve_role_id``: no
lookup by display name, which a just-defined role could miss) and carries our deterministic assignment name, so a
re-run is the same assignment.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

from .. import armid
from ..catalog.hsm import canonical_key_action, guid_of
from ..hsm_model import assignment_name, normalise_scope
from ..model import HsmRoleAssignmentPlan
from .commands import UNSAFE

_PTYPES = ("ServicePrincipal", "User")
NO_BICEP = ("// No Bicep: Managed HSM local role assignments and definitions live in the HSM's data plane (local "
            "RBAC), which has no ARM resource type; an Azure RBAC role assignment on the HSM's resource id grants "
            "only its control plane. Run the az lines (or a Microsoft.Resources/deploymentScripts resource that "
            "runs them).")


def _ok(fix: HsmRoleAssignmentPlan) -> bool:
    """Every identifier the commands quote is of Azure's own shape (validated, never repaired)."""
    try:
        scope = normalise_scope(fix.scope)
    except ValueError:
        return False
    custom = fix.custom_role
    return (armid.parse_hsm_id(fix.hsm) is not None and armid.is_guid(fix.principal_id)
            and armid.is_guid(guid_of(fix.role_definition_id)) and scope == fix.scope
            and (custom is None or (armid.is_guid(custom.name) and custom.name == guid_of(fix.role_definition_id)
                                    and all(canonical_key_action(a) == a for a in custom.data_actions))))


def hsm_commands(fix: HsmRoleAssignmentPlan) -> dict[str, str]:
    """``az keyvault role definition update`` (a custom role) then ``az keyvault role assignment create``."""
    if not _ok(fix):
        return {"az": UNSAFE, "bicep": UNSAFE}
    hsm, guid = fix.hsm_name, guid_of(fix.role_definition_id)
    assign = ["az", "keyvault", "role", "assignment", "create", "--hsm-name", hsm, "--scope", fix.scope,
              "--role", guid, "--assignee-object-id", fix.principal_id]
    if fix.principal_type in _PTYPES:
        assign += ["--assignee-principal-type", str(fix.principal_type)]
    assign += ["--name", assignment_name(fix.principal_id, fix.scope, fix.role_definition_id)]
    az = shlex.join(assign) + f"  # {fix.role_name} at {fix.scope}; a fixed assignment name, so a re-run is a no-op"
    c = fix.custom_role
    if c is not None:
        body = {"name": c.name, "roleName": c.role_name, "description": c.description,
                "assignableScopes": ["/"], "dataActions": list(c.data_actions), "notDataActions": []}
        define = shlex.join(["az", "keyvault", "role", "definition", "update", "--hsm-name", hsm,
                             "--role-definition", json.dumps(body, separators=(",", ":"))])
        az = (define + " && " + shlex.join(assign) +
              f"  # defines (or, re-run, replaces) the custom local role {c.name} at / with exactly these data "
              f"actions (update, not create: create ignores the fixed name), then assigns it at {fix.scope}")
    return {"az": az, "bicep": NO_BICEP}


def with_hsm_commands(fix: HsmRoleAssignmentPlan) -> HsmRoleAssignmentPlan:
    """The plan (and its built-in alternatives) with their ``az`` text; Bicep says why there is none."""
    alternatives = tuple(replace(a, commands=hsm_commands(a)) for a in fix.alternatives)
    return replace(fix, alternatives=alternatives, commands=hsm_commands(fix))
