"""State that outlives one invocation: claims (alert-storm dedupe), findings, and the grant audit trail.

Each store has a protocol and two real backends: Azure Tables (the function app, shared across instances) and
SQLite (the CLI, default ``~/.kv-remediate/state.db``). ``azure`` builds the Table/Queue clients from app settings
and owns the `denials` queue format. Azure SDK table/queue packages are imported only where a Table backend is used.
"""

from __future__ import annotations

from .claims import Claim, ClaimKey, ClaimStore, SqliteClaimStore, TableClaimStore, key_hash
from .findings import FindingStore, SqliteFindingStore, TableFindingStore
from .grants import GrantRecord, GrantStore, SqliteGrantStore, TableGrantStore, new_grant_id
from .sqlite import default_state_path

__all__ = [
    "Claim", "ClaimKey", "ClaimStore", "FindingStore", "GrantRecord", "GrantStore", "SqliteClaimStore",
    "SqliteFindingStore", "SqliteGrantStore", "TableClaimStore", "TableFindingStore", "TableGrantStore",
    "default_state_path", "key_hash", "new_grant_id",
]
