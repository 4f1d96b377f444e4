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
    if c.kind == "access_policy":
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in (c.permissions or {}).items())
    else:
        what = f"role {(c.role_definition_id or '').rsplit('/', 1)[-1]}"
    ttl = f" for {c.grant_ttl}" if c.grant_ttl else ""
    return f"{what} at {c.scope}{ttl} (tier {c.tier})"


def _what(r: ApprovalRequest) -> str:
    """The role by name (the finding's plan, for display), or the access-policy permissions; and the tier."""
    plan = r.finding.get("plan") if isinstance(r.finding.get("plan"), dict) else None
    c = r.change
    if c.kind == "access_policy":
        what = "access policy: " + "; ".join(f"{k} {', '.join(v)}" for k, v in (c.permissions or {}).items())
    else:
        what = str(plan.get("role_name")) if plan and plan.get("role_name") else \
            f"role {(c.role_definition_id or '').rsplit('/', 1)[-1]}"
    return f"{what} (tier {c.tier})" + (f" for {c.grant_ttl}" if c.grant_ttl else "")


def _where(r: ApprovalRequest) -> str:
    """The vault's name, and the object below it when the change is on one."""
    parts = r.change.scope.strip("/").split("/")
    return "/".join(parts[7:]) if len(parts) > 7 else r.change.scope  # noqa: PLR2004 (.../vaults/NAME[/KIND/NAME])


def _left(r: ApprovalRequest, now: datetime) -> str:
    if r.state != "pending":
        return r.end or r.state
    left = r.expires_at - now
    if left.total_seconds() <= 0:
        return "expired"
    hours, rest = divmod(int(left.total_seconds()), 3600)
    return f"{hours}h{rest // 60:02d}m left"


def approvals_table(requests: Sequence[ApprovalRequest], now: datetime, width: int = 120) -> str:
    """Requests as a table (state, approvals so far, time left, the change, where, cause), then under each row's
    number the request id (for ``approve``/``reject``), the grantee and the ARM scope, whole."""
    if not requests:
        return "no approval requests waiting"
    rows = [[str(i), r.state, f"{len(r.approved_by)}/{r.min_approvals}", _left(r, now), _what(r), _where(r),
             str(r.finding.get("cause") or "-")] for i, r in enumerate(requests, 1)]
    columns = ["#", "STATE", "APPROVALS", "EXPIRES", "CHANGE", "WHERE", "CAUSE"]
    lines = aligned(columns, rows, width=width, wrap=("CHANGE", "WHERE", "CAUSE"))
    ids = []
    for i, r in enumerate(requests, 1):
        ids.append(f"{i:>2}  request {r.id}  {r.created_at:%Y-%m-%d %H:%M}  grantee {r.grantee}")
        ids.append(f"    {r.change.scope}")
    return ("\n".join(lines) + "\n\nids (for `kv-remediate approve ID` / `kv-remediate reject ID --reason TEXT`):\n"
            + "\n".join(ids) + f"\n\n{len(requests)} request(s)")


def decided_text(d: Decided, width: int = 120) -> str:
    """What one approve/reject did, for the person who typed it: the outcome, then the request (the change by
    name, where, who approved so far) and the grant it made."""
    from .findings import wrap_text

    head = {"recorded": "Recorded", "applied": "Applied", "failed": "Not applied", "rejected": "Rejected",
            "refused": "Refused"}[d.status]
    why = d.refused or (d.request.end if d.status == "failed" and d.request is not None else None)
    lines = wrap_text(f"{head}{f' ({why})' if why else ''}: {d.message}", "  ", width, "")
    r = d.request
    if r is not None:
        who = ", ".join(a.display_name or a.object_id for a in r.approved_by) or "nobody yet"
        lines += wrap_text(f"request {r.id}: {r.state}; {_what(r)} on {_where(r)} for {r.grantee}; approvals "
                           f"{len(r.approved_by)}/{r.min_approvals} ({who})", "  ", width, "")
        if r.grant_id:
            lines.append(f"grant {r.grant_id} (see `kv-remediate grants`)")
    return "\n".join(lines)
