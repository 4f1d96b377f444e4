"""Shared base of the emulated tenant: ARM errors, time/duration parsing, tokens, filters, scopes, principals.

Everything here runs under one re-entrant lock, so each request sees and leaves a consistent tenant and
every write is atomic. Routes (``routes_*.py``) translate HTTP to these methods and back.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from remediate.catalog import builtin_role
from remediate.emulator.snapshot import AUTHZ, Principal, Snapshot

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


class TenantBase:
    """The tenant's stores, scope hierarchy and principals; the per-provider mixins build on it."""

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
    def user_by_upn(self, upn: str) -> Principal | None:
        """The user whose userPrincipalName is ``upn`` (Entra compares UPNs case-insensitively), or None."""
        low = upn.lower()
        return next((p for p in self.principals.values()
                     if p.type == "User" and (p.user_principal_name or "").lower() == low), None)

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
