"""Microsoft Graph routes (``/v1.0``): directory objects by id and group memberships, from snapshot principals.

Only documented routes are served: ``POST /directoryObjects/getByIds``, ``POST /{directoryObjects|users|
servicePrincipals|groups}/{id}/getMemberGroups``, ``GET /{users|servicePrincipals|groups}/{id}`` (users also by
``userPrincipalName``, as ``GET /users/{id | userPrincipalName}`` documents) and their
``memberOf`` / ``transitiveMemberOf`` (optionally cast to ``microsoft.graph.group``); anything else is refused
as Graph refuses it."""

from __future__ import annotations

from typing import Any

from remediate.emulator.snapshot import Principal
from remediate.emulator.state import ArmError, TenantState
from remediate.emulator.wire import Request, Response, page, paging

CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#directoryObjects"
_GRAPH_TYPE = {"ServicePrincipal": "servicePrincipal", "User": "user", "Group": "group"}
_COLLECTIONS = {"directoryobjects": None, "serviceprincipals": "ServicePrincipal", "users": "User", "groups": "Group"}
_NAVIGATIONS = ("transitivememberof", "memberof")


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
    # Graph's words for an unknown id (quoted in microsoftgraph/msgraph-sdk-javascript#350).
    return ArmError(404, "Request_ResourceNotFound", f"Resource '{object_id}' does not exist or one of its queried "
                    "reference-property objects are not present.")


def unknown_segment(segment: str) -> ArmError:
    """Graph's answer to a path it has no route for: 400 BadRequest "Resource not found for the segment 'x'."

    That is what Graph answers, at routing and before authorization, for a segment v1.0 does not have (reports
    of live calls quoting it: "v1.0 .../containerTypes/{id}/permissions -> 400 'Resource not found for the
    segment 'permissions''", "HTTP 400 'Resource not found for the segment 'getDeviceInstallStatusReport''");
    the body is Graph's ``{"error": {"code", "message", "innerError": {date, request-id, client-request-id}}}``
    (server._error_body). ``/directoryObjects/{id}/transitiveMemberOf`` is such a path: transitiveMemberOf is
    a navigation of users, groups, servicePrincipals, devices and contacts only.
    """
    return ArmError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def _get_by_ids(state: TenantState, req: Request) -> Response:
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


def _member_groups(state: TenantState, req: Request, p: Principal) -> Response:
    """``getMemberGroups``: the ids of every group the object is in, transitively (directoryobject-getmembergroups:
    "This function is transitive"; response ``{"@odata.context": ...#Collection(Edm.String), "value": [ids]}``)."""
    body = req.body if isinstance(req.body, dict) else {}
    flag = body.get("securityEnabledOnly")
    if not isinstance(flag, bool):
        raise ArmError(400, "Request_BadRequest", "Invalid request: the parameter 'securityEnabledOnly' (a boolean) "
                       "is required.")
    groups = state.groups_of(p.id)   # snapshot groups are security groups, so the flag changes nothing here
    return Response(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)",
                          "value": groups})


# A Graph path after "/v1.0", by its number of segments: {collection}/{id} (or {collection}/getByIds),
# {collection}/{id}/{navigation}, {collection}/{id}/{navigation}/microsoft.graph.group (a cast).
_OBJECT_PATH = 2
_NAVIGATION_PATH = 3
_CAST_PATH = 4


def handle(state: TenantState, req: Request) -> Response:
    """Dispatch one Graph request; an unknown route is Graph's 400 (at routing, before consent is checked), and
    with the snapshot's ``"graph": false`` every known call is 403, as without consent."""
    low = req.path.lower().rstrip("/")
    segs = req.path.rstrip("/").split("/")[2:]          # after "/v1.0"
    lsegs = low.split("/")[2:]
    if not segs or lsegs[0] not in _COLLECTIONS:
        raise unknown_segment(segs[0] if segs else "v1.0")
    if len(segs) == _OBJECT_PATH and lsegs[1] == "getbyids":
        if req.method != "POST":
            raise unknown_segment(segs[1])
        _consented(state)
        return _get_by_ids(state, req)
    _check_route(req, segs, lsegs)
    _consented(state)
    object_id = segs[1]     # already percent-decoded by the server (a guest UPN's %23EXT%23 is #EXT#)
    want = _COLLECTIONS[lsegs[0]]
    if lsegs[0] == "users" and object_id.startswith("('") and object_id.endswith("')"):
        object_id = object_id[2:-2]     # the documented /users('{upn}') form (a UPN that starts with '$')
    p = state.principals.get(object_id.lower())
    if p is None and lsegs[0] == "users" and "@" in object_id:
        p = state.user_by_upn(object_id)     # GET /users/{id | userPrincipalName} (user-get)
    if p is None or (want is not None and p.type != want):
        raise _not_found(object_id)
    if len(segs) == _OBJECT_PATH:
        return Response(200, {"@odata.context": CONTEXT + "/$entity", **graph_object(p, p.id)})
    if lsegs[2] == "getmembergroups":
        return _member_groups(state, req, p)
    return _memberships(state, req, p, transitive=lsegs[2] == "transitivememberof")


def _check_route(req: Request, segs: list[str], lsegs: list[str]) -> None:
    """Graph's 400 naming the first segment it has no route for (with this method) on an object's path."""
    n = len(segs)
    if n > _CAST_PATH or (n == _CAST_PATH and (lsegs[2] not in _NAVIGATIONS or lsegs[3] != "microsoft.graph.group")):
        raise unknown_segment(segs[3] if n == _CAST_PATH else segs[4])
    if n >= _NAVIGATION_PATH:
        nav = lsegs[2]
        if nav == "getmembergroups":
            if req.method != "POST" or n != _NAVIGATION_PATH:
                raise unknown_segment(segs[2])
        elif nav not in _NAVIGATIONS or lsegs[0] == "directoryobjects" or req.method != "GET":
            raise unknown_segment(segs[2])
    elif req.method != "GET":
        raise unknown_segment(segs[-1])


def _memberships(state: TenantState, req: Request, p: Principal, *, transitive: bool) -> Response:
    """``memberOf`` / ``transitiveMemberOf``: the groups as directory objects, paged by ``$top``/``$skiptoken``."""
    groups = state.groups_of(p.id) if transitive else list(p.member_of)
    items = [graph_object(state.principals.get(g.lower()), g) for g in groups]
    offset, _ = paging(req, "$filter")
    top = req.q("$top")
    # $top asks for at most that many; the server may send fewer (Graph paging docs), here at most its page size
    size = min(int(top), req.page_size) if top and top.isdigit() and int(top) > 0 else None
    chunk, link = page(req, items, offset, None, size=size, token_param="$skiptoken",
                       extra={"$top": str(size)} if size else None)
    result: dict[str, Any] = {"@odata.context": CONTEXT, "value": chunk}
    if link:
        result["@odata.nextLink"] = link
    return Response(200, result)


def _consented(state: TenantState) -> None:
    if not state.snap.graph:
        raise ArmError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
