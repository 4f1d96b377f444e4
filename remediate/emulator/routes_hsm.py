"""The Managed HSM data plane's local RBAC routes (``https://{hsm}.managedhsm.azure.net``), api-version 7.2 ..
2025-07-01 (the RBAC shapes are the same in each; rbac.json 7.4 is the reference, see state_hsm.py for the sources)::

    GET    /{scope}/providers/Microsoft.Authorization/roleAssignments[?$filter=atScope()|principalId eq '{id}']
    GET|PUT|DELETE /{scope}/providers/Microsoft.Authorization/roleAssignments/{name}
    GET    /{scope}/providers/Microsoft.Authorization/roleDefinitions
    GET|PUT|DELETE /{scope}/providers/Microsoft.Authorization/roleDefinitions/{name}     (scope '/' only)
    GET    /settings[/{name}]     (api-version 7.4+: ``{"settings": [...]}`` / ``{"name", "value", "type"}``)

Lists page with an absolute ``nextLink`` (``{"value": [...], "nextLink": ...}``, rbac.json ``RoleAssignmentListResult``
/ ``RoleDefinitionListResult``). Every request is checked against the local RBAC of ``emulator.hsm_caller`` first
(state_hsm.HsmState.hsm_authorize): reading needs ``roleAssignments/read/action`` (or ``roleDefinitions/...``),
creating ``.../write/action``, deleting ``.../delete/action``; a setting ``settings/read/action`` at ``/`` (the
data action a live HSM's Administrator listing holds: catalog/data/hsm_roles.json's anomaly note; the package's
documented built-ins hold it nowhere, so with ``emulator.hsm_caller`` set a settings read is refused).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from remediate.emulator.state import TenantState
from remediate.emulator.state_hsm import HSM, HsmError, hsm_scope
from remediate.emulator.wire import Request, Response, page, paging

_AUTHZ = re.compile(r"^(.*?)/providers/microsoft\.authorization/(roleassignments|roledefinitions)(?:/([^/]+))?/?$",
                    re.IGNORECASE)
_ACTION = {"GET": "read/action", "PUT": "write/action", "DELETE": "delete/action"}
_SETTINGS = re.compile(r"^/settings(?:/([^/]+))?/?$", re.IGNORECASE)
API_VERSIONS = ("7.2", "7.3", "7.4", "7.5", "7.6-preview.1", "7.6", "2025-07-01")


def challenge(host_suffix: str, tenant_id: str) -> dict[str, str]:
    """The 401 challenge an HSM answers a request without a token with (empty body): ``Bearer
    authorization="https://login.microsoftonline.com/{tenant}", resource="https://managedhsm.azure.net"``
    (azure-sdk-for-js keyvault-admin recordings, e.g. ``recording_can_create_read_and_delete_role_assignments``);
    the resource follows the cloud's suffix (managedhsm.usgovcloudapi.net, managedhsm.azure.cn)."""
    return {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{tenant_id}", '
                                f'resource="https://{host_suffix}"'}


def _listing(req: Request, items: list[dict[str, Any]], offset: int, text: str | None) -> Response:
    chunk, link = page(req, items, offset, text, extra={"api-version": req.q("api-version") or "7.4"})
    body: dict[str, Any] = {"value": chunk}
    if link:
        body["nextLink"] = link
    return Response(200, body)


def _principal_filter(text: str | None, activity_id: str) -> str | None:
    if not text or re.fullmatch(r"\s*atScope\(\s*\)\s*", text, re.IGNORECASE):
        return None
    m = re.fullmatch(r"\s*principalId\s+eq\s+'?([0-9A-Za-z-]+)'?\s*", text, re.IGNORECASE)
    if m is None:
        raise HsmError(400, "BadParameter", f"The filter '{text}' is not supported", activity_id)   # inference
    return m.group(1)


def handle(state: TenantState, req: Request, hsm: str) -> Response:
    """Dispatch one data-plane request to the HSM named ``hsm`` (lower case)."""
    activity = str(uuid.uuid4())
    path = re.sub(r"/+", "/", req.path)
    settings = _SETTINGS.match(path)
    if settings is not None and req.method == "GET":
        return _settings(state, hsm, settings.group(1), activity)
    m = _AUTHZ.match(path)
    if m is None:
        raise HsmError(404, "NotFound", f"The requested path '{path}' was not found", activity)   # inference
    try:
        scope = hsm_scope(m.group(1))
    except ValueError:
        raise HsmError(400, "BadParameter", f"Invalid scope '{m.group(1) or '/'}'", activity) from None  # inference
    kind, name = m.group(2).lower(), m.group(3)
    if req.method not in _ACTION or (name is None and req.method != "GET"):
        raise HsmError(405, "MethodNotAllowed", f"The requested method '{req.method}' is not allowed", activity)
    noun = "roleAssignments" if kind == "roleassignments" else "roleDefinitions"
    state.hsm_authorize(hsm, f"{HSM}{noun}/{_ACTION[req.method]}", scope, activity)
    if kind == "roleassignments":
        return _assignments(state, req, hsm, scope=scope, name=name, activity=activity)
    return _definitions(state, req, hsm, scope=scope, name=name, activity=activity)


def _settings(state: TenantState, hsm: str, name: str | None, activity: str) -> Response:
    """The HSM's account settings (settings.json 7.4 ``GetSettings`` / ``GetSetting``); reading needs
    ``settings/read/action`` at ``/``."""
    state.hsm_authorize(hsm, f"{HSM}settings/read/action", "/", activity)
    headers = {"x-ms-request-id": activity}
    if name is None:
        return Response(200, {"settings": state.hsm_settings(hsm)}, headers)
    return Response(200, state.hsm_setting(hsm, name, activity), headers)


def _assignments(state: TenantState, req: Request, hsm: str, *, scope: str, name: str | None,
                 activity: str) -> Response:
    """Role assignments at ``scope``: list, get, create, delete."""
    headers = {"x-ms-request-id": activity}
    if name is None:
        offset, text = paging(req, "$filter")
        items = state.hsm_list_assignments(hsm, scope, _principal_filter(text, activity))
        return _listing(req, items, offset, text)
    if req.method == "GET":
        return Response(200, state.hsm_get_assignment(hsm, scope, name, activity), headers)
    if req.method == "PUT":
        return Response(201, state.hsm_put_assignment(hsm, scope, name, req.body, activity), headers, write=True)
    return Response(200, state.hsm_delete_assignment(hsm, scope, name, activity), headers, write=True)


def _definitions(state: TenantState, req: Request, hsm: str, *, scope: str, name: str | None,
                 activity: str) -> Response:
    """Role definitions (created and deleted at '/' only): list, get, create, delete."""
    headers = {"x-ms-request-id": activity}
    if name is None:
        offset, text = paging(req, "$filter")
        return _listing(req, state.hsm_list_definitions(hsm), offset, text)
    if req.method != "GET" and scope != "/":
        raise HsmError(400, "BadParameter", "Role definitions are only supported at scope '/'", activity)  # rbac.json
    if req.method == "GET":
        return Response(200, state.hsm_get_definition(hsm, name, activity), headers)
    if req.method == "PUT":
        return Response(201, state.hsm_put_definition(hsm, name, req.body, activity), headers, write=True)
    return Response(200, state.hsm_delete_definition(hsm, name, activity), headers, write=True)
