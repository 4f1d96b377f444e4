"""The audit trail of grants (issue 5): every applied, already-granted, refused, failed and revoked change.

One interface, two real backends: :class:`TableGrantStore` (Azure Table ``grants``, the function app, shared by
every instance) and :class:`SqliteGrantStore` (a file, default ``~/.kv-remediate/state.db``, for the CLI).

Revocation stamps the original ``applied`` record (``revoked_at``, ``revoke_detail``) and keeps its outcome, so
``count_applied_since`` still counts it against ``max_grants_per_hour``; callers add a separate ``revoked``
record when they want the revocation itself in the listing.
"""

from __future__ import annotations

import builtins
import json
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..errors import InputError, StorageError
from ._common import default_state_path, from_table_time, iso, pack_json, parse_iso, session, unpack_json, utc
from .azure import storage_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient

Outcome = Literal["applied", "already_granted", "refused", "failed", "revoked"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

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
"""


class SqliteGrantStore:
    """Grant records in a SQLite file (default ``~/.kv-remediate/state.db``, parents created)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the grants table") as conn:
            conn.executescript(_SCHEMA)

    def add(self, record: GrantRecord) -> None:
        with session(self.path, "recording a grant") as conn:
            try:
                conn.execute(
                    "INSERT INTO grants (id, time, outcome, vault_key, expires_at, revoked_at, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.id, iso(record.time), record.outcome, record.vault_key,
                     iso(record.expires_at) if record.expires_at else None,
                     iso(record.revoked_at) if record.revoked_at else None,
                     json.dumps(record.to_dict(), sort_keys=True, default=str)))
            except conn.IntegrityError as exc:
                raise InputError(f"grant {record.id}", "a record with this id already exists; records are never "
                                 "overwritten", code="GRANT_EXISTS") from exc

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
        with session(self.path, "marking a grant revoked") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
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
                conn.execute("COMMIT")
                return True
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def count_applied_since(self, vault_id: str, since: datetime) -> int:
        with session(self.path, "counting recent grants") as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM grants WHERE vault_key = ? AND outcome = 'applied'"
                               " AND time >= ?", (vault_id.lower(), iso(utc(since, "since")))).fetchone()
        return int(row["n"])


_PARTITION = "grant"
_JSON_FIELDS = ("finding", "plan", "before", "after", "permissions_added")


class TableGrantStore:
    """Grant records in an Azure Table (``grants``), shared by every instance of the function app.

    One partition (grants are few: bounded by ``max_grants_per_hour``), RowKey = record id. Scalar fields are
    properties (so the queries below are server-side filters and the table reads well in Storage Explorer);
    the JSON fields are stored as JSON text.
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

    def add(self, record: GrantRecord) -> None:
        with storage_errors("recording a grant", self._target(record.id)):
            try:
                self._table.create_entity(self._entity(record))
            except ResourceExistsError as exc:
                raise InputError(f"grant {record.id}", "a record with this id already exists; records are never "
                                 "overwritten", code="GRANT_EXISTS") from exc

    def get(self, id: str) -> GrantRecord | None:
        with storage_errors("reading a grant record", self._target(id)):
            try:
                return self._record(dict(self._table.get_entity(_PARTITION, id)))
            except ResourceNotFoundError:
                return None

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

    def expired(self, now: datetime) -> builtins.list[GrantRecord]:
        records = self._query("PartitionKey eq @pk and outcome eq 'applied' and revoked eq false"
                              " and expires_at le @now", {"pk": _PARTITION, "now": utc(now, "now")})
        return sorted(records, key=lambda r: (r.expires_at or datetime.min.replace(tzinfo=UTC), r.id))

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
                    return True
                except ResourceModifiedError:
                    continue  # someone else changed it first: re-read; if they revoked it, we report False
        raise StorageError(f"marking grant {id} revoked on {self._target()} did not settle after 100 conditional "
                           "writes; retry")

    def count_applied_since(self, vault_id: str, since: datetime) -> int:
        with storage_errors("counting recent grants", self._target()):
            entities = self._table.query_entities(
                "PartitionKey eq @pk and vault_key eq @vault and outcome eq 'applied' and time ge @since",
                parameters={"pk": _PARTITION, "vault": vault_id.lower(), "since": utc(since, "since")},
                select=["RowKey"])
            return sum(1 for _ in entities)
