"""Managed HSM state: the HSMs ARM knows (Microsoft.KeyVault/managedHSMs) and each HSM's local RBAC data plane.

Shapes and words, with their sources (the REST spec is ``specification/keyvault/data-plane/Microsoft.KeyVault/
stable/7.4/rbac.json`` and its examples; the live answers are azure-sdk-for-js ``sdk/keyvault/keyvault-admin/
recordings/node/...``, recorded against a real HSM in Nov 2022):

* assignment: ``{"id": "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}", "name", "type":
  "Microsoft.Authorization/roleAssignments", "properties": {"scope", "roleDefinitionId", "principalId"}}``; at ``/``
  the id is ``/providers/...`` (recording ``can_create_read_and_delete_role_assignments``). PUT answers 201, DELETE
  200 with the deleted assignment (same recording).
* built-in definition id: ``Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{guid}``, type
  ``AKVBuiltInRole``, description ``""`` (same recording's list at ``/``).
* 404s: ``{"error": {"code": "RoleAssignmentNotFound", "message": "Requested role assignment not found (Activity ID:
  {id})"}}`` and ``RoleDefinitionNotFound`` / "Requested role definition not found" (recordings
  ``can_create_read_and_delete_role_assignments`` and ``errors_when_the_role_definition_cannot_be_found``); the
  Activity ID is the response's x-ms-request-id.
* 403: ``{"error": {"code": "AccessDenied", "message": "Not authorized to access {data action} on {scope} (Activity
  ID: {id})"}}`` (azure-cli#32719, as the CLI prints it: "(AccessDenied) Not authorized to access
  Microsoft.KeyVault/managedHsm/roleAssignments/read/action on / (Activity ID: <guid>)"; an older published text
  quotes the scope: "on '/keys'").

Inferences (no published answer found; marked where used): what an unfiltered list at ``/keys/{name}`` returns (here:
the assignments at that key and above it, as ``atScope()``), the 400s for a bad scope or body (code ``BadParameter``),
and an idempotent PUT of an assignment that exists with the same content (201 with it; different content: 409).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from remediate.catalog.hsm import action_matches, builtin_role, builtin_roles, guid_of
from remediate.emulator.snapshot import AUTHZ, HSM_BUILTIN_PREFIX, Snapshot
from remediate.emulator.state_common import ArmError, TenantBase, norm

HSM = "Microsoft.KeyVault/managedHsm/"
DEFAULT_SETTINGS = {"AllowKeyManagementOperationsThroughARM": "false"}
"""A new HSM's settings ("Azure Managed HSM does not trust Azure Resource Manager by default", Microsoft Learn
managed-hsm/authorize-azure-resource-manager.md)."""
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_KEY = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class HsmError(ArmError):
    """A Managed HSM data-plane error: the message ends with the Activity ID, which is also x-ms-request-id."""

    def __init__(self, status: int, code: str, message: str, activity_id: str) -> None:
        super().__init__(status, code, f"{message} (Activity ID: {activity_id})", {"x-ms-request-id": activity_id})

_RG_AT = 4   # the resource group's segment in an ARM id split on "/"

def hsm_scope(raw: str) -> str:
    """The local scope of a data-plane path (``/``, ``/keys``, ``/keys/{name}``; ``///`` and ``//keys`` as the SDKs
    send them); anything else is ValueError."""
    match [p for p in raw.split("/") if p]:
        case []:
            return "/"
        case [keys] if keys.lower() == "keys":
            return "/keys"
        case [keys, name] if keys.lower() == "keys" and _KEY.match(name):
            return f"/keys/{name}"
    raise ValueError(raw)


def _above(assignment_scope: str, scope: str) -> bool:
    """True when an assignment at ``assignment_scope`` applies at ``scope`` ('/' and '/keys' cover every key)."""
    a, s = norm(assignment_scope), norm(scope)
    return a in ("/", "/keys") or a == s


def builtin_json(guid: str) -> dict[str, Any] | None:
    """A built-in local role in the HSM's shape (package data)."""
    r = builtin_role(guid)
    if r is None:
        return None
    return {"id": HSM_BUILTIN_PREFIX + r.name, "name": r.name, "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"assignableScopes": list(r.assignable_scopes), "description": r.description,
                           "permissions": [{"actions": [], "notActions": [], "dataActions": list(r.data_actions),
                                            "notDataActions": list(r.not_data_actions)}],
                           "roleName": r.role_name, "type": r.role_type}}


class HsmState(TenantBase):
    """Managed HSMs and their local RBAC, with the HSM's rules for reading and changing it."""

    def __init__(self, snap: Snapshot) -> None:
        super().__init__(snap)
        self.hsms: dict[str, dict[str, Any]] = {h["id"].lower(): h for h in snap.managed_hsms}
        self.hsm_assignments: dict[str, dict[str, dict[str, Any]]] = {
            n: {a["name"].lower(): a for a in items} for n, items in snap.hsm_role_assignments.items()}
        self.hsm_definitions: dict[str, dict[str, dict[str, Any]]] = {
            n: {guid_of(d["name"]): d for d in items} for n, items in snap.hsm_role_definitions.items()}

    # ---- management plane ----------------------------------------------------------------------------------
    def hsm_json(self, hsm_id: str) -> dict[str, Any]:
        """One HSM by id, or ARM's ResourceNotFound (the same words as for a vault, with the HSM's type)."""
        with self.lock:
            h = self.hsms.get(hsm_id.rstrip("/").lower())
            if h is None:
                parts = hsm_id.split("/")   # "", "subscriptions", {id}, "resourceGroups", {rg}, ...
                rg = parts[_RG_AT] if len(parts) > _RG_AT else "?"
                raise ArmError(404, "ResourceNotFound",
                               f"The Resource 'Microsoft.KeyVault/managedHSMs/{parts[-1]}' under resource group "
                               f"'{rg}' was not found. For more details please go to "
                               "https://aka.ms/ARMResourceNotFoundFix")
            return copy.deepcopy(h)

    def hsms_in(self, prefix: str) -> list[dict[str, Any]]:
        """Every HSM under a subscription or resource group, in snapshot order."""
        p = norm(prefix) + "/"
        with self.lock:
            return [copy.deepcopy(h) for k, h in self.hsms.items() if k.startswith(p)]

    def hsm_by_name(self, name: str) -> dict[str, Any] | None:
        """The HSM whose name (the first label of its host) is ``name``."""
        with self.lock:
            return next((h for h in self.hsms.values() if str(h.get("name", "")).lower() == name.lower()), None)

    # ---- the data plane's authorization -------------------------------------------------------------------
    def hsm_authorize(self, hsm: str, action: str, scope: str, activity_id: str) -> None:
        """Refuse as the HSM does when the configured caller (``emulator.hsm_caller``) holds no local role granting
        ``action`` at ``scope``; with no caller configured, every request is allowed."""
        caller = self.snap.emulator.hsm_caller
        if not caller:
            return
        who = {caller.lower(), *(g.lower() for g in self.groups_of(caller))}
        with self.lock:
            for a in self.hsm_assignments.get(hsm, {}).values():
                props = a["properties"]
                if str(props.get("principalId", "")).lower() not in who or not _above(props["scope"], scope):
                    continue
                rd = self._definition(hsm, guid_of(props["roleDefinitionId"]))
                if rd is None:
                    continue   # a deleted custom role's assignments are defunct (managed-hsm/role-management.md)
                perms = rd["properties"].get("permissions") or []
                allowed = [x for p in perms for x in (p.get("dataActions") or [])]
                denied = [x for p in perms for x in (p.get("notDataActions") or [])]
                if any(action_matches(x, action) for x in allowed) and \
                        not any(action_matches(x, action) for x in denied):
                    return
        raise HsmError(403, "AccessDenied", f"Not authorized to access {action} on {scope}", activity_id)

    def _definition(self, hsm: str, guid: str) -> dict[str, Any] | None:
        custom = self.hsm_definitions.get(hsm, {}).get(guid)
        return custom if custom is not None else builtin_json(guid)

    # ---- role assignments ---------------------------------------------------------------------------------
    def hsm_list_assignments(self, hsm: str, scope: str, principal: str | None) -> list[dict[str, Any]]:
        """An unfiltered list at ``/`` or ``/keys`` returns the HSM-level assignments and never key-level ones
        ("When scope is / (or /keys) the list command only lists all the role assignments at the top level and does
        not show role assignments at individual key level", managed-hsm/role-management.md); at ``/keys/{name}``
        the key's own and the HSM-level ones (inference). ``principalId eq`` adds those below the scope
        (rbac.json: "at, above or below the scope for the specified principal")."""
        with self.lock:
            out = []
            for a in self.hsm_assignments.get(hsm, {}).values():
                s = a["properties"]["scope"]
                if principal is not None:
                    if str(a["properties"].get("principalId", "")).lower() != principal.lower():
                        continue
                    if scope not in ("/", "/keys") and not _above(s, scope):
                        continue
                elif not _above(s, scope):
                    continue
                out.append(copy.deepcopy(a))
            return out

    def hsm_get_assignment(self, hsm: str, scope: str, name: str, activity_id: str) -> dict[str, Any]:
        with self.lock:
            a = self.hsm_assignments.get(hsm, {}).get(name.lower())
            if a is None or norm(a["properties"]["scope"]) != norm(scope):
                raise HsmError(404, "RoleAssignmentNotFound", "Requested role assignment not found", activity_id)
            return copy.deepcopy(a)

    def hsm_put_assignment(self, hsm: str, scope: str, name: str, body: Any, activity_id: str) -> dict[str, Any]:
        props = body.get("properties") if isinstance(body, dict) else None
        rd = props.get("roleDefinitionId") if isinstance(props, dict) else None
        pid = props.get("principalId") if isinstance(props, dict) else None
        if not isinstance(rd, str) or not rd or not isinstance(pid, str) or not pid:   # inference: the words
            raise HsmError(400, "BadParameter", "properties.roleDefinitionId and properties.principalId are "
                           "required", activity_id)
        if not _GUID.match(name):
            raise HsmError(400, "BadParameter", f"Role assignment name '{name}' is not a valid GUID", activity_id)
        with self.lock:
            if self._definition(hsm, guid_of(rd)) is None:
                raise HsmError(404, "RoleDefinitionNotFound", "Requested role definition not found", activity_id)
            store = self.hsm_assignments.setdefault(hsm, {})
            have = store.get(name.lower())
            if have is not None:
                hp = have["properties"]
                if guid_of(hp["roleDefinitionId"]) == guid_of(rd) and hp["principalId"].lower() == pid.lower() \
                        and norm(hp["scope"]) == norm(scope):
                    return copy.deepcopy(have)
                raise HsmError(409, "Conflict", "A role assignment with this name already exists", activity_id)
            prefix = "" if scope == "/" else scope
            a = {"id": f"{prefix}{AUTHZ}roleAssignments/{name}", "name": name,
                 "type": "Microsoft.Authorization/roleAssignments",
                 "properties": {"scope": scope, "roleDefinitionId": rd, "principalId": pid}}
            store[name.lower()] = a
            return copy.deepcopy(a)

    def hsm_delete_assignment(self, hsm: str, scope: str, name: str, activity_id: str) -> dict[str, Any]:
        with self.lock:
            a = self.hsm_get_assignment(hsm, scope, name, activity_id)
            del self.hsm_assignments[hsm][name.lower()]
            return a

    # ---- role definitions ---------------------------------------------------------------------------------
    def hsm_list_definitions(self, hsm: str) -> list[dict[str, Any]]:
        """The built-ins (package data) then the HSM's custom definitions, as the HSM lists them at ``/``."""
        with self.lock:
            builtins = [builtin_json(r.name) for r in builtin_roles()]
            return [*(b for b in builtins if b is not None),
                    *(copy.deepcopy(d) for d in self.hsm_definitions.get(hsm, {}).values())]

    def hsm_get_definition(self, hsm: str, name: str, activity_id: str) -> dict[str, Any]:
        with self.lock:
            d = self._definition(hsm, guid_of(name))
            if d is None:
                raise HsmError(404, "RoleDefinitionNotFound", "Requested role definition not found", activity_id)
            return copy.deepcopy(d)

    def hsm_put_definition(self, hsm: str, name: str, body: Any, activity_id: str) -> dict[str, Any]:
        props = body.get("properties") if isinstance(body, dict) else None
        if not _GUID.match(name) or not isinstance(props, dict) or not isinstance(props.get("permissions"), list):
            raise HsmError(400, "BadParameter", "A custom role needs a GUID name and properties.permissions",
                           activity_id)   # inference: the words
        if builtin_role(name) is not None:
            raise HsmError(400, "BadParameter", "Built-in role definitions cannot be changed", activity_id)
        d = {"id": f"{AUTHZ}roleDefinitions/{name}", "name": name, "type": "Microsoft.Authorization/roleDefinitions",
             "properties": {"roleName": props.get("roleName") or name, "description": props.get("description") or "",
                            "type": "CustomRole", "assignableScopes": props.get("assignableScopes") or ["/"],
                            "permissions": [{"actions": p.get("actions") or [], "notActions": p.get("notActions") or [],
                                             "dataActions": p.get("dataActions") or [],
                                             "notDataActions": p.get("notDataActions") or []}
                                            for p in props["permissions"] if isinstance(p, dict)]}}
        with self.lock:
            self.hsm_definitions.setdefault(hsm, {})[name.lower()] = d
            return copy.deepcopy(d)

    def hsm_delete_definition(self, hsm: str, name: str, activity_id: str) -> dict[str, Any]:
        with self.lock:
            d = self.hsm_definitions.get(hsm, {}).pop(guid_of(name), None)
            if d is None:
                raise HsmError(404, "RoleDefinitionNotFound", "Requested role definition not found", activity_id)
            return d

    # ---- account settings ---------------------------------------------------------------------------------
    def hsm_settings(self, hsm: str) -> list[dict[str, str]]:
        """The HSM's settings in the data plane's shape (``{"name", "value", "type": "boolean"}``, azure-keyvault-
        administration ``models.Setting``): Azure's defaults (``AllowKeyManagementOperationsThroughARM`` "false",
        the one setting a new HSM lists: azure-sdk-for-cpp keyvault-administration SettingsClientTest GetSettings)
        overlaid with the snapshot's ``hsm_settings``. Read-only here: kv-remediate never changes them."""
        values = {**DEFAULT_SETTINGS, **self.snap.hsm_settings.get(hsm.lower(), {})}
        return [{"name": n, "value": v, "type": "boolean"} for n, v in values.items()]

    def hsm_setting(self, hsm: str, name: str, activity_id: str) -> dict[str, str]:
        """One setting by its exact name; an unknown one is a 404 (inference: no published answer found for the
        code and words; the SDK raises ResourceNotFoundError on the status alone)."""
        found = next((s for s in self.hsm_settings(hsm) if s["name"] == name), None)
        if found is None:
            raise HsmError(404, "NotFound", f"Setting '{name}' was not found", activity_id)
        return found

    # ---- back to the snapshot -----------------------------------------------------------------------------
    def hsm_snapshot(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]],
                                    dict[str, list[dict[str, Any]]]]:
        """``managed_hsms``, ``hsm_role_assignments`` and ``hsm_role_definitions`` as they stand now."""
        with self.lock:
            return ([copy.deepcopy(h) for h in self.hsms.values()],
                    {n: [copy.deepcopy(a) for a in v.values()] for n, v in self.hsm_assignments.items() if v},
                    {n: [copy.deepcopy(d) for d in v.values()] for n, v in self.hsm_definitions.items() if v})
