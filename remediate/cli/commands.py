"""The CLI's commands: each parses its input, calls one core function and renders (no logic lives here)."""

from __future__ import annotations

import argparse
from typing import Any

from .batch import (
    Progress,
    denials_from_args,
    display_names,
    emit,
    fmt,
    parse_batch,
    run_batch,
)


def cmd_parse(args: argparse.Namespace) -> int:
    from ..model import ParseResult
    from ..render.denials import denials_table

    batch = parse_batch(args)
    result = ParseResult(batch.denials, batch.skipped, batch.notes)
    emit(result.to_dict(), lambda: denials_table(result), args.output)
    return 2 if batch.unusable else 0


def cmd_diagnose(args: argparse.Namespace) -> int:

    from ..backends import fact_source
    from ..render.findings import report
    from ..service import diagnose

    parsed = denials_from_args(args)
    text = fmt(args.output) == "text"
    progress = Progress("diagnosing", Progress.wanted(args.output))

    async def go() -> tuple[Any, dict[str, str]]:
        async with fact_source(args.snapshot, args.subscription) as facts:
            got = await diagnose(parsed.denials, facts, progress=progress, entry="cli")
            return got, (await display_names(facts, got.findings) if text else {})

    result, names, doc = run_batch(go(), progress, parsed.notes)
    doc["stats"]["skipped"] = parsed.skipped
    emit(doc, lambda: report(result.findings, result.stats, (*parsed.notes, *result.notes), names), args.output)
    return 2 if parsed.unusable else 0


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def remediate_exit(findings: Any, requested: bool, unusable: bool) -> int:
    """3 when Azure refused a write, else 2 when an input was unusable (--keep-going), else 4 when --apply was
    refused for any finding (by any rule, ``mode`` included), else 0."""
    from ..render.findings import outcome_counts, refusals

    if outcome_counts(findings)["failed"]:
        return 3
    if unusable:
        return 2
    return 4 if requested and refusals(findings, requested) else 0


def _proposer(args: argparse.Namespace, policy: Any) -> Any:
    """Who proposes the approval requests ``--apply`` opens (never their approver): the credential's identity
    against Azure, when the policy routes anything to approval and it can be told; None otherwise."""
    from ..errors import InputError
    from .approvals import operator

    if not args.apply or args.snapshot or (policy.mode != "approve" and policy.approve_above_tier is None):
        return None
    try:
        return operator(None, None)
    except InputError:
        return None


def cmd_remediate(args: argparse.Namespace) -> int:
    import getpass

    from ..apply import ApplyContext
    from ..backends import fact_source, open_approvals, open_grants, open_slots
    from ..guard import load_policy
    from ..model import Proof
    from ..render.findings import apply_summary, report
    from ..service import remediate
    from ..store.grants import EMULATOR

    policy = load_policy(args.policy)
    parsed = denials_from_args(args)
    grants = open_grants(args.state)
    text = fmt(args.output) == "text"
    progress = Progress("diagnosing", Progress.wanted(args.output))

    async def go() -> tuple[Any, dict[str, str]]:
        async with open_slots(args.state) as slots:
            # --apply is an operator's explicit act: it stands in for audit evidence (every other rule holds).
            operator = Proof("operator", f"kv-remediate remediate --apply by {getpass.getuser()}") if args.apply \
                else None
            ctx = ApplyContext(policy=policy, grants=grants, slots=slots, now=_now(), requested=args.apply,
                               actor=("emulator" if args.snapshot else None), operator=operator,
                               backend=EMULATOR if args.snapshot else None,
                               approvals=open_approvals(args.state) if args.apply else None,
                               proposer=_proposer(args, policy))
            async with fact_source(args.snapshot, args.subscription, snapshot_out=args.snapshot_out) as facts:
                got = await remediate(parsed.denials, facts, ctx, progress=progress, entry="cli")
                return got, (await display_names(facts, got.findings) if text else {})

    result, names, doc = run_batch(go(), progress, parsed.notes)
    summary = apply_summary(result.findings, args.apply, bool(args.snapshot), args.snapshot_out)
    if args.snapshot and args.apply and not args.snapshot_out:
        doc["notes"].append("the changes were made in the bundled emulator only and are gone with it; "
                            "--snapshot-out FILE keeps the tenant as it stands after the run")
    emit(doc, lambda: report(result.findings, result.stats, (*parsed.notes, *result.notes), names) + "\n\n" + summary,
          args.output)
    return remediate_exit(result.findings, args.apply, bool(parsed.unusable))


def cmd_grants(args: argparse.Namespace) -> int:
    import asyncio

    from ..backends import open_grants
    from ..render.grants import grants_table

    grants = open_grants(args.state)
    records = grants.list(limit=args.limit)
    doc = {"schema": "kv-remediate/grants@1", "grants": [r.to_dict() for r in records]}
    names: dict[str, str] = {}
    if args.snapshot and records and fmt(args.output) == "text":
        from ..backends import fact_source

        async def lookup() -> dict[str, str]:
            async with fact_source(args.snapshot) as facts:
                found: dict[str, str] = await facts.display_names([r.principal_id or "" for r in records])
                return found
        names = asyncio.run(lookup())
    now = _now()
    emit(doc, lambda: grants_table(records, now, names), args.output)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    import asyncio

    from ..apply import reconcile, revoke, revoke_expired
    from ..backends import fact_source, open_grants
    from ..errors import InputError
    from ..facts.writes import ArmWriter
    from ..outcome import Revocation
    from ..render.grants import revocations_text
    from ..store.grants import EMULATOR

    grants = open_grants(args.state)
    backend = EMULATOR if args.snapshot else None
    now = _now()
    record = None
    if args.grant:
        record = grants.get(args.grant)
        if record is None:
            raise InputError(f"--grant {args.grant}", "no such grant record (see `kv-remediate grants`)")

    async def work(facts: Any) -> list[Revocation]:
        writer = ArmWriter(facts)
        if record is not None:
            return [await revoke(record, writer, grants, now, why="revoked by request", backend=backend)]
        if args.reconcile:
            return await reconcile(writer, grants, now, backend=backend)
        return await revoke_expired(writer, grants, now, backend=backend)

    async def go() -> tuple[list[Revocation], dict[str, str]]:
        async with fact_source(args.snapshot, snapshot_out=args.snapshot_out) as facts:
            done = await work(facts)
            ids = [str(r.principal) for r in done if r.principal]
            names: dict[str, str] = {}
            if ids and fmt(args.output) == "text":
                try:
                    names = await facts.display_names(ids)
                except Exception:   # names only make the text friendlier
                    names = {}
            return done, names

    results, names = asyncio.run(go())
    doc = {"schema": "kv-remediate/revocations@1", "revocations": [r.to_dict() for r in results]}
    records = {r.grant_id: rec for r in results if r.grant_id for rec in [grants.get(r.grant_id)] if rec is not None}
    text = revocations_text(results, records, names)
    if args.snapshot and not args.snapshot_out and any(r.revoked for r in results):
        text += ("\nnote: the changes were made in the bundled emulator only and are gone with it; "
                 "--snapshot-out FILE keeps the tenant as it stands after the run")
    emit(doc, text, args.output)
    return 3 if any(r.error for r in results) else 0


def cmd_operations(args: argparse.Namespace) -> int:
    """The catalogue's operation names with their data action and access-policy permission."""
    from .. import catalog
    from ..render.grants import permissions_words
    from ..render.table import aligned

    ops = sorted(catalog.operations(), key=lambda o: (o.object_kind, o.name.lower()))
    if args.kind:
        ops = [o for o in ops if o.object_kind == args.kind]
    doc = {"schema": "kv-remediate/operations@1", "operations": [
        {"name": o.name, "object_kind": o.object_kind, "method": o.method, "path": o.path,
         "data_actions": list(o.data_actions), "access_policy": {k: list(v) for k, v in o.access_policy.items()}}
        for o in ops]}
    rows = [[o.name, "; ".join(a.removeprefix("Microsoft.KeyVault/vaults/") for a in o.data_actions) or "-",
             permissions_words({k: list(v) for k, v in o.access_policy.items()})] for o in ops]

    def text() -> str:
        action = "DATA ACTION (Microsoft.KeyVault/vaults/...)"
        return ("\n".join(aligned(["OPERATION", action, "ACCESS-POLICY PERMISSION"], rows, width=120,
                                   wrap=(action, "ACCESS-POLICY PERMISSION")))
                + f"\n\n{len(rows)} operations (the OperationName of Key Vault's audit log); use one with "
                "`diagnose --operation NAME`")
    emit(doc, text, args.output)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    from importlib import resources

    from ..backends import fact_source
    from ..intake import parse_inputs
    from ..render.findings import table
    from ..service import diagnose

    demo = resources.files("remediate").joinpath("demo")
    inputs = sorted((f.name, f.read_bytes()) for f in demo.joinpath("inputs").iterdir() if f.is_file())
    parsed = parse_inputs(inputs)
    text = fmt(args.output) == "text"

    async def go(tenant: str) -> Any:
        async with fact_source(tenant) as facts:
            result = await diagnose(parsed.denials, facts)
            # one more Graph call, only for the people reading the text
            names = await display_names(facts, result.findings) if text else {}
        return result, names

    with resources.as_file(demo.joinpath("tenant.json")) as tenant:
        result, names = asyncio.run(go(str(tenant)))
    doc = result.to_dict()
    doc["notes"] = list(parsed.notes) + doc.get("notes", [])
    emit(doc, lambda: "kv-remediate demo: the bundled sample tenant (5 vaults, 12 principals) and "
          f"{len(inputs)} inputs\n\n" + table(result.findings, result.stats, names), args.output)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..localhost.supervisor import serve

    return serve(host=args.host, port=args.port, snapshot=args.snapshot, workers=args.workers,
                 function_key=args.function_key, insecure_no_key=args.insecure_no_key,
                 worker_restarts=args.worker_restarts)
