"""Log Analytics query API routes (``/v1/workspaces/{id}/query``): the app's own audit query, and nothing else.

The emulator is not a KQL engine. It answers exactly one query shape, the app's ``AUDIT_QUERY_HEADER`` +
``AUDIT_QUERY_BODY`` (remediate/facts/loganalytics.py): it parses the ``let`` header by that template, checks the
body is the constant text, and evaluates the body's filters in Python over the snapshot's ``log_rows`` (time
between start and end inclusive, the vault, status 401/403, the principal and operation when given, AZKVAuditLogs
and AzureDiagnostics AuditEvent rows only, projected to the body's columns, at most 200 rows). Any other query text
is refused as the real API refuses a query it cannot run: 400 ``BadArgumentError`` with an ``innererror``
(real bodies quoted in MicrosoftDocs/feedback#1792 and MicrosoftDocs/azure-docs#18012:
``{"error": {"message": "The request had some invalid properties", "code": "BadArgumentError",
"innererror": {"code": "SyntaxError"|"SemanticError", "message": ...}}}``), so a regression that sends an alert's
KQL shows up in tests.

Rows and workspaces: a row's ``TenantId`` column is, in Log Analytics tables, the id of the workspace that holds
it; a stored row with a ``TenantId`` is served only by that workspace, a row without one by every workspace (an
emulator convenience for short snapshots). A row's table is its ``Type`` column, else AzureDiagnostics for rows
with its ``_d``/``_s``/``_g`` columns, else AZKVAuditLogs; rows of any other table (``SigninLogs``...) never match.

``emulator.logs_partial_error`` (snapshot) makes every answer a 200 with the rows plus an ``error`` object of code
``PartialError`` (learn.microsoft.com/azure/azure-monitor/logs/api/response-format, "Azure Monitor Log Analytics
API errors": a non-fatal error is a 200 with the tables and an ``error`` whose details are in ``details``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from remediate.emulator.state import ArmError, TenantState, parse_duration, parse_time
from remediate.emulator.wire import Request, Response
from remediate.facts.loganalytics import AUDIT_QUERY_BODY, AUDIT_QUERY_HEADER

_WORKSPACE = re.compile(r"^/v1/workspaces/([^/]+)/query$", re.IGNORECASE)
_RESOURCE = re.compile(r"^/v1(/subscriptions/.+)/query$", re.IGNORECASE)
_LITERAL = r"'((?:[^'\\\n]|\\.)*)'"
_TIME = r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?Z)"
_HEADER = re.compile("^" + re.escape(AUDIT_QUERY_HEADER)
                     .replace(re.escape("{start}"), _TIME).replace(re.escape("{end}"), _TIME)
                     .replace(re.escape("{vault}"), _LITERAL).replace(re.escape("{principal}"), _LITERAL)
                     .replace(re.escape("{operation}"), _LITERAL))
_COLUMNS = ("TimeGenerated", "CorrelationId", "OperationName", "ResultSignature", "httpStatusCode_d",
            "ResultDescription", "CallerIPAddress", "requestUri_s", "ResourceId", "identity_claim_oid_g",
            "identity_claim_appid_g", "Category", "ResourceProvider")
_TYPES = {"TimeGenerated": "datetime", "httpStatusCode_d": "real"}
_MAX_ROWS = 200


def bad_argument(inner_code: str, message: str) -> Response:
    """The query API's 400 for a query it will not run (shape quoted in the module docstring)."""
    return Response(400, {"error": {"message": "The request had some invalid properties", "code": "BadArgumentError",
                                    "correlationId": "00000000-0000-0000-0000-000000000000",
                                    "innererror": {"code": inner_code, "message": message}}})


def parse_timespan(text: str) -> tuple[datetime, datetime]:
    """``start/end``, ``start/duration``, ``duration/end`` or a bare ``duration`` (ending now), all ISO 8601."""
    now = datetime.now(UTC)
    parts = [p.strip() for p in text.split("/") if p.strip()]
    match parts:
        case [duration]:
            d = parse_duration(duration)
            if d is None:
                raise ArmError(400, "BadArgumentError", f"The timespan '{text}' is not valid.")
            return now - d, now
        case [first, second]:
            a, b = parse_time(first), parse_time(second)
            if a and b:
                return a, b
            if a and (d := parse_duration(second)) is not None:
                return a, a + d
            if b and (d := parse_duration(first)) is not None:
                return b - d, b
    raise ArmError(400, "BadArgumentError", f"The timespan '{text}' is not valid.")


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def parse_audit_query(query: str) -> dict[str, Any] | None:
    """The parameters of the app's audit query, or None when ``query`` is any other text."""
    m = _HEADER.match(query)
    if not m or query[m.end():] != AUDIT_QUERY_BODY:
        return None
    start, end = parse_time(m.group(1)), parse_time(m.group(2))
    if start is None or end is None:
        return None
    return {"start": start, "end": end, "vault": _unquote(m.group(3)).lower(),
            "principal": _unquote(m.group(4)).lower(), "operation": _unquote(m.group(5)).lower()}


def _table_of(row: dict[str, Any]) -> str:
    typ = row.get("Type")
    if isinstance(typ, str) and typ:
        return typ
    if any(k.endswith(("_d", "_s", "_g", "_b")) for k in row) or "Category" in row or "ResourceProvider" in row:
        return "AzureDiagnostics"
    return "AZKVAuditLogs"


def _claim(row: dict[str, Any], key: str) -> str:
    ident = row.get("Identity")
    claim = ident.get("claim") if isinstance(ident, dict) else None
    value = claim.get(key) if isinstance(claim, dict) else None
    return str(value) if value is not None else ""


def _from_resource_table(row: dict[str, Any], vault: str) -> dict[str, Any] | None:
    """An ``AZKVAuditLogs`` row (resource-specific table) in the AzureDiagnostics columns the query projects;
    None unless it is a 401/403 on ``vault``."""
    rid = str(row.get("_ResourceId") or "")
    status = row.get("HttpStatusCode")
    if not rid.lower().endswith(f"/microsoft.keyvault/vaults/{vault}") or status not in (401, 403):
        return None
    return {"TimeGenerated": row.get("TimeGenerated"), "CorrelationId": row.get("CorrelationId"),
            "OperationName": row.get("OperationName"), "ResultSignature": row.get("ResultSignature"),
            "httpStatusCode_d": float(status), "ResultDescription": row.get("ResultDescription"),
            "CallerIPAddress": row.get("CallerIpAddress"), "requestUri_s": row.get("RequestUri"), "ResourceId": rid,
            "identity_claim_oid_g": _claim(row, "oid"), "identity_claim_appid_g": _claim(row, "appid")}


def _from_diagnostics(row: dict[str, Any], vault: str) -> dict[str, Any] | None:
    """An ``AzureDiagnostics`` row projected; None unless it is a Key Vault audit event, a 401/403 on ``vault``."""
    if (row.get("ResourceProvider") != "MICROSOFT.KEYVAULT" or row.get("Category") != "AuditEvent"
            or str(row.get("Resource") or "").lower() != vault or row.get("httpStatusCode_d") not in (401, 403)):
        return None
    out = {k: row.get(k) for k in ("TimeGenerated", "CorrelationId", "OperationName", "ResultSignature",
                                   "httpStatusCode_d", "ResultDescription", "CallerIPAddress", "requestUri_s")}
    out.update(ResourceId=row.get("_ResourceId"), identity_claim_oid_g=str(row.get("identity_claim_oid_g") or ""),
               identity_claim_appid_g=str(row.get("identity_claim_appid_g") or ""))
    return out


_PROJECTIONS: dict[str, Callable[[dict[str, Any], str], dict[str, Any] | None]] = {
    "AZKVAuditLogs": _from_resource_table,
    "AzureDiagnostics": _from_diagnostics,
}


def _projected(row: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """The body's filters and projection for one stored row; None when the row does not match."""
    t = row.get("TimeGenerated")
    when = parse_time(t) if isinstance(t, str) else None
    if when is None or not params["start"] <= when <= params["end"]:
        return None
    project = _PROJECTIONS.get(_table_of(row))
    out = project(row, params["vault"]) if project is not None else None
    if out is None:
        return None
    if params["principal"] and str(out["identity_claim_oid_g"]).lower() != params["principal"]:
        return None
    if params["operation"] and str(out["OperationName"] or "").lower() != params["operation"]:
        return None
    out.update(Category="AuditEvent", ResourceProvider="MICROSOFT.KEYVAULT")
    return out


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``PrimaryResult`` table with the audit query's projected columns."""
    columns = [{"name": n, "type": _TYPES.get(n, "string")} for n in _COLUMNS]
    return {"name": "PrimaryResult", "columns": columns, "rows": [[r.get(n) for n in _COLUMNS] for r in rows]}


def _in_scope(row: dict[str, Any], workspace: str | None, resource: str | None) -> bool:
    if workspace is not None:
        ws = row.get("TenantId")
        return not ws or str(ws).lower() == workspace
    rid = str(row.get("_ResourceId") or row.get("ResourceId") or "").lower().rstrip("/")
    return bool(resource) and (rid == resource or rid.startswith(f"{resource}/"))


def handle(state: TenantState, req: Request) -> Response:
    """``GET|POST /v1/workspaces/{id}/query`` and the resource-centric ``/v1/subscriptions/.../query``."""
    path = req.path.rstrip("/")
    ws_match, res_match = _WORKSPACE.match(path), _RESOURCE.match(path)
    if not ws_match and not res_match:
        raise ArmError(404, "PathNotFoundError", f"The requested path does not exist: {req.path}")
    if req.method == "POST":
        body = req.body if isinstance(req.body, dict) else {}
        query, span = body.get("query"), body.get("timespan") or req.q("timespan")
    elif req.method == "GET":
        query, span = req.q("query"), req.q("timespan")
    else:
        raise ArmError(405, "BadArgumentError", "Only GET and POST are supported.")
    if not isinstance(query, str) or not query.strip():
        return bad_argument("QueryValidationError", "'query' is required.")
    params = parse_audit_query(query)
    if params is None:
        return bad_argument("SyntaxError", "The emulator runs only kv-remediate's audit query "
                            "(AUDIT_QUERY_HEADER + AUDIT_QUERY_BODY); this query is another text.")
    start, end = params["start"], params["end"]
    if span:
        s, e = parse_timespan(str(span))
        start, end = max(start, s), min(end, e)
    params = {**params, "start": start, "end": end}
    workspace = ws_match.group(1).lower() if ws_match else None
    resource = res_match.group(1).lower() if res_match else None
    with state.lock:
        stored = list(state.snap.log_rows)
        partial = state.snap.emulator.logs_partial_error
    kept = [p for r in stored if _in_scope(r, workspace, resource) and (p := _projected(r, params)) is not None]
    kept.sort(key=lambda r: parse_time(str(r["TimeGenerated"])) or start)
    doc: dict[str, Any] = {"tables": [table(kept[:_MAX_ROWS])]}
    if partial:
        doc["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                        "details": [{"code": "EngineError", "message": partial}]}
    return Response(200, doc)
