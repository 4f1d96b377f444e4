"""Readable text for ``kv-remediate parse --output text``: a table of denials, the notes, a one-line summary."""

from __future__ import annotations

from collections import Counter

from ..model import Denial, ParseResult
from .findings import WIDTH
from .table import aligned

_COLUMNS = ("#", "status", "source", "principal", "vault", "operation", "object", "caller ip", "cause hint")


def _vault(d: Denial) -> str:
    v = d.vault
    if v.kind == "managed_hsm":
        return f"Managed HSM {v.name or '?'}" + (f" scope {v.scope}" if v.scope else "")
    return v.name or "-"


def _operation(d: Denial) -> str:
    """The JSON's ``operation`` (never another field in its place); what the input named instead, labelled."""
    if d.operation:
        return d.operation
    perm = _permission(d)
    if perm:
        return f"- (permission {perm})"
    return f"- (action {d.data_action})" if d.data_action else "-"


def _principal(d: Denial) -> str:
    p = d.principal
    who = p.upn or p.object_id or (f"app {p.app_id}" if p.app_id else None)
    if who is None:
        return "-"
    return f"{who} ({p.kind})" if p.kind else who


def _object(d: Denial) -> str:
    if d.object is None:
        return "-"
    return f"{d.object.kind}/{d.object.name or '?'}"


def _permission(d: Denial) -> str | None:
    perms = d.access_policy_permission or {}
    return ", ".join(f"{k} {'/'.join(v)}" for k, v in perms.items()) or None


def _row(i: int, d: Denial) -> tuple[str, ...]:
    status = str(d.status) if d.status is not None else "-"
    if d.error_code and d.inner_code:
        status += f" {d.inner_code}"
    elif d.error_code and d.status is None:
        status = d.error_code
    return (str(i), status, d.source, _principal(d), _vault(d), _operation(d), _object(d), d.caller_ip or "-",
            d.cause_hint or "-")


def summary(result: ParseResult) -> str:
    """One line: how many denials by status, and how many records were not denials."""
    n = len(result.denials)
    by_status = Counter(str(d.status) if d.status is not None else "unknown status" for d in result.denials)
    parts = ", ".join(f"{c} × {s}" for s, c in sorted(by_status.items()))
    head = f"{n} denial{'s' if n != 1 else ''}" + (f" ({parts})" if parts else "")
    return f"{head}; {result.skipped} record{'s' if result.skipped != 1 else ''} skipped (not 401/403/429)"


def denials_table(result: ParseResult) -> str:
    """The denials as an aligned table, then the notes, then the summary line."""
    lines: list[str] = []
    if result.denials:
        lines.extend(aligned(_COLUMNS, (_row(i, d) for i, d in enumerate(result.denials, 1)), width=WIDTH,
                             wrap=("source", "principal", "vault", "operation", "object", "cause hint")))
        messages = [(i, d.message) for i, d in enumerate(result.denials, 1) if d.message]
        if messages:
            lines.append("")
            for i, m in messages:
                first = m.strip().splitlines()[0] if m.strip() else ""
                lines.append(f"  {i}: {_cut_long(first)}")
    else:
        lines.append("No denials.")
    if result.notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {n}" for n in result.notes)
    lines.append("")
    lines.append(summary(result))
    return "\n".join(lines) + "\n"


def _cut_long(value: str, limit: int = 160) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
