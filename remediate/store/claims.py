"""Distributed dedupe for alert storms: exactly one claimant wins a denial tuple within a window.

The Functions app scales out, so dedupe cannot live in memory. A claim on a key (principal, vault, object,
operation, ...) is a record in the Table ``claims`` created with a conditional insert: the creator wins, everyone
else within the window counts one occurrence on the winner's record and stops. When the window has passed, the
next claimant takes the record over (etag-conditional replace, so exactly one wins the takeover).

Re-claiming by the winner itself within the window (a redelivered queue message whose claimant id is the same)
wins again without counting an occurrence, so at-least-once delivery does not lose a diagnosis.

Semantics are the same for :class:`TableClaimStore` (Azure Tables, the app) and :class:`SqliteClaimStore` (CLI).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..errors import StorageError
from ._common import connect, default_state_path, from_table_time, iso, parse_iso, utc
from .azure import storage_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient

ClaimKey = tuple[str | None, ...]


@dataclass(frozen=True)
class Claim:
    """The outcome of one claim: did we win, how many claimants the window has seen (winner included), who won."""

    won: bool
    occurrences: int
    winner: str
    key_hash: str
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"won": self.won, "occurrences": self.occurrences, "winner": self.winner,
                "key_hash": self.key_hash, "expires_at": iso(self.expires_at)}


class ClaimStore(Protocol):
    """Claims one key per window across every instance that shares the store."""

    def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        """Win ``key`` for ``window`` from ``now``, or count one occurrence on the current winner's record."""
        ...


def key_hash(key: ClaimKey) -> str:
    """A stable hex SHA-256 of the tuple (JSON, so None and "" differ); safe as a Table key (no / \\ # ?)."""
    canonical = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check(window: timedelta, now: datetime, claimant: str) -> datetime:
    if window <= timedelta(0):
        raise ValueError(f"claim window must be positive (got {window})")
    if not claimant:
        raise ValueError("claimant must be a non-empty id (e.g. the queue message id)")
    return utc(now, "now")


class TableClaimStore:
    """Claims in an Azure Table (``claims``): PartitionKey = first 2 hex digits of the key hash, RowKey = hash."""

    def __init__(self, table: TableClient, *, max_attempts: int = 500, backoff_s: float = 0.002) -> None:
        self._table = table
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s

    def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        now = _check(window, now, claimant)
        digest = key_hash(key)
        pk, rk = digest[:2], digest
        expires = now + window
        fresh = {"PartitionKey": pk, "RowKey": rk, "winner": claimant, "claimed_at": now, "expires_at": expires,
                 "occurrences": 1, "key": json.dumps(list(key), ensure_ascii=False)}
        won = Claim(won=True, occurrences=1, winner=claimant, key_hash=digest, expires_at=expires)
        from azure.data.tables import UpdateMode

        with storage_errors("claiming a denial tuple", f"table '{self._table.table_name}' row {rk}"):
            for attempt in range(self._max_attempts):
                try:
                    self._table.create_entity(fresh)
                    return won
                except ResourceExistsError:
                    pass
                try:
                    entity = self._table.get_entity(pk, rk)
                except ResourceNotFoundError:
                    continue  # deleted meanwhile: try the insert again
                etag = entity.metadata["etag"]
                current_expiry = from_table_time(entity["expires_at"])
                try:
                    if current_expiry <= now:
                        # The window has passed: take over, but only if nobody changed the record since we read it.
                        self._table.update_entity(fresh, mode=UpdateMode.REPLACE, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified)
                        return won
                    winner = str(entity["winner"])
                    occurrences = int(entity.get("occurrences", 1))
                    if winner == claimant:
                        return Claim(True, occurrences, winner, digest, current_expiry)
                    self._table.update_entity({"PartitionKey": pk, "RowKey": rk, "occurrences": occurrences + 1},
                                              mode=UpdateMode.MERGE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
                    return Claim(False, occurrences + 1, winner, digest, current_expiry)
                except (ResourceModifiedError, ResourceNotFoundError):
                    # 412: someone else counted or took over first; re-read and decide again (jittered back-off).
                    time.sleep(random.uniform(0, self._backoff_s * (2 ** min(attempt, 6))))
        raise StorageError(f"claiming a denial tuple on table '{self._table.table_name}' row {rk} did not settle "
                           f"after {self._max_attempts} conditional writes (extreme contention); the message "
                           "will be retried by the queue")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    key_hash    TEXT PRIMARY KEY,
    key         TEXT NOT NULL,
    winner      TEXT NOT NULL,
    claimed_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    occurrences INTEGER NOT NULL
)
"""


class SqliteClaimStore:
    """Claims in a SQLite file, for the CLI and local runs: one ``BEGIN IMMEDIATE`` transaction per claim."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with closing(connect(self.path)) as conn:
            conn.execute(_SCHEMA)

    def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        now = _check(window, now, claimant)
        digest = key_hash(key)
        expires = now + window
        with closing(connect(self.path)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT winner, expires_at, occurrences FROM claims WHERE key_hash = ?",
                                   (digest,)).fetchone()
                if row is None or parse_iso(row["expires_at"]) <= now:
                    conn.execute(
                        "INSERT OR REPLACE INTO claims (key_hash, key, winner, claimed_at, expires_at, occurrences)"
                        " VALUES (?, ?, ?, ?, ?, 1)",
                        (digest, json.dumps(list(key), ensure_ascii=False), claimant, iso(now), iso(expires)))
                    result = Claim(True, 1, claimant, digest, expires)
                elif row["winner"] == claimant:
                    result = Claim(True, int(row["occurrences"]), claimant, digest, parse_iso(row["expires_at"]))
                else:
                    conn.execute("UPDATE claims SET occurrences = occurrences + 1 WHERE key_hash = ?", (digest,))
                    result = Claim(False, int(row["occurrences"]) + 1, str(row["winner"]), digest,
                                   parse_iso(row["expires_at"]))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return result
