"""What the app reads itself in the vaults' audit logs: the denials behind an alert, and the proof a grant needs.

Shared by the queue worker and ``/api/diagnose`` (never the webhook: it only enqueues). Every read is the app's
own fixed query (facts/loganalytics.py ``AuditQuery``) over the configured workspaces
(``KV_REMEDIATE_AUDIT_WORKSPACES``). An alert says only *where to look*: the workspace (or vault) its search link
names, and its window; its KQL is never run, and a link to an unconfigured workspace or to a subscription we do
not search is dropped with a note.

- :func:`fetch`: the denials of a log alert that does not name the caller (any principal, the alert's vault,
  401/403, the alert's window). Each row we read is also the proof of its own denial.
- :func:`prove`: for ``mode: apply``, one read per denial (principal, vault, operation, window, 401/403; the row's
  request URI must name the denial's object when it names one); a row found is
  ``Proof("audit_log", "workspace {ws} row {TimeGenerated} {CorrelationId}")``.

Optional reads never abort: a failed or partial read is a limitation (a note, and no proof), so the guard
refuses the plan with ``refused_by: "evidence"`` while the diagnosis goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import RemediateError
from ..model import Denial, Proof
from .messages import Search
from .services import Runtime

log = logging.getLogger("kv_remediate.evidence")

Key = tuple[str | None, ...]
LOOKBACK = timedelta(hours=1)
"""Without an alert window, a denial's proof is looked for in the hour before its time (a few minutes after)."""
LOOKAHEAD = timedelta(minutes=5)


@dataclass(frozen=True)
class Fetched:
    """What a read returned: the denials kept, the rows read, the requests it took, notes and proofs."""

    denials: tuple[Denial, ...]
    rows: int
    requests: int
    notes: tuple[str, ...] = ()
    proofs: dict[Key, Proof] = field(default_factory=dict)


def _vault_name(d: Denial) -> str | None:
    if d.vault.name:
        return d.vault.name.lower()
    if d.vault.resource_id:
        return d.vault.resource_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return None


def same_alert(alert: Denial, row: Denial) -> bool:
    """A row belongs to the alert when vault and status agree wherever the alert names them."""
    vault = _vault_name(alert)
    if vault and _vault_name(row) != vault:
        return False
    return alert.status is None or row.status == alert.status


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


def _workspaces(rt: Runtime) -> tuple[str, ...]:
    return rt.settings.audit_workspaces


def _row_proof(workspace: str, row: dict[str, Any]) -> Proof:
    return Proof("audit_log", f"workspace {workspace} row {row.get('TimeGenerated')} {row.get('CorrelationId')}")


def _as_result(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows back in the query API's table shape, for intake's parser."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    return json.dumps({"tables": [{"name": "PrimaryResult", "columns": [{"name": n} for n in names],
                                   "rows": [[r.get(n) for n in names] for r in rows]}]}).encode()


def _targets(rt: Runtime, alert: Denial, search: Search) -> tuple[tuple[str, ...], str | None, str | None]:
    """(workspaces to read, vault name, why not) for an alert's link: only configured workspaces, only vaults."""
    from ..armid import is_vault_name
    from ..clouds import PUBLIC
    from ..errors import InputError
    from ..facts.loganalytics import link_target

    configured = _workspaces(rt)
    if not configured:
        return (), None, ("KV_REMEDIATE_AUDIT_WORKSPACES is not set: the alert's rows were not read (set it to the "
                          "audit workspace ids)")
    try:
        target = link_target(search.link, (rt.settings.cloud or PUBLIC).logs_hosts())
    except InputError as exc:
        return (), None, f"the alert's search link was not followed: {exc.message}"
    vault = _vault_name(alert)
    if target.workspace is not None:
        if target.workspace not in configured:
            return (), None, ("the alert's search link names a workspace that is not in KV_REMEDIATE_AUDIT_WORKSPACES;"
                              " it was not read")
        workspaces: tuple[str, ...] = (target.workspace,)
    else:
        subs = {s.lower() for s in rt.settings.subscriptions}
        if subs and target.subscription not in subs:
            return (), None, ("the alert's search link names a vault in a subscription kv-remediate does not search; "
                              "it was not read")
        if vault and target.vault != vault:
            return (), None, "the alert's search link names another vault than the alert; it was not read"
        vault = target.vault
        workspaces = configured
    if not vault or not is_vault_name(vault):
        return (), None, "the alert names no vault: its rows were not read"
    return workspaces, vault, None


async def fetch(rt: Runtime, alert: Denial, search: Search) -> Fetched:
    """The alert's denials from the audit rows we read ourselves (the alert id kept on each)."""
    from ..facts.loganalytics import AuditQuery
    from ..intake import parse_one

    workspaces, vault, why = _targets(rt, alert, search)
    if why or vault is None:
        return Fetched((), 0, 0, (why or "no vault",))
    start, end = window_of(search.window, alert)
    notes: list[str] = []
    rows: list[tuple[str, dict[str, Any]]] = []
    requests = 0
    try:
        query = AuditQuery(vault=vault, start=start, end=end)
    except RemediateError as exc:
        return Fetched((), 0, 0, (f"the alert's rows were not read: {exc.message}",))
    async with rt.log_analytics() as client:
        for ws in workspaces:
            try:
                got = await client.audit(ws, query)
            except RemediateError as exc:
                notes.append(f"reading the audit log failed ({exc.message})")
                continue
            finally:
                requests = client.requests
            if got.partial:
                notes.append(f"workspace {ws} answered with a partial error ({got.partial}): its rows may be "
                             "incomplete")
            rows.extend((ws, r) for r in got.rows)
    if not rows:
        return Fetched((), 0, requests, tuple(notes))
    parsed = await asyncio.to_thread(parse_one, "audit log rows", _as_result([r for _, r in rows]))
    kept = tuple(d.with_(alert_id=alert.alert_id) for d in parsed.denials if same_alert(alert, d))
    by_row = {(str(r.get("TimeGenerated")), str(r.get("CorrelationId"))): (ws, r) for ws, r in rows}
    proofs: dict[Key, Proof] = {}
    for d in kept:
        hit = by_row.get((str(d.time), str(d.correlation_id)))
        if hit is not None:
            proofs.setdefault(d.canonical().identity_key(), _row_proof(*hit))
    return Fetched(kept, len(rows), requests, tuple(notes), proofs)


def _prove_query(d: Denial, window: tuple[datetime, datetime]) -> tuple[Any, str | None]:
    """The proof query of one denial, or why it cannot be asked."""
    from .. import catalog
    from ..facts.loganalytics import AuditQuery

    op = catalog.operation(d.operation) if d.operation else None
    vault = _vault_name(d)
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
    return len(parts) >= 2 and parts[0].lower() == d.object.kind.lower() and parts[1].lower() == d.object.name.lower()


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
    workspaces = _workspaces(rt)
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
                    out.proofs[key] = _row_proof(ws, row)
                    break
                problems.append(f"workspace {ws}: " + (f"no matching row, and a partial error ({got.partial})"
                                                       if got.partial else "no matching row"))
            if key not in out.proofs:
                out.limitations[key] = "the denial was not found in the audit log (" + "; ".join(problems) + ")"
        out.requests = client.requests
    return out
