"""Log Analytics query API routes (``/v1``): the snapshot's ``log_rows`` as one table, filtered by timespan.

The KQL text is not evaluated (the emulator is a stand-in for Azure, not a query engine); the caller gets the
rows of the window and filters them itself, as it would filter rows that arrived inside an alert.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from remediate.emulator.state import ArmError, TenantState, parse_duration, parse_time
from remediate.emulator.wire import Request, Response

_QUERY = re.compile(r"^/v1/(?:workspaces/[^/]+|subscriptions/.+)/query$")


def parse_timespan(text: str) -> tuple[datetime, datetime]:
    """``start/end``, ``start/duration``, ``duration/end`` or a bare ``duration`` (ending now), all ISO 8601."""
    now = datetime.now(UTC)
    parts = [p.strip() for p in text.split("/") if p.strip()]
    if len(parts) == 1:
        d = parse_duration(parts[0])
        if d is None:
            raise ArmError(400, "BadArgumentError", f"The timespan '{text}' is not valid.")
        return now - d, now
    if len(parts) == 2:
        a, b = parse_time(parts[0]), parse_time(parts[1])
        if a and b:
            return a, b
        if a and (d := parse_duration(parts[1])) is not None:
            return a, a + d
        if b and (d := parse_duration(parts[0])) is not None:
            return b - d, b
    raise ArmError(400, "BadArgumentError", f"The timespan '{text}' is not valid.")


def _column_type(name: str, values: list[Any]) -> str:
    v = next((x for x in values if x is not None), None)
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "long"
    if isinstance(v, float):
        return "real"
    if isinstance(v, dict | list):
        return "dynamic"
    if isinstance(v, str) and (name == "TimeGenerated" or ("T" in v and parse_time(v) is not None)):
        return "datetime"
    return "string"


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``PrimaryResult`` table over the union of the rows' columns (missing cells are null)."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    columns = [{"name": n, "type": _column_type(n, [r.get(n) for r in rows])} for n in names]
    return {"name": "PrimaryResult", "columns": columns, "rows": [[r.get(n) for n in names] for r in rows]}


def handle(state: TenantState, req: Request) -> Response:
    """``GET|POST /v1/workspaces/{id}/query`` and the resource-centric ``/v1/subscriptions/.../query``."""
    if not _QUERY.match(req.path.lower().rstrip("/")):
        raise ArmError(404, "PathNotFoundError", f"The requested path does not exist: {req.path}")
    if req.method == "POST":
        body = req.body if isinstance(req.body, dict) else {}
        query, span = body.get("query"), body.get("timespan") or req.q("timespan")
    elif req.method == "GET":
        query, span = req.q("query"), req.q("timespan")
    else:
        raise ArmError(405, "BadArgumentError", "Only GET and POST are supported.")
    if not isinstance(query, str) or not query.strip():
        raise ArmError(400, "BadArgumentError", "The request had some invalid properties: 'query' is required.")
    with state.lock:
        rows = list(state.snap.log_rows)
    if span:
        start, end = parse_timespan(str(span))
        kept = []
        for r in rows:
            t = r.get("TimeGenerated")
            when = parse_time(t) if isinstance(t, str) else None
            if t is None or (when is not None and start <= when <= end):
                kept.append(r)
        rows = kept
    return Response(200, {"tables": [table(rows)]})
