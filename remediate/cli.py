"""Command line: parse arguments, call one core function, render. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RemediateError

MAX_INPUT_BYTES = 4 * 1024 * 1024


def _read_inputs(paths: Sequence[str]) -> list[tuple[str, bytes]]:
    """Read every INPUT (a path or ``-``) before anything is processed: a bad one fails the batch."""
    from .errors import InputError

    out: list[tuple[str, bytes]] = []
    for p in paths or ["-"]:
        if p == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
            name = "<stdin>"
        else:
            path = Path(p)
            try:
                with path.open("rb") as fh:
                    data = fh.read(MAX_INPUT_BYTES + 1)
            except OSError as exc:
                raise InputError(p, f"cannot read the file ({exc.strerror or exc})") from exc
            name = p
        if len(data) > MAX_INPUT_BYTES:
            raise InputError(name, "larger than 4 MiB; split the batch into smaller files")
        out.append((name, data))
    return out


def _emit(doc: dict[str, Any], text: str, output: str | None) -> None:
    fmt = output or ("text" if sys.stdout.isatty() else "json")
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _caps(args: argparse.Namespace) -> dict[str, int | None]:
    """Intake caps for an operator's batch: the flags, else the app's settings when set, else none (an export of
    thousands of audit rows is a normal CLI input; the app, which takes unauthenticated alerts, keeps defaults)."""
    import os

    from .errors import InputError
    from .intake.limits import MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING

    out: dict[str, int | None] = {}
    for key, flag, setting in (("max_denials", "--max-denials", MAX_DENIALS_SETTING),
                               ("max_principals", "--max-principals", MAX_PRINCIPALS_SETTING)):
        value = getattr(args, key, None)
        where = flag
        if value is None and (os.environ.get(setting) or "").strip():
            where, raw = setting, os.environ[setting].strip()
            value = int(raw) if raw.isdigit() else -1
        if value is not None and value < 0:
            raise InputError(where, "must be a whole number (0: no cap)")
        out[key] = value or None
    return out


def cmd_parse(args: argparse.Namespace) -> int:
    from .intake import parse_inputs
    from .render.denials import denials_table

    result = parse_inputs(_read_inputs(args.inputs), **_caps(args))
    _emit(result.to_dict(), denials_table(result), args.output)
    return 0


def _denials_from_args(args: argparse.Namespace) -> Any:
    """The batch: INPUT files, or the runbook flags turned into a runbook request (one parser for both)."""
    from .errors import InputError
    from .intake import parse_inputs

    if getattr(args, "principal", None) or getattr(args, "vault", None):
        if args.inputs:
            raise InputError("--principal", "give either INPUT files or --principal/--vault/--operation, not both")
        missing = [f for f in ("principal", "vault", "operation") if not getattr(args, f)]
        if missing:
            raise InputError("--" + missing[0], "is required with --principal/--vault/--operation")
        request = {"principal_id": args.principal, "vault": args.vault, "operation": args.operation,
                   "object": args.object}
        return parse_inputs([("--principal/--vault/--operation", json.dumps(request).encode())])
    return parse_inputs(_read_inputs(args.inputs), **_caps(args))


async def _diagnose(denials: Any, snapshot: str | None, subscriptions: Sequence[str] | None) -> Any:
    from .service import diagnose
    from .wiring import fact_source

    async with fact_source(snapshot, subscriptions) as facts:
        return await diagnose(denials, facts)


def cmd_diagnose(args: argparse.Namespace) -> int:
    import asyncio

    from .render.findings import report

    parsed = _denials_from_args(args)
    result = asyncio.run(_diagnose(parsed.denials, args.snapshot, args.subscription))
    doc = result.to_dict()
    doc["notes"] = list(parsed.notes) + doc.get("notes", [])
    doc["stats"]["skipped"] = parsed.skipped
    _emit(doc, report(result.findings, result.stats, tuple(parsed.notes)), args.output)
    return 0


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def cmd_remediate(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from .apply import ApplyContext
    from .guard import load_policy
    from .model import Proof
    from .render.findings import report
    from .service import remediate
    from .store.select import open_grants, open_slots
    from .wiring import fact_source

    policy = load_policy(args.policy)
    parsed = _denials_from_args(args)
    grants = open_grants(args.state)

    async def go() -> Any:
        async with open_slots(args.state) as slots:
            # --apply is an operator's explicit act: it stands in for audit evidence (every other rule holds).
            operator = Proof("operator", f"kv-remediate remediate --apply by {getpass.getuser()}") if args.apply \
                else None
            ctx = ApplyContext(policy=policy, grants=grants, slots=slots, now=_now(), requested=args.apply,
                               actor=("emulator" if args.snapshot else None), operator=operator)
            async with fact_source(args.snapshot, args.subscription, snapshot_out=args.snapshot_out) as facts:
                return await remediate(parsed.denials, facts, ctx)

    result = asyncio.run(go())
    doc = result.to_dict()
    doc["notes"] = list(parsed.notes) + doc.get("notes", [])
    _emit(doc, report(result.findings, result.stats, tuple(parsed.notes)), args.output)
    refused = any((f.outcome or {}).get("outcome") == "refused" for f in result.findings)
    return 4 if args.apply and refused else 0


def cmd_grants(args: argparse.Namespace) -> int:
    from .store.select import open_grants

    grants = open_grants(args.state)
    records = grants.list(limit=args.limit)
    doc = {"schema": "kv-remediate/grants@1", "grants": [r.to_dict() for r in records]}
    lines = [f"{r.time:%Y-%m-%d %H:%M} {r.outcome:<15} {r.id}  {r.principal_id or '-'} on {r.scope or '-'}"
             + (f"  refused_by={r.refused_by}" if r.refused_by else "")
             + (f"  expires={r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "")
             + (f"  revoked={r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "") for r in records]
    _emit(doc, "\n".join(lines) or "no grant records", args.output)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    import asyncio

    from .apply import reconcile, revoke, revoke_expired
    from .errors import InputError
    from .facts.writes import ArmWriter
    from .store.select import open_grants
    from .wiring import fact_source

    grants = open_grants(args.state)
    now = _now()
    record = None
    if args.grant:
        record = grants.get(args.grant)
        if record is None:
            raise InputError(f"--grant {args.grant}", "no such grant record (see `kv-remediate grants`)")

    async def work(facts: Any) -> list[dict[str, Any]]:
        writer = ArmWriter(facts)
        if record is not None:
            return [await revoke(record, writer, grants, now, why="revoked by request")]
        if args.reconcile:
            return await reconcile(writer, grants, now)
        return await revoke_expired(writer, grants, now)

    async def go() -> list[dict[str, Any]]:
        async with fact_source(args.snapshot, snapshot_out=args.snapshot_out) as facts:
            return await work(facts)

    results = asyncio.run(go())
    doc = {"schema": "kv-remediate/revocations@1", "revocations": results}
    def line(r: dict[str, Any]) -> str:
        who = str(r.get("grant_id") or r.get("vault"))
        if "reconciled" in r:
            return f"{who}: " + (f"settled as {r['reconciled']}: {r.get('detail')}" if r["reconciled"] else
                                 f"not settled: {r.get('error')}")
        return f"{who}: " + (r.get("detail") or "revoked" if r.get("revoked") else
                             "not revoked: " + str(r.get("reason") or r.get("error")))

    text = "\n".join(line(r) for r in results) or "nothing to revoke"
    _emit(doc, text, args.output)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    from importlib import resources

    from .intake import parse_inputs
    from .render.findings import table
    from .service import diagnose
    from .wiring import fact_source

    demo = resources.files("remediate").joinpath("demo")
    inputs = sorted((f.name, f.read_bytes()) for f in demo.joinpath("inputs").iterdir() if f.is_file())
    parsed = parse_inputs(inputs)

    async def go(tenant: str) -> Any:
        async with fact_source(tenant) as facts:
            result = await diagnose(parsed.denials, facts)
            # one more Graph call, only for the people reading the table
            names = await facts.display_names([f.denial.principal.object_id or "" for f in result.findings])
        return result, names

    with resources.as_file(demo.joinpath("tenant.json")) as tenant:
        result, names = asyncio.run(go(str(tenant)))
    _emit(result.to_dict(), "kv-remediate demo: the bundled sample tenant (5 vaults, 12 principals) and "
          f"{len(inputs)} inputs\n\n" + table(result.findings, result.stats, names), args.output)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .localhost.supervisor import serve

    return serve(host=args.host, port=args.port, snapshot=args.snapshot, workers=args.workers,
                 function_key=args.function_key, insecure_no_key=args.insecure_no_key)


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--snapshot", metavar="FILE", help="a tenant snapshot served by the bundled ARM emulator")
    p.add_argument("--subscription", action="append", help="subscription to search (repeatable)")
    p.add_argument("--principal", metavar="OID")
    p.add_argument("--vault", metavar="NAME_OR_ID")
    p.add_argument("--operation", metavar="NAME")
    p.add_argument("--object", metavar="KIND/NAME")
    p.add_argument("--output", choices=["text", "json"])
    _add_cap_args(p)


def _add_cap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-denials", type=int, metavar="N",
                   help="refuse an input that yields more than N denials (default: KV_REMEDIATE_MAX_DENIALS, "
                        "else no cap; 0: no cap)")
    p.add_argument("--max-principals", type=int, metavar="N",
                   help="refuse a batch naming more than N distinct principals (default: "
                        "KV_REMEDIATE_MAX_PRINCIPALS, else no cap; 0: no cap)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kv-remediate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kv-remediate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="what the input says, no Azure calls")
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--output", choices=["text", "json"])
    _add_cap_args(p)
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("diagnose", help="why it failed, and the least-privilege fix")
    _add_batch_args(p)
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("remediate", help="diagnose, then apply what policy allows")
    _add_batch_args(p)
    p.add_argument("--policy", metavar="FILE", help="remediation policy (YAML or JSON); default: suggest only")
    p.add_argument("--apply", action="store_true", help="apply the plans policy allows (default: suggest)")
    p.add_argument("--snapshot-out", metavar="FILE", help="write the tenant as it stands after the run")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    p.set_defaults(func=cmd_remediate)

    p = sub.add_parser("grants", help="the audit trail of applied, refused and revoked grants")
    p.add_argument("--snapshot", metavar="FILE", help="accepted for symmetry; records live in the state store")
    p.add_argument("--state", metavar="FILE")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--output", choices=["text", "json"])
    p.set_defaults(func=cmd_grants)

    p = sub.add_parser("revoke", help="remove expired grants, or one recorded grant")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expired", action="store_true")
    g.add_argument("--grant", metavar="ID")
    g.add_argument("--reconcile", action="store_true",
                   help="what the revocation timer does: settle intents a crash left pending (reading Azure), "
                        "revoke expired grants, delete expired role assignments labelled as ours with no record")
    p.add_argument("--snapshot", metavar="FILE")
    p.add_argument("--snapshot-out", metavar="FILE")
    p.add_argument("--state", metavar="FILE")
    p.add_argument("--output", choices=["text", "json"])
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("demo", help="the main job on the bundled sample tenant")
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="the function app's routes and queue worker on loopback (like func start)")
    p.add_argument("--snapshot", metavar="FILE", help="a tenant snapshot served by the bundled ARM emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7071)
    p.add_argument("--workers", type=int, default=1, help="queue worker processes (0: HTTP only)")
    p.add_argument("--function-key", metavar="KEY",
                   help="the function key routes require (default: KV_REMEDIATE_FUNCTION_KEY, else a random key "
                        "generated and printed at start)")
    p.add_argument("--insecure-no-key", action="store_true",
                   help="accept requests without a function key (Host/Origin checks and CSRF refusal still apply)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except RemediateError as exc:
        sys.stderr.write(f"kv-remediate {args.command}: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
