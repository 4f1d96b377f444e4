"""The one text table of the CLI's readable output: columns aligned to their widest cell, a dashed rule under the
headers, two spaces between columns. Nothing is ever cut: with a ``width``, the columns named in ``wrap`` are
narrowed (widest first) until a line fits, and their cells wrap onto more lines; an unbreakable value (an id, a
GUID) stays whole, so it can still be copied."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_BREAKS = " /_,"


def wrap_cell(value: str, width: int) -> list[str]:
    """``value`` in lines of at most ``width``, broken after a space, ``/``, ``_`` or ``,``; a part with no break
    (an id, a GUID) is never split or cut: it stays whole on its own line, longer than ``width`` if it must."""
    if len(value) <= width:
        return [value]
    parts: list[str] = []
    start = 0
    for i, ch in enumerate(value):
        if ch in _BREAKS:
            parts.append(value[start:i + 1])
            start = i + 1
    parts.append(value[start:])
    lines: list[str] = []
    line = ""
    for part in parts:
        if line and len((line + part).rstrip()) > width:
            lines.append(line.rstrip())
            line = part.lstrip()
        else:
            line += part
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def aligned(headers: Sequence[str], rows: Iterable[Sequence[str]], *, width: int | None = None,
            wrap: Iterable[str] = ()) -> list[str]:
    """The table's lines: headers, a rule, the rows (a wrapped cell adds lines to its row); no trailing blanks."""
    body = [list(r) for r in rows]
    wrapped = frozenset(wrap)
    n = len(headers)
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(n)]
    if width is not None:
        over = sum(widths) + 2 * (n - 1) - width
        floor = [max(len(headers[i]), 8) for i in range(n)]
        while over > 0:
            candidates = [i for i in range(n) if headers[i] in wrapped and widths[i] > floor[i]]
            if not candidates:
                break
            i = max(candidates, key=lambda c: widths[c])
            widths[i] -= 1
            over -= 1
    cells = [[wrap_cell(c, widths[i]) if headers[i] in wrapped else [c] for i, c in enumerate(r)]
             for r in [list(headers), *body]]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(n)]   # an unbreakable id widens

    def lines(row: list[list[str]]) -> list[str]:
        height = max(len(c) for c in row)
        return ["  ".join((c[k] if k < len(c) else "").ljust(widths[i]) for i, c in enumerate(row)).rstrip()
                for k in range(height)]
    out = [*lines(cells[0]), "  ".join("-" * w for w in widths)]
    for row in cells[1:]:
        out += lines(row)
    return out
