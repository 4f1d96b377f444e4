"""Decode one input and route it to its family by structure (cheap checks first, no format guessed by spacing).

bytes -> text (UTF-8, or UTF-16 with a BOM as PowerShell writes it) -> blocks (``---`` lines separate published
samples) -> per block: JSON (alert, records, query result, REST body, runbook) or text (SDK / tool error output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ..errors import InputError, TooLargeError
from . import alerts, errors_text, limits, logs, platform, runbook
from .drafting import Outcome

_FENCE = re.compile(r"^[ \t]*```[\w-]*[ \t]*$", re.MULTILINE)
_MD_ESCAPE = re.compile(r"\\([()\[\]_*#<>`{}.!|-])")
_BOX = re.compile(r"^[ \t]*[│┃|╵╷][ \t]?", re.MULTILINE)
_QUOTE = re.compile(r"^[ \t]*> ?", re.MULTILINE)
_QUOTE_START = re.compile(r"[ \t\n]{0,64}> ")
# CI and tool prefixes that split one message over lines: ISO timestamps (GitHub Actions, Azure DevOps),
# ``##[error]`` markers, Packer's ``==> builder: `` (each line's own prefix only, bounded).
_CI_PREFIX = re.compile(r"^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z[ \t]?)?(?:##\[\w{1,16}\])?"
                        r"(?:==> [\w.-]{1,64}: {0,2})?", re.MULTILINE)
_CI_HINT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|##\[\w{1,16}\]|^==> ", re.MULTILINE)
# Markdown emphasis around a paste: ``**bold**`` (never a CI mask ``***``), ``*italic*`` at a line's ends.
_BOLD = re.compile(r"(?<!\*)\*\*(?!\*)")
_ITALIC_START = re.compile(r"^([ \t]{0,64})\*(?=[^\s*])", re.MULTILINE)
_ITALIC_END = re.compile(r"(?<=[^\s*])\*[ \t]{0,8}$", re.MULTILINE)


def decode(name: str, data: bytes) -> str:
    """The input as text; an InputError for empty, binary or non-UTF-8 input."""
    utf8 = not data.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf8:
        try:
            raw = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(name, "unreadable bytes: a UTF-16 byte-order mark but invalid UTF-16") from exc
    else:
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(name, f"unreadable bytes: not UTF-8 text (byte {exc.start})") from exc
    # In UTF-8 a NUL character is exactly a 0x00 byte (never part of a longer sequence): search the bytes, faster.
    if (b"\x00" in data) if utf8 else ("\x00" in raw):
        raise InputError(name, "unreadable bytes: binary data (NUL bytes), not text")
    # Each pass over a 4 MiB body costs milliseconds: normalise line ends only when there is a CR to normalise.
    text = raw.replace("\r\n", "\n").replace("\r", "\n") if "\r" in raw else raw
    if not text.strip():
        raise InputError(name, "is empty")
    return text


def _clean_text(block: str) -> str:
    """Undo the wrapping people paste errors in: markdown escapes, code fences, quotes, Terraform's box."""
    block = _FENCE.sub("", block)
    if "\\(" in block or "\\_" in block or "\\[" in block or "\\*" in block:
        block = _MD_ESCAPE.sub(r"\1", block)
    if "│" in block or "╷" in block:
        block = _BOX.sub("", block)
    if _QUOTE_START.match(block):
        block = _QUOTE.sub("", block)
    if ("##[" in block or "==> " in block or "Z " in block) and _CI_HINT.search(block):
        block = _CI_PREFIX.sub("", block)
    if "**" in block:
        block = _BOLD.sub("", block)
    if "*" in block and ("\n*" in block or "> *" in block or block.lstrip(" \t")[:1] == "*"):
        block = _ITALIC_END.sub("", _ITALIC_START.sub(r"\1", block))
    if '\\"' in block:  # a message quoted in a JSON or logfmt string: its quotes escaped once or twice
        block = block.replace('\\\\"', '"').replace('\\"', '"')
    return block


def _text_outcome(name: str, block: str) -> Outcome | None:
    """errors_text over the part of a text block the input's text budget allows (a note when it was cut)."""
    cut, was_cut = limits.take_text(block)
    if not cut.strip():
        return None
    cleaned = _clean_text(cut)
    if not errors_text.recognised(cleaned):
        return None
    out = errors_text.parse_block(cleaned)
    if out is not None and was_cut:
        out.notes.append(f"{name}: only the first {limits.MAX_TEXT_CHARS // 1024} KiB of error text were read")
    return out


def _split_blocks(name: str, text: str) -> list[str]:
    """Blocks separated by ``---`` lines: one step per ``---`` found (at most ``MAX_SEPARATORS``), never per line."""
    dashes = text.count("---")
    if not dashes:
        return [text]
    if dashes > limits.MAX_SEPARATORS:
        raise TooLargeError(name, "'---' runs (block separators)", dashes, limits.MAX_SEPARATORS, "split the file")
    blocks: list[str] = []
    start = pos = 0
    while True:
        i = text.find("---", pos)
        if i < 0:
            break
        line_start = text.rfind("\n", 0, i) + 1
        line_end = text.find("\n", i)
        if line_end < 0:
            line_end = len(text)
        if text[line_start:line_end].strip(" \t") == "---":
            blocks.append(text[start:line_start])
            start = line_end + 1
        pos = line_end + 1
    blocks.append(text[start:])
    return [b for b in blocks if b.strip()]


def _json_outcome(name: str, value: Any) -> Outcome | None:
    """The outcome for a parsed JSON value, or None when no family recognises it."""
    if isinstance(value, list):
        return _array_outcome(name, value)
    if isinstance(value, str):
        return _text_outcome(name, value.replace("\r\n", "\n"))  # an error text saved as JSON
    if not isinstance(value, dict):
        return None
    for family in _OBJECT_FAMILIES:
        out = family(name, value)
        if out is not None:
            return out
    return None


def _array_outcome(name: str, value: list[Any]) -> Outcome | None:
    """A JSON array: diagnostic records, or else objects each recognised on its own (all of them, or None)."""
    limits.check_records(name, len(value))
    recs = logs.records_of(value)
    if recs is not None:
        return logs.rows_outcome(recs, None, keep_unknown_status=False)
    out = Outcome()
    if not value:
        return None
    for item in value:
        sub = _json_outcome(name, item) if isinstance(item, dict) else None
        if sub is None:
            return None
        out.extend(sub)
    return out


def _alert(name: str, value: dict[str, Any]) -> Outcome | None:
    """An Azure Monitor alert payload (any schema ``alerts.is_alert`` accepts)."""
    return alerts.parse_alert(name, value) if alerts.is_alert(value) else None


def _error_envelope(name: str, value: dict[str, Any]) -> Outcome | None:
    """A REST error body in its ``{"error": {...}}`` envelope (either case)."""
    return errors_text.parse_body(value) if "error" in value or "Error" in value else None


def _listed_records(name: str, value: dict[str, Any]) -> Outcome | None:
    """Records or reference statuses in a ``value``/``data`` list (see ``_listed``)."""
    return _listed(value)


def _query_result(name: str, value: dict[str, Any]) -> Outcome | None:
    """A Log Analytics query API result: its rows."""
    rows = logs.query_rows(value)
    return logs.rows_outcome(rows, "log.query_api", keep_unknown_status=False) if rows is not None else None


def _records(name: str, value: dict[str, Any]) -> Outcome | None:
    """A raw diagnostic export: one record, or ``{"records": [...]}``."""
    recs = logs.records_of(value)
    return logs.rows_outcome(recs, None, keep_unknown_status=False) if recs is not None else None


def _runbook(name: str, value: dict[str, Any]) -> Outcome | None:
    """A runbook request (only runbook fields)."""
    return runbook.parse_runbook(name, value) if runbook.is_runbook(value) else None


def _bare_error(name: str, value: dict[str, Any]) -> Outcome | None:
    """A REST error body without its envelope (``code`` and ``message`` at the top)."""
    return errors_text.parse_body(value) if "code" in value and "message" in value else None


# A JSON object goes to the first family that recognises it, in this order (the most specific shapes first).
_OBJECT_FAMILIES: tuple[Callable[[str, dict[str, Any]], Outcome | None], ...] = (
    _alert, _error_envelope, _listed_records, _query_result, _records, _runbook, _bare_error)


def _listed(value: dict[str, Any]) -> Outcome | None:
    """``{"value": [...]}`` (ARM lists, Log Analytics REST) or ``{"data": [...]}`` (Resource Graph) around records or
    App Service Key Vault reference statuses; a list of only successful records is 0 denials, not an error."""
    for key in ("value", "data"):
        items = value.get(key)
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            continue
        limits.check_records(limits.current_name(), len(items))
        if platform.is_reference_list(items):
            return platform.references_outcome(items)
        recs = logs.records_of(items)
        if recs is not None:
            return logs.rows_outcome(recs, None, keep_unknown_status=False)
    return None


_DECODER = json.JSONDecoder()


def _json_lines(name: str, block: str) -> Outcome | None:
    """JSON lines (storage ``PT1H.json`` blobs) or objects pasted one after another: one record each."""
    records: list[Any] = []
    limits.check_records(name, block.count("\n{") + 1 if block.count("\n") >= limits.MAX_RECORDS else 0)
    pos, end = 0, len(block)
    while pos < end:
        while pos < end and block[pos] in " \t\n,":
            pos += 1
        if pos >= end:
            break
        if block[pos] != "{":
            return None
        try:
            value, pos = _DECODER.raw_decode(block, pos)
        except (ValueError, RecursionError):
            salvaged = logs.salvage_record(block[pos:pos + limits.MAX_SALVAGE_CHARS])
            if salvaged is None:
                return None
            records.append(salvaged)
            break
        records.append(value)
        limits.check_records(name, len(records))
    if len(records) == 1 and not logs.looks_like_record(records[0]):
        return None
    return _json_outcome(name, records) if records else None


def _unrecognised_json(name: str, value: Any) -> InputError:
    if isinstance(value, dict):
        keys = ", ".join(sorted(str(k) for k in value)[:6]) or "no keys"
        return InputError(name, f"is JSON but not a recognised Key Vault input (top-level keys: {keys})",
                          "UNRECOGNISED_JSON")
    return InputError(name, f"is JSON ({type(value).__name__}) but not a recognised Key Vault input",
                      "UNRECOGNISED_JSON")


def parse_block(name: str, block: str) -> Outcome | None:
    """One block; None when it is neither recognised JSON nor recognised error text."""
    stripped = block.strip()
    if stripped.startswith(("{", "[")):
        limits.check_json(name, stripped)
        try:
            value = json.loads(stripped)
        except RecursionError as exc:
            raise InputError(name, "is JSON nested too deeply to be a Key Vault input") from exc
        except ValueError as exc:
            lines = _json_lines(name, stripped)
            if lines is not None:
                return lines
            sub = _text_outcome(name, stripped)
            if sub is not None:
                return sub
            raise InputError(name, f"is not valid JSON ({exc.args[0].split(':')[0] if exc.args else exc}) "
                                   "and not a recognised error text", "NOT_JSON") from exc
        out = _json_outcome(name, value)
        if out is None:
            raise _unrecognised_json(name, value)
        return out
    if len(block) <= limits.MAX_TEXT_CHARS:
        inner = _clean_text(block).strip()
        if inner.startswith(("{", "[")) and inner != stripped:
            return parse_block(name, inner)  # JSON in a code fence or a quote
    return _text_outcome(name, block)


def parse_text(name: str, text: str) -> Outcome:
    """Every block of one decoded input; unrecognised blocks beside recognised ones are counted and noted."""
    blocks = _split_blocks(name, text)
    limits.check_blocks(name, len(blocks))
    if not blocks:
        raise InputError(name, "is empty")
    out = Outcome()
    unknown = 0
    for block in blocks:
        sub = parse_block(name, block)
        if sub is None:
            unknown += 1
            continue
        out.extend(sub)
    if unknown == len(blocks):
        raise InputError(name, "is not JSON and not a recognised error text (alert, log record, REST error body "
                               "or SDK/CLI error output)", "NOT_RECOGNISED")
    if unknown:
        out.skipped += unknown
        out.notes.append(f"{name}: {unknown} of {len(blocks)} blocks are not Key Vault errors and were skipped")
    return out


def payload(data: bytes) -> Any:
    """The JSON value of an input, or None (for later code that wants the raw alert, e.g. its search link)."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return None

