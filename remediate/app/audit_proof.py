"""The proof a grant needs, read by the app itself: the denial's own row in the vault's audit log.

For ``mode: apply`` (queue worker): :func:`prove` makes one read per denial (principal, vault, operation, window,
401/403; the row's request URI must name the denial's object when it names one); a row found is
``Proof("audit_log", "workspace {ws} row {TimeGenerated} {CorrelationId}")``. Every read is the app's own fixed
query (facts/loganalytics.py ``AuditQuery``) over the configured workspaces (``KV_REMEDIATE_AUDIT_WORKSPACES``).

A failed or partial read is a limitation (no proof), so the guard refuses the plan with ``refused_by: "evidence"``
while the diagnosis goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import RemediateError
from ..model import Denial, Proof
from .services import Runtime

Key = tuple[str | None, ...]
LOOKBACK = timedelta(hours=1)
"""Without an alert window, a denial's proof is looked for in the hour before its time (a few minutes after)."""
LOOKAHEAD = timedelta(minutes=5)


def vault_name_of(d: Denial) -> str | None:
    """The denial's vault name, lower-cased (from its resource id when it names only that)."""
    if d.vault.name:
        return d.vault.name.lower()
    if d.vault.resource_id:
        return d.vault.resource_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return None


def window_of(window: tuple[str, str] | None, denial: Denial, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The time span to read: the alert's window when it is readable, else around the denial's time, else the
    last hour (never longer than the query's maximum, never in the future)."""
    from ..facts.loganalytics import MAX_WINDOW, parse_time

    now = now or datetime.now(UTC)
    if window:
        start, end = parse_time(window[0]), parse_time(window[1])
        if start and end and start <= end:
            return max(start, end - MAX_WINDOW), end
    when = parse_time(denial.time)
    if when is not None:
        return when - LOOKBACK, min(when + LOOKAHEAD, max(now, when))
    return now - LOOKBACK, now


def audit_workspaces(rt: Runtime) -> tuple[str, ...]:
    """The workspaces the app reads (``KV_REMEDIATE_AUDIT_WORKSPACES``)."""
    return rt.settings.audit_workspaces


def row_proof(workspace: str, row: dict[str, Any]) -> Proof:
    """The proof one audit row is: where it was read and which row."""
    return Proof("audit_log", f"workspace {workspace} row {row.get('TimeGenerated')} {row.get('CorrelationId')}")


def _prove_query(d: Denial, window: tuple[datetime, datetime]) -> tuple[Any, str | None]:
    """The proof query of one denial, or why it cannot be asked."""
    from .. import catalog
    from ..facts.loganalytics import AuditQuery

    op = catalog.operation(d.operation) if d.operation else None
    vault = vault_name_of(d)
    if not d.principal.object_id or op is None or not vault:
        return None, "the denial does not name the caller's object id, the vault and a known operation"
    try:
        return AuditQuery(vault=vault, start=window[0], end=window[1], principal=d.principal.object_id,
                          operation=op.name), None
    except RemediateError as exc:
        return None, exc.message


def _same_object(row: dict[str, Any], d: Denial) -> bool:
    """When the denial names an object, the row's request was on that object (kind and name from its URI path),
    so a claim about one secret is never proved by a denial on another."""
    import urllib.parse

    if d.object is None or not d.object.name:
        return True
    try:
        path = urllib.parse.urlsplit(str(row.get("requestUri_s") or "")).path
    except ValueError:
        return False
    parts = [p for p in path.split("/") if p]
    return [p.lower() for p in parts[:2]] == [d.object.kind.lower(), d.object.name.lower()]


def _matches(row: dict[str, Any], d: Denial, operation: str) -> bool:
    """Re-check what the service filtered: the row is this principal's 401/403 on this operation and object."""
    status = row.get("httpStatusCode_d")
    return (str(row.get("identity_claim_oid_g") or "").lower() == (d.principal.object_id or "").lower()
            and str(row.get("OperationName") or "").lower() == operation.lower()
            and isinstance(status, int | float) and int(status) in (401, 403) and _same_object(row, d))


@dataclass
class Proved:
    """Proofs per denial key, the limitations per key (why there is none), and the requests it took."""

    proofs: dict[Key, Proof] = field(default_factory=dict)
    limitations: dict[Key, str] = field(default_factory=dict)
    requests: int = 0


async def prove(rt: Runtime, denials: Sequence[Denial], window: tuple[str, str] | None,
                known: dict[Key, Proof] | None = None) -> Proved:
    """Look for each denial in the audit log (one read per denial and workspace, until a row is found)."""
    out = Proved(proofs=dict(known or {}))
    workspaces = audit_workspaces(rt)
    todo: list[tuple[Key, Denial, Any]] = []
    for raw in denials:
        d = raw.canonical()
        key = d.identity_key()
        if key in out.proofs or any(key == k for k, _, _ in todo):
            continue
        if not workspaces:
            out.limitations[key] = "KV_REMEDIATE_AUDIT_WORKSPACES is not set: the denial was not looked up"
            continue
        query, why = _prove_query(d, window_of(window, d))
        if query is None:
            out.limitations[key] = f"not looked up in the audit log: {why}"
            continue
        todo.append((key, d, query))
    if not todo:
        return out
    async with rt.log_analytics() as client:
        for key, d, query in todo:
            problems: list[str] = []
            for ws in workspaces:
                try:
                    got = await client.audit(ws, query)
                except RemediateError as exc:
                    problems.append(f"workspace {ws}: {exc.message}")
                    continue
                row = next((r for r in got.rows if _matches(r, d, query.operation)), None)
                if row is not None:
                    out.proofs[key] = row_proof(ws, row)
                    break
                problems.append(f"workspace {ws}: " + (f"no matching row, and a partial error ({got.partial})"
                                                       if got.partial else "no matching row"))
            if key not in out.proofs:
                out.limitations[key] = "the denial was not found in the audit log (" + "; ".join(problems) + ")"
        out.requests = client.requests
    return out
