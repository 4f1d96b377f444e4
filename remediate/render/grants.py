"""Readable text for ``kv-remediate grants --output text``: the audit trail as a table (ids and scopes are never
cut: they are what ``revoke --grant`` and a person checking Azure need)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .table import aligned

if TYPE_CHECKING:
    from ..store.grants import GrantRecord

_COLUMNS = ("time", "outcome", "grant", "principal", "scope", "refused by", "expires", "revoked")


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "-"


def grants_table(records: Sequence[GrantRecord]) -> str:
    """The grant records, newest first as the store lists them; "no grant records" when there are none."""
    if not records:
        return "no grant records"
    rows = [(_when(r.time), r.outcome, r.id, r.principal_id or "-", r.scope or "-", r.refused_by or "-",
             _when(r.expires_at), _when(r.revoked_at)) for r in records]
    return "\n".join(aligned(_COLUMNS, rows))
