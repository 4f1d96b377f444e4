"""The CLI's SQLite state file: where it lives by default, and one connection (and transaction) per unit of work,
with SQLite failures translated to :class:`~remediate.errors.StorageError`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StorageError

DEFAULT_STATE_DIR = ".kv-remediate"
DEFAULT_STATE_FILE = "state.db"


def default_state_path() -> Path:
    """The CLI's SQLite file: ``~/.kv-remediate/state.db``."""
    return Path.home() / DEFAULT_STATE_DIR / DEFAULT_STATE_FILE


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
