"""The emulated tenant's state and ARM's semantics over it (scopes, filters, merges, conflicts).

Everything here runs under one re-entrant lock, so each request sees and leaves a consistent tenant and
every write is atomic. Routes (``routes_*.py``) translate HTTP to these methods and back.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from remediate.catalog import builtin_role, builtin_roles, canonical_permission
from remediate.emulator.snapshot import AUTHZ, Principal, Snapshot, role_definition_id, subscription_id

PERMISSION_KINDS = ("keys", "secrets", "certificates", "storage")
_MG = re.compile(r"^/providers/microsoft\.management/managementgroups/([^/]+)$")
_SUB = re.compile(r"^/subscriptions/([^/]+)")
_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)
_FRACTION = re.compile(r"(\.\d{6})\d+")


class ArmError(Exception):
    """An error response as ARM (or Graph, or Log Analytics) sends it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def now_iso() -> str:
    """ARM's timestamp format (UTC, 7-digit fraction trimmed to microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime | None:
    """An aware datetime from an ISO 8601 string (``Z`` and 7-digit fractions accepted), or None."""
    try:
        t = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_duration(value: str) -> timedelta | None:
    """An ISO 8601 duration (``PT8H``, ``P1D``, ``P1W``), or None."""
    m = _DURATION.match(value.strip())
    if not m or value.strip().upper() in ("P", "PT"):
        return None
    w, d, h, mi, s = m.groups()
    return timedelta(weeks=int(w or 0), days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0),
                     seconds=float(s or 0))


def norm(scope: str) -> str:
    """Scopes compare case-insensitively and without a trailing slash; the root is '/'."""
    s = scope.strip().rstrip("/").lower()
    return s if s.startswith("/") else ("/" + s if s else "/")


def guid_of(resource_id: str) -> str:
    """The last segment of an id (a role definition's GUID), lower-cased."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1].lower()


def encode_token(offset: int, query: str) -> str:
    """An opaque, URL-safe paging token carrying the offset and the original filter."""
    raw = json.dumps({"o": offset, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, str]:
    """Inverse of :func:`encode_token`; a bad token is a 400 as ARM sends it."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["o"]), str(data["q"])
    except (ValueError, KeyError, TypeError) as e:
        raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.") from e


@dataclass(frozen=True)
class AssignmentFilter:
    """A parsed role/deny assignment ``$filter``."""

    at_scope: bool = False
    assigned_to: str | None = None
    principal_id: str | None = None


ROLE_ASSIGNMENT_FILTERS = ("Supported filters are either 'atScope()' or 'principalId eq '{value}' or "
                           "assignedTo('{value}')'.")


def unsupported_filter(text: str) -> ArmError:
    """ARM's refusal of a role-assignment ``$filter``, verbatim in shape and words.

    Quoted from real answers: ``{"error": {"code": "UnsupportedQuery", "message": "The filter 'principalId' is not
    supported. Supported filters are either 'atScope()' or 'principalId eq '{value}' or assignedTo('{value}')'."}}``
    (turbot/steampipe-plugin-azure table_azure_role_assignment.go, citing Azure/azure-rest-api-specs#28255, where
    ``principalId eq {id}`` without quotes gets the same message).
    """
    return ArmError(400, "UnsupportedQuery", f"The filter '{text}' is not supported. {ROLE_ASSIGNMENT_FILTERS}")


def parse_assignment_filter(text: str | None, *, role_assignments: bool = False) -> AssignmentFilter:
    """``atScope()``, ``assignedTo('id')``, ``principalId eq 'id'``, joined by ``and`` (case-insensitive).

    With ``role_assignments`` only the combinations ARM accepts for roleAssignments pass: one of the three alone,
    or ``atScope() and assignedTo('id')`` (role-assignments-list-rest.md lists exactly these). ``atScope() and
    principalId eq`` is refused: "if you use atScope() and principalId+eq+'{objectId}' together, it will throw
    exception because the API doesn't allow it" (Azure/azure-powershell PR #20433, review thread; azure-cli
    role/custom.py: '"atScope()" and "principalId eq '{value}'" query cannot be used together (API limitation)').
    Any other clause (``roleDefinitionId eq``, unquoted ids) is the same ``UnsupportedQuery``.
    """
    if not text or not text.strip():
        return AssignmentFilter()
    at_scope, assigned, principal = False, None, None
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        c = clause.strip()
        if re.fullmatch(r"atScope\(\s*\)", c, re.IGNORECASE):
            at_scope = True
        elif m := re.fullmatch(r"assignedTo\(\s*'([^']+)'\s*\)", c, re.IGNORECASE):
            assigned = m.group(1)
        elif m := re.fullmatch(r"principalId\s+eq\s+'([^']+)'", c, re.IGNORECASE):
            principal = m.group(1)
        else:
            raise unsupported_filter(text)
    if role_assignments and principal is not None and (at_scope or assigned is not None):
        raise unsupported_filter(text)
    return AssignmentFilter(at_scope, assigned, principal)


def builtin_arm(guid: str, scope: str = "/") -> dict[str, Any] | None:
    """A built-in role definition in ARM shape (id subscription-scoped when asked under a subscription)."""
    r = builtin_role(guid)
    if r is None:
        return None
    m = _SUB.match(scope.lower())
    prefix = f"/subscriptions/{scope.split('/')[2]}" if m else ""
    return {"id": f"{prefix}{AUTHZ}roleDefinitions/{r.name}", "name": r.name,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": r.role_name, "type": r.role_type, "description": r.description,
                           "assignableScopes": list(r.assignable_scopes),
                           "permissions": [{"actions": list(r.actions), "notActions": list(r.not_actions),
                                            "dataActions": list(r.data_actions),
                                            "notDataActions": list(r.not_data_actions)}]}}


def _entry_key(e: dict[str, Any]) -> tuple[str, str, str]:
    return (str(e.get("tenantId") or "").lower(), str(e.get("objectId") or "").lower(),
            str(e.get("applicationId") or "").lower())


class TenantState:
    """The tenant as it stands now, with ARM's rules for reading and changing it. Thread-safe."""

    def __init__(self, snap: Snapshot) -> None:
        self.lock = threading.RLock()
        self.snap = snap
        self.vaults: dict[str, dict[str, Any]] = {v["id"].lower(): v for v in snap.vaults}
        self.assignments: dict[str, dict[str, Any]] = {r["id"].lower(): r for r in snap.role_assignments}
        self.custom_roles: dict[str, dict[str, Any]] = {guid_of(r["id"]): r for r in snap.role_definitions}
        self.denies: dict[str, dict[str, Any]] = {d["id"].lower(): d for d in snap.deny_assignments}
        self.schedule_requests: dict[str, dict[str, Any]] = {
            str(r.get("id", "")).lower(): r for r in snap.role_assignment_schedule_requests}
        self.principals: dict[str, Principal] = {p.id.lower(): p for p in snap.principals}
        self._mg_parent: dict[str, str | None] = {norm(m.id): norm(m.parent) if m.parent else None
                                                  for m in snap.management_groups}
        self._sub_mg: dict[str, str] = {s.lower(): norm(m.id) for m in snap.management_groups
                                        for s in m.subscriptions}
        self._ancestors: dict[str, frozenset[str]] = {}

    # ---- scopes -------------------------------------------------------------------------------------------
    def _mg_chain(self, mg: str | None) -> list[str]:
        out: list[str] = []
        while mg and mg not in out:
            out.append(mg)
            mg = self._mg_parent.get(mg)
        return out

    def ancestors(self, scope: str) -> frozenset[str]:
        """The scope itself and every scope above it: parents in the path, the subscription's MGs, '/'."""
        s = norm(scope)
        cached = self._ancestors.get(s)
        if cached is not None:
            return cached
        out = {"/", s}
        if _MG.match(s):
            out.update(self._mg_chain(s))
        else:
            parts = s.split("/")
            out.update("/".join(parts[:i]) for i in range(2, len(parts)))
            m = _SUB.match(s)
            if m:
                out.update(self._mg_chain(self._sub_mg.get(m.group(1))))
        result = frozenset(out)
        self._ancestors[s] = result
        return result

    def at_or_above(self, assignment_scope: str, scope: str) -> bool:
        """True when an object at ``assignment_scope`` applies at ``scope`` (inherited downwards)."""
        return norm(assignment_scope) in self.ancestors(scope)

    def related(self, other: str, scope: str) -> bool:
        """At, above or below: what an unfiltered list for ``scope`` returns."""
        return self.at_or_above(other, scope) or self.at_or_above(scope, other)

    # ---- principals ---------------------------------------------------------------------------------------
    def groups_of(self, principal_id: str) -> list[str]:
        """Transitive group memberships (snapshot ``member_of``, followed through nested groups)."""
        seen: list[str] = []
        todo = list(self.principals[principal_id.lower()].member_of) if principal_id.lower() in self.principals \
            else []
        while todo:
            g = todo.pop(0)
            if g.lower() in (x.lower() for x in seen) or g.lower() == principal_id.lower():
                continue
            seen.append(g)
            p = self.principals.get(g.lower())
            if p:
                todo.extend(p.member_of)
        return seen

    # ---- vaults --------------------------------------------------------------------------------------------
    def vault(self, vault_id: str) -> dict[str, Any]:
        """One vault by id (case-insensitive), or ARM's ResourceNotFound."""
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                parts = vault_id.split("/")
                rg = parts[4] if len(parts) > 4 else "?"
                raise ArmError(404, "ResourceNotFound",
                               f"The Resource 'Microsoft.KeyVault/vaults/{parts[-1]}' under resource group '{rg}' "
                               "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
            return copy.deepcopy(v)

    def vault_json(self, vault_id: str) -> bytes:
        """One vault already encoded (under the lock, so no copy is needed: large policy lists stay cheap)."""
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                self.vault(vault_id)  # raises ResourceNotFound
            return json.dumps(v).encode()

    def vaults_in(self, prefix: str) -> list[dict[str, Any]]:
        """Every vault whose id is under ``prefix`` (a subscription or resource group), in snapshot order."""
        p = norm(prefix) + "/"
        with self.lock:
            return [copy.deepcopy(v) for k, v in self.vaults.items() if k.startswith(p)]

    def update_access_policy(self, vault_id: str, kind: str, body: Any) -> dict[str, Any]:
        """``PUT .../vaults/{v}/accessPolicies/{add|replace|remove}``, merged per entry, atomically.

        Entries match on tenantId + objectId + applicationId (GUIDs, case-insensitive); other entries are never
        touched. ``add`` unions permissions per kind (a permission already present in any casing is kept as
        stored). ``replace`` sets the matching entry's permissions to exactly the given ones (adding the entry
        when absent) -- terraform-provider-azurerm updates one ``azurerm_key_vault_access_policy`` with
        ``replace`` while other entries survive, so replace is per entry, not per vault.

        ``remove`` takes away only the listed permissions, and an entry left with no permission at all is
        deleted. Evidence (the REST spec documents none: the body is only "Access policy to merge into the
        vault", and it has no remove example):

        * hashicorp/terraform-provider-azurerm ``key_vault_access_policy_resource.go`` (delete): "To remove a
          policy correctly, we need to send it with all permissions in the correct case ... so we read it back
          from the vault" -- it sends the entry's full current permission list with ``remove``, then waits for
          the entry to be gone. Issues #10707 / #10752 there: when the stored casing differed from what the
          provider sent, destroy waited 30 minutes for an entry that stayed.
        * Azure/azure-rest-api-specs#42963 (2026-05): "accessPolicies/remove ... performs case-sensitive
          matching on permission values ... The response is HTTP 200, but the access policy is not removed",
          while ``add`` "accepts permissions regardless of casing"; and tombuildsstuff in azure-rest-api-specs
          PR #24475: "the exact casing has to be specified when removing an Access Policy".
        * ``az keyvault delete-policy`` does not use this API at all: it GETs the vault, drops the whole entry
          client-side and PUTs the vault back (read-modify-write, which loses concurrent changes);
          ``Remove-AzKeyVaultAccessPolicy`` likewise removes all of a principal's permissions.

        So here, as in ARM: ``remove`` matches permission values case-sensitively; a permission sent in another
        casing, or an entry that does not exist, is silently left alone (200). To take a permission away, send
        it exactly as the vault stores it. An entry in a remove request with no permissions removes nothing.

        The response is the ``Microsoft.KeyVault/vaults/accessPolicies`` resource echoing the request's entries
        (as in the REST spec example ``updateAccessPoliciesAdd.json``); read the vault to see the result.
        """
        kind_l = kind.lower()
        if kind_l not in ("add", "replace", "remove"):
            raise ArmError(400, "BadRequest",
                           'Access policies operation not permitted. Allowed operations are "add", "replace", '
                           'and "remove".')
        props = body.get("properties") if isinstance(body, dict) else None
        entries = props.get("accessPolicies") if isinstance(props, dict) else None
        if not isinstance(entries, list):
            raise ArmError(400, "BadRequest", "The request body must contain properties.accessPolicies (a list).")
        clean = [self._clean_entry(e, i, kind_l) for i, e in enumerate(entries)]
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                self.vault(vault_id)  # raises ResourceNotFound
                raise AssertionError("unreachable")
            vprops = v.setdefault("properties", {})
            tenant = str(vprops.get("tenantId") or self.snap.tenant_id).lower()
            for e in clean:
                if str(e["tenantId"]).lower() != tenant:
                    raise ArmError(400, "BadRequest", f"The access policy tenant ID '{e['tenantId']}' does not "
                                   f"match the vault's tenant ID '{vprops.get('tenantId')}'.")
            current: list[dict[str, Any]] = vprops.setdefault("accessPolicies", [])
            for e in clean:
                self._merge(current, e, kind_l)
            vid = v["id"]
        return {"id": f"{vid}/accessPolicies/", "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "properties": {"accessPolicies": clean}}

    @staticmethod
    def _clean_entry(e: Any, i: int, kind: str) -> dict[str, Any]:
        if not isinstance(e, dict) or not e.get("objectId") or not e.get("tenantId"):
            raise ArmError(400, "BadRequest", f"accessPolicies[{i}] must have tenantId, objectId and permissions.")
        perms = e.get("permissions") or {}
        if not isinstance(perms, dict):
            raise ArmError(400, "BadRequest", f"accessPolicies[{i}].permissions must be an object.")
        out_perms: dict[str, list[str]] = {}
        for k, values in perms.items():
            if k not in PERMISSION_KINDS or not isinstance(values, list):
                raise ArmError(400, "BadRequest", f"accessPolicies[{i}].permissions.{k} is not valid.")
            for p in values:
                if not isinstance(p, str) or (kind != "remove" and canonical_permission(k, p) is None):
                    raise ArmError(400, "BadRequest",
                                   f"Invalid permission '{p}' in accessPolicies[{i}].permissions.{k}.")
            out_perms[k] = list(values)
        out = {"tenantId": e["tenantId"], "objectId": e["objectId"], "permissions": out_perms}
        if e.get("applicationId"):
            out["applicationId"] = e["applicationId"]
        return out

    @staticmethod
    def _merge(current: list[dict[str, Any]], e: dict[str, Any], kind: str) -> None:
        key = _entry_key(e)
        idx = next((i for i, c in enumerate(current) if _entry_key(c) == key), None)
        if kind == "add":
            if idx is None:
                current.append(copy.deepcopy(e))
                return
            have = current[idx].setdefault("permissions", {})
            for k, values in e["permissions"].items():
                lst = have.setdefault(k, [])
                for p in values:
                    if p.lower() not in (x.lower() for x in lst):
                        lst.append(p)
        elif kind == "replace":
            if idx is None:
                current.append(copy.deepcopy(e))
            else:
                current[idx]["permissions"] = copy.deepcopy(e["permissions"])
        else:
            if idx is None:
                return
            have = current[idx].setdefault("permissions", {})
            for k, values in e["permissions"].items():
                if k in have:
                    have[k] = [p for p in have[k] if p not in values]  # exact, case-sensitive (see docstring)
            if not any(have.get(k) for k in PERMISSION_KINDS):
                del current[idx]

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

    # ---- PIM ---------------------------------------------------------------------------------------------------
    # Evidence for the answers below (no public recording of PIM AdminAssign traffic exists yet, see
    # shared/reference/recordings/SOURCES.md "Not found as recordings"):
    # - a request name is single-use: re-sending a name answers "A role assignment request with Id: {guid} already
    #   exists" (Azure/bicep-types-az#1431, Azure/bicep#12472); code RoleAssignmentRequestExists with status 400, as
    #   the PIM clients that handle it read it (e.g. the Rust azure-pim-cli's check_error_response: 400 + code).
    # - an active assignment of the role to the principal at the scope: 400 RoleAssignmentExists "The Role
    #   assignment already exists." (hashicorp/terraform-provider-azuread#1306, co-native-ab/pimctl#51).
    # - role management policy: 400 RoleAssignmentRequestPolicyValidationFailed "The following policy rules failed:
    #   [\"ExpirationRule\"]" (hashicorp/terraform-provider-azurerm#22766, MicrosoftDocs/azure-docs#80426); an
    #   approval rule leaves the request in status PendingApproval with an approvalId and no assignment (REST spec
    #   2020-10-01 RoleAssignmentScheduleRequest.status enum; "Use Role Assignment Approvals to approve PIM role
    #   activation requests with REST API").
    def _policy_for(self, scope: str, role_guid: str) -> list[dict[str, Any]]:
        """The effective rules of the closest role management policy assignment at or above ``scope`` for the role."""
        best: tuple[int, list[dict[str, Any]]] | None = None
        for raw in self.snap.role_management_policies:
            props = raw.get("properties", raw) if isinstance(raw, dict) else {}
            pscope = str(props.get("scope") or "")
            rd = str(props.get("roleDefinitionId") or "")
            if not pscope or (rd and guid_of(rd) != role_guid) or not self.at_or_above(pscope, scope):
                continue
            depth = norm(pscope).count("/")
            if best is None or depth > best[0]:
                best = (depth, list(props.get("effectiveRules") or props.get("rules") or []))
        return best[1] if best else []

    @staticmethod
    def _applies(rule: dict[str, Any], caller: str) -> bool:
        target = rule.get("target") or {}
        return str(target.get("caller") or caller).lower() == caller.lower() and \
            str(target.get("level") or "Assignment").lower() == "assignment"

    def _check_policy(self, scope: str, role_guid: str, rtype: str, etype: str,
                      duration: timedelta | None) -> bool:
        """Raise the policy's refusal, or return whether the request needs an approver."""
        caller = "EndUser" if rtype.lower().startswith("self") else "Admin"
        failed: list[str] = []
        approval = False
        for rule in self._policy_for(scope, role_guid):
            if not self._applies(rule, caller):
                continue
            kind = str(rule.get("ruleType") or "")
            if kind == "RoleManagementPolicyExpirationRule":
                longest = parse_duration(str(rule.get("maximumDuration") or ""))
                if (rule.get("isExpirationRequired") and etype == "noexpiration") or (
                        longest is not None and (duration is None or duration > longest)):
                    failed.append("ExpirationRule")
            elif kind == "RoleManagementPolicyApprovalRule":
                approval = approval or bool((rule.get("setting") or {}).get("isApprovalRequired"))
        if failed:
            raise ArmError(400, "RoleAssignmentRequestPolicyValidationFailed",
                           f"The following policy rules failed: {json.dumps(sorted(set(failed)))}")
        return approval

    def put_schedule_request(self, scope: str, name: str, body: Any) -> dict[str, Any]:
        """``roleAssignmentScheduleRequests``: AdminAssign creates the assignment with its expiry (or waits for an
        approver when the role's policy says so), AdminRemove deletes it. A request name is single-use."""
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("principalId") or not props.get("roleDefinitionId") \
                or not props.get("requestType"):
            raise ArmError(400, "InvalidRoleAssignmentScheduleRequest",
                           "The request must have properties.principalId, roleDefinitionId and requestType.")
        rid = f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleAssignmentScheduleRequests/{name}"
        rtype = str(props["requestType"])
        principal_id = str(props["principalId"])
        rd_id = role_definition_id(str(props["roleDefinitionId"]), scope)
        with self.lock:
            if rid.lower() in self.schedule_requests:
                raise ArmError(400, "RoleAssignmentRequestExists",
                               f"A role assignment request with Id: {name} already exists")
            self._live()
            schedule = copy.deepcopy(props.get("scheduleInfo") or {})
            target: str | None = None
            status = "Provisioned"
            ptype = None
            approval_id: str | None = None
            if rtype.lower() in ("adminremove", "selfdeactivate"):
                dup = self._duplicate(scope, principal_id, guid_of(rd_id), None)
                if dup is None:
                    raise ArmError(400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist.")
                del self.assignments[dup["id"].lower()]
                self.snap.role_assignments = list(self.assignments.values())
                target, status, ptype = dup["name"], "Revoked", dup["properties"].get("principalType")
            else:
                if not self.role_exists(guid_of(rd_id)):
                    raise ArmError(400, "RoleDefinitionDoesNotExist",
                                   f"The specified role definition with ID '{guid_of(rd_id)}' does not exist.")
                if self._duplicate(scope, principal_id, guid_of(rd_id), None) is not None:
                    raise ArmError(400, "RoleAssignmentExists", "The Role assignment already exists.")
                start = parse_time(str(schedule.get("startDateTime") or "")) or datetime.now(UTC)
                schedule.setdefault("startDateTime", start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
                exp = schedule.get("expiration") or {}
                end: datetime | None = None
                etype = str(exp.get("type") or "NoExpiration").lower()
                if etype == "afterdatetime":
                    end = parse_time(str(exp.get("endDateTime") or ""))
                elif etype == "afterduration":
                    d = parse_duration(str(exp.get("duration") or ""))
                    end = start + d if d is not None else None
                if etype in ("afterdatetime", "afterduration") and end is None:
                    raise ArmError(400, "InvalidScheduleInfo", "The expiration of the schedule is not valid.")
                needs_approval = self._check_policy(scope, guid_of(rd_id), rtype, etype,
                                                    end - start if end is not None else None)
                target = str(uuid.uuid5(uuid.NAMESPACE_URL, rid.lower()))
                ptype = props.get("principalType") or (self.principals[principal_id.lower()].type
                                                       if principal_id.lower() in self.principals else None)
                if needs_approval:
                    status = "PendingApproval"
                    approval_id = f"/providers/Microsoft.Authorization/roleAssignmentApprovals/{uuid.uuid4()}"
                else:
                    self._provision(scope, target, rd_id, principal_id, ptype, props, end)
            req = {"id": rid, "name": name, "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests",
                   "properties": {"scope": scope, "roleDefinitionId": rd_id, "principalId": principal_id,
                                  "principalType": ptype, "requestType": rtype, "status": status,
                                  "approvalId": approval_id, "targetRoleAssignmentScheduleId": target,
                                  "targetRoleAssignmentScheduleInstanceId": None, "scheduleInfo": schedule,
                                  "linkedRoleEligibilityScheduleId": None,  # not echoed (REST spec example)
                                  "justification": props.get("justification"),
                                  "ticketInfo": props.get("ticketInfo") or {"ticketNumber": None, "ticketSystem": None},
                                  "condition": props.get("condition"),
                                  "conditionVersion": props.get("conditionVersion"),
                                  "createdOn": now_iso(), "requestorId": None}}
            self.schedule_requests[rid.lower()] = req
            self.snap.role_assignment_schedule_requests = list(self.schedule_requests.values())
            return copy.deepcopy(req)

    def _provision(self, scope: str, target: str, rd_id: str, principal_id: str, ptype: str | None,
                   props: dict[str, Any], end: datetime | None) -> dict[str, Any]:
        _, a = self.put_role_assignment(
            scope, target, {"properties": {"roleDefinitionId": rd_id, "principalId": principal_id,
                                           "principalType": ptype, "condition": props.get("condition"),
                                           "conditionVersion": props.get("conditionVersion")}},
            expires_on=end.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if end else None)
        return a

    def decide_schedule_request(self, request_id: str, approve: bool) -> dict[str, Any]:
        """An approver's decision on a PendingApproval request (what the approvals API would do): approved ->
        Provisioned with its assignment (the expiration counted from now), denied -> Denied."""
        with self.lock:
            req = self.schedule_requests.get(request_id.lower())
            if req is None or req["properties"]["status"] != "PendingApproval":
                raise ArmError(404, "RoleAssignmentScheduleRequestNotFound",
                               f"No pending role assignment schedule request '{request_id}'.")
            p = req["properties"]
            if approve:
                exp = (p.get("scheduleInfo") or {}).get("expiration") or {}
                d = parse_duration(str(exp.get("duration") or "")) if str(exp.get("type") or "").lower() == \
                    "afterduration" else None
                end = datetime.now(UTC) + d if d is not None else parse_time(str(exp.get("endDateTime") or ""))
                self._provision(p["scope"], p["targetRoleAssignmentScheduleId"], p["roleDefinitionId"],
                                p["principalId"], p.get("principalType"), p, end)
            p["status"] = "Provisioned" if approve else "Denied"
            self.snap.role_assignment_schedule_requests = list(self.schedule_requests.values())
            return copy.deepcopy(req)

    def get_schedule_request(self, scope: str, name: str) -> dict[str, Any]:
        """A stored schedule request, or 404 RoleAssignmentScheduleRequestNotFound."""
        rid = f"{'' if norm(scope) == '/' else scope.rstrip('/')}{AUTHZ}roleAssignmentScheduleRequests/{name}"
        with self.lock:
            r = self.schedule_requests.get(rid.lower())
            if r is None:
                raise ArmError(404, "RoleAssignmentScheduleRequestNotFound",
                               f"The role assignment schedule request '{name}' is not found.")
            return copy.deepcopy(r)

    # ---- the whole tenant -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The tenant now, in snapshot format (for ``--snapshot-out``)."""
        with self.lock:
            self._live()
            self.snap.vaults = list(self.vaults.values())
            return self.snap.to_dict()

    def subscriptions(self) -> list[str]:
        """Known subscription GUIDs."""
        return [subscription_id(s) for s in self.snap.subscriptions]
