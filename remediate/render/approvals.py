"""Approval requests as text: the ``approvals`` table and what ``approve``/``reject`` did."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .table import aligned

if TYPE_CHECKING:
    from ..approvals.model import ApprovalRequest, ExactChange
    from ..approvals.service import Decided


def change_words(c: ExactChange) -> str:
    """The exact change in a few words: the role (by its id's last segment) or the permissions, at the scope."""
    if c.kind == "role_assignment":
        what = f"role {(c.role_definition_id or '').rsplit('/', 1)[-1]}"
    else:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in (c.permissions or {}).items())
    ttl = f" for {c.grant_ttl}" if c.grant_ttl else ""
    return f"{what} at {c.scope}{ttl} (tier {c.tier})"


def _role_name(r: ApprovalRequest) -> str:
    plan = r.finding.get("plan") if isinstance(r.finding.get("plan"), dict) else None
    return str(plan.get("role_name")) if plan and plan.get("role_name") else ""


def _left(r: ApprovalRequest, now: datetime) -> str:
    if r.state != "pending":
        return r.end or r.state
    left = r.expires_at - now
    if left.total_seconds() <= 0:
        return "expired"
    hours, rest = divmod(int(left.total_seconds()), 3600)
    return f"{hours}h{rest // 60:02d}m left"


def approvals_table(requests: Sequence[ApprovalRequest], now: datetime, width: int = 120) -> str:
    """Requests as a table (id, state, approvals so far, expiry, grantee, the change, cause), and a closing line."""
    if not requests:
        return "no approval requests waiting"
    rows = [[r.id, r.state, f"{len(r.approved_by)}/{r.min_approvals}", _left(r, now), r.grantee,
             (_role_name(r) + ": " if _role_name(r) else "") + change_words(r.change), str(r.finding.get("cause"))]
            for r in requests]
    lines = aligned(["ID", "STATE", "APPROVALS", "EXPIRES", "GRANTEE", "CHANGE", "CAUSE"], rows, width=width,
                    wrap=("CHANGE", "CAUSE"))
    return "\n".join(lines) + f"\n\n{len(requests)} request(s); decide with `kv-remediate approve ID` or " \
        "`kv-remediate reject ID --reason TEXT`"


def decided_text(d: Decided) -> str:
    """What one approve/reject did, for the person who typed it."""
    head = {"recorded": "Recorded", "applied": "Applied", "failed": "Not applied", "rejected": "Rejected",
            "refused": "Refused"}[d.status]
    lines = [f"{head}: {d.message}"]
    r = d.request
    if r is not None:
        lines.append(f"request {r.id}: {r.state}" + (f" ({r.end})" if r.end and r.end != r.state else "")
                     + f"; approvals {len(r.approved_by)}/{r.min_approvals}; the change: {change_words(r.change)}")
        if r.grant_id:
            lines.append(f"grant {r.grant_id} (see `kv-remediate grants`)")
    return "\n".join(lines)
