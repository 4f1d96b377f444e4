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

from __future__ import annotations

import builtins
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..errors import InputError, StorageError
from .azure import storage_errors
from .encoding import from_table_time, iso, pack_json, parse_iso, unpack_json, utc
from .sqlite import default_state_path, session, transaction

if TYPE_CHECKING:
    from azure.data.tables import TableClient

Outcome = Literal["applied", "already_granted", "refused", "failed", "revoked", "pending", "abandoned",
                  "pending_approval"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
UNRESOLVED: tuple[str, ...] = ("pending", "pending_approval")
"""Outcomes whose write may still take effect in Azure: the reconciler reads Azure to settle them."""

_TIMES = ("time", "expires_at", "revoked_at")


def new_grant_id() -> str:
    """A new record id (UUID4): short enough for ``kv-remediate revoke --grant ID``, safe as a Table RowKey."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class GrantRecord:
    """One audited change (or refusal) for one finding; ``before``/``after`` are what ARM showed around the write."""

    outcome: Outcome
    time: datetime
    id: str = field(default_factory=new_grant_id)
    alert_id: str | None = None
    correlation_id: str | None = None
    finding: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    refused_by: str | None = None
    before: Any = None
    after: Any = None
    actor: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_detail: str | None = None
    vault_id: str | None = None
    principal_id: str | None = None
    scope: str | None = None
    role_definition_id: str | None = None
    assignment_id: str | None = None
    permissions_added: dict[str, list[str]] | None = None
    detail: str | None = None
    write_key: str | None = None       # the write's identity (see apply.write_key): one open grant per key
    requests: list[str] | None = None  # PIM schedule request ids sent for this grant (single-use in Azure)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"grant outcome must be one of {', '.join(OUTCOMES)} (got {self.outcome!r})")
        for name in _TIMES:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value, name))

    @property
    def vault_key(self) -> str | None:
        """Case-insensitive vault identity (ARM ids are case-insensitive)."""
        return self.vault_id.lower() if self.vault_id else None

    @property
    def is_open(self) -> bool:
        """Holds its write identity: unresolved, or applied and not revoked."""
        return self.outcome in UNRESOLVED or (self.outcome == "applied" and self.revoked_at is None)

    @property
    def is_due_indexed(self) -> bool:
        """Belongs in the expiry index: may be (or become) an applied grant with a time limit, not yet revoked."""
        return self.expires_at is not None and self.revoked_at is None and self.outcome in ("applied", *UNRESOLVED)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 UTC text."""
        out = asdict(self)
        for name in _TIMES:
            out[name] = iso(out[name]) if out[name] is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrantRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in _TIMES:
            if isinstance(values.get(name), str):
                values[name] = parse_iso(values[name])
        return cls(**values)


class GrantStore(Protocol):
    """Where grant records live; every backend answers the same questions the same way."""

    def add(self, record: GrantRecord) -> None:
        """Store a new record; an existing id is an error (records are never overwritten)."""
        ...

    def get(self, id: str) -> GrantRecord | None:
        ...

    def list(self, *, vault: str | None = None, outcome: str | None = None,
             limit: int | None = None) -> builtins.list[GrantRecord]:
        """Records newest first, optionally only one vault (case-insensitive) and/or one outcome."""
        ...

    def expired(self, now: datetime) -> builtins.list[GrantRecord]:
        """Applied, not yet revoked grants whose ``expires_at`` is at or before ``now`` (oldest expiry first)."""
        ...

    def mark_revoked(self, id: str, when: datetime, detail: str | None = None) -> bool:
        """Stamp a grant revoked; True if this call did it, False if it already was (first revocation wins)."""
        ...

    def count_applied_since(self, vault_id: str, since: datetime) -> int:
        """Applied grants on ``vault_id`` at or after ``since`` (revoked ones count: they were made)."""
        ...

    def begin(self, record: GrantRecord) -> GrantRecord:
        """Record a ``pending`` intent holding ``record.write_key``; if an open record already holds that key,
        record nothing and return that one (the caller resumes it instead of writing again)."""
        ...

    def open_for(self, write_key: str) -> GrantRecord | None:
        """The open record holding ``write_key``, if any."""
        ...

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        """Replace record ``id`` by ``record`` (same id) if its outcome is still ``expect``; False if it was not
        (someone else settled it first). Leaving an open outcome releases the write key."""
        ...

    def unresolved_before(self, before: datetime) -> builtins.list[GrantRecord]:
        """``pending``/``pending_approval`` records made at or before ``before`` (oldest first)."""
        ...

    def vaults(self) -> builtins.list[str]:
        """Every vault id a grant was begun on (lower-case), for the reconciler's sweep of labelled assignments."""
        ...


def _not_found(id: str) -> InputError:
    return InputError(f"grant {id}", "no such grant is recorded; list them with `kv-remediate grants`",
                      code="GRANT_NOT_FOUND")


def _check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise InputError("outcome filter", f"must be one of {', '.join(OUTCOMES)} (got {outcome!r})")


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


def _exists(id: str) -> InputError:
    return InputError(f"grant {id}", "a record with this id already exists; records are never overwritten",
                      code="GRANT_EXISTS")


def key_hash(write_key: str) -> str:
    """A write key as a Table-safe RowKey (hex SHA-256)."""
    return hashlib.sha256(write_key.encode()).hexdigest()


class SqliteGrantStore:
    """Grant records in a SQLite file (default ``~/.kv-remediate/state.db``, parents created)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the grants table") as conn:
            conn.executescript(_SCHEMA)

    def _integrity(self, exc: Exception, id: str, action: str) -> Exception:
        """A duplicate id is GRANT_EXISTS; any other constraint failure is a storage fault, said as such."""
        if "UNIQUE constraint failed: grants.id" in str(exc):
            return _exists(id)
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
                raise _not_found(id)
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
        _check_outcome(outcome)
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
                raise _not_found(id)
            if row["revoked_at"] is not None:
                conn.execute("ROLLBACK")
                return False
            record = replace(GrantRecord.from_dict(json.loads(row["record"])), revoked_at=when,
                             revoke_detail=detail)
            conn.execute("UPDATE grants SET revoked_at = ?, record = ? WHERE id = ?",
                         (iso(when), json.dumps(record.to_dict(), sort_keys=True, default=str), id))
            conn.execute("DELETE FROM grant_keys WHERE grant_id = ?", (id,))
            return True

    def count_applied_since(self, vault_id: str, since: datetime) -> int:
        with session(self.path, "counting recent grants") as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM grants WHERE vault_key = ? AND outcome = 'applied'"
                               " AND time >= ?", (vault_id.lower(), iso(utc(since, "since")))).fetchone()
        return int(row["n"])


_PARTITION = "grant"
_OPEN = "open"          # RowKey = key_hash(write_key): the grant id holding that write identity
_DUE = "due"            # RowKey = "<expires_at ISO>|<id>": time-bound grants not yet revoked, ordered by expiry
_UNRESOLVED = "pending"  # RowKey = "<time ISO>|<id>": pending / pending_approval intents, ordered by time
_VAULTS = "vault"       # RowKey = key_hash(vault_key): every vault a grant was begun on
_JSON_FIELDS = ("finding", "plan", "before", "after", "permissions_added", "requests")
_LAST = "|~"            # sorts after every "|<uuid>" suffix: "RowKey le '<T>|~'" = everything at or before T


class TableGrantStore:
    """Grant records in an Azure Table (``grants``), shared by every instance of the function app.

    Records: PartitionKey ``grant``, RowKey = record id. Scalar fields are properties (the table reads well in
    Storage Explorer); the JSON fields are stored as JSON text. A Table indexes only PartitionKey and RowKey, so
    the timer's questions have index rows shaped as their answer: partition ``due`` (RowKey = expiry|id) answers
    "grants expiring at or before T" with a RowKey range, ``pending`` (RowKey = time|id) "intents older than T",
    ``open`` (RowKey = hash of the write identity) "which grant holds this write", ``vault`` the vaults we wrote
    to. Index rows are written before the record changes that need them and removed after, so a crash between
    the two leaves an extra index row (dropped when next read), never a missing one.
    """

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def _target(self, id: str | None = None) -> str:
        return f"table '{self._table.table_name}'" + (f" row {id}" if id else "")

    @staticmethod
    def _entity(record: GrantRecord) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": _PARTITION, "RowKey": record.id, "revoked": record.revoked_at
                                  is not None, "vault_key": record.vault_key}
        for f in fields(record):
            value = getattr(record, f.name)
            if f.name in _JSON_FIELDS:
                entity.update(pack_json(f.name, value))
            elif value is not None:
                entity[f.name] = value
        return {k: v for k, v in entity.items() if v is not None}

    @staticmethod
    def _record(entity: dict[str, Any]) -> GrantRecord:
        values: dict[str, Any] = {}
        for f in fields(GrantRecord):
            if f.name in _JSON_FIELDS:
                values[f.name] = unpack_json(f.name, entity)
            elif f.name in _TIMES:
                values[f.name] = from_table_time(entity[f.name]) if entity.get(f.name) is not None else None
            elif f.name == "id":
                values["id"] = entity["RowKey"]
            else:
                values[f.name] = entity.get(f.name)
        return GrantRecord(**values)

    def _query(self, query: str, parameters: dict[str, Any]) -> builtins.list[GrantRecord]:
        with storage_errors("querying grant records", self._target()):
            entities = self._table.query_entities(query, parameters=parameters)
            return [self._record(dict(e)) for e in entities]

    # -- index rows -------------------------------------------------------------------------------------------

    def _upsert(self, pk: str, rk: str, **props: Any) -> None:
        from azure.data.tables import UpdateMode

        self._table.upsert_entity({"PartitionKey": pk, "RowKey": rk, **props}, mode=UpdateMode.REPLACE)

    def _drop(self, pk: str, rk: str) -> None:
        try:
            self._table.delete_entity(pk, rk)
        except ResourceNotFoundError:
            pass

    @staticmethod
    def _due_key(record: GrantRecord) -> str:
        assert record.expires_at is not None
        return f"{iso(record.expires_at)}|{record.id}"

    @staticmethod
    def _unresolved_key(record: GrantRecord) -> str:
        return f"{iso(record.time)}|{record.id}"

    def _index_before(self, record: GrantRecord) -> None:
        """Index rows a record needs, written before the record itself."""
        if record.is_due_indexed:
            self._upsert(_DUE, self._due_key(record), grant_id=record.id)
        if record.outcome in UNRESOLVED:
            self._upsert(_UNRESOLVED, self._unresolved_key(record), grant_id=record.id)
        if record.vault_key and record.write_key:
            self._upsert(_VAULTS, key_hash(record.vault_key), vault_key=record.vault_key)

    def _index_after(self, old: GrantRecord | None, record: GrantRecord) -> None:
        """Index rows the record no longer needs, removed after it changed."""
        if old is not None and old.is_due_indexed and not (record.is_due_indexed and
                                                           record.expires_at == old.expires_at):
            self._drop(_DUE, self._due_key(old))
        if old is not None and old.outcome in UNRESOLVED and record.outcome not in UNRESOLVED:
            self._drop(_UNRESOLVED, self._unresolved_key(old))
        if record.write_key and not record.is_open:
            self._release(record.write_key, record.id)

    def _release(self, write_key: str, id: str) -> None:
        try:
            row = self._table.get_entity(_OPEN, key_hash(write_key))
        except ResourceNotFoundError:
            return
        if row.get("grant_id") == id:
            try:
                self._table.delete_entity(_OPEN, key_hash(write_key), etag=row.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                pass  # someone else released or took it over meanwhile

    # -- the protocol -----------------------------------------------------------------------------------------

    def add(self, record: GrantRecord) -> None:
        with storage_errors("recording a grant", self._target(record.id)):
            self._index_before(record)
            try:
                self._table.create_entity(self._entity(record))
            except ResourceExistsError as exc:
                if getattr(exc, "error_code", None) not in (None, "EntityAlreadyExists"):
                    raise  # another 409 (e.g. the table being deleted): a storage fault, said as such
                raise _exists(record.id) from exc

    def get(self, id: str) -> GrantRecord | None:
        with storage_errors("reading a grant record", self._target(id)):
            try:
                return self._record(dict(self._table.get_entity(_PARTITION, id)))
            except ResourceNotFoundError:
                return None

    def _holder(self, write_key: str) -> tuple[GrantRecord | None, Any]:
        """The open record holding ``write_key`` (or None) and the key row's etag (None when there is no row)."""
        try:
            row = self._table.get_entity(_OPEN, key_hash(write_key))
        except ResourceNotFoundError:
            return None, None
        held = self.get(str(row.get("grant_id")))
        return (held if held is not None and held.is_open else None), row.metadata["etag"]

    def open_for(self, write_key: str) -> GrantRecord | None:
        with storage_errors("reading an open grant", self._target()):
            return self._holder(write_key)[0]

    def begin(self, record: GrantRecord) -> GrantRecord:
        if record.outcome != "pending" or not record.write_key:
            raise ValueError("begin() takes a pending record with a write_key")
        rk = key_hash(record.write_key)
        row = {"PartitionKey": _OPEN, "RowKey": rk, "grant_id": record.id, "write_key": record.write_key}
        with storage_errors("recording a grant intent", self._target(record.id)):
            for _ in range(100):
                try:
                    self._table.create_entity(row)
                    break
                except ResourceExistsError:
                    pass
                held, etag = self._holder(record.write_key)
                if held is not None:
                    return held
                if etag is None:
                    continue  # released meanwhile: insert again
                try:  # the row names a closed (or never written) record: take the key over
                    from azure.data.tables import UpdateMode

                    self._table.update_entity(row, mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
                    break
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
            else:
                raise StorageError(f"claiming the write identity of grant {record.id} on {self._target()} did not "
                                   "settle after 100 conditional writes; retry")
            self._index_before(record)
            try:
                self._table.create_entity(self._entity(record))
            except ResourceExistsError as exc:  # our own insert, retried by the SDK after a lost response?
                if self.get(record.id) != record:
                    raise _exists(record.id) from exc
        return record

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        from azure.data.tables import UpdateMode

        if record.id != id:
            raise ValueError("settle() keeps the record id")
        with storage_errors("settling a grant record", self._target(id)):
            try:
                entity = self._table.get_entity(_PARTITION, id)
            except ResourceNotFoundError:
                raise _not_found(id) from None
            old = self._record(dict(entity))
            if old.outcome != expect:
                return False
            self._index_before(record)
            try:
                self._table.update_entity(self._entity(record), mode=UpdateMode.REPLACE,
                                          etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                return False
            self._index_after(old, record)
            return True

    def list(self, *, vault: str | None = None, outcome: str | None = None,
             limit: int | None = None) -> builtins.list[GrantRecord]:
        _check_outcome(outcome)
        query, params = "PartitionKey eq @pk", {"pk": _PARTITION}
        if vault is not None:
            query, params = query + " and vault_key eq @vault", {**params, "vault": vault.lower()}
        if outcome is not None:
            query, params = query + " and outcome eq @outcome", {**params, "outcome": outcome}
        records = sorted(self._query(query, params), key=lambda r: r.id)
        records.sort(key=lambda r: r.time, reverse=True)
        return records if limit is None else records[:max(limit, 0)]

    def _indexed(self, pk: str, upto: datetime, keep: Any) -> builtins.list[GrantRecord]:
        """Records named by index rows of ``pk`` whose RowKey time is at or before ``upto``; stale rows dropped."""
        out = []
        with storage_errors("querying the grant index", self._target()):
            rows = builtins.list(self._table.query_entities(
                "PartitionKey eq @pk and RowKey le @upto", parameters={"pk": pk, "upto": iso(upto) + _LAST}))
            for row in rows:
                record = self.get(str(row.get("grant_id")))
                if record is not None and keep(record):
                    out.append(record)
                elif record is None or not (record.is_due_indexed if pk == _DUE else record.outcome in UNRESOLVED):
                    self._drop(pk, str(row["RowKey"]))
        return out

    def expired(self, now: datetime) -> builtins.list[GrantRecord]:
        now = utc(now, "now")
        records = self._indexed(_DUE, now, lambda r: r.outcome == "applied" and r.revoked_at is None
                                and r.expires_at is not None and r.expires_at <= now)
        return sorted(records, key=lambda r: (r.expires_at or datetime.min.replace(tzinfo=UTC), r.id))

    def unresolved_before(self, before: datetime) -> builtins.list[GrantRecord]:
        before = utc(before, "before")
        records = self._indexed(_UNRESOLVED, before, lambda r: r.outcome in UNRESOLVED and r.time <= before)
        return sorted(records, key=lambda r: (r.time, r.id))

    def vaults(self) -> builtins.list[str]:
        with storage_errors("listing vaults with grants", self._target()):
            rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _VAULTS},
                                              select=["vault_key"])
            return sorted(str(r["vault_key"]) for r in rows)

    def mark_revoked(self, id: str, when: datetime, detail: str | None = None) -> bool:
        from azure.data.tables import UpdateMode

        when = utc(when, "when")
        with storage_errors("marking a grant revoked", self._target(id)):
            for _ in range(100):
                try:
                    entity = self._table.get_entity(_PARTITION, id)
                except ResourceNotFoundError:
                    raise _not_found(id) from None
                if entity.get("revoked"):
                    return False
                patch = {"PartitionKey": _PARTITION, "RowKey": id, "revoked": True, "revoked_at": when}
                if detail is not None:
                    patch["revoke_detail"] = detail
                try:
                    self._table.update_entity(patch, mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                              match_condition=MatchConditions.IfNotModified)
                except ResourceModifiedError:
                    continue  # someone else changed it first: re-read; if they revoked it, we report False
                old = self._record(dict(entity))
                self._index_after(old, replace(old, revoked_at=when, revoke_detail=detail))
                return True
        raise StorageError(f"marking grant {id} revoked on {self._target()} did not settle after 100 conditional "
                           "writes; retry")

    def count_applied_since(self, vault_id: str, since: datetime) -> int:
        with storage_errors("counting recent grants", self._target()):
            entities = self._table.query_entities(
                "PartitionKey eq @pk and vault_key eq @vault and outcome eq 'applied' and time ge @since",
                parameters={"pk": _PARTITION, "vault": vault_id.lower(), "since": utc(since, "since")},
                select=["RowKey"])
            return sum(1 for _ in entities)
