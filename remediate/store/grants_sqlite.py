"""Grant records in a SQLite file (the CLI's store, default ``~/.kv-remediate/state.db``): indexed by vault,
expiry, time and outcome; the write key of each open grant in its own table."""

from __future__ import annotations

import builtins
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import StorageError
from .encoding import iso, utc
from .grant_records import GrantRecord, check_outcome, exists_error, not_found
from .sqlite import default_state_path, session, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    id          TEXT PRIMARY KEY,
    time        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    vault_key   TEXT,
    expires_at  TEXT,
    revoked_at  TEXT,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_vault_time ON grants (vault_key, outcome, time);
CREATE INDEX IF NOT EXISTS grants_expiry ON grants (outcome, revoked_at, expires_at);
CREATE INDEX IF NOT EXISTS grants_time ON grants (time);
CREATE INDEX IF NOT EXISTS grants_outcome_time ON grants (outcome, time);
CREATE TABLE IF NOT EXISTS grant_keys (
    write_key   TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL
);
"""

_INSERT = ("INSERT INTO grants (id, time, outcome, vault_key, expires_at, revoked_at, record)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")


def _row(record: GrantRecord) -> tuple[Any, ...]:
    return (record.id, iso(record.time), record.outcome, record.vault_key,
            iso(record.expires_at) if record.expires_at else None,
            iso(record.revoked_at) if record.revoked_at else None,
            json.dumps(record.to_dict(), sort_keys=True, default=str))


class SqliteGrantStore:
    """Grant records in a SQLite file (default ``~/.kv-remediate/state.db``, parents created)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the grants table") as conn:
            conn.executescript(_SCHEMA)

    def _integrity(self, exc: Exception, id: str, action: str) -> Exception:
        """A duplicate id is GRANT_EXISTS; any other constraint failure is a storage fault, said as such."""
        if "UNIQUE constraint failed: grants.id" in str(exc):
            return exists_error(id)
        return StorageError(f"{action} in the state file {self.path} failed ({exc}); the file may be damaged or from "
                            "another version: check it with `sqlite3 FILE 'PRAGMA integrity_check'`, or pass another "
                            "file with --state")

    def add(self, record: GrantRecord) -> None:
        with session(self.path, "recording a grant") as conn:
            try:
                conn.execute(_INSERT, _row(record))
            except conn.IntegrityError as exc:
                raise self._integrity(exc, record.id, "recording a grant") from exc

    def begin(self, record: GrantRecord) -> GrantRecord:
        if record.outcome != "pending" or not record.write_key:
            raise ValueError("begin() takes a pending record with a write_key")
        with session(self.path, "recording a grant intent") as conn:
            try:
                with transaction(conn):
                    held = self._holder(conn, record.write_key)
                    if held is not None:
                        conn.execute("ROLLBACK")
                        return held
                    conn.execute("INSERT OR REPLACE INTO grant_keys (write_key, grant_id) VALUES (?, ?)",
                                 (record.write_key, record.id))
                    conn.execute(_INSERT, _row(record))
                    return record
            except conn.IntegrityError as exc:
                raise self._integrity(exc, record.id, "recording a grant intent") from exc

    @staticmethod
    def _holder(conn: Any, write_key: str) -> GrantRecord | None:
        row = conn.execute("SELECT g.record FROM grant_keys k JOIN grants g ON g.id = k.grant_id"
                           " WHERE k.write_key = ?", (write_key,)).fetchone()
        if row is None:
            return None
        held = GrantRecord.from_dict(json.loads(row["record"]))
        return held if held.is_open else None

    def open_for(self, write_key: str) -> GrantRecord | None:
        with session(self.path, "reading an open grant") as conn:
            return self._holder(conn, write_key)

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        if record.id != id:
            raise ValueError("settle() keeps the record id")
        with session(self.path, "settling a grant record") as conn, transaction(conn):
            row = conn.execute("SELECT outcome FROM grants WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise not_found(id)
            if row["outcome"] != expect:
                conn.execute("ROLLBACK")
                return False
            _, time, outcome, vault_key, expires, revoked, text = _row(record)
            conn.execute("UPDATE grants SET time = ?, outcome = ?, vault_key = ?, expires_at = ?, revoked_at = ?,"
                         " record = ? WHERE id = ?", (time, outcome, vault_key, expires, revoked, text, id))
            if not record.is_open:
                conn.execute("DELETE FROM grant_keys WHERE grant_id = ?", (id,))
            return True

    def unresolved_before(self, before: datetime) -> builtins.list[GrantRecord]:
        with session(self.path, "listing unresolved grant intents") as conn:
            rows = conn.execute("SELECT record FROM grants WHERE outcome IN ('pending', 'pending_approval')"
                                " AND time <= ? ORDER BY time, id", (iso(utc(before, "before")),)).fetchall()
        return [GrantRecord.from_dict(json.loads(r["record"])) for r in rows]

    def vaults(self) -> builtins.list[str]:
        with session(self.path, "listing vaults with grants") as conn:
            rows = conn.execute("SELECT DISTINCT vault_key FROM grants WHERE vault_key IS NOT NULL"
                                " ORDER BY vault_key").fetchall()
        return [str(r["vault_key"]) for r in rows]

    def get(self, id: str) -> GrantRecord | None:
        with session(self.path, "reading a grant record") as conn:
            row = conn.execute("SELECT record FROM grants WHERE id = ?", (id,)).fetchone()
        return GrantRecord.from_dict(json.loads(row["record"])) if row else None

    def list(self, *, vault: str | None = None, outcome: str | None = None,
             limit: int | None = None) -> builtins.list[GrantRecord]:
        check_outcome(outcome)
        sql, args = "SELECT record FROM grants WHERE 1 = 1", builtins.list[Any]()
        if vault is not None:
            sql, args = sql + " AND vault_key = ?", [*args, vault.lower()]
        if outcome is not None:
            sql, args = sql + " AND outcome = ?", [*args, outcome]
        sql += " ORDER BY time DESC, id"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, max(limit, 0)]
        with session(self.path, "listing grant records") as conn:
            rows = conn.execute(sql, args).fetchall()
        return [GrantRecord.from_dict(json.loads(r["record"])) for r in rows]

    def expired(self, now: datetime) -> builtins.list[GrantRecord]:
        with session(self.path, "listing expired grants") as conn:
            rows = conn.execute(
                "SELECT record FROM grants WHERE outcome = 'applied' AND revoked_at IS NULL"
                " AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, id",
                (iso(utc(now, "now")),)).fetchall()
        return [GrantRecord.from_dict(json.loads(r["record"])) for r in rows]

    def mark_revoked(self, id: str, when: datetime, detail: str | None = None) -> bool:
        with session(self.path, "marking a grant revoked") as conn, transaction(conn):
            row = conn.execute("SELECT record, revoked_at FROM grants WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise not_found(id)
            if row["revoked_at"] is not None:
                conn.execute("ROLLBACK")
                return False
            record = replace(GrantRecord.from_dict(json.loads(row["record"])), revoked_at=when,
                             revoke_detail=detail)
            conn.execute("UPDATE grants SET revoked_at = ?, record = ? WHERE id = ?",
                         (iso(when), json.dumps(record.to_dict(), sort_keys=True, default=str), id))
            conn.execute("DELETE FROM grant_keys WHERE grant_id = ?", (id,))
            return True

    def count_applied_since(self, vault_id: str, since: datetime, backend: str | None = None) -> int:
        with session(self.path, "counting recent grants") as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM grants WHERE vault_key = ? AND outcome = 'applied'"
                               " AND time >= ? AND COALESCE(json_extract(record, '$.backend'), '') = ?",
                               (vault_id.lower(), iso(utc(since, "since")), backend or "")).fetchone()
        return int(row["n"])
