"""Authorization state: role definitions, role assignments and deny assignments."""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from remediate.catalog import builtin_role, builtin_roles
from remediate.emulator.snapshot import AUTHZ, role_definition_id
from remediate.emulator.state_common import (
    ArmError,
    AssignmentFilter,
    TenantBase,
    builtin_arm,
    guid_of,
    norm,
    now_iso,
    parse_time,
)


class AuthzState(TenantBase):
    """Authorization state: role definitions, role assignments and deny assignments."""

    # ---- role definitions -----------------------------------------------------------------------------------
    def role_definition(self, guid: str, scope: str = "/") -> dict[str, Any]:
        """A built-in or custom role definition by GUID, or ARM's RoleDefinitionDoesNotExist (404)."""
        b = builtin_arm(guid, scope)
        if b is not None:
            return b
        with self.lock:
            c = self.custom_roles.get(guid.lower())
            if c is not None:
                return copy.deepcopy(c)
        raise ArmError(404, "RoleDefinitionDoesNotExist",
                       f"The specified role definition with ID '{guid}' does not exist.")

    def role_exists(self, guid: str) -> bool:
        """Known as built-in or custom."""
        return builtin_role(guid) is not None or guid.lower() in self.custom_roles

    def list_role_definitions(self, scope: str, flt: str | None) -> list[dict[str, Any]]:
        """Built-ins plus the custom roles assignable at, above or below ``scope``; ``type``/``roleName`` filters."""
        want_type, want_name = None, None
        if flt and flt.strip():
            for clause in re.split(r"\s+and\s+", flt.strip(), flags=re.IGNORECASE):
                if m := re.fullmatch(r"\s*type\s+eq\s+'([^']+)'\s*", clause, re.IGNORECASE):
                    want_type = m.group(1).lower()
                elif m := re.fullmatch(r"\s*roleName\s+eq\s+'([^']+)'\s*", clause, re.IGNORECASE):
                    want_name = m.group(1).lower()
                else:
                    raise ArmError(400, "UnsupportedQuery", f"The filter '{flt}' is not supported.")
        out: list[dict[str, Any]] = []
        for r in builtin_roles():
            b = builtin_arm(r.name, scope)
            if b is not None:
                out.append(b)
        with self.lock:
            for c in self.custom_roles.values():
                scopes = c["properties"].get("assignableScopes") or ["/"]
                if any(self.related(s, scope) for s in scopes):
                    out.append(copy.deepcopy(c))
        return [d for d in out
                if (want_type is None or str(d["properties"].get("type", "")).lower() == want_type)
                and (want_name is None or str(d["properties"].get("roleName", "")).lower() == want_name)]

    def put_role_definition(self, scope: str, guid: str, body: Any) -> dict[str, Any]:
        """Create or update a custom role definition (the custom-role alternative of a plan)."""
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("roleName"):
            raise ArmError(400, "InvalidRoleDefinition", "The role definition must have properties.roleName.")
        if builtin_role(guid) is not None:
            raise ArmError(403, "AuthorizationFailed", f"Built-in role definition '{guid}' cannot be changed.")
        scopes = props.get("assignableScopes")
        if not isinstance(scopes, list) or not scopes:
            raise ArmError(400, "InvalidAssignableScopes",
                           "The role definition must have at least one assignable scope.")
        perms = props.get("permissions")
        if not isinstance(perms, list):
            raise ArmError(400, "InvalidRoleDefinition", "The role definition must have a permissions list.")
        with self.lock:
            for g, c in self.custom_roles.items():
                if g != guid.lower() and str(c["properties"].get("roleName", "")).lower() == props["roleName"].lower():
                    raise ArmError(409, "RoleDefinitionWithSameNameExists",
                                   f"A custom role with the same name '{props['roleName']}' already exists in this "
                                   "directory. Use a different name.")
            old = self.custom_roles.get(guid.lower())
            stamp = now_iso()
            rd = {"id": f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleDefinitions/{guid}",
                  "name": guid, "type": "Microsoft.Authorization/roleDefinitions",
                  "properties": {"roleName": props["roleName"], "type": "CustomRole",
                                 "description": props.get("description") or "",
                                 "assignableScopes": list(scopes), "permissions": copy.deepcopy(perms),
                                 "createdOn": old["properties"].get("createdOn", stamp) if old else stamp,
                                 "updatedOn": stamp}}
            self.custom_roles[guid.lower()] = rd
            self.snap.role_definitions = list(self.custom_roles.values())
            return copy.deepcopy(rd)

    def delete_role_definition(self, guid: str) -> dict[str, Any] | None:
        """Delete a custom role definition; None when absent (204)."""
        with self.lock:
            rd = self.custom_roles.pop(guid.lower(), None)
            self.snap.role_definitions = list(self.custom_roles.values())
            return rd

    # ---- role assignments -----------------------------------------------------------------------------------
    def _live(self) -> list[dict[str, Any]]:
        """Assignments not past a PIM expiry (expired ones are purged, as PIM revokes them)."""
        now = datetime.now(UTC)
        expired = [k for k, a in self.assignments.items()
                   if a.get("expiresOn") and (t := parse_time(str(a["expiresOn"]))) is not None and t <= now]
        for k in expired:
            del self.assignments[k]
        if expired:
            self.snap.role_assignments = list(self.assignments.values())
        return list(self.assignments.values())

    def list_role_assignments(self, scope: str, flt: AssignmentFilter) -> list[dict[str, Any]]:
        """ARM's list for a scope: atScope() = at or above; no atScope() = at, above and below.

        ``assignedTo('x')`` = x's own assignments and those of x's groups (transitively); ``principalId eq 'x'``
        = x's own only.
        """
        with self.lock:
            wanted: set[str] | None = None
            if flt.assigned_to:
                wanted = {flt.assigned_to.lower(), *(g.lower() for g in self.groups_of(flt.assigned_to))}
            if flt.principal_id:
                direct = {flt.principal_id.lower()}
                wanted = direct if wanted is None else wanted & direct
            out = []
            for a in self._live():
                p = a["properties"]
                if wanted is not None and str(p.get("principalId", "")).lower() not in wanted:
                    continue
                ok = self.at_or_above(p["scope"], scope) if flt.at_scope else self.related(p["scope"], scope)
                if ok:
                    out.append(copy.deepcopy(a))
            return out

    def get_role_assignment(self, scope: str, name: str) -> dict[str, Any]:
        """One assignment by scope and name, or ARM's 404 RoleAssignmentNotFound."""
        with self.lock:
            self._live()
            a = self.assignments.get(self._ra_id(scope, name).lower())
            if a is None:
                raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return copy.deepcopy(a)

    @staticmethod
    def _ra_id(scope: str, name: str) -> str:
        return f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleAssignments/{name}"

    def _check_principal(self, principal_id: str, principal_type: str | None) -> str | None:
        known = self.principals.get(principal_id.lower())
        if known is None:
            if self.principals and not principal_type:
                raise ArmError(400, "PrincipalNotFound",
                               f"Principal {principal_id.replace('-', '')} does not exist in the directory "
                               f"{self.snap.tenant_id}. Check that you have the correct principal ID. If you are "
                               "creating this principal and then immediately assigning a role, this error might "
                               "be related to a replication delay. In this case, set the role assignment "
                               "principalType property to a value, such as ServicePrincipal, User, or Group.  See "
                               "https://aka.ms/docs-principaltype")
            return principal_type
        if principal_type and principal_type.lower() != known.type.lower():
            raise ArmError(400, "UnmatchedPrincipalType",
                           f"The PrincipalId '{principal_id.replace('-', '')}' has type '{known.type}' , which is "
                           f"different from specified PrincipalType '{principal_type}'.")
        return known.type

    def _duplicate(self, scope: str, principal_id: str, role_guid: str,
                   other_than: str | None) -> dict[str, Any] | None:
        for k, a in self.assignments.items():
            p = a["properties"]
            if k != (other_than or "").lower() and norm(p["scope"]) == norm(scope) \
                    and str(p["principalId"]).lower() == principal_id.lower() \
                    and guid_of(p["roleDefinitionId"]) == role_guid:
                return a
        return None

    def put_role_assignment(self, scope: str, name: str, body: Any,
                            expires_on: str | None = None) -> tuple[int, dict[str, Any]]:
        """Create a role assignment: (201, new), (200, existing identical), or ARM's 400/409 errors."""
        try:
            uuid.UUID(name)
        except ValueError as e:
            raise ArmError(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid. The role "
                           "assignment ID must be a GUID.") from e
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("roleDefinitionId") or not props.get("principalId"):
            raise ArmError(400, "InvalidRoleAssignmentRequest",
                           "The request must have properties.roleDefinitionId and properties.principalId.")
        rd_id = role_definition_id(str(props["roleDefinitionId"]), scope)
        role_guid = guid_of(rd_id)
        principal_id = str(props["principalId"])
        rid = self._ra_id(scope, name)
        with self.lock:
            self._live()
            if not self.role_exists(role_guid):
                raise ArmError(400, "RoleDefinitionDoesNotExist",
                               f"The specified role definition with ID '{role_guid}' does not exist.")
            existing = self.assignments.get(rid.lower())
            if existing is not None:
                ep = existing["properties"]
                if str(ep["principalId"]).lower() == principal_id.lower() \
                        and guid_of(ep["roleDefinitionId"]) == role_guid:
                    # same assignment again: idempotent; ARM lets a re-PUT change condition and description
                    changed = {k: props.get(k) for k in ("condition", "conditionVersion", "description")
                               if props.get(k) != ep.get(k)}
                    if changed:
                        ep.update(changed, updatedOn=now_iso())
                        self.snap.role_assignments = list(self.assignments.values())
                    return 200, copy.deepcopy(existing)
                raise ArmError(409, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, "
                               "and scope are not allowed to be updated.")
            ptype = self._check_principal(principal_id, props.get("principalType"))
            dup = self._duplicate(scope, principal_id, role_guid, None)
            if dup is not None:
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists. The ID of the "
                               f"existing role assignment is {dup['name'].replace('-', '')}.")
            stamp = now_iso()
            a: dict[str, Any] = {
                "id": rid, "name": name, "type": "Microsoft.Authorization/roleAssignments",
                "properties": {"roleDefinitionId": rd_id, "principalId": principal_id, "principalType": ptype,
                               "scope": scope if norm(scope) != "/" else "/",
                               "condition": props.get("condition"), "conditionVersion": props.get("conditionVersion"),
                               "description": props.get("description"), "createdOn": stamp, "updatedOn": stamp,
                               "createdBy": None, "updatedBy": None,
                               "delegatedManagedIdentityResourceId": None}}
            if expires_on:
                a["expiresOn"] = expires_on
            self.assignments[rid.lower()] = a
            self.snap.role_assignments = list(self.assignments.values())
            return 201, copy.deepcopy(a)

    def delete_role_assignment(self, scope: str, name: str) -> dict[str, Any] | None:
        """Delete by scope and name: the deleted assignment, or None when absent (ARM answers 204)."""
        with self.lock:
            self._live()
            a = self.assignments.pop(self._ra_id(scope, name).lower(), None)
            if a is not None:
                self.snap.role_assignments = list(self.assignments.values())
            return a

    # ---- deny assignments ------------------------------------------------------------------------------------
    def list_deny_assignments(self, scope: str, flt: AssignmentFilter) -> list[dict[str, Any]]:
        """Deny assignments at/above (atScope()) or at/above/below the scope; principalId eq filters members."""
        with self.lock:
            out = []
            for d in self.denies.values():
                p = d["properties"]
                ok = self.at_or_above(p["scope"], scope) if flt.at_scope else self.related(p["scope"], scope)
                if ok and flt.principal_id:
                    ok = any(str(x.get("id", "")).lower() == flt.principal_id.lower() for x in p.get("principals", []))
                if ok:
                    out.append(copy.deepcopy(d))
            return out

    def get_deny_assignment(self, scope: str, name: str) -> dict[str, Any]:
        """One deny assignment by scope and name (or by id), or 404 DenyAssignmentNotFound."""
        with self.lock:
            for d in self.denies.values():
                if d["name"].lower() == name.lower() and (
                        norm(scope) == "/" or norm(d["properties"]["scope"]) == norm(scope)):
                    return copy.deepcopy(d)
        raise ArmError(404, "DenyAssignmentNotFound", f"The deny assignment '{name}' is not found.")
