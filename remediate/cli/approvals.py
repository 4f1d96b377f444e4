"""The CLI's approval commands: ``approvals`` (what waits), ``approve ID`` and ``reject ID`` (an operator's
decision, recorded with their identity: the claims of the credential in use, or ``--as``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .batch import emit

if TYPE_CHECKING:
    from ..approvals.model import Approver
    from ..approvals.service import Decided


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def operator(as_oid: str | None, snapshot: str | None) -> Approver:
    """Who decides: ``--as OBJECT_ID``, else the ``oid`` (and name) of the token the credential in use issues for
    ARM (as ``az account show`` names the signed-in identity). The emulator's credential names nobody."""
    from ..approvals.model import Approver
    from ..armid import is_guid
    from ..errors import InputError

    if as_oid is not None:
        if not is_guid(as_oid):
            raise InputError("--as", f"{as_oid!r} is not an Entra ID object id (GUID)")
        return Approver(as_oid.lower())
    if snapshot:
        raise InputError("--as", "with --snapshot the bundled emulator's credential names nobody; pass --as "
                         "OBJECT_ID (the object id the decision is recorded under)")
    import os

    from azure.core.exceptions import ClientAuthenticationError

    from ..clouds import cloud_from_env
    from ..credentials import default_credential, token_identity

    try:
        token = default_credential().get_token(cloud_from_env(os.environ).arm_scope).token
    except ClientAuthenticationError as exc:
        raise InputError("identity", "no credential could sign in to name who decides (az login, or the "
                         "environment's identity); or pass --as OBJECT_ID") from exc
    who = token_identity(token)
    if who is None:
        raise InputError("identity", "the credential's token carries no object id (oid); pass --as OBJECT_ID")
    return Approver(*who)


def cmd_approvals(args: argparse.Namespace) -> int:
    import asyncio

    from ..approvals import service
    from ..backends import open_approvals
    from ..render.approvals import approvals_table

    store = open_approvals(args.state)
    now = _now()
    if args.all:
        asyncio.run(service.expire_due(store, now))
        found = store.list(limit=args.limit)
    else:
        found = asyncio.run(service.pending(store, now, args.limit))
    doc = {"schema": "kv-remediate/approvals@1", "approvals": [r.to_dict() for r in found]}
    emit(doc, lambda: approvals_table(found, now), args.output)
    return 0


def _exit(d: Decided) -> int:
    """0 recorded, applied or rejected; 2 no such request; 3 the write failed; 4 refused, or ended unapplied."""
    if d.refused == "not_found":
        return 2
    if d.status == "failed" and d.request is not None and d.request.end == "error":
        return 3
    return 4 if d.status in ("refused", "failed") else 0


def _decide(args: argparse.Namespace, verb: str) -> int:
    import asyncio
    import socket

    from ..apply import ApplyContext
    from ..approvals.model import Act
    from ..approvals.service import decide
    from ..backends import fact_source, open_approvals, open_grants, open_slots
    from ..guard import load_policy
    from ..render.approvals import decided_text
    from ..store.grants import EMULATOR

    policy = load_policy(args.policy)
    who = operator(args.as_oid, args.snapshot)
    act = Act(verb, who, "cli", origin=socket.gethostname(), reason=args.reason)  # type: ignore[arg-type]
    store, grants = open_approvals(args.state), open_grants(args.state)

    async def go() -> Decided:
        async with open_slots(args.state) as slots:
            ctx = ApplyContext(policy=policy, grants=grants, slots=slots, now=_now(), requested=True,
                               actor=("emulator" if args.snapshot else None),
                               backend=EMULATOR if args.snapshot else None)
            if verb == "reject":
                return await decide(store, args.id, act, facts=None, ctx=ctx)
            async with fact_source(args.snapshot, snapshot_out=args.snapshot_out) as facts:
                return await decide(store, args.id, act, facts=facts, ctx=ctx)

    done = asyncio.run(go())
    doc = {"schema": "kv-remediate/approval-decision@1", "status": done.status, "refused": done.refused,
           "message": done.message, "request": done.request.to_dict() if done.request else None,
           "outcome": done.outcome.to_dict() if done.outcome else None}
    emit(doc, lambda: decided_text(done), args.output)
    return _exit(done)


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")
