"""How the stores write values: times as fixed-width UTC text that sorts like the time it names, Table
``Edm.DateTime`` read back as plain UTC, and JSON split across Table string properties."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# A Table string property holds at most 64 KiB (32K UTF-16 characters); JSON longer than one chunk is split.
_CHUNK = 30_000
_MAX_CHUNKS = 30  # ~900K characters, under the 1 MiB entity limit together with the other properties


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
