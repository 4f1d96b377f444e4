"""Which grant/claim store the CLI uses: SQLite by default (``--state FILE``), Azure Tables when
KV_REMEDIATE_STORAGE names a storage connection (the same tables the function app writes)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .azure import StorageSettings
from .claims import ClaimStore, SqliteClaimStore
from .grants import GrantStore, SqliteGrantStore

SETTING = "KV_REMEDIATE_STORAGE"


def _tables() -> StorageSettings | None:
    if not any(k == SETTING or k.startswith(SETTING + "__") for k in os.environ):
        return None
    from .azure import storage_settings

    return storage_settings(prefix=SETTING)


def open_grants(state: str | Path | None) -> GrantStore:
    """The grant audit store."""
    settings = _tables()
    if settings is not None:
        from .azure import table_client, table_service_client
        from .grants import TableGrantStore

        return TableGrantStore(table_client(table_service_client(settings), "grants"))  # type: ignore[return-value]
    return SqliteGrantStore(state)


@asynccontextmanager
async def open_slots(state: str | Path | None) -> AsyncIterator[ClaimStore]:
    """The rate-slot store on the same backend as :func:`open_grants`, closed (with its credential) on exit."""
    settings = _tables()
    if settings is None:
        yield SqliteClaimStore(state)
        return
    from .azure import async_credential, async_table_client
    from .claims import TableClaimStore

    credential = async_credential(settings) if settings.identity_based else None
    try:
        store = TableClaimStore(await async_table_client(settings, "claims", credential=credential))
        try:
            yield store
        finally:
            await store.close()
    finally:
        if credential is not None:
            await credential.close()
