"""Microsoft Graph routes (``/v1.0``): directory objects by id and group memberships, from snapshot principals."""

from __future__ import annotations

import re
from typing import Any

from remediate.emulator.snapshot import Principal
from remediate.emulator.state import ArmError, TenantState
from remediate.emulator.wire import Request, Response, page, paging

CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#directoryObjects"
_GRAPH_TYPE = {"ServicePrincipal": "servicePrincipal", "User": "user", "Group": "group"}
_COLLECTIONS = {"directoryobjects": None, "serviceprincipals": "ServicePrincipal", "users": "User", "groups": "Group"}
_MEMBERS = re.compile(r"^/v1\.0/([a-z]+)/([^/]+)(?:/(transitivememberof|memberof)(?:/microsoft\.graph\.group)?)?$")


def graph_object(p: Principal | None, object_id: str) -> dict[str, Any]:
    """A directory object as Graph returns it (an unknown id in a membership list is a nameless group)."""
    if p is None:
        return {"@odata.type": "#microsoft.graph.group", "id": object_id, "displayName": None,
                "securityEnabled": True}
    out: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{_GRAPH_TYPE.get(p.type, 'directoryObject')}",
                           "id": p.id, "displayName": p.display_name or None}
    if p.type == "ServicePrincipal":
        out["appId"] = p.app_id
    elif p.type == "User":
        out["userPrincipalName"] = p.user_principal_name
    elif p.type == "Group":
        out["securityEnabled"] = True
    return out


def _not_found(object_id: str) -> ArmError:
    return ArmError(404, "Request_ResourceNotFound", f"Resource '{object_id}' does not exist or one of its queried "
                    "reference-property objects are not present.")


def handle(state: TenantState, req: Request) -> Response:
    """Dispatch one Graph request; with the snapshot's ``"graph": false`` every call is 403, as without consent."""
    if not state.snap.graph:
        raise ArmError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    low = req.path.lower().rstrip("/")
    if low == "/v1.0/directoryobjects/getbyids":
        if req.method != "POST":
            raise ArmError(405, "Request_BadRequest", "Method not allowed.")
        body = req.body if isinstance(req.body, dict) else {}
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ArmError(400, "Request_BadRequest", "Invalid request: 'ids' must be a list of strings.")
        types = {str(t).lower() for t in (body.get("types") or [])}
        out = []
        for i in ids:
            p = state.principals.get(i.lower())
            if p is not None and (not types or _GRAPH_TYPE.get(p.type, "").lower() in types):
                out.append(graph_object(p, i))
        return Response(200, {"@odata.context": CONTEXT, "value": out})
    m = _MEMBERS.match(low)
    if m is None or m.group(1) not in _COLLECTIONS or req.method != "GET":
        raise ArmError(400, "Request_BadRequest", f"Unsupported request: {req.method} {req.path} "
                       "(the kv-remediate emulator serves getByIds, objects by id and memberOf/transitiveMemberOf).")
    object_id = req.path.rstrip("/").split("/")[3]
    p = state.principals.get(object_id.lower())
    want = _COLLECTIONS[m.group(1)]
    if p is None or (want is not None and p.type != want):
        raise _not_found(object_id)
    if m.group(3) is None:
        return Response(200, {"@odata.context": CONTEXT + "/$entity", **graph_object(p, p.id)})
    groups = state.groups_of(p.id) if m.group(3) == "transitivememberof" else list(p.member_of)
    items = [graph_object(state.principals.get(g.lower()), g) for g in groups]
    offset, _ = paging(req, "$filter")
    top = req.q("$top")
    size = int(top) if top and top.isdigit() and int(top) > 0 else None
    chunk, link = page(req, items, offset, None, size=size, token_param="$skiptoken",
                       extra={"$top": str(size)} if size else None)
    result: dict[str, Any] = {"@odata.context": CONTEXT, "value": chunk}
    if link:
        result["@odata.nextLink"] = link
    return Response(200, result)
