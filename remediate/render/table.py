"""The one text table of the CLI's readable output: columns aligned to their widest cell, a dashed rule under the
headers, and optionally each column capped (a longer cell is cut and ends in "…")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def aligned(headers: Sequence[str], rows: Iterable[Sequence[str]], *, max_width: int | None = None) -> list[str]:
    """The table's lines: headers, a rule, the rows; two spaces between columns, no trailing blanks."""
    body = [list(r) for r in rows]
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    if max_width is not None:
        widths = [min(w, max_width) for w in widths]

    def line(r: Sequence[str]) -> str:
        cells = [(c if len(c) <= widths[i] else c[: widths[i] - 1] + "…").ljust(widths[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]
