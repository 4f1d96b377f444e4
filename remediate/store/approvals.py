"""Approval requests (issue 11) kept for people to decide: the ``ApprovalStore`` interface and its SQLite backend
(the CLI, default ``~/.kv-remediate/state.db``); the Table backend (the function app) is store/approvals_table.py.

Every change to a request is a compare-and-swap on the version read (:meth:`ApprovalStore.swap`): SQLite in one
``BEGIN IMMEDIATE`` transaction comparing a version counter, Azure Tables with the entity's ETag (``If-Match``).
So of two people approving at once exactly one moves the request to ``approved`` (and applies it); the other
re-reads and sees the outcome. At most one request is open (pending or approved) per exact change and backend
(``ApprovalRequest.open_key``): :meth:`ApprovalStore.open` returns that one instead of opening a second.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..approvals.model import OPEN_STATES, ApprovalRequest, ApprovalState
from .encoding import iso
from .sqlite import default_state_path, session, transaction


@dataclass(frozen=True)
class Versioned:
    """A request as read, with the version a compare-and-swap must match (an ETag, or a counter)."""

    request: ApprovalRequest
    version: str


class ApprovalStore(Protocol):
    """Approval requests; synchronous (callers on an event loop use ``asyncio.to_thread``)."""

    def open(self, request: ApprovalRequest) -> ApprovalRequest:
        """Store a new pending request, unless one is open for the same change (``open_key``): that one is
        returned instead (compare ``.id``)."""
        ...

    def get(self, id: str) -> Versioned | None:
        """The request and its version; None when there is no such request."""
        ...

    def swap(self, request: ApprovalRequest, version: str) -> str | None:
        """Replace the request if it is still at ``version``: the new version, or None when someone else changed
        it first (re-read and decide again)."""
        ...

    def list(self, *, state: ApprovalState | None = None, limit: int | None = 100) -> builtins.list[ApprovalRequest]:
        """Requests (of one state, when given), newest first."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    open_key   TEXT UNIQUE,
    version    INTEGER NOT NULL,
    request    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, created_at);
"""


def _text(request: ApprovalRequest) -> str:
    return json.dumps(request.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


class SqliteApprovalStore:
    """Approval requests in a SQLite file (the CLI's state file by default); ``open_key`` is UNIQUE while the
    request is open and NULL afterwards, so at most one request per change is open."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        with session(self.path, "creating the approvals table") as conn:
            conn.executescript(_SCHEMA)

    def open(self, request: ApprovalRequest) -> ApprovalRequest:
        with session(self.path, "opening an approval request") as conn, transaction(conn):
            row = conn.execute("SELECT request FROM approvals WHERE open_key = ?", (request.open_key(),)).fetchone()
            if row is not None:
                return ApprovalRequest.from_dict(json.loads(row["request"]))
            conn.execute("INSERT INTO approvals (id, state, created_at, open_key, version, request) "
                         "VALUES (?, ?, ?, ?, 1, ?)", (request.id, request.state, iso(request.created_at),
                                                       request.open_key() if request.open else None, _text(request)))
        return request

    def get(self, id: str) -> Versioned | None:
        with session(self.path, "reading an approval request") as conn:
            row = conn.execute("SELECT version, request FROM approvals WHERE id = ?", (id,)).fetchone()
        if row is None:
            return None
        return Versioned(ApprovalRequest.from_dict(json.loads(row["request"])), str(row["version"]))

    def swap(self, request: ApprovalRequest, version: str) -> str | None:
        with session(self.path, "updating an approval request") as conn, transaction(conn):
            try:
                got = conn.execute("UPDATE approvals SET state = ?, open_key = ?, version = version + 1, request = ? "
                                   "WHERE id = ? AND version = ?",
                                   (request.state, request.open_key() if request.open else None, _text(request),
                                    request.id, int(version)))
            except sqlite3.IntegrityError:   # another open request holds this change: this one may not reopen
                return None
            return str(int(version) + 1) if got.rowcount == 1 else None

    def list(self, *, state: ApprovalState | None = None, limit: int | None = 100) -> builtins.list[ApprovalRequest]:
        query, params = "SELECT request FROM approvals", list[object]()
        if state is not None:
            query, params = query + " WHERE state = ?", [state]
        query += " ORDER BY created_at DESC, id"
        if limit is not None:
            query, params = query + " LIMIT ?", [*params, max(limit, 0)]
        with session(self.path, "listing approval requests") as conn:
            rows = conn.execute(query, params).fetchall()
        return [ApprovalRequest.from_dict(json.loads(r["request"])) for r in rows]


__all__ = ["OPEN_STATES", "ApprovalStore", "SqliteApprovalStore", "Versioned"]
