"""Text for ``kv-remediate grants`` (the audit trail as a table that fits the terminal) and ``revoke`` (what was
removed, in words). Pure: the records, the revocation results and the time are given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..outcome import Revocation
from ..store.grants import GrantRecord
from .findings import WIDTH, wrap_text
from .table import aligned

_TYPE_WORDS = {"serviceprincipal": "service principal", "user": "user", "group": "group"}


def _vault(vault_id: str | None) -> str:
    return vault_id.rstrip("/").rsplit("/", 1)[-1] if vault_id else "?"


def _where(r: GrantRecord) -> str:
    """The scope as a person reads it: the vault name, and the object below it when the grant is on one."""
    vault = _vault(r.vault_id)
    scope = r.scope or r.vault_id or ""
    below = scope[len(r.vault_id):].strip("/") if r.vault_id and scope.lower().startswith(r.vault_id.lower()) else ""
    return f"{vault}/{below}" if below else vault


def permissions_words(perms: dict[str, Any] | None) -> str:
    """``{"secrets": ["get", "list"]}`` as ``secrets get, list``."""
    return "; ".join(f"{k} {', '.join(v)}" for k, v in (perms or {}).items() if v) or "nothing"


def what(r: GrantRecord) -> str:
    """The role, or the access-policy permissions, the record is about."""
    plan = r.plan or {}
    if plan.get("role_name"):
        return str(plan["role_name"])
    perms = r.permissions_added or {k: v for k, v in (plan.get("add") or {}).items() if v}
    if perms:
        return "access policy: " + permissions_words(perms)
    return "role " + r.role_definition_id.rsplit("/", 1)[-1] if r.role_definition_id else "-"


def principal_words(r: GrantRecord, names: dict[str, str] | None = None, with_id: bool = True) -> str:
    """The grantee's display name when known, else its type and (``with_id``) object id."""
    oid = r.principal_id or ((r.finding or {}).get("principal") or {}).get("object_id")
    name = (names or {}).get((oid or "").lower())
    if name:
        return str(name)
    typ = _TYPE_WORDS.get(str((r.plan or {}).get("principal_type") or "").lower())
    if not with_id:
        return f"{typ or 'principal'} (id below)"
    return f"{typ} {oid}" if typ and oid else (oid or "unknown")


def state(r: GrantRecord, now: datetime) -> str:
    """The record's outcome, with whether an applied grant is in force, revoked or past its expiry."""
    if r.outcome == "applied":
        if r.revoked_at is not None:
            return f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        if r.expires_at is not None and r.expires_at <= now:
            return "expired, not yet revoked"
        return "in force"
    if r.outcome == "refused" and r.refused_by:
        return f"refused by {r.refused_by}"
    return r.outcome.replace("_", " ")


def grants_table(records: Sequence[GrantRecord], now: datetime, names: dict[str, str] | None = None,
                 width: int = WIDTH) -> str:
    """The grant records as a table (state, expiry, principal, role or permissions, scope, cause), then the full
    ids under each row's number: the grant id for ``revoke --grant``, the principal and the ARM scope."""
    if not records:
        return "no grant records"
    rows = [[str(i), state(r, now), f"{r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "never",
             principal_words(r, names, with_id=False), what(r), _where(r),
             str((r.finding or {}).get("cause") or "-")]
            for i, r in enumerate(records, 1)]
    columns = ["#", "STATE", "EXPIRES", "PRINCIPAL", "ROLE/PERMISSIONS", "SCOPE", "CAUSE"]
    head = "\n".join(aligned(columns, rows, width=width, wrap=columns[1:]))
    ids = []
    for i, r in enumerate(records, 1):
        ids.append(f"{i:>2}  grant {r.id}  {r.time:%Y-%m-%d %H:%M}  principal {r.principal_id or '-'}")
        ids += wrap_text(r.scope or r.vault_id or "no scope recorded", "  ", width)
        where = "in the bundled emulator (--snapshot)" if r.in_emulator else ""
        if r.repeats:
            ids += wrap_text(f"the same write made {r.repeats + 1} times, first {r.first_time or r.time:%Y-%m-%d %H:%M}"
                             f", latest {r.time:%Y-%m-%d %H:%M}" + (f", {where}" if where else ""), "  ", width)
        elif where:
            ids += wrap_text(f"made {where}", "  ", width)
    return head + "\n\nids (for `kv-remediate revoke --grant ID`):\n" + "\n".join(ids)


def revocation_text(result: Revocation, record: GrantRecord | None, names: dict[str, str] | None = None) -> str:
    """One revocation in words: which grant, on which vault, for whom, and exactly what was removed."""
    who = principal_words(record, names) if record is not None else None
    if record is not None and record.principal_id and who and record.principal_id not in who:
        who += f" ({record.principal_id})"
    vault_id = record.vault_id if record is not None and record.vault_id else result.vault
    on = f" on vault {_vault(vault_id)}" if vault_id else ""
    head = f"grant {result.grant_id}" if result.grant_id else f"vault {_vault(result.vault)}"
    if result.kind == "reconcile":
        if not result.reconciled:
            return f"{head}{on}: left open, could not be settled: {result.error}"
        return f"{head}{on}: settled as {result.reconciled}: {result.detail}"
    if not result.revoked:
        return f"{head}{on}: not revoked: {result.reason or result.error}"
    if result.removed:
        did = (f"removed {permissions_words({k: list(v) for k, v in result.removed.items()})} from the "
               f"access-policy entry of {who or result.principal}{on}")
    elif result.deleted and result.kind == "revoke" and record is not None:
        did = f"deleted the role assignment of {what(record)} to {who} at {_where(record)} ({result.assignment_id})"
    else:
        did = result.detail or "revoked"
        if who:
            did += f" (grantee {who}{on})"
    return f"{head}: {did}"


def revocations_text(results: Sequence[Revocation], records: dict[str, GrantRecord],
                     names: dict[str, str] | None = None, width: int = WIDTH) -> str:
    """Every revocation, one wrapped paragraph each, then a count."""
    if not results:
        return "nothing to revoke"
    out = ["\n".join(wrap_text(revocation_text(r, records.get(str(r.grant_id)), names), "    ", width, ""))
           for r in results]
    done = sum(1 for r in results if r.revoked)
    settled = sum(1 for r in results if r.reconciled)
    out.append(f"{done} revoked, {settled} settled, {len(results) - done - settled} left as they were")
    return "\n".join(out)
