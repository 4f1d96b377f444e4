"""Intake's size budget: caps on what one input or one batch may yield, and the settings that set them.

Every input is attacker-shaped, so what one body may cost is bounded before the core sees it: a message is cut to
``MAX_MESSAGE_CHARS`` before any pattern runs over it, an input has at most ``MAX_RECORDS`` rows/records and
``MAX_BLOCKS`` text blocks, and the batch entry points take ``max_denials`` (per input: one alert, one request,
one file) and ``max_principals`` (distinct callers per batch). Going over raises ``TooLargeError`` (HTTP 413,
CLI exit 2) as soon as the cap is passed, before any denial is returned.

The counters live in a ``ContextVar`` so parsing in a worker thread (``asyncio.to_thread`` copies the context)
or in concurrent requests never shares a count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..errors import TooLargeError
from ..model import Principal

#: App setting for ``max_denials`` (denials per alert, request or file).
MAX_DENIALS_SETTING = "KV_REMEDIATE_MAX_DENIALS"
#: App setting for ``max_principals`` (distinct principals per batch).
MAX_PRINCIPALS_SETTING = "KV_REMEDIATE_MAX_PRINCIPALS"
#: Default denials one alert, request body or file may yield (a Log Alerts V2 rule fans out one per dimension set).
DEFAULT_MAX_DENIALS = 100
#: Default distinct principals (object id, else app id, else UPN) per batch; each costs Graph and ARM calls.
DEFAULT_MAX_PRINCIPALS = 50
#: A message (error text, ResultDescription) is cut to this many characters before any pattern runs over it.
MAX_MESSAGE_CHARS = 8 * 1024
#: Rows / records one input may carry (a 4 MiB export holds a few thousand real audit records).
MAX_RECORDS = 10_000
#: Text blocks (``---``-separated samples) one input may carry.
MAX_BLOCKS = 1_000
#: Distinct REST error bodies one text block (a log) may embed.
MAX_BODIES = 1_000
#: Characters of (non-JSON) error text per input that patterns run over; the rest is not read (a note says so).
#: Published SDK, CLI and log error texts are a few KiB; patterns cost far more per character than JSON decoding.
MAX_TEXT_CHARS = 32 * 1024
#: Characters of a record cut short (a truncated export) that intake reads to salvage its complete fields.
MAX_SALVAGE_CHARS = 64 * 1024
#: ``---`` runs one input may hold (block separators, markdown rules): counted before the text is split.
MAX_SEPARATORS = 4 * MAX_BLOCKS
#: JSON objects (``{``) and separators (``,``) one body may hold, counted before it is decoded: a 4 MiB export of
#: real audit records has a few thousand records, tens of thousands of values.
MAX_JSON_OBJECTS = 50_000
MAX_JSON_COMMAS = 250_000
#: Dimensions one alert condition may carry (Azure Monitor allows a handful per rule).
MAX_DIMENSIONS = 1_000


@dataclass
class _Budget:
    name: str
    max_denials: int | None
    max_principals: int | None
    principals: set[str] = field(default_factory=set)
    denials: int = 0
    text_left: int = MAX_TEXT_CHARS


_BUDGET: ContextVar[_Budget | None] = ContextVar("kv_remediate_intake_budget", default=None)


@contextmanager
def budget(max_denials: int | None, max_principals: int | None) -> Iterator[None]:
    """Count denials and principals for one batch (a cap of None is no cap)."""
    token = _BUDGET.set(_Budget("", max_denials, max_principals))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def start_input(name: str) -> None:
    """A new input of the batch begins: its denial count starts at zero."""
    b = _BUDGET.get()
    if b is not None:
        b.name, b.denials, b.text_left = name, 0, MAX_TEXT_CHARS


def take_text(block: str) -> tuple[str, bool]:
    """The part of a text block patterns may run over (the input's remaining text budget), and whether it was cut."""
    b = _BUDGET.get()
    left = b.text_left if b is not None else MAX_TEXT_CHARS
    cut = block[:max(0, left)]
    if b is not None:
        b.text_left = max(0, left - len(cut))
    return cut, len(cut) < len(block)


def check_json(name: str, body: str) -> None:
    """TooLargeError, before decoding, when a JSON body holds more objects or values than any real input."""
    objects = max(body.count("{"), body.count("["))
    if objects > MAX_JSON_OBJECTS:
        raise TooLargeError(name, "JSON objects in one body", objects, MAX_JSON_OBJECTS,
                            "export a narrower time window or split the file")
    commas = body.count(",")
    if commas > MAX_JSON_COMMAS:
        raise TooLargeError(name, "JSON values in one body", commas, MAX_JSON_COMMAS,
                            "export a narrower time window or split the file")


def principal_key(p: Principal) -> str | None:
    """What makes two principals the same caller (object id, else app id, else UPN)."""
    key = p.object_id or p.app_id or p.upn
    return key.lower() if key else None


def count_denial(principal: Principal) -> None:
    """One more denial of the current input; TooLargeError once a cap is passed."""
    b = _BUDGET.get()
    if b is None:
        return
    b.denials += 1
    if b.max_denials is not None and b.denials > b.max_denials:
        raise TooLargeError(b.name, "denials in one input", b.denials, b.max_denials,
                            "send one alert or request per denial group, narrow the alert rule's dimensions, "
                            f"or raise {MAX_DENIALS_SETTING}")
    key = principal_key(principal)
    if key is not None and b.max_principals is not None and key not in b.principals:
        b.principals.add(key)
        if len(b.principals) > b.max_principals:
            raise TooLargeError(b.name, "distinct principals in one batch", len(b.principals), b.max_principals,
                                f"split the batch by caller or raise {MAX_PRINCIPALS_SETTING}")


def check_records(name: str, count: int) -> None:
    """TooLargeError when one input carries more rows/records than ``MAX_RECORDS``."""
    if count > MAX_RECORDS:
        raise TooLargeError(name, "rows or records in one input", count, MAX_RECORDS,
                            "export a narrower time window or fewer columns, or split the file")


def check_dimensions(name: str, count: int) -> None:
    """TooLargeError when one alert condition carries more dimensions than ``MAX_DIMENSIONS``."""
    if count > MAX_DIMENSIONS:
        raise TooLargeError(name, "dimensions in one alert condition", count, MAX_DIMENSIONS,
                            "split the alert rule's dimensions")


def check_blocks(name: str, count: int) -> None:
    """TooLargeError when one input has more text blocks than ``MAX_BLOCKS``."""
    if count > MAX_BLOCKS:
        raise TooLargeError(name, "text blocks (--- separated)", count, MAX_BLOCKS, "split the file")


def current_name() -> str:
    """The name of the input being parsed ('input' outside a batch)."""
    b = _BUDGET.get()
    return b.name if b is not None and b.name else "input"
