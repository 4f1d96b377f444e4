"""Microsoft Graph: the caller's type and display name (getByIds) and its groups (getMemberGroups, or the paged
transitiveMemberOf past Graph's size limit). Every Graph read is optional: a failure is a limitation on the
finding, never an abort."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..armid import is_guid
from ..model import PrincipalInfo

if TYPE_CHECKING:
    pass

from ..errors import clip
from .clients import FactClients
from .pipeline import READ_METHODS

GRAPH_CALLS = {"getByIds": "POST /v1.0/directoryObjects/getByIds",
               "getMemberGroups": "POST /v1.0/directoryObjects/{id}/getMemberGroups",
               "transitiveMemberOf": "GET /v1.0/{users|servicePrincipals}/{id}/transitiveMemberOf/"
                                     "microsoft.graph.group",
               "getUser": "GET /v1.0/users/{userPrincipalName}"}
GRAPH_PERMISSION = {"getByIds": "Directory.Read.All", "getMemberGroups": "Directory.Read.All",  # per the docs pages
                    "transitiveMemberOf": "Directory.Read.All", "getUser": "User.Read.All"}
_GRAPH_COLLECTION = {"User": "users", "ServicePrincipal": "servicePrincipals"}
_SIZE_LIMIT = "Directory_ResultSizeLimitExceeded"
GRAPH_TYPES = {"#microsoft.graph.serviceprincipal": "ServicePrincipal", "#microsoft.graph.user": "User",
               "#microsoft.graph.group": "Group"}



class GraphReads(FactClients):
    """Graph reads of one batch (base of facts.arm.ArmFacts)."""

    # -- Microsoft Graph --------------------------------------------------------------------------------------
    #
    # Two documented calls, each needing what its page says (application permissions, least privileged first):
    #   POST /v1.0/directoryObjects/getByIds                (type, name)  Directory.Read.All
    #       learn.microsoft.com/graph/api/directoryobject-getbyids: "Directory.Read.All" is the least privileged
    #   POST /v1.0/directoryObjects/{id}/getMemberGroups    (groups)      Directory.Read.All
    #       learn.microsoft.com/graph/api/directoryobject-getmembergroups, "Group memberships for a directory
    #       object": Directory.Read.All (the type-specific tables, e.g. User.Read.All + GroupMember.Read.All,
    #       apply to /users/{id}/getMemberGroups, whose type we would have to know first). The function is
    #       transitive; with ``securityEnabledOnly: false`` it returns every group (and directory role) id, up to
    #       11,000 (beyond: 400 Directory_ResultSizeLimitExceeded).
    # (``GET /directoryObjects/{id}/transitiveMemberOf`` is not a Graph route: transitiveMemberOf exists only
    # under /users, /groups, /servicePrincipals, /devices and /contacts.)
    # Every Graph read is optional: any failure becomes a limitation on the finding that needed it, never an
    # abort, and a refusal (401/403) skips later calls *of the same kind* only.

    @property
    def graph_denied(self) -> bool:
        """True once Graph refused any call (401/403)."""
        return bool(self._graph_refused)

    def graph_problem(self, object_id: str, call: str) -> str | None:
        """Why ``call`` ("getByIds" | "getMemberGroups" | "getUser": then ``object_id`` is the UPN) told nothing
        about ``object_id``, or None."""
        if not self._graph_enabled:
            return "Microsoft Graph reads are turned off for this run"
        return self._graph_problems.get((call, object_id.lower())) or self._graph_refused.get(call)

    def _graph_failed(self, call: str, object_ids: Sequence[str], status: int | None, code: str,
                      message: str) -> None:
        what = GRAPH_CALLS[call]
        if status in (401, 403):
            self._graph_refused[call] = (
                f"Microsoft Graph refused {what} ({status} {code}: {clip(message, 160)}); grant the function's "
                f"identity the application permission {GRAPH_PERMISSION[call]} (admin consent) to read this")
            return
        if status is None:
            why = f"Microsoft Graph could not be reached for {what} ({code}: {clip(message, 160)})"
        elif code == "Directory_ResultSizeLimitExceeded":
            why = (f"Microsoft Graph answered {status} {code} to {what}: the caller is in more than 11,000 groups, "
                   "more than getMemberGroups returns")
        elif status == HTTPStatus.NOT_FOUND and call == "getUser":
            why = f"Microsoft Graph has no user with this user principal name ({what}: {status} {code})"
        elif status == HTTPStatus.NOT_FOUND:
            why = f"Microsoft Graph has no directory object with this id ({what}: {status} {code})"
        else:
            why = f"Microsoft Graph answered {status} {code} to {what} ({clip(message, 160)})"
        for oid in object_ids:
            self._graph_problems[(call, oid.lower())] = why
            if code == _SIZE_LIMIT:
                self._size_limited.add(oid.lower())

    async def _graph_json(self, call: str, object_ids: Sequence[str], method: str, url: str,
                          body: Any = None) -> Any:
        """One Graph call; the decoded JSON, or None after recording why (never raises for Graph's answer)."""
        from azure.core.rest import HttpRequest

        if not self._graph_enabled or call in self._graph_refused:
            return None
        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        try:
            # Graph's POSTs here (getByIds, getMemberGroups) only read: retried like GETs after a 429 or a dropped
            # connection (azure-core's per-request retry_on_methods; by default it retries only idempotent methods).
            response = await self._graph_client().send_request(request, retry_on_methods=READ_METHODS)
            await response.read()
        except ClientAuthenticationError as exc:
            self._graph_failed(call, object_ids, 401, "TokenUnavailable", str(exc).splitlines()[0] if str(exc) else "")
            return None
        except (ServiceRequestError, ServiceResponseError) as exc:
            self._graph_failed(call, object_ids, None, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return None
        if response.status_code >= HTTPStatus.BAD_REQUEST:
            code, message = _graph_error(response)
            self._graph_failed(call, object_ids, response.status_code, code, message)
            return None
        try:
            return response.json()
        except ValueError:
            self._graph_failed(call, object_ids, response.status_code, "InvalidJson", "the body is not JSON")
            return None

    async def _get_by_ids(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        page = await self._graph_json("getByIds", ids, "POST", f"{self._graph_url}/v1.0/directoryObjects/getByIds",
                                      {"ids": list(ids), "types": ["user", "servicePrincipal", "group"]})
        values = page.get("value") if isinstance(page, dict) else None
        return {str(o.get("id")).lower(): o for o in (values if isinstance(values, list) else [])
                if isinstance(o, dict) and o.get("id")}

    async def user_by_upn(self, upn: str) -> str | None:
        """The object id of the user a UPN names, from Microsoft Graph (one call per UPN per batch); None when Graph
        does not know it or may not be asked (:meth:`graph_problem` with ``"getUser"`` says why).

        ``GET /v1.0/users/{id | userPrincipalName}`` (learn.microsoft.com/graph/api/user-get; application
        permission User.Read.All, least privileged; Directory.Read.All, which the other calls need, also covers
        it). A UPN that starts with ``$`` goes in the documented ``/users('{upn}')`` form; the UPN is
        percent-encoded (a guest's ``#EXT#``). The id Graph answers is used only when it is a GUID."""
        from urllib.parse import quote

        async def call() -> str | None:
            encoded = quote(upn, safe="@")
            path = f"users('{encoded}')" if upn.startswith("$") else f"users/{encoded}"
            page = await self._graph_json("getUser", [upn], "GET",
                                          f"{self._graph_url}/v1.0/{path}?$select=id,userPrincipalName")
            oid = page.get("id") if isinstance(page, dict) else None
            if isinstance(oid, str) and is_guid(oid):
                return oid.lower()
            if page is not None:
                self._graph_failed("getUser", [upn], HTTPStatus.OK, "UnexpectedBody", "no user id in the answer")
            return None
        return await self._once(("upn", upn.lower()), call)

    async def display_names(self, object_ids: Sequence[str]) -> dict[str, str]:
        """Display names for many principals in one Graph call (for tables a person reads); {} without Graph."""
        ids = sorted({i.lower() for i in object_ids if i})[:1000]
        if not ids:
            return {}
        found = await self._get_by_ids(ids)
        return {k: str(o["displayName"]) for k, o in found.items() if o.get("displayName")}

    async def principal(self, object_id: str, *, need_type: bool, need_groups: bool) -> PrincipalInfo:
        """Type, name and transitive groups from Graph, asking only for what the decision needs; each call that
        fails leaves its part unknown (see :meth:`graph_problem`) and the other part intact."""
        if not (need_type or need_groups):
            return PrincipalInfo(object_id)

        async def info() -> dict[str, Any] | None:
            return (await self._get_by_ids([object_id])).get(object_id.lower())

        async def groups() -> list[str] | None:
            page = await self._graph_json(
                "getMemberGroups", [object_id], "POST",
                f"{self._graph_url}/v1.0/directoryObjects/{object_id}/getMemberGroups", {"securityEnabledOnly": False})
            values = page.get("value") if isinstance(page, dict) else None
            if not isinstance(values, list):
                if page is not None:
                    self._graph_failed("getMemberGroups", [object_id], 200, "UnexpectedBody", "no 'value' list")
                if object_id.lower() in self._size_limited:
                    return await paged_groups()
                return None
            return [str(g) for g in values if isinstance(g, str) and g.lower() != object_id.lower()]

        async def paged_groups() -> list[str] | None:
            # getMemberGroups stops at 11,000 groups; its docs name the workaround: the transitive memberOf list
            # of the object's own type (users / servicePrincipals), cast to groups and paged.
            meta = await self._once(("gp", object_id.lower()), info)
            collection = _GRAPH_COLLECTION.get(GRAPH_TYPES.get(str((meta or {}).get("@odata.type", "")).lower(), ""))
            if collection is None:
                return None
            url: str | None = (f"{self._graph_url}/v1.0/{collection}/{object_id}/transitiveMemberOf/"
                               "microsoft.graph.group?$select=id&$top=999")
            found: list[str] = []
            while url:
                page = await self._graph_json("transitiveMemberOf", [object_id], "GET", url)
                values = page.get("value") if isinstance(page, dict) else None
                if not isinstance(values, list):
                    return None
                found += [str(g["id"]) for g in values if isinstance(g, dict) and g.get("id")]
                link = page.get("@odata.nextLink") if isinstance(page, dict) else None
                url = str(link) if link else None
            self._graph_problems.pop(("getMemberGroups", object_id.lower()), None)
            return found

        meta, grp = await asyncio.gather(
            self._once(("gp", object_id.lower()), info) if need_type else _none(),
            self._once(("gg", object_id.lower()), groups) if need_groups else _none())
        first = meta or {}
        return PrincipalInfo(
            object_id=object_id, type=GRAPH_TYPES.get(str(first.get("@odata.type", "")).lower()),
            display_name=first.get("displayName"), app_id=first.get("appId"),
            groups=tuple(grp or ()), groups_known=grp is not None)


def _graph_error(response: Any) -> tuple[str, str]:
    """(code, message) of Graph's error body ``{"error": {"code", "message", "innerError"}}``, tolerating others."""
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        return str(err.get("code") or "Unknown"), str(err.get("message") or "")
    return f"HTTP{response.status_code}", ""


async def _none() -> None:
    return None
