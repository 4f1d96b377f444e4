"""Helpers shared by the stores: UTC time text, JSON in Table properties, and SQLite connections."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StorageError

# A Table string property holds at most 64 KiB (32K UTF-16 characters); JSON longer than one chunk is split.
_CHUNK = 30_000
_MAX_CHUNKS = 30  # ~900K characters, under the 1 MiB entity limit together with the other properties

DEFAULT_STATE_DIR = ".kv-remediate"
DEFAULT_STATE_FILE = "state.db"


def default_state_path() -> Path:
    """The CLI's SQLite file: ``~/.kv-remediate/state.db``."""
    return Path.home() / DEFAULT_STATE_DIR / DEFAULT_STATE_FILE


def utc(when: datetime, name: str = "time") -> datetime:
    """``when`` in UTC; naive datetimes are refused because they make windows and expiry ambiguous."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {when.isoformat()})")
    return when.astimezone(UTC)


def iso(when: datetime) -> str:
    """Fixed-width UTC text (microseconds, ``Z``) that sorts like the time it names: used in SQLite comparisons."""
    return utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso` (also accepts other ISO 8601 forms with an offset)."""
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def from_table_time(value: Any) -> datetime:
    """A Table ``Edm.DateTime`` (the SDK's tz-aware datetime subclass) as a plain UTC datetime."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return datetime(aware.year, aware.month, aware.day, aware.hour, aware.minute, aware.second,
                        aware.microsecond, tzinfo=aware.tzinfo).astimezone(UTC)
    return parse_iso(str(value))


def pack_json(name: str, value: Any) -> dict[str, Any]:
    """``value`` as JSON in Table properties ``name`` (and ``name_1``, ``name_2``... when long)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    chunks = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    if len(chunks) > _MAX_CHUNKS:
        raise ValueError(f"{name} is {len(text)} characters as JSON, too large for one table entity")
    props: dict[str, Any] = {name: chunks[0]}
    for i, chunk in enumerate(chunks[1:], start=1):
        props[f"{name}_{i}"] = chunk
    return props


def unpack_json(name: str, entity: Mapping[str, Any]) -> Any:
    """Inverse of :func:`pack_json`; a missing property reads as None."""
    if name not in entity:
        return None
    parts = [str(entity[name])]
    i = 1
    while f"{name}_{i}" in entity:
        parts.append(str(entity[f"{name}_{i}"]))
        i += 1
    return json.loads("".join(parts))


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating parents) a SQLite file for one unit of work: autocommit mode, WAL, 30 s busy timeout.

    Each store operation opens its own connection, so stores are safe to share between threads and processes;
    transactions are explicit (``BEGIN IMMEDIATE``) where read-then-write must be atomic.
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(target), timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def session(path: str | Path, action: str) -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work, closed afterwards; SQLite failures become :class:`StorageError`."""
    try:
        conn = connect(path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"{action} failed: could not open the state file {path} ({exc}); check that its folder "
                           "is writable, or pass another file with --state") from exc
    try:
        yield conn
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as exc:
        raise StorageError(f"{action} in the state file {path} failed ({exc}); if another kv-remediate holds it "
                           "locked, retry when it has finished") from exc
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any exception. A body that decides to change nothing may
    ``ROLLBACK`` itself and return: nothing is left to commit then."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if conn.in_transaction:
        conn.execute("COMMIT")
