"""What the queue worker found: one record per finding, in the Table ``findings`` (app) or SQLite (local runs).

A record is ``{"id", "time", "alert_id", "invocation_id", "cause", "vault", "principal", "finding"}``, where
``finding`` is the diagnosis JSON of one finding (spec/cli.md) and ``cause``/``vault``/``principal`` are copied
out of it so the table reads (and filters) well in Storage Explorer. ``list`` returns the newest first.
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
                                  **pack_json("finding", finding)}
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
                out.append({"id": entity["RowKey"], "time": iso(from_table_time(entity["time"])),
                            "alert_id": entity.get("alert_id"), "invocation_id": entity.get("invocation_id"),
                            "cause": entity.get("cause"), "vault": entity.get("vault"),
                            "principal": entity.get("principal"), "finding": unpack_json("finding", entity)})
                if len(out) >= limit:
                    break
        return out


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
