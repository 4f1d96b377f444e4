"""The tenant snapshot (``shared/spec/snapshot.md``): a typed model, loading, validation and normalisation.

A snapshot may hold ARM-shaped objects (``{"id", "name", "properties": {...}}``) or the flattened shapes that
``az role assignment list --all``, ``az role definition list`` and ``az keyvault show`` print; both are
normalised here to the ARM shape the emulator serves. Unknown keys are ignored, every list is optional, and
a malformed file raises :class:`remediate.errors.InputError` naming the offending key.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import InputError

AUTHZ = "/providers/Microsoft.Authorization/"
_GUIDISH = re.compile(r"^[0-9a-fA-F-]{8,}$")
_VAULT_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/[^/]+$",
                       re.IGNORECASE)
# Where an ARM id split on "/" holds the subscription: "/subscriptions/{id}/...".
_SUBSCRIPTION_AT = 2
_VAULT_TOP = {"id", "name", "type", "location", "tags", "systemData", "properties"}
_AZ_ONLY = {"resourceGroup", "principalName", "roleDefinitionName"}
_PRINCIPAL_TYPES = {"serviceprincipal": "ServicePrincipal", "user": "User", "group": "Group",
                    "foreigngroup": "ForeignGroup", "device": "Device"}


@dataclass
class Faults:
    """Per-request fault probabilities (decided before a request has any effect)."""

    throttle_rate: float = 0.0
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    # Opt-in: apply a write, then drop the connection ("applied but the response was lost").
    lost_response_rate: float = 0.0


@dataclass
class EmulatorOptions:
    """The snapshot's ``emulator`` object: latency, faults, RNG seed and list page size."""

    latency_ms: float = 0.0
    seed: int | None = None
    page_size: int = 50
    faults: Faults = field(default_factory=Faults)
    # the Log Analytics query API answers 200 with this PartialError message beside the rows (routes_logs.py)
    logs_partial_error: str | None = None
    # vaults (names or ids) ARM has but Azure Resource Graph has not indexed yet: it lags ARM by minutes for new
    # resources (routes_resource_graph.py)
    resource_graph_unindexed: list[str] = field(default_factory=list)
    # the object id the Managed HSM data plane sees as the caller: when set, every HSM data-plane request is checked
    # against that principal's local RBAC (and its groups') and refused as the HSM refuses (state_hsm.py); unset,
    # the HSM data plane lets every request through, as ARM's routes do
    hsm_caller: str | None = None


@dataclass
class Principal:
    """A directory object the emulator's Graph knows: user, service principal or group."""

    id: str
    type: str = "ServicePrincipal"
    display_name: str = ""
    app_id: str | None = None
    user_principal_name: str | None = None
    member_of: list[str] = field(default_factory=list)


@dataclass
class ManagementGroup:
    """A management group: its full id, optional parent (full id) and the subscriptions directly under it."""

    id: str
    parent: str | None = None
    subscriptions: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Snapshot:
    """A slice of a tenant, in ARM shape; what the emulator serves and what ``tenant()`` writes back.

    Emulator extensions beyond ARM's shapes: ``role_assignment_schedule_requests`` (PIM requests received) and a
    top-level ``expiresOn`` on a role assignment created by a PIM ``AdminAssign`` with an expiration (ARM keeps
    that on the schedule; the emulator drops the assignment once it has passed, as PIM does).
    """

    tenant_id: str = "00000000-0000-0000-0000-000000000000"
    subscriptions: list[str] = field(default_factory=list)
    management_groups: list[ManagementGroup] = field(default_factory=list)
    vaults: list[dict[str, Any]] = field(default_factory=list)
    role_assignments: list[dict[str, Any]] = field(default_factory=list)
    role_definitions: list[dict[str, Any]] = field(default_factory=list)
    deny_assignments: list[dict[str, Any]] = field(default_factory=list)
    role_assignment_schedule_requests: list[dict[str, Any]] = field(default_factory=list)
    # PIM role management policy assignments (ARM roleManagementPolicyAssignments shape: properties.scope,
    # roleDefinitionId, effectiveRules): what the emulator enforces on schedule requests (see state.py)
    role_management_policies: list[dict[str, Any]] = field(default_factory=list)
    principals: list[Principal] = field(default_factory=list)
    # Managed HSMs (ARM objects as ``az keyvault show --hsm-name`` prints them), and per HSM name its local role
    # assignments (as ``az keyvault role assignment list --hsm-name`` prints them, or the data plane's shape) and its
    # custom role definitions (built-ins are package data: catalog/hsm.py)
    managed_hsms: list[dict[str, Any]] = field(default_factory=list)
    hsm_role_assignments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hsm_role_definitions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # per HSM name its account settings as ``az keyvault setting list --hsm-name`` holds them (name -> "true" /
    # "false"); an HSM absent here, or a setting absent, has Azure's default (AllowKeyManagementOperationsThroughARM
    # "false": ARM is not trusted by default)
    hsm_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    graph: bool = True
    emulator: EmulatorOptions = field(default_factory=EmulatorOptions)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot in file format (deep copy; round-trips through :func:`load_snapshot`)."""
        f = self.emulator.faults
        return {
            "tenant_id": self.tenant_id,
            "subscriptions": list(self.subscriptions),
            "management_groups": [
                {"id": m.id, **({"parent": m.parent} if m.parent else {}), "subscriptions": list(m.subscriptions)}
                for m in self.management_groups],
            "vaults": copy.deepcopy(self.vaults),
            "role_assignments": copy.deepcopy(self.role_assignments),
            "role_definitions": copy.deepcopy(self.role_definitions),
            "deny_assignments": copy.deepcopy(self.deny_assignments),
            "role_assignment_schedule_requests": copy.deepcopy(self.role_assignment_schedule_requests),
            "role_management_policies": copy.deepcopy(self.role_management_policies),
            "principals": [
                {"id": p.id, "type": p.type, "display_name": p.display_name,
                 **({"app_id": p.app_id} if p.app_id else {}),
                 **({"user_principal_name": p.user_principal_name} if p.user_principal_name else {}),
                 "member_of": list(p.member_of)}
                for p in self.principals],
            **({"managed_hsms": copy.deepcopy(self.managed_hsms)} if self.managed_hsms else {}),
            **({"hsm_role_assignments": copy.deepcopy(self.hsm_role_assignments)} if self.hsm_role_assignments
               else {}),
            **({"hsm_role_definitions": copy.deepcopy(self.hsm_role_definitions)} if self.hsm_role_definitions
               else {}),
            **({"hsm_settings": copy.deepcopy(self.hsm_settings)} if self.hsm_settings else {}),
            "log_rows": copy.deepcopy(self.log_rows),
            "graph": self.graph,
            "emulator": {"latency_ms": self.emulator.latency_ms, "seed": self.emulator.seed,
                         "page_size": self.emulator.page_size,
                         **({"logs_partial_error": self.emulator.logs_partial_error}
                            if self.emulator.logs_partial_error else {}),
                         **({"resource_graph_unindexed": list(self.emulator.resource_graph_unindexed)}
                            if self.emulator.resource_graph_unindexed else {}),
                         **({"hsm_caller": self.emulator.hsm_caller} if self.emulator.hsm_caller else {}),
                         "faults": {"throttle_rate": f.throttle_rate, "retry_after_s": f.retry_after_s,
                                    "error_rate": f.error_rate, "reset_rate": f.reset_rate,
                                    "lost_response_rate": f.lost_response_rate}},
        }


class _Ctx:
    """Carries the source name so every error names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(self.source, f"{key}: {problem}")

    def obj(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {type(value).__name__}")
        return value

    def lst(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        return value

    def text(self, value: Any, key: str, required: bool = True) -> str | None:
        if value is None or value == "":
            if required:
                raise self.fail(key, "missing")
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {type(value).__name__}")
        return value

    def num(self, value: Any, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {type(value).__name__}")
        if value < lo or (hi is not None and value > hi):
            raise self.fail(key, f"{value} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
        return float(value)


def subscription_id(value: str) -> str:
    """A bare subscription GUID from a GUID or a ``/subscriptions/...`` id."""
    m = re.match(r"^/?subscriptions/([^/]+)", value, re.IGNORECASE)
    return m.group(1) if m else value


def _split_props(obj: dict[str, Any], top: set[str]) -> dict[str, Any]:
    """ARM shape from either shape: keys outside ``top`` move into ``properties`` (az prints them flat)."""
    props = dict(obj.get("properties") or {})
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k == "properties" or k in _AZ_ONLY:
            continue
        if k in top:
            out[k] = copy.deepcopy(v)
        else:
            props.setdefault(k, copy.deepcopy(v))
    out["properties"] = props
    return out


def _vault(c: _Ctx, raw: Any, key: str, tenant_id: str) -> dict[str, Any]:
    v = _split_props(c.obj(raw, key), _VAULT_TOP)
    vid = c.text(v.get("id"), f"{key}.id")
    assert vid is not None
    if not _VAULT_ID.match(vid):
        raise c.fail(f"{key}.id", f"{vid!r} is not a Key Vault resource id "
                                  "(/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME)")
    v["name"] = v.get("name") or vid.rsplit("/", 1)[-1]
    v["type"] = v.get("type") or "Microsoft.KeyVault/vaults"
    props = v["properties"]
    props.setdefault("tenantId", tenant_id)
    policies = c.lst(props.get("accessPolicies"), f"{key}.properties.accessPolicies")  # absent: RBAC-only vault
    for i, p in enumerate(policies):
        pk = f"{key}.properties.accessPolicies[{i}]"
        c.obj(p, pk)
        c.text(p.get("objectId"), f"{pk}.objectId")
        p.setdefault("tenantId", props["tenantId"])
        perms = c.obj(p.get("permissions") or {}, f"{pk}.permissions")
        for kind, values in perms.items():
            for j, value in enumerate(c.lst(values, f"{pk}.permissions.{kind}")):
                c.text(value, f"{pk}.permissions.{kind}[{j}]")
        p["permissions"] = perms
    return v


def scope_of(resource_id: str, kind: str) -> str:
    """The scope part of ``{scope}/providers/Microsoft.Authorization/{kind}/{name}`` ('/' at the root)."""
    idx = resource_id.lower().rfind(f"{AUTHZ}{kind}/".lower())
    return (resource_id[:idx] or "/") if idx >= 0 else "/"


def role_definition_id(value: str, scope: str) -> str:
    """A full role definition id from a bare GUID (subscription-scoped when the scope is in one)."""
    if "/" in value:
        return value
    m = re.match(r"^(/subscriptions/[^/]+)", scope, re.IGNORECASE)
    return f"{m.group(1) if m else ''}{AUTHZ}roleDefinitions/{value}"


def _named(c: _Ctx, obj: dict[str, Any], key: str, kind: str) -> tuple[str, str, str]:
    """(id, name, scope) of an Authorization object given by id, or by scope and name."""
    props = obj["properties"]
    rid = c.text(obj.get("id"), f"{key}.id", required=False)
    if rid is None:
        name = c.text(obj.get("name"), f"{key}.name (or {key}.id)")
        scope = c.text(props.get("scope"), f"{key}.properties.scope (or {key}.id)")
        assert name is not None and scope is not None
        rid = f"{'' if scope == '/' else scope.rstrip('/')}{AUTHZ}{kind}/{name}"
    if f"{AUTHZ}{kind}/".lower() not in rid.lower():
        raise c.fail(f"{key}.id", f"{rid!r} is not a {kind} id ({{scope}}{AUTHZ}{kind}/{{name}})")
    return rid, rid.rstrip("/").rsplit("/", 1)[-1], props.get("scope") or scope_of(rid, kind)


def _role_assignment(c: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    obj = _split_props(c.obj(raw, key), {"id", "name", "type", "expiresOn"})
    rid, name, scope = _named(c, obj, key, "roleAssignments")
    props = obj["properties"]
    c.text(props.get("principalId"), f"{key}.properties.principalId")
    rd = c.text(props.get("roleDefinitionId"), f"{key}.properties.roleDefinitionId")
    assert rd is not None
    props["roleDefinitionId"] = role_definition_id(rd, scope)
    props["scope"] = scope
    obj.update(id=rid, name=name, type="Microsoft.Authorization/roleAssignments")
    return obj


def _role_definition(c: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    src = c.obj(raw, key)
    obj = _split_props(src, {"id", "name", "type"})
    props = obj["properties"]
    if "properties" not in src:  # az prints the role type as roleType and the resource type as type
        props["type"] = props.pop("roleType", None) or "CustomRole"
    rid = c.text(obj.get("id"), f"{key}.id", required=False)
    if rid is None:
        name = c.text(obj.get("name"), f"{key}.name (or {key}.id)")
        rid = f"{AUTHZ}roleDefinitions/{name}"
    if f"{AUTHZ}roleDefinitions/".lower() not in rid.lower():
        raise c.fail(f"{key}.id", f"{rid!r} is not a role definition id")
    c.text(props.get("roleName"), f"{key}.properties.roleName")
    for i, p in enumerate(c.lst(props.get("permissions"), f"{key}.properties.permissions")):
        c.obj(p, f"{key}.properties.permissions[{i}]")
    props.setdefault("type", "CustomRole")
    props.setdefault("permissions", [])
    props.setdefault("assignableScopes", ["/"])
    obj.update(id=rid, name=rid.rstrip("/").rsplit("/", 1)[-1], type="Microsoft.Authorization/roleDefinitions")
    return obj


def _deny_assignment(c: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    obj = _split_props(c.obj(raw, key), {"id", "name", "type"})
    rid, name, scope = _named(c, obj, key, "denyAssignments")
    props = obj["properties"]
    props["scope"] = scope
    for k in ("permissions", "principals", "excludePrincipals"):
        props[k] = c.lst(props.get(k), f"{key}.properties.{k}")
    props.setdefault("doNotApplyToChildScopes", False)
    props.setdefault("isSystemProtected", False)
    props.setdefault("denyAssignmentName", name)
    obj.update(id=rid, name=name, type="Microsoft.Authorization/denyAssignments")
    return obj


_HSM_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/managedHSMs/[^/]+$",
                     re.IGNORECASE)
_HSM_TOP = {"id", "name", "type", "location", "tags", "sku", "systemData", "properties"}
_HSM_AZ_ONLY = {"resourceGroup", "principalName", "roleName", "roleDefinitionName"}
HSM_BUILTIN_PREFIX = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


def _managed_hsm(c: _Ctx, raw: Any, key: str, tenant_id: str) -> dict[str, Any]:
    """A Managed HSM in ARM shape (``az keyvault show --hsm-name`` prints it so, plus ``resourceGroup``)."""
    h = _split_props({k: v for k, v in c.obj(raw, key).items() if k not in _HSM_AZ_ONLY}, _HSM_TOP)
    hid = c.text(h.get("id"), f"{key}.id")
    assert hid is not None
    if not _HSM_ID.match(hid):
        raise c.fail(f"{key}.id", f"{hid!r} is not a Managed HSM resource id "
                                  "(/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/managedHSMs/NAME)")
    name = h["name"] = h.get("name") or hid.rsplit("/", 1)[-1]
    h["type"] = h.get("type") or "Microsoft.KeyVault/managedHSMs"
    h.setdefault("sku", {"family": "B", "name": "Standard_B1"})
    props = h["properties"]
    props.setdefault("tenantId", tenant_id)
    props.setdefault("hsmUri", f"https://{name}.managedhsm.azure.net/")
    props.setdefault("provisioningState", "Succeeded")
    for i, oid in enumerate(c.lst(props.get("initialAdminObjectIds"), f"{key}.properties.initialAdminObjectIds")):
        c.text(oid, f"{key}.properties.initialAdminObjectIds[{i}]")
    return h


def _per_hsm(c: _Ctx, raw: Any, key: str, one: Any) -> dict[str, list[dict[str, Any]]]:
    """``{"<hsm name>": [objects]}``, names lower-cased (HSM names are case-insensitive DNS labels)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, items in c.obj(raw or {}, key).items():
        out[str(name).lower()] = [one(c, x, f"{key}.{name}[{i}]") for i, x in enumerate(c.lst(items, f"{key}.{name}"))]
    return out


def _hsm_settings(c: _Ctx, raw: Any) -> dict[str, dict[str, str]]:
    """``{"<hsm name>": {"<setting>": "true" | "false"}}`` (a JSON boolean is taken as its text), names of HSMs
    lower-cased; setting names kept as the HSM spells them (the SDK sends them as given)."""
    out: dict[str, dict[str, str]] = {}
    for hsm, settings in c.obj(raw or {}, "hsm_settings").items():
        per: dict[str, str] = {}
        for name, raw_value in c.obj(settings, f"hsm_settings.{hsm}").items():
            value = ("true" if raw_value else "false") if isinstance(raw_value, bool) else raw_value
            if not isinstance(value, str) or value not in ("true", "false"):
                raise c.fail(f"hsm_settings.{hsm}.{name}", 'expected "true" or "false" (boolean settings only)')
            per[str(name)] = value
        out[str(hsm).lower()] = per
    return out


def _hsm_scope_of(rid: str, kind: str) -> str:
    idx = rid.lower().rfind(f"/providers/microsoft.authorization/{kind}/")
    return "/" + rid[:idx].strip("/") if idx > 0 else "/"


def _hsm_assignment(c: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    """A local role assignment in the data plane's shape (``az keyvault role assignment list --hsm-name`` prints it
    flat, with ``roleName`` and ``principalName`` beside it)."""
    obj = _split_props({k: v for k, v in c.obj(raw, key).items() if k not in _HSM_AZ_ONLY}, {"id", "name", "type"})
    props = obj["properties"]
    rid = c.text(obj.get("id"), f"{key}.id", required=False)
    if rid is None:
        name = c.text(obj.get("name"), f"{key}.name (or {key}.id)")
        scope = c.text(props.get("scope"), f"{key}.properties.scope (or {key}.id)") or "/"
        rid = f"{'' if scope == '/' else '/' + scope.strip('/')}{AUTHZ}roleAssignments/{name}"
    obj["name"] = rid.rstrip("/").rsplit("/", 1)[-1]
    props["scope"] = props.get("scope") or _hsm_scope_of(rid, "roleassignments")
    c.text(props.get("principalId"), f"{key}.properties.principalId")
    rd = c.text(props.get("roleDefinitionId"), f"{key}.properties.roleDefinitionId")
    assert rd is not None
    props["roleDefinitionId"] = rd if "/" in rd else HSM_BUILTIN_PREFIX + rd
    obj.update(id=rid, type="Microsoft.Authorization/roleAssignments")
    return obj


def _hsm_definition(c: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    """A custom local role definition in the data plane's shape (``az keyvault role definition list --hsm-name``
    prints it flat, with ``roleType``)."""
    src = c.obj(raw, key)
    obj = _split_props(src, {"id", "name", "type"})
    props = obj["properties"]
    if "properties" not in src:
        props["type"] = props.pop("roleType", None) or "CustomRole"
    name = c.text(obj.get("name") or (obj.get("id") or "").rstrip("/").rsplit("/", 1)[-1], f"{key}.name")
    assert name is not None
    c.text(props.get("roleName"), f"{key}.properties.roleName")
    for i, p in enumerate(c.lst(props.get("permissions"), f"{key}.properties.permissions")):
        c.obj(p, f"{key}.properties.permissions[{i}]")
    props.setdefault("type", "CustomRole")
    props.setdefault("description", "")
    props.setdefault("permissions", [])
    props.setdefault("assignableScopes", ["/"])
    obj.update(id=obj.get("id") or f"{AUTHZ}roleDefinitions/{name}", name=name,
               type="Microsoft.Authorization/roleDefinitions")
    return obj


def _principal(c: _Ctx, raw: Any, key: str) -> Principal:
    p = c.obj(raw, key)
    pid = c.text(p.get("id") or p.get("objectId"), f"{key}.id")
    assert pid is not None
    kind = str(p.get("type") or p.get("principalType") or p.get("@odata.type") or "ServicePrincipal")
    canonical = _PRINCIPAL_TYPES.get(kind.rsplit(".", 1)[-1].lower())
    if canonical is None:
        raise c.fail(f"{key}.type", f"unknown principal type {p.get('type')!r} (ServicePrincipal, User or Group)")
    member_of = [c.text(g, f"{key}.member_of[{i}]") or ""
                 for i, g in enumerate(c.lst(p.get("member_of", p.get("memberOf")), f"{key}.member_of"))]
    return Principal(id=pid, type=canonical, display_name=str(p.get("display_name") or p.get("displayName") or ""),
                     app_id=p.get("app_id") or p.get("appId"),
                     user_principal_name=p.get("user_principal_name") or p.get("userPrincipalName"),
                     member_of=member_of)


def _management_group(c: _Ctx, raw: Any, key: str) -> ManagementGroup:
    m = c.obj(raw, key)
    mid = c.text(m.get("id") or m.get("name"), f"{key}.id")
    assert mid is not None

    def full(v: str) -> str:
        return v if v.startswith("/") else f"/providers/Microsoft.Management/managementGroups/{v}"

    parent = m.get("parent") or m.get("parent_id") or m.get("parentId")
    if isinstance(parent, dict):
        parent = parent.get("id")
    subs = [subscription_id(c.text(s, f"{key}.subscriptions[{i}]") or "")
            for i, s in enumerate(c.lst(m.get("subscriptions"), f"{key}.subscriptions"))]
    return ManagementGroup(id=full(mid), parent=full(str(parent)) if parent else None, subscriptions=subs)


def _options(c: _Ctx, raw: Any) -> EmulatorOptions:
    o = c.obj(raw or {}, "emulator")
    f = c.obj(o.get("faults") or {}, "emulator.faults")
    seed = o.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise c.fail("emulator.seed", "expected an integer")
    faults = Faults(
        throttle_rate=c.num(f.get("throttle_rate"), "emulator.faults.throttle_rate", 0.0, 0.0, 1.0),
        retry_after_s=c.num(f.get("retry_after_s"), "emulator.faults.retry_after_s", 1.0, 0.0, 3600.0),
        error_rate=c.num(f.get("error_rate"), "emulator.faults.error_rate", 0.0, 0.0, 1.0),
        reset_rate=c.num(f.get("reset_rate"), "emulator.faults.reset_rate", 0.0, 0.0, 1.0),
        lost_response_rate=c.num(f.get("lost_response_rate"), "emulator.faults.lost_response_rate", 0.0, 0.0, 1.0))
    if faults.throttle_rate + faults.error_rate + faults.reset_rate > 1.0:
        raise c.fail("emulator.faults", "throttle_rate + error_rate + reset_rate exceeds 1")
    return EmulatorOptions(
        latency_ms=c.num(o.get("latency_ms"), "emulator.latency_ms", 0.0, 0.0, 600_000.0),
        seed=seed, page_size=int(c.num(o.get("page_size"), "emulator.page_size", 50, 1, 10_000)), faults=faults,
        logs_partial_error=str(o["logs_partial_error"]) if o.get("logs_partial_error") else None,
        resource_graph_unindexed=[str(c.text(v, f"emulator.resource_graph_unindexed[{i}]")) for i, v in
                                  enumerate(c.lst(o.get("resource_graph_unindexed"),
                                                  "emulator.resource_graph_unindexed"))],
        hsm_caller=c.text(o.get("hsm_caller"), "emulator.hsm_caller", required=False))


def from_dict(data: Any, source: str = "snapshot") -> Snapshot:
    """Validate and normalise a snapshot already parsed from JSON."""
    c = _Ctx(source)
    d = c.obj(data, "(top level)")
    tenant_id = c.text(d.get("tenant_id") or d.get("tenantId"), "tenant_id", required=False) \
        or "00000000-0000-0000-0000-000000000000"
    graph = d.get("graph", True)
    if not isinstance(graph, bool):
        raise c.fail("graph", "expected true or false")
    snap = Snapshot(
        tenant_id=tenant_id,
        subscriptions=[subscription_id(c.text(s, f"subscriptions[{i}]") or "")
                       for i, s in enumerate(c.lst(d.get("subscriptions"), "subscriptions"))],
        management_groups=[_management_group(c, m, f"management_groups[{i}]")
                           for i, m in enumerate(c.lst(d.get("management_groups"), "management_groups"))],
        vaults=[_vault(c, v, f"vaults[{i}]", tenant_id) for i, v in enumerate(c.lst(d.get("vaults"), "vaults"))],
        role_assignments=[_role_assignment(c, r, f"role_assignments[{i}]")
                          for i, r in enumerate(c.lst(d.get("role_assignments"), "role_assignments"))],
        role_definitions=[_role_definition(c, r, f"role_definitions[{i}]")
                          for i, r in enumerate(c.lst(d.get("role_definitions"), "role_definitions"))],
        deny_assignments=[_deny_assignment(c, r, f"deny_assignments[{i}]")
                          for i, r in enumerate(c.lst(d.get("deny_assignments"), "deny_assignments"))],
        role_assignment_schedule_requests=[
            copy.deepcopy(c.obj(r, f"role_assignment_schedule_requests[{i}]"))
            for i, r in enumerate(c.lst(d.get("role_assignment_schedule_requests"),
                                        "role_assignment_schedule_requests"))],
        role_management_policies=[
            copy.deepcopy(c.obj(r, f"role_management_policies[{i}]"))
            for i, r in enumerate(c.lst(d.get("role_management_policies"), "role_management_policies"))],
        principals=[_principal(c, p, f"principals[{i}]")
                    for i, p in enumerate(c.lst(d.get("principals"), "principals"))],
        managed_hsms=[_managed_hsm(c, h, f"managed_hsms[{i}]", tenant_id)
                      for i, h in enumerate(c.lst(d.get("managed_hsms"), "managed_hsms"))],
        hsm_role_assignments=_per_hsm(c, d.get("hsm_role_assignments"), "hsm_role_assignments", _hsm_assignment),
        hsm_role_definitions=_per_hsm(c, d.get("hsm_role_definitions"), "hsm_role_definitions", _hsm_definition),
        hsm_settings=_hsm_settings(c, d.get("hsm_settings")),
        log_rows=[copy.deepcopy(c.obj(r, f"log_rows[{i}]"))
                  for i, r in enumerate(c.lst(d.get("log_rows"), "log_rows"))],
        graph=graph,
        emulator=_options(c, d.get("emulator")),
    )
    for v in [*snap.vaults, *snap.managed_hsms]:  # its subscription is known even when the list omits it
        parts = v["id"].split("/", _SUBSCRIPTION_AT + 1)      # "", "subscriptions", {id}, the rest
        sub = subscription_id(parts[_SUBSCRIPTION_AT] if len(parts) > _SUBSCRIPTION_AT + 1 else "")
        if sub and sub.lower() not in {s.lower() for s in snap.subscriptions}:
            snap.subscriptions.append(sub)
    return snap


def load_snapshot(src: Snapshot | dict[str, Any] | str | Path) -> Snapshot:
    """A :class:`Snapshot` from a model (copied), a dict, or a JSON file path; InputError names the bad key."""
    if isinstance(src, Snapshot):
        return from_dict(src.to_dict())
    if isinstance(src, dict):
        return from_dict(src)
    path = Path(src)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(str(path), f"cannot read the snapshot file ({e.strerror or e})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(path), f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    return from_dict(data, str(path))
