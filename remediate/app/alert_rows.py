"""An alert's rows, read by the app itself: the denials behind a log alert whose payload does not name the caller.

Shared by the queue worker and ``/api/diagnose``/``/api/remediate`` (never the webhook: it only enqueues). Intake
hands over a typed ``RowsLink`` beside each such denial (``ParseResult.with_rows_links``); every read is the app's
own fixed query (facts/loganalytics.py ``AuditQuery``) over the configured workspaces
(``KV_REMEDIATE_AUDIT_WORKSPACES``). The link says only *where to look*: the workspace (or vault) it names, and the
alert's window; its KQL is never run, and a link to an unconfigured workspace or to a subscription we do not
search is dropped with a note.

- :func:`fetch`: the denials of one such alert (any principal, the alert's vault, 401/403, the alert's window).
  Each row we read is also the proof of its own denial (``audit_proof.row_proof``).
- :func:`expand`: a parse result with every such denial replaced by its alert's rows (the request routes).

Optional reads never abort: a failed or partial read is a limitation (a note), and the diagnosis goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import RemediateError
from ..model import Denial, ParseResult, Proof, RowsLink
from .audit_proof import Key, audit_workspaces, row_proof, vault_name_of, window_of
from .services import Runtime

if TYPE_CHECKING:
    from ..facts.loganalytics import LinkTarget

log = logging.getLogger("kv_remediate.alert_rows")


@dataclass(frozen=True)
class Fetched:
    """What a read returned: the denials kept, the rows read, the requests it took, notes and proofs."""

    denials: tuple[Denial, ...]
    rows: int
    requests: int
    notes: tuple[str, ...] = ()
    proofs: dict[Key, Proof] = field(default_factory=dict)


def same_alert(alert: Denial, row: Denial) -> bool:
    """A row belongs to the alert when vault and status agree wherever the alert names them."""
    vault = vault_name_of(alert)
    if vault and vault_name_of(row) != vault:
        return False
    return alert.status is None or row.status == alert.status


def _as_result(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows back in the query API's table shape, for intake's parser."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    return json.dumps({"tables": [{"name": "PrimaryResult", "columns": [{"name": n} for n in names],
                                   "rows": [[r.get(n) for n in names] for r in rows]}]}).encode()


def _targets(rt: Runtime, alert: Denial, link: RowsLink) -> tuple[tuple[str, ...], str | None, str | None]:
    """(workspaces to read, vault name, why not) for an alert's link: only configured workspaces, only vaults."""
    from ..armid import is_vault_name
    from ..clouds import PUBLIC
    from ..errors import InputError
    from ..facts.loganalytics import link_target

    configured = audit_workspaces(rt)
    if not configured:
        return (), None, ("KV_REMEDIATE_AUDIT_WORKSPACES is not set: the alert's rows were not read (set it to the "
                          "audit workspace ids)")
    try:
        target = link_target(link.link, (rt.settings.cloud or PUBLIC).logs_hosts())
    except InputError as exc:
        return (), None, f"the alert's search link was not followed: {exc.message}"
    vault = vault_name_of(alert)
    if target.workspace is not None:
        if target.workspace not in configured:
            return (), None, ("the alert's search link names a workspace that is not in KV_REMEDIATE_AUDIT_WORKSPACES;"
                              " it was not read")
        workspaces: tuple[str, ...] = (target.workspace,)
    else:
        why = _vault_link_refusal(rt, target, vault)
        if why is not None:
            return (), None, why
        vault = target.vault
        workspaces = configured
    if not vault or not is_vault_name(vault):
        return (), None, "the alert names no vault: its rows were not read"
    return workspaces, vault, None


def _vault_link_refusal(rt: Runtime, target: LinkTarget, alert_vault: str | None) -> str | None:
    """Why a search link scoped to a vault is not followed (another subscription, another vault), else None."""
    subs = {s.lower() for s in rt.settings.subscriptions}
    if subs and target.subscription not in subs:
        return ("the alert's search link names a vault in a subscription kv-remediate does not search; "
                "it was not read")
    if alert_vault and target.vault != alert_vault:
        return "the alert's search link names another vault than the alert; it was not read"
    return None


async def fetch(rt: Runtime, alert: Denial, link: RowsLink) -> Fetched:
    """The alert's denials from the audit rows we read ourselves (the alert id kept on each)."""
    from ..facts.loganalytics import AuditQuery
    from ..intake import parse_one

    workspaces, vault, why = _targets(rt, alert, link)
    if why or vault is None:
        return Fetched((), 0, 0, (why or "no vault",))
    start, end = window_of(link.window, alert)
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
            proofs.setdefault(d.canonical().identity_key(), row_proof(*hit))
    return Fetched(kept, len(rows), requests, tuple(notes), proofs)


@dataclass(frozen=True)
class Expanded:
    """A parse result with its alerts' rows read: the denials, the notes for a person, the requests it took."""

    denials: tuple[Denial, ...]
    notes: tuple[str, ...]
    requests: int


async def expand(rt: Runtime, parsed: ParseResult, name: str) -> Expanded:
    """Each denial that has a rows link replaced by the denials its alert's rows hold (the denial itself when
    they hold none); the link's note gives way to what was read. ``name`` prefixes the notes (the input's)."""
    denials: list[Denial] = []
    replaced: set[str] = set()
    added: list[str] = []
    requests = 0
    for d, link in parsed.with_rows_links():
        if link is None:
            denials.append(d)
            continue
        got = await fetch(rt, d, link)
        requests += got.requests
        denials.extend(got.denials or [d])
        if link.note:
            replaced.add(link.note)
        added.extend(f"{name}: {n}" for n in got.notes)
        added.append(f"{name}: read {got.rows} audit row(s) with kv-remediate's own query, "
                     f"{len(got.denials)} denial(s) about the alert's vault")
    notes = [n for n in parsed.notes if n not in replaced] + added
    return Expanded(tuple(denials), tuple(notes), requests)
