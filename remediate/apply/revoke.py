"""Undo what we granted, and nothing else: revoke one applied grant, revoke every expired one, settle intents a
crash left pending, and sweep expired role assignments labelled as ours whose record cannot revoke them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from ..armid import parse_hsm_id
from ..errors import ApplyError, AzureUnavailableError
from ..facts.writes import ArmWriter, Assignment
from ..outcome import Revocation
from ..plan import assignment_name
from ..store.encoding import iso
from ..store.grants import GrantRecord, GrantStore, new_grant_id
from .records import GRACE, backend_mismatch, parse_label, present_in_azure, same_backend, settle, settle_approval

log = logging.getLogger("kv_remediate.apply")


async def _owner_elsewhere(record: GrantRecord, got: Assignment, grants: GrantStore) -> str | None:
    """The id of another open grant whose label the assignment now carries (it is theirs to revoke), or None."""
    mark = parse_label(got.description)
    if mark is None or mark[0] == record.id.lower():
        return None
    other = await asyncio.to_thread(grants.get, mark[0])
    return other.id if other is not None and other.is_open else None


async def revoke(record: GrantRecord, writer: ArmWriter, grants: GrantStore, now: datetime, *,
                 actor: str | None = None, why: str = "expired", backend: str | None = None) -> Revocation:
    """Undo exactly what one applied grant changed; never a change this function did not make, and never a grant
    of the other backend (``backend``: None for Azure, "emulator" for a --snapshot run)."""
    said = Revocation(record.id, vault=record.vault_id, principal=record.principal_id)
    if not same_backend(record, backend):
        return replace(said, reason=backend_mismatch(record, backend))
    if record.outcome != "applied":
        return replace(said, reason=f"record is '{record.outcome}', not an applied grant: nothing of ours to undo")
    if record.revoked_at is not None:
        return replace(said, reason=f"already revoked at {record.revoked_at}")
    if record.is_hsm:
        said, detail = await _undo_hsm(record, writer, said)
    elif record.requests or (record.detail and record.detail.startswith("PIM")):
        detail = "PIM expires the assignment itself"
    elif record.assignment_id and record.scope:
        said, detail = await _undo_assignment(record, writer, grants, said, assignment_id=record.assignment_id,
                                              scope=record.scope)
    elif record.permissions_added and record.vault_id and record.principal_id:
        said, detail = await _undo_permissions(record, record.vault_id, record.principal_id, writer, said)
    else:
        return replace(said, reason="record names nothing to undo")
    if await asyncio.to_thread(grants.mark_revoked, record.id, now, f"{why}: {detail}"):
        await asyncio.to_thread(grants.add, replace(record, id=new_grant_id(), outcome="revoked", time=now, actor=actor,
                                                    revoked_at=now, revoke_detail=f"{why}: revokes {record.id}",
                                                    detail=detail, write_key=None))
    log.info("grant revoked", extra={"kv_remediate": {"event": "revoke", "grant_id": record.id, "detail": detail}})
    return replace(said, revoked=True, detail=detail)


async def _undo_assignment(record: GrantRecord, writer: ArmWriter, grants: GrantStore, said: Revocation, *,
                           assignment_id: str, scope: str) -> tuple[Revocation, str]:
    """Delete the role assignment the grant made, unless it is gone or now labelled as another open grant."""
    name = assignment_id.rsplit("/", 1)[-1]
    got = await writer.get_role_assignment(scope, name)
    owner = await _owner_elsewhere(record, got, grants) if got is not None else None
    if got is None:
        detail = f"role assignment {assignment_id} was already gone"
    elif owner is not None:
        detail = (f"role assignment {assignment_id} is now labelled as grant {owner}, which is still open: "
                  "left in place for that grant")
    else:
        gone = await writer.delete_role_assignment(scope, name)
        said = replace(said, deleted=gone)
        detail = f"deleted role assignment {assignment_id}" if gone else \
            f"role assignment {assignment_id} was already gone"
    return replace(said, assignment_id=assignment_id), detail


async def _undo_hsm(record: GrantRecord, writer: ArmWriter, said: Revocation) -> tuple[Revocation, str]:
    """Delete the Managed HSM local role assignment the grant made (our deterministic name, and only when it holds
    what we wrote; the delete is idempotent and read back). A custom local role the grant defined is kept: a
    definition grants nothing by itself, other assignments (ours, or a person's) may use it, and which do cannot be
    known without listing every key's scope (a listing at ``/`` does not show key-level assignments,
    managed-hsm/role-management.md); deleting it would make theirs defunct."""
    hsm, scope, role, principal = record.vault_id, record.scope, record.role_definition_id, record.principal_id
    if not (hsm and scope and role and principal):
        return said, "the record names no Managed HSM assignment to undo"
    done = await writer.hsm_unassign(hsm, scope, role, principal)
    where = f"local role assignment {done.name} at {done.scope} on Managed HSM {done.hsm}"
    detail = f"deleted {where}" if done.changed else f"{where} was already gone"
    if record.custom_role:
        detail += f"; custom local role {record.custom_role} kept (a definition grants nothing by itself)"
    return replace(said, deleted=done.changed, assignment_id=record.assignment_id), detail


async def _undo_permissions(record: GrantRecord, vault_id: str, principal_id: str, writer: ArmWriter,
                            said: Revocation) -> tuple[Revocation, str]:
    """Remove exactly the access-policy permissions the grant added (others' in the same entry stay), verified."""
    tenant = (record.plan or {}).get("tenant_id")
    stored = await writer.entry_permissions(vault_id, principal_id, tenant)
    # ARM's remove matches case-sensitively: send each permission spelled as the vault stores it.
    ours = {k: [s for s in stored.get(k, []) if s.lower() in {p.lower() for p in v}]
            for k, v in (record.permissions_added or {}).items()}
    ours = {k: v for k, v in ours.items() if v}
    if ours:
        await writer.remove_access_policy(vault_id, tenant or "", principal_id, ours)
        left = await writer.entry_permissions(vault_id, principal_id, tenant)
        still = {k: [p for p in v if p in left.get(k, [])] for k, v in ours.items()}
        if any(still.values()):
            raise ApplyError(f"removing {ours} from {principal_id}'s entry on {vault_id} did not take; retry the "
                             "revocation")
        said = replace(said, removed={k: tuple(v) for k, v in ours.items()})
    return said, (f"removed {ours} from the entry" if ours else "the permissions were already gone")


async def revoke_expired(writer: ArmWriter, grants: GrantStore, now: datetime,
                         actor: str | None = None, backend: str | None = None) -> list[Revocation]:
    """Revoke every applied grant of ``backend`` whose time limit has passed (the timer and `revoke --expired`)."""
    results = []
    for rec in await asyncio.to_thread(grants.expired, now):
        if not same_backend(rec, backend):
            continue
        try:
            results.append(await revoke(rec, writer, grants, now, actor=actor, backend=backend))
        except (ApplyError, AzureUnavailableError) as exc:
            results.append(Revocation(rec.id, vault=rec.vault_id, principal=rec.principal_id, error=exc.message))
    return results


async def settle_unresolved(writer: ArmWriter, grants: GrantStore, now: datetime,
                            grace: timedelta = GRACE, backend: str | None = None) -> list[Revocation]:
    """Settle intents a crash left ``pending`` (older than ``grace``) by reading Azure: present -> ``applied``
    with the expiry recorded at intent time; absent -> ``abandoned``. PIM requests awaiting approval are
    re-read: provisioned -> applied, decided otherwise -> abandoned."""
    results: list[Revocation] = []
    for rec in await asyncio.to_thread(grants.unresolved_before, now - grace):
        if not same_backend(rec, backend):   # only the backend that holds the write can say whether it took
            continue
        try:
            if rec.outcome == "pending_approval":
                out = await settle_approval(rec, writer, grants)
                if out is not None:
                    results.append(Revocation(rec.id, "reconcile", vault=rec.vault_id, principal=rec.principal_id,
                                              reconciled=out.outcome, detail=out.detail))
                continue
            if await present_in_azure(rec, writer):
                done = await settle(grants, rec, "applied", detail=f"{rec.detail}; reconciled at {iso(now)}: "
                                     "found in Azure, so the write had taken effect")
            else:
                done = await settle(grants, rec, "abandoned", detail=f"{rec.detail}; reconciled at {iso(now)}: "
                                     "not in Azure, so the write never took effect")
            results.append(Revocation(rec.id, "reconcile", vault=rec.vault_id, principal=rec.principal_id,
                                      reconciled=done.outcome, detail=done.detail))
        except (ApplyError, AzureUnavailableError) as exc:
            results.append(Revocation(rec.id, "reconcile", vault=rec.vault_id, principal=rec.principal_id,
                                      error=exc.message))
    return results


def _at_or_below(scope: str, vault: str) -> bool:
    s, v = scope.rstrip("/").lower(), vault.rstrip("/").lower()
    return s == v or s.startswith(v + "/")


async def sweep_labelled(writer: ArmWriter, grants: GrantStore, now: datetime,
                         actor: str | None = None) -> list[Revocation]:
    """Delete expired role assignments labelled as ours whose record cannot revoke them (lost, or not applied).

    Listed per vault we ever began a grant on (ARM's documented list for a scope, no filter: at, above and below
    it), kept only when at or below the vault, named as we name assignments (the deterministic uuid5 of scope,
    principal and role) and labelled "kv-remediate grant <id>; expires <time>" with that time passed. Each
    deletion is recorded as a ``revoked`` record naming the label.
    """
    results: list[Revocation] = []
    for vault in await asyncio.to_thread(grants.vaults):
        if parse_hsm_id(vault) is not None:
            continue   # a Managed HSM assignment has no description to label: its grant record is what revokes it
        try:
            listed = await writer.list_role_assignments(vault)
        except (ApplyError, AzureUnavailableError) as exc:
            results.append(Revocation(None, "sweep", vault=vault, error=exc.message))
            continue
        for a in listed:
            mark = parse_label(a.description)
            if mark is None or mark[1] is None or mark[1] > now or not _at_or_below(a.scope, vault):
                continue
            if a.name.lower() != assignment_name(a.scope, a.principal_id,
                                                 a.role_definition_id.rsplit("/", 1)[-1]).lower():
                continue   # not a name we would have chosen: not ours, whatever its description says
            rec = await asyncio.to_thread(grants.get, mark[0])
            if rec is not None and rec.is_open:
                continue   # its record revokes it (or settles it first, when still pending)
            try:
                gone = await writer.delete_role_assignment(a.scope, a.name)
            except (ApplyError, AzureUnavailableError) as exc:
                results.append(Revocation(mark[0], "sweep", vault=vault, principal=a.principal_id, assignment_id=a.id,
                                          error=exc.message))
                continue
            state = "missing" if rec is None else f"'{rec.outcome}'"
            detail = (f"{'deleted' if gone else 'already gone:'} role assignment {a.id} labelled as grant {mark[0]} "
                      f"(expired {iso(mark[1])}), whose record is {state}")
            await asyncio.to_thread(grants.add, GrantRecord(
                outcome="revoked", time=now, actor=actor, revoked_at=now, revoke_detail=f"expired: revokes {mark[0]}",
                vault_id=vault, principal_id=a.principal_id, scope=a.scope, role_definition_id=a.role_definition_id,
                assignment_id=a.id, expires_at=mark[1], detail=detail))
            log.info("orphan revoked", extra={"kv_remediate": {"event": "revoke", "grant_id": mark[0],
                                                                "detail": detail}})
            results.append(Revocation(mark[0], "sweep", revoked=True, vault=vault, principal=a.principal_id,
                                      assignment_id=a.id, deleted=gone, detail=detail))
    return results


async def reconcile(writer: ArmWriter, grants: GrantStore, now: datetime, *, actor: str | None = None,
                    grace: timedelta = GRACE, backend: str | None = None) -> list[Revocation]:
    """The revocation timer's pass (and ``revoke --reconcile``): settle old intents, revoke what has expired,
    then remove expired labelled assignments no record accounts for. Every action is recorded. Records of the
    other backend (emulator or Azure) are left alone."""
    results = await settle_unresolved(writer, grants, now, grace, backend=backend)
    results += await revoke_expired(writer, grants, now, actor, backend=backend)
    results += await sweep_labelled(writer, grants, now, actor)
    return results
