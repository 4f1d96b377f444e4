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

import asyncio
import hashlib
import json
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..errors import StorageError
from .azure import storage_errors, target_of
from .encoding import from_table_time, iso, parse_iso, utc
from .sqlite import default_state_path, session

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient as AsyncTableClient

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

    async def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        """Win ``key`` for ``window`` from ``now``, or count one occurrence on the current winner's record."""
        ...

    async def close(self) -> None:
        """Release the store's connections (on the event loop that used it)."""
        ...

    async def release(self, key: ClaimKey, claimant: str) -> bool:
        """Give back a claim ``claimant`` won (e.g. a rate slot whose write turned out not to grant anything);
        True if this call removed it, False if someone else holds it (or nobody does)."""
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


@dataclass
class _Batch:
    """Claims on one key and window made concurrently on this event loop, settled by one leader in one write."""

    members: list[tuple[str, datetime]] = field(default_factory=list)
    results: list[Claim] = field(default_factory=list)
    error: BaseException | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _outcomes(claimants: list[str], winner: str, base: int, *, won_now: bool, digest: str,
              expires: datetime) -> tuple[list[Claim], int]:
    """Results for a batch given the record's winner and count before it; returns them and the occurrences added.

    Members equal to the winner win (a fresh winner counts 1, a re-claim counts nothing); every other member
    counts one occurrence, in arrival order, so each loser sees the count its own increment produced.
    """
    results: list[Claim] = []
    count = base
    for c in claimants:
        if c == winner:
            results.append(Claim(True, 1 if won_now else base, winner, digest, expires))
        else:
            count += 1
            results.append(Claim(False, count, winner, digest, expires))
    return results, count - base


class TableClaimStore:
    """Claims in an Azure Table (``claims``): PartitionKey = first 2 hex digits of the key hash, RowKey = hash.

    Async (``azure.data.tables.aio``): the worker claims on its event loop without a thread hop per call. Across
    instances, correctness rests on the Table's conditional writes alone (insert; etag-conditional replace and
    merge, retried on 412). Within one event loop, concurrent claims on the same key and window are coalesced
    (``coalesce=True``): one leader settles them all with one write (a loser batch adds its count in one merge),
    which keeps a hot key from turning into a 412 retry storm among this process's own invocations. Use one
    store per event loop.
    """

    _STRIPES = 256
    _KNOWN_MAX = 4096

    def __init__(self, table: AsyncTableClient, *, max_attempts: int = 500, backoff_s: float = 0.001,
                 backoff_cap_s: float = 0.02, coalesce: bool = True) -> None:
        self._table = table
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_cap_s = backoff_cap_s
        self._coalesce = coalesce
        self._waiting: dict[tuple[str, timedelta], _Batch] = {}
        self._stripes = [asyncio.Lock() for _ in range(self._STRIPES)]
        self._known: OrderedDict[str, None] = OrderedDict()  # keys whose record exists: skip the doomed insert

    def _remember(self, digest: str) -> None:
        self._known[digest] = None
        self._known.move_to_end(digest)
        while len(self._known) > self._KNOWN_MAX:
            self._known.popitem(last=False)

    async def close(self) -> None:
        await self._table.close()

    def _target(self, row: str) -> str:
        return target_of(self._table, f"table '{self._table.table_name}'") + f" row {row}"

    async def release(self, key: ClaimKey, claimant: str) -> bool:
        digest = key_hash(key)
        with storage_errors("releasing a claim", self._target(digest)):
            try:
                entity = await self._table.get_entity(digest[:2], digest)
            except ResourceNotFoundError:
                return False
            if str(entity.get("winner")) != claimant:
                return False
            try:   # only if nobody took it over since we read it
                await self._table.delete_entity(digest[:2], digest, etag=entity.metadata["etag"],
                                                match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceNotFoundError, ResourceModifiedError):
                return False

    async def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        now = _check(window, now, claimant)
        digest = key_hash(key)
        if not self._coalesce:
            return (await self._settle(key, digest, window, [(claimant, now)]))[0]
        slot = (digest, window)
        batch = self._waiting.get(slot)
        if batch is not None:  # a leader is waiting for this key's turn: join its write
            index = len(batch.members)
            batch.members.append((claimant, now))
            await batch.done.wait()
            if isinstance(batch.error, asyncio.CancelledError):
                raise StorageError(f"claiming a denial tuple on table '{self._table.table_name}': the invocation "
                                   "settling this claim was cancelled; the message will be retried")
            if batch.error is not None:
                raise batch.error
            return batch.results[index]
        batch = self._waiting[slot] = _Batch(members=[(claimant, now)])
        try:
            # Wait for this key's previous batch (if any) to finish; claims arriving meanwhile join ours.
            async with self._stripes[int(digest[:8], 16) % self._STRIPES]:
                del self._waiting[slot]
                batch.results = await self._settle(key, digest, window, batch.members)
        except BaseException as exc:
            if self._waiting.get(slot) is batch:
                del self._waiting[slot]
            batch.error = exc
            raise
        finally:
            batch.done.set()
        return batch.results[0]

    async def _settle(self, key: ClaimKey, digest: str, window: timedelta,
                      members: list[tuple[str, datetime]]) -> list[Claim]:
        """Apply a batch of claims (arrival order) with conditional writes; the batch acts at its latest ``now``."""
        from azure.data.tables import UpdateMode

        claimants = [c for c, _ in members]
        now = max(t for _, t in members)
        pk, rk = digest[:2], digest
        first, expires = claimants[0], now + window
        fresh_results, added = _outcomes(claimants, first, 1, won_now=True, digest=digest, expires=expires)
        fresh = {"PartitionKey": pk, "RowKey": rk, "winner": first, "claimed_at": now, "expires_at": expires,
                 "occurrences": 1 + added, "key": json.dumps(list(key), ensure_ascii=False)}
        with storage_errors("claiming a denial tuple", self._target(rk)):
            # Try the insert first, unless we know the record exists (then read it straight away).
            insert = digest not in self._known
            for attempt in range(self._max_attempts):
                if insert:
                    try:
                        await self._table.create_entity(fresh)
                        self._remember(digest)
                        return fresh_results
                    except ResourceExistsError:
                        pass
                try:
                    entity = await self._table.get_entity(pk, rk)
                except ResourceNotFoundError:
                    insert = True  # deleted meanwhile: try the insert again
                    continue
                self._remember(digest)
                etag = entity.metadata["etag"]
                current_expiry = from_table_time(entity["expires_at"])
                try:
                    if current_expiry <= now:
                        # The window has passed: take over, but only if nobody changed the record since we read it.
                        await self._table.update_entity(fresh, mode=UpdateMode.REPLACE, etag=etag,
                                                        match_condition=MatchConditions.IfNotModified)
                        return fresh_results
                    winner = str(entity["winner"])
                    base = int(entity.get("occurrences", 1))
                    results, added = _outcomes(claimants, winner, base, won_now=False, digest=digest,
                                                 expires=current_expiry)
                    if added:
                        await self._table.update_entity({"PartitionKey": pk, "RowKey": rk,
                                                         "occurrences": base + added},
                                                        mode=UpdateMode.MERGE, etag=etag,
                                                        match_condition=MatchConditions.IfNotModified)
                    return results
                except ResourceNotFoundError:
                    insert = True
                except ResourceModifiedError:
                    # 412: someone else counted or took over first; re-read and decide again after a short,
                    # jittered, capped back-off (spreads contenders on a hot key without idling long).
                    insert = False
                    await asyncio.sleep(random.uniform(0, min(self._backoff_cap_s, self._backoff_s * (2 ** attempt))))
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
    """Claims in a SQLite file, for the CLI and local runs: one ``BEGIN IMMEDIATE`` transaction per claim (in a
    worker thread, so a lock held by another process never blocks the event loop)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the claims table") as conn:
            conn.execute(_SCHEMA)

    async def close(self) -> None:
        """Nothing to release: every claim opens and closes its own connection."""

    async def release(self, key: ClaimKey, claimant: str) -> bool:
        return await asyncio.to_thread(self._release, key_hash(key), claimant)

    def _release(self, digest: str, claimant: str) -> bool:
        with session(self.path, "releasing a claim") as conn:
            cur = conn.execute("DELETE FROM claims WHERE key_hash = ? AND winner = ?", (digest, claimant))
            return cur.rowcount > 0

    async def claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        now = _check(window, now, claimant)
        return await asyncio.to_thread(self._claim, key, window, now, claimant)

    def _claim(self, key: ClaimKey, window: timedelta, now: datetime, claimant: str) -> Claim:
        digest = key_hash(key)
        expires = now + window
        with session(self.path, "claiming a denial tuple") as conn:
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
