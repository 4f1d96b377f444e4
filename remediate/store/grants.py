"""The audit trail of grants (issue 5): every applied, already-granted, refused, failed and revoked change.

One interface, two real backends: :class:`TableGrantStore` (Azure Table ``grants``, the function app, shared by
every instance) and :class:`SqliteGrantStore` (a file, default ``~/.kv-remediate/state.db``, for the CLI).

Revocation stamps the original ``applied`` record (``revoked_at``, ``revoke_detail``) and keeps its outcome, so
``count_applied_since`` still counts it against ``max_grants_per_hour``; callers add a separate ``revoked``
record when they want the revocation itself in the listing.

Crash safety (issue 17): a write is preceded by a ``pending`` record (:meth:`GrantStore.begin`), which also holds
the write's identity (``write_key``: one open grant per identity, so a retry finds and resumes it instead of
writing again), and is settled afterwards (:meth:`GrantStore.settle`: ``pending`` -> ``applied``, ``failed``,
``abandoned``...). The questions the revocation timer asks ("applied grants expiring before T", "pending intents
older than T") are answered from indexes, never from a scan: SQLite indexes, and in the Table store index rows
whose PartitionKey/RowKey are the query (see :class:`TableGrantStore`).
"""

from .grant_records import (
           EMULATOR,
           MANAGED_HSM,
           OUTCOMES,
           UNRESOLVED,
           GrantRecord,
           GrantStore,
           Outcome,
           key_hash,
           new_grant_id,
)
from .grants_sqlite import SqliteGrantStore
from .grants_table import TableGrantStore

__all__ = ["EMULATOR", "MANAGED_HSM", "OUTCOMES", "UNRESOLVED", "GrantRecord", "GrantStore", "Outcome",
           "SqliteGrantStore", "TableGrantStore", "key_hash", "new_grant_id"]
