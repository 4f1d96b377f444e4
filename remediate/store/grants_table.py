"""Grant records in an Azure Table (``grants``), shared by every instance of the function app, with index rows
shaped as the revocation timer's questions (see :class:`TableGrantStore`)."""

from __future__ import annotations

import builtins
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..errors import StorageError
from .azure import storage_errors, target_of
from .encoding import from_table_time, iso, pack_json, unpack_json, utc
from .grant_records import TIME_FIELDS, UNRESOLVED, GrantRecord, check_outcome, exists_error, key_hash, not_found

if TYPE_CHECKING:
    from azure.data.tables import TableClient

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
        return target_of(self._table, f"table '{self._table.table_name}'") + (f" row {id}" if id else "")

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
            elif f.name in TIME_FIELDS:
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
                raise exists_error(record.id) from exc

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
                    raise exists_error(record.id) from exc
        return record

    def settle(self, id: str, expect: str, record: GrantRecord) -> bool:
        from azure.data.tables import UpdateMode

        if record.id != id:
            raise ValueError("settle() keeps the record id")
        with storage_errors("settling a grant record", self._target(id)):
            try:
                entity = self._table.get_entity(_PARTITION, id)
            except ResourceNotFoundError:
                raise not_found(id) from None
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
        check_outcome(outcome)
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
                    raise not_found(id) from None
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

    def count_applied_since(self, vault_id: str, since: datetime, backend: str | None = None) -> int:
        with storage_errors("counting recent grants", self._target()):
            entities = self._table.query_entities(
                "PartitionKey eq @pk and vault_key eq @vault and outcome eq 'applied' and time ge @since",
                parameters={"pk": _PARTITION, "vault": vault_id.lower(), "since": utc(since, "since")},
                select=["RowKey", "backend"])
            # a record of Azure's has no backend property (None is not stored), which a Table filter cannot ask for
            return sum(1 for e in entities if (e.get("backend") or None) == (backend or None))
