"""Rows for log alerts that do not name the caller: fetched through the alert's ``linkToSearchResultsAPI``.

Shared by the queue worker and ``/api/diagnose`` (never the webhook: it only enqueues). The query API returns the
rows of the alert's window; the rows are parsed like any AzureDiagnostics/AZKVAuditLogs rows and kept when they
are about the alert's vault and status (the alert's query already filtered them that way in Azure; the emulator
does not evaluate KQL, so the same filter is applied here in both cases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..model import Denial
from .messages import Search
from .runtime import Runtime


@dataclass(frozen=True)
class Fetched:
    """What a search returned: the denials kept and the requests it took."""

    denials: tuple[Denial, ...]
    rows: int
    requests: int


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


async def fetch(rt: Runtime, alert: Denial, search: Search) -> Fetched:
    """The alert's denials from its rows (the alert id kept on each)."""
    from ..intake import parse_one

    async with rt.log_analytics() as client:
        result = await client.search(search.link, search.window)
        requests = client.requests
    parsed = parse_one("linkToSearchResultsAPI", json.dumps(result).encode())
    rows = sum(len(t.get("rows") or []) for t in result.get("tables", []) if isinstance(t, dict))
    kept = tuple(d.with_(alert_id=alert.alert_id) for d in parsed.denials if same_alert(alert, d))
    return Fetched(kept, rows, requests)
