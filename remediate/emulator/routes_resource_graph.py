"""Azure Resource Graph's query API: ``POST /providers/Microsoft.ResourceGraph/resources``.

Served for exactly the query shapes kv-remediate sends (facts/resource_graph.py): vaults and Managed HSMs by a list
of names or ids, projected to where they are::

    resources
    | where type in~ ('microsoft.keyvault/vaults', 'microsoft.keyvault/managedhsms')
    | where name in~ ('kv-a', 'kv-b')            (or: | where id in~ ('/subscriptions/...', ...))
    | project id, name, type, subscriptionId, resourceGroup

Any other text is refused as Resource Graph refuses a query it cannot parse: 400 ``{"error": {"code":
"BadRequest", "message": "Please provide below info when asking for support: timestamp = ..., correlationId =
...", "details": [{"code": "InvalidQuery", "message": "Query is invalid. ..."}, {"code": "ParserFailure",
"message": "ParserFailure", "line", "characterPositionInLine", "token"}]}}`` (the shape of a real answer quoted in
grafana/grafana#35225; REST spec ``ErrorResponse`` / ``ErrorDetails`` with additional properties).

Request and answer (REST spec 2022-10-01 ``QueryRequest`` / ``QueryResponse``): ``subscriptions`` and
``managementGroups`` scope the query (neither: the whole tenant); ``options.$top`` (1..1000, default 1000) is the
page size, ``options.$skip`` an offset, ``options.$skipToken`` the next page of the same query and scopes;
``resultFormat`` ``objectArray`` (the default; ``table`` is not served). The answer is ``{"totalRecords", "count",
"resultTruncated": "false", "$skipToken"?, "data": [rows], "facets": []}``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from remediate.emulator.state import ArmError, TenantState, decode_token, encode_token
from remediate.emulator.wire import Request, Response

PATH = "/providers/microsoft.resourcegraph/resources"
API_VERSIONS = ("2019-04-01", "2020-04-01-preview", "2021-03-01", "2021-06-01-preview", "2022-10-01", "2024-04-01")
MAX_TOP = 1000
"""``QueryRequestOptions.$top``: 1..1000 (the REST spec)."""
DEFAULT_TOP = MAX_TOP
_LITERAL = r"'[A-Za-z0-9_.()/\-]+'"
_QUERY = re.compile(
    r"resources\n"
    r"\| where type in~ \('microsoft\.keyvault/vaults', 'microsoft\.keyvault/managedhsms'\)\n"
    rf"\| where (?P<field>name|id) in~ \((?P<values>{_LITERAL}(?:, {_LITERAL})*)\)\n"
    r"\| project id, name, type, subscriptionId, resourceGroup")
_PROJECT = ("id", "name", "type", "subscriptionId", "resourceGroup")


def bad_request(*details: dict[str, Any]) -> Response:
    """Resource Graph's 400: ``BadRequest`` with the support line, and the details."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return Response(400, {"error": {
        "code": "BadRequest",
        "message": f"Please provide below info when asking for support: timestamp = {stamp}, correlationId = "
                   f"{uuid.uuid4()}.",
        "details": list(details)}})


def invalid_query(query: str) -> Response:
    """The answer to a query the emulator does not parse: InvalidQuery plus a ParserFailure at the first line
    that differs from the shapes it serves."""
    expected = [("resources",),
                ("| where type in~ ('microsoft.keyvault/vaults', 'microsoft.keyvault/managedhsms')",),
                ("| where name in~ (", "| where id in~ ("),
                ("| project id, name, type, subscriptionId, resourceGroup",)]
    lines = query.split("\n")
    line = next((i + 1 for i, (got, wants) in enumerate(zip(lines, expected, strict=False))
                 if not got.startswith(wants)),
                min(len(lines), len(expected)) + 1)
    token = (lines[line - 1] if line <= len(lines) else "<EOF>")[:40]
    return bad_request(
        {"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure "
                                            "Resource Graph service and fix the error before retrying."},
        {"code": "ParserFailure", "message": "ParserFailure", "line": line, "characterPositionInLine": 0,
         "token": token})


def _strings(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: '{key}' must be an array "
                       "of strings.")
    return list(value)


def handle(state: TenantState, req: Request) -> Response:
    """One query."""
    if req.method != "POST":
        raise ArmError(405, "MethodNotAllowed", f"The requested method '{req.method}' is not allowed on "
                       f"'{req.path}'.")
    version = req.q("api-version") or ""
    if version not in API_VERSIONS:
        raise ArmError(400, "NoRegisteredProviderFound", f"No registered resource provider found for location "
                       f"'global' and API version '{version}' for type 'resources'. The supported api-versions are "
                       f"'{', '.join(API_VERSIONS)}'.")
    body = req.body if isinstance(req.body, dict) else None
    if body is None or not isinstance(body.get("query"), str) or not body["query"].strip():
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'query' is required.")
    subscriptions = _strings(body.get("subscriptions"), "subscriptions")
    groups = _strings(body.get("managementGroups"), "managementGroups")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'options' must be an object.")
    fmt = options.get("resultFormat", "objectArray")
    if fmt != "objectArray":
        return bad_request({"code": "UnsupportedResultFormat", "message": f"resultFormat '{fmt}' is not served by "
                            "the kv-remediate emulator (objectArray only)."})
    top = options.get("$top", DEFAULT_TOP)
    skip = options.get("$skip", 0)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP or isinstance(skip, bool) \
            or not isinstance(skip, int) or skip < 0:
        return bad_request({"code": "InvalidParameter", "message": "$top must be an integer between 1 and 1000 and "
                            "$skip a non-negative integer."})
    query = body["query"]
    m = _QUERY.fullmatch(query)
    if m is None:
        return invalid_query(query)
    scope_key = "|".join([query, ",".join(sorted(s.lower() for s in subscriptions or [])),
                          ",".join(sorted(g.lower() for g in groups or []))])
    offset = skip
    token = options.get("$skipToken")
    if token:
        offset, was = decode_token(str(token))
        if was != scope_key:
            return bad_request({"code": "InvalidSkipToken", "message": "The $skipToken does not belong to this query "
                                "and scopes."})
    wanted = {v[1:-1].lower() for v in re.findall(_LITERAL, m.group("values"))}
    in_scope = state.graph_subscriptions(subscriptions, groups)
    field = m.group("field")
    rows = [{k: r[k] for k in _PROJECT} for r in state.graph_rows()
            if r["subscriptionId"] in in_scope and str(r[field]).lower() in wanted]
    rows.sort(key=lambda r: str(r["id"]).lower())
    page = rows[offset:offset + top]
    out: dict[str, Any] = {"totalRecords": len(rows), "count": len(page), "resultTruncated": "false"}
    if offset + top < len(rows):
        out["$skipToken"] = encode_token(offset + top, scope_key)
    out.update({"data": page, "facets": []})
    return Response(200, out)
