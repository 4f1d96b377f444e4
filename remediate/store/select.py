"""Which grant/claim store the CLI uses: SQLite by default (``--state FILE``), Azure Tables when
KV_REMEDIATE_STORAGE names a storage connection (the same tables the function app writes)."""

from __future__ import annotations

import os
from pathlib import Path

from .claims import ClaimStore, SqliteClaimStore, TableClaimStore
from .grants import GrantStore, SqliteGrantStore, TableGrantStore

SETTING = "KV_REMEDIATE_STORAGE"


def _tables() -> object | None:
    if not any(k == SETTING or k.startswith(SETTING + "__") for k in os.environ):
        return None
    from .azure import storage_settings, table_service_client

    return table_service_client(storage_settings(prefix=SETTING))


def open_stores(state: str | Path | None) -> tuple[GrantStore, ClaimStore]:
    """The grant audit store and the rate-slot store, on one backend."""
    service = _tables()
    if service is not None:
        from .azure import table_client

        return (TableGrantStore(table_client(service, "grants")),  # type: ignore[arg-type]
                TableClaimStore(table_client(service, "claims")))  # type: ignore[arg-type]
    return SqliteGrantStore(state), SqliteClaimStore(state)
