"""ARM routes: Key Vault vaults and access policies, Microsoft.Authorization (assignments, definitions, deny
assignments, PIM schedule requests). Paths are matched case-insensitively; ids keep the caller's casing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from remediate.emulator import routes_resource_graph
from remediate.emulator.state import ArmError, AssignmentFilter, TenantState, norm, parse_assignment_filter
from remediate.emulator.wire import Request, Response, page, paging

log = logging.getLogger("remediate.emulator")

_AUTHZ = "/providers/microsoft.authorization/"
_VAULT = re.compile(r"^(/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.keyvault/vaults/[^/]+)"
                    r"(?:/accesspolicies/([^/]+))?$")
_VAULT_LIST = re.compile(r"^/subscriptions/[^/]+(?:/resourcegroups/[^/]+)?/providers/microsoft\.keyvault/vaults$")
_HSM = re.compile(r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.keyvault/managedhsms/[^/]+$")
_HSM_LIST = re.compile(r"^/subscriptions/[^/]+(?:/resourcegroups/[^/]+)?/providers/microsoft\.keyvault/managedhsms$")
_RESOURCES = re.compile(r"^/subscriptions/[^/]+/resources$")
_SUB_ALIAS = "/providers/microsoft.subscription/subscriptions/"


_PROVIDER = re.compile(r"/providers/([^/]+)/([^/]+)")


def not_found_route(req: Request) -> ArmError:
    """ARM's 404 for a path it has no resource type for (logged, and kept in ``Emulator.unrouted``).

    ARM's words: ``{"error": {"code": "InvalidResourceType", "message": "The resource type '{type}' could not be
    found in the namespace '{namespace}' for api version '{version}'."}}`` (the ARM error body is only code and
    message: azure-core ``ODataV4Format`` / the REST specs' ``CloudError``).
    """
    log.warning("emulator: no route for %s %s", req.method, req.path)
    found = _PROVIDER.findall(req.path)
    namespace, rtype = found[-1] if found else ("", req.path.rstrip("/").rsplit("/", 1)[-1])
    return ArmError(404, "InvalidResourceType", f"The resource type '{rtype}' could not be found in the namespace "
                    f"'{namespace}' for api version '{req.q('api-version') or ''}'.")


def _listing(req: Request, items: list[dict[str, Any]], offset: int, text: str | None) -> Response:
    chunk, link = page(req, items, offset, text)
    body: dict[str, Any] = {"value": chunk}
    if link:
        body["nextLink"] = link
    return Response(200, body)


def _hsm(state: TenantState, req: Request, low: str) -> Response:
    """azure-mgmt-keyvault ManagedHsmsOperations.get / list_by_subscription / list_by_resource_group (REST spec
    managedHsm.json: ManagedHsms_Get, _ListBySubscription, _ListByResourceGroup); read-only, as for vaults."""
    if req.method != "GET":
        raise _method(req)
    if _HSM.match(low):
        return Response(200, state.hsm_json(req.path.rstrip("/")))
    offset, _ = paging(req, "$top")
    return _listing(req, state.hsms_in(req.path[:low.index("/providers/")]), offset, None)


def handle(state: TenantState, req: Request) -> Response:
    """Dispatch one ARM request."""
    low = req.path.lower().rstrip("/") or "/"
    if low == routes_resource_graph.PATH:
        return routes_resource_graph.handle(state, req)
    idx = low.rfind(_AUTHZ)
    if idx >= 0:
        return _authz(state, req, req.path[:idx] or "/", req.path[idx + len(_AUTHZ):].strip("/"))
    m = _VAULT.match(low)
    if m:
        return _vault(state, req, req.path[:len(m.group(1))], m.group(2))
    if _HSM.match(low) or _HSM_LIST.match(low):
        return _hsm(state, req, low)
    if _VAULT_LIST.match(low):
        if req.method != "GET":
            raise _method(req)
        offset, _ = paging(req, "$filter")
        return _listing(req, state.vaults_in(req.path[:low.index("/providers/")]), offset, None)
    if _RESOURCES.match(low):
        return _resources(state, req, low)
    raise not_found_route(req)


def _vault(state: TenantState, req: Request, vault_id: str, policy_kind: str | None) -> Response:
    """One vault: read it, or add/replace/remove access-policy entries (``policy_kind``); nothing else changes it."""
    if policy_kind is not None:
        if req.method != "PUT":
            raise _method(req)
        return Response(200, state.update_access_policy(vault_id, policy_kind, req.body), write=True)
    if req.method == "GET":
        return Response(200, state.vault_json(vault_id))
    if req.method in ("PUT", "PATCH", "DELETE"):
        log.warning("emulator: refused %s of a vault (%s): the product must never change a vault", req.method,
                    req.path)
    raise _method(req)


def _resources(state: TenantState, req: Request, low: str) -> Response:
    """The generic resource list of a scope, holding its vaults (the only resources the emulator has)."""
    if req.method != "GET":
        raise _method(req)
    offset, text = paging(req, "$filter")
    vaults = state.vaults_in(req.path[:low.index("/resources")])
    if text and "microsoft.keyvault/vaults" not in text.lower():
        vaults = []
    generic: list[dict[str, Any]] = [{k: v[k] for k in ("id", "name", "type", "location", "tags") if k in v}
                                     for v in vaults]
    return _listing(req, generic, offset, text)


def _method(req: Request) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The requested method '{req.method}' is not allowed on '{req.path}' "
                    "(the kv-remediate emulator does not change vaults).")


def _authz(state: TenantState, req: Request, scope: str, rest: str) -> Response:
    """``{scope}/providers/Microsoft.Authorization/{kind}[/{name}]``: one handler per kind."""
    if scope.lower().startswith(_SUB_ALIAS):  # ARM accepts the subscription's provider-style alias as a scope
        scope = scope[len(_SUB_ALIAS) - len("/subscriptions/"):]
    kind, sep, tail = rest.partition("/")
    if "/" in tail:          # deeper than {kind}/{name}
        raise not_found_route(req)
    handler = _AUTHZ_KINDS.get(kind.lower())
    if handler is None:
        raise not_found_route(req)
    return handler(state, req, scope, tail if sep else None)


def _role_assignments(state: TenantState, req: Request, scope: str, name: str | None) -> Response:
    if name is None:
        if req.method != "GET":
            raise _method(req)
        offset, text = paging(req, "$filter")
        flt = parse_assignment_filter(text, role_assignments=True)
        if norm(scope) == "/" and flt == AssignmentFilter():
            # Azure/azure-powershell#20323 (debug output of the real 400 BadRequest): "The role assignments
            # query at '/' scope is not allowed without any filters." (the code is not in the quote; ARM's
            # generic BadRequest is used here).
            raise ArmError(400, "BadRequest", "The role assignments query at '/' scope is not allowed without "
                           "any filters.")
        items = state.list_role_assignments(scope, flt)
        return _listing(req, items, offset, text)
    if req.method == "GET":
        return Response(200, state.get_role_assignment(scope, name))
    if req.method == "PUT":
        status, body = state.put_role_assignment(scope, name, req.body)
        return Response(status, body, write=True)
    if req.method == "DELETE":
        deleted = state.delete_role_assignment(scope, name)
        return Response(200, deleted, write=True) if deleted else Response(204)
    raise _method(req)


def _role_definitions(state: TenantState, req: Request, scope: str, name: str | None) -> Response:
    if name is None:
        if req.method != "GET":
            raise _method(req)
        offset, text = paging(req, "$filter")
        return _listing(req, state.list_role_definitions(scope, text), offset, text)
    if req.method == "GET":
        return Response(200, state.role_definition(name, scope))
    if req.method == "PUT":
        return Response(201, state.put_role_definition(scope, name, req.body), write=True)
    if req.method == "DELETE":
        rd = state.delete_role_definition(name)
        return Response(200, rd, write=True) if rd else Response(204)
    raise _method(req)


def _deny_assignments(state: TenantState, req: Request, scope: str, name: str | None) -> Response:
    if req.method != "GET":
        raise _method(req)
    if name is None:
        offset, text = paging(req, "$filter")
        return _listing(req, state.list_deny_assignments(scope, parse_assignment_filter(text)), offset, text)
    return Response(200, state.get_deny_assignment(scope, name))


def _schedule_requests(state: TenantState, req: Request, scope: str, name: str | None) -> Response:
    if name is None:
        raise not_found_route(req)
    if req.method == "PUT":
        return Response(201, state.put_schedule_request(scope, name, req.body), write=True)
    if req.method == "GET":
        return Response(200, state.get_schedule_request(scope, name))
    raise _method(req)


_AUTHZ_KINDS: dict[str, Callable[[TenantState, Request, str, str | None], Response]] = {
    "roleassignments": _role_assignments,
    "roledefinitions": _role_definitions,
    "denyassignments": _deny_assignments,
    "roleassignmentschedulerequests": _schedule_requests,
}
