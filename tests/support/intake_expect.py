"""Helpers for the table-driven intake tests (no tests here): expected fields per input, compared by dotted path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediate.errors import InputError
from remediate.intake import parse_one
from remediate.model import ParseResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Ok:
    """The input parses: these denials (each a dict of dotted field -> value, a subset), skipped count, notes."""

    denials: list[dict[str, Any]]
    skipped: int = 0
    notes: int = 0
    note_contains: str | None = None


@dataclass(frozen=True)
class Bad:
    """The input is unusable: an InputError whose message contains this text."""

    contains: str
    code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def dotted(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else None
    return value


def check(name: str, data: bytes, expected: Ok | Bad) -> ParseResult | None:
    """Parse one input and assert the expected outcome field by field."""
    if isinstance(expected, Bad):
        try:
            parse_one(name, data)
        except InputError as exc:
            assert expected.contains in exc.message, exc.message
            assert exc.message.startswith(name), exc.message
            if expected.code:
                assert exc.code == expected.code
            return None
        raise AssertionError(f"{name}: expected InputError containing {expected.contains!r}")
    result = parse_one(name, data)
    got = [d.to_dict() for d in result.denials]
    assert len(got) == len(expected.denials), [g["status"] for g in got]
    for i, (doc, want) in enumerate(zip(got, expected.denials, strict=True)):
        for path, value in want.items():
            assert dotted(doc, path) == value, f"denial {i} {path}: {dotted(doc, path)!r} != {value!r}"
    assert result.skipped == expected.skipped
    assert len(result.notes) == expected.notes, result.notes
    if expected.note_contains:
        assert any(expected.note_contains in n for n in result.notes), result.notes
    return result
