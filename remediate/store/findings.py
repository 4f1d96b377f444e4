"""What the queue worker found: one record per finding, in the Table ``findings`` (app) or SQLite (local runs).

A record is ``{"id", "time", "alert_id", "invocation_id", "cause", "vault", "principal", "finding"}``, where
``finding`` is the diagnosis JSON of one finding (spec/cli.md) and ``cause``/``vault``/``principal`` are copied
out of it so the table reads (and filters) well in Storage Explorer. ``list`` returns the newest first.

The findings page lists up to 1,000 records at a time, so the Table record also holds the page's list columns
(:data:`LIST_COLUMNS`: outcome, explanation, display names, operation) and :meth:`TableFindingStore.rows` reads
only those (a fifth of the time of whole records); :meth:`TableFindingStore.get` reads one whole record.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .azure import storage_errors, target_of
from .encoding import from_table_time, iso, pack_json, parse_iso, unpack_json, utc
from .sqlite import default_state_path, session

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient as AsyncTableClient

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_US = 10**17  # microseconds; inverted times stay positive until year ~5100


class FindingStore(Protocol):
    """Keeps the worker's findings for people and dashboards."""

    async def record(self, finding: dict[str, Any], *, alert_id: str | None, invocation_id: str | None,
                     when: datetime) -> str:
        """Store one finding; returns the record id."""
        ...

    async def list(self, limit: int = 100, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """The ``limit`` most recent records, newest first; with ``since``, only records from that hour on (the
        caller filters the exact time)."""
        ...

    async def rows(self, limit: int = 1000, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Like :meth:`list` without ``finding``: id, time, cause, vault, principal and LIST_COLUMNS."""
        ...

    async def get(self, id: str) -> dict[str, Any] | None:
        """One whole record by id, or None."""
        ...

    async def close(self) -> None:
        """Release the store's connections (on the event loop that used it)."""
        ...


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _summary(finding: dict[str, Any]) -> dict[str, str | None]:
    denial = _dict(finding.get("denial"))
    vault, principal = _dict(denial.get("vault")), _dict(denial.get("principal"))
    cause = finding.get("cause")
    return {"cause": cause if isinstance(cause, str) else None,
            "vault": vault.get("resource_id") or vault.get("name"),
            "principal": principal.get("object_id") or principal.get("app_id") or principal.get("upn")}


LIST_COLUMNS = ("outcome", "explanation", "vault_name", "principal_name", "operation")
"""What the findings page lists besides id, time, cause, vault and principal (see :func:`list_columns`)."""
_MAX_EXPLANATION = 4000
_LISTED = "listed"   # a Table property marking a record that holds LIST_COLUMNS (records made before do not)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def list_columns(finding: dict[str, Any]) -> dict[str, str]:
    """The findings page's list columns of one finding: its outcome ("diagnosed" when nothing was applied or
    refused), explanation, the vault's and the caller's names as read from Azure (else as the input gave them),
    and the operation with its object."""
    denial, ev = _dict(finding.get("denial")), _dict(finding.get("evidence"))
    vault, principal, obj = _dict(denial.get("vault")), _dict(denial.get("principal")), _dict(denial.get("object"))
    vault_id = _text(vault.get("resource_id"))
    operation = _text(denial.get("operation"))
    if obj.get("name"):
        operation = f"{operation} on {_text(obj.get('kind'))}/{_text(obj.get('name'))}".strip()
    return {"outcome": _text(finding.get("outcome")) or "diagnosed",
            "explanation": _text(finding.get("explanation"))[:_MAX_EXPLANATION],
            "vault_name": _text(_dict(ev.get("vault")).get("name") or vault.get("name"))
            or vault_id.rstrip("/").rsplit("/", 1)[-1],
            "principal_name": _text(_dict(ev.get("principal")).get("display_name") or principal.get("upn")),
            "operation": operation}


def _new_id(when: datetime) -> str:
    """Sorts newest first: inverted microseconds since the epoch, then a random suffix for equal times."""
    micros = (utc(when, "when") - _EPOCH) // timedelta(microseconds=1)
    return f"{_MAX_US - micros:017d}-{uuid.uuid4().hex[:12]}"


def _partition(when: datetime) -> str:
    """The PartitionKey of a record made at ``when``: its hour, inverted (newest hour sorts first)."""
    hour = utc(when, "when").replace(minute=0, second=0, microsecond=0)
    return f"{_MAX_US - (hour - _EPOCH) // timedelta(microseconds=1):017d}"


class TableFindingStore:
    """Findings in an Azure Table: PartitionKey = inverted hour (spreads load, newest partition first).

    Async (``azure.data.tables.aio``), so the worker records on its event loop without a thread hop. Use one store
    per event loop.
    """

    def __init__(self, table: AsyncTableClient) -> None:
        self._table = table

    async def close(self) -> None:
        await self._table.close()

    async def record(self, finding: dict[str, Any], *, alert_id: str | None, invocation_id: str | None,
               when: datetime) -> str:
        when = utc(when, "when")
        row = _new_id(when)
        partition = _partition(when)
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row, "time": when,
                                  **{k: v for k, v in _summary(finding).items() if v is not None},
                                  **list_columns(finding), _LISTED: True, **pack_json("finding", finding)}
        if alert_id is not None:
            entity["alert_id"] = alert_id
        if invocation_id is not None:
            entity["invocation_id"] = invocation_id
        with storage_errors("recording a finding", target_of(self._table, f"table '{self._table.table_name}'")):
            await self._table.create_entity(entity)
        return row

    async def list(self, limit: int = 100, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        out: builtins.list[dict[str, Any]] = []
        if limit <= 0:
            return out
        page = min(limit, 1000)
        with storage_errors("listing findings", target_of(self._table, f"table '{self._table.table_name}'")):
            entities = self._table.list_entities(results_per_page=page) if since is None else \
                self._table.query_entities("PartitionKey le @pk", parameters={"pk": _partition(since)},
                                           results_per_page=page)
            async for entity in entities:
                out.append(_record(entity))
                if len(out) >= limit:
                    break
        return out

    async def rows(self, limit: int = 1000, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        out: builtins.list[dict[str, Any]] = []
        if limit <= 0:
            return out
        select = ["PartitionKey", "RowKey", "time", "cause", "vault", "principal", _LISTED, *LIST_COLUMNS]
        page = min(limit, 1000)
        with storage_errors("listing findings", target_of(self._table, f"table '{self._table.table_name}'")):
            entities = self._table.list_entities(results_per_page=page, select=select) if since is None else \
                self._table.query_entities("PartitionKey le @pk", parameters={"pk": _partition(since)},
                                           results_per_page=page, select=select)
            async for entity in entities:
                out.append(entity)
                if len(out) >= limit:
                    break
            older = [e for e in out if not e.get(_LISTED)]   # recorded before the list columns: read them whole
            whole = {e["RowKey"]: e for e in await asyncio.gather(*(self._entity(e["PartitionKey"], e["RowKey"])
                                                                    for e in older))}
        return [_row(whole.get(e["RowKey"], e)) for e in out]

    async def _entity(self, partition: str, row: str) -> dict[str, Any]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(await self._table.get_entity(partition, row))
        except ResourceNotFoundError:
            return {"PartitionKey": partition, "RowKey": row}

    async def get(self, id: str) -> dict[str, Any] | None:
        partition = _partition_of(id)
        if partition is None:
            return None
        with storage_errors("reading a finding", target_of(self._table, f"table '{self._table.table_name}'")):
            entity = await self._entity(partition, id)
        return _record(entity) if "time" in entity else None


def _partition_of(id: str) -> str | None:
    """The PartitionKey of record ``id`` (its time is in the id), or None when ``id`` is not a record id."""
    head, _, tail = id.partition("-")
    if len(head) != 17 or not head.isdigit() or not tail.isalnum() or len(tail) > 32:  # noqa: PLR2004
        return None
    when = _EPOCH + timedelta(microseconds=_MAX_US - int(head))
    return _partition(when)


def _record(entity: Any) -> dict[str, Any]:
    return {"id": entity["RowKey"], "time": iso(from_table_time(entity["time"])), "alert_id": entity.get("alert_id"),
            "invocation_id": entity.get("invocation_id"), "cause": entity.get("cause"), "vault": entity.get("vault"),
            "principal": entity.get("principal"), "finding": unpack_json("finding", entity)}


def _row(entity: Any) -> dict[str, Any]:
    """A list row: the record's columns, LIST_COLUMNS from the entity (or from its finding, for an older one)."""
    columns = {k: entity.get(k) for k in LIST_COLUMNS} if entity.get(_LISTED) else \
        list_columns(_dict(unpack_json("finding", entity)) if "finding" in entity else {})
    time = entity.get("time")
    return {"id": entity["RowKey"], "time": iso(from_table_time(time)) if time is not None else "",
            "cause": entity.get("cause"), "vault": entity.get("vault"), "principal": entity.get("principal"),
            **{k: v or "" for k, v in columns.items()}}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS findings (
    id            TEXT PRIMARY KEY,
    time          TEXT NOT NULL,
    alert_id      TEXT,
    invocation_id TEXT,
    cause         TEXT,
    vault         TEXT,
    principal     TEXT,
    finding       TEXT NOT NULL
)
"""


class SqliteFindingStore:
    """Findings in a SQLite file (default ``~/.kv-remediate/state.db``), for local runs of the worker (each call
    in a worker thread, so the event loop never waits on the file lock)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the findings table") as conn:
            conn.execute(_SCHEMA)

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""

    async def record(self, finding: dict[str, Any], *, alert_id: str | None, invocation_id: str | None,
                     when: datetime) -> str:
        return await asyncio.to_thread(self._record, finding, alert_id, invocation_id, when)

    def _record(self, finding: dict[str, Any], alert_id: str | None, invocation_id: str | None,
                when: datetime) -> str:
        row = _new_id(when)
        summary = _summary(finding)
        with session(self.path, "recording a finding") as conn:
            conn.execute("INSERT INTO findings (id, time, alert_id, invocation_id, cause, vault, principal, finding)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (row, iso(when), alert_id, invocation_id, summary["cause"], summary["vault"],
                          summary["principal"], json.dumps(finding, sort_keys=True, default=str)))
        return row

    async def list(self, limit: int = 100, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self._list, limit, since)

    async def rows(self, limit: int = 1000, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("finding", "alert_id", "invocation_id")}
                | list_columns(_dict(r["finding"])) for r in await self.list(limit, since)]

    async def get(self, id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, id)

    def _get(self, id: str) -> dict[str, Any] | None:
        with session(self.path, "reading a finding") as conn:
            r = conn.execute("SELECT * FROM findings WHERE id = ?", (id,)).fetchone()
        return None if r is None else {
            "id": r["id"], "time": iso(parse_iso(r["time"])), "alert_id": r["alert_id"],
            "invocation_id": r["invocation_id"], "cause": r["cause"], "vault": r["vault"], "principal": r["principal"],
            "finding": json.loads(r["finding"])}

    def _list(self, limit: int, since: datetime | None) -> builtins.list[dict[str, Any]]:
        with session(self.path, "listing findings") as conn:
            if since is None:
                rows = conn.execute("SELECT * FROM findings ORDER BY id LIMIT ?", (max(limit, 0),)).fetchall()
            else:  # ids sort newest first: every record at or after ``since`` has an id at or below its own
                rows = conn.execute("SELECT * FROM findings WHERE id <= ? ORDER BY id LIMIT ?",
                                    (_new_id(since)[:17] + "-~", max(limit, 0))).fetchall()
        return [{"id": r["id"], "time": iso(parse_iso(r["time"])), "alert_id": r["alert_id"],
                 "invocation_id": r["invocation_id"], "cause": r["cause"], "vault": r["vault"],
                 "principal": r["principal"], "finding": json.loads(r["finding"])} for r in rows]
