"""Command line: parse arguments, call one core function, render. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RemediateError

DESCRIPTION = """\
kv-remediate finds out why a request to Azure Key Vault was denied (403, 401 or 429) and how to fix it.

Give it what you have: an Azure Monitor alert, Key Vault audit-log records, or the error text an SDK or the Azure
CLI printed (a file, or - for standard input). It reads the vault, its role assignments or access policies and the
caller from Azure, names the cause (a missing role, a firewall, a disabled secret, throttling, ...) and prints the
least-privilege fix as an az command and Bicep. `remediate --apply` makes that change where your policy allows it,
`grants` lists what was changed, and `revoke` takes it back. Nothing changes unless you ask.

Output is text on a terminal and JSON when piped (or --output json)."""

EPILOG = """\
examples:
  kv-remediate demo                                    # try it on the bundled sample tenant, no Azure needed
  kv-remediate diagnose error.txt                      # why was this denied, and what is the fix?
  kv-remediate diagnose --principal OID --vault kv-payments --operation SecretGet --object secrets/db-password
  az monitor log-analytics query ... | kv-remediate diagnose -   # audit-log rows from a pipe (JSON out)
  kv-remediate remediate alert.json --policy policy.yaml --apply
  kv-remediate operations                              # the operation names --operation accepts

exit codes: 0 done; 2 unusable input, arguments or policy; 3 Azure could not be reached or refused a change;
4 remediate --apply was refused by policy for at least one finding. See docs/cli.md."""

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


def _fmt(output: str | None) -> str:
    return output or ("text" if sys.stdout.isatty() else "json")


def _emit(doc: dict[str, Any], text: str | Callable[[], str], output: str | None) -> None:
    """One JSON document, or the text a person reads (``text`` may be built only when it is needed)."""
    if _fmt(output) == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        body = text() if callable(text) else text
        sys.stdout.write(body if body.endswith("\n") else body + "\n")


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


@dataclass
class Batch:
    """What intake made of the INPUTs, and (``--keep-going``) the inputs left out as unusable."""

    result: Any                                   # intake's ParseResult
    unusable: list[str] = field(default_factory=list)

    @property
    def denials(self) -> Any:
        return self.result.denials

    @property
    def skipped(self) -> int:
        return int(self.result.skipped)

    @property
    def notes(self) -> tuple[str, ...]:
        return (*self.result.notes, *(f"{u} (unusable input, left out: --keep-going)" for u in self.unusable))


def _parse_batch(args: argparse.Namespace) -> Batch:
    """The batch: all or nothing, or with ``--keep-going`` every usable input (the others become notes; the
    batch-wide principal cap still holds over what is kept)."""
    from .errors import InputError, TooLargeError
    from .intake import parse_inputs
    from .intake.limits import principal_key
    from .model import ParseResult

    caps = _caps(args)
    if not getattr(args, "keep_going", False):
        return Batch(parse_inputs(_read_inputs(args.inputs), **caps))
    denials: list[Any] = []
    skipped, notes, unusable = 0, list[str](), list[str]()
    for path in args.inputs or ["-"]:
        try:
            got = parse_inputs(_read_inputs([path]), **caps)
        except InputError as exc:
            unusable.append(exc.message)
            continue
        denials += got.denials
        skipped += got.skipped
        notes += got.notes
    cap = caps.get("max_principals")
    distinct = {k for k in (principal_key(d.principal) for d in denials) if k}
    if cap is not None and len(distinct) > cap:
        raise TooLargeError("the batch", "distinct principals", len(distinct), cap,
                            "split the batch or raise --max-principals")
    return Batch(ParseResult(tuple(denials), skipped, tuple(notes)), unusable)


def cmd_parse(args: argparse.Namespace) -> int:
    from .model import ParseResult
    from .render.denials import denials_table

    batch = _parse_batch(args)
    result = ParseResult(batch.denials, batch.skipped, batch.notes)
    _emit(result.to_dict(), lambda: denials_table(result), args.output)
    return 2 if batch.unusable else 0


def _check_operation(name: str) -> None:
    """An unknown --operation names the nearest known ones (`decrypt` -> KeyDecrypt)."""
    from . import catalog
    from .errors import InputError

    if catalog.operation(name) is not None:
        return
    near = catalog.nearest_operations(name)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    raise InputError("--operation", f"{name!r} is not a Key Vault operation name; {hint}"
                     "`kv-remediate operations` lists them all")


def _denials_from_args(args: argparse.Namespace) -> Batch:
    """The batch: INPUT files, or the runbook flags turned into a runbook request (one parser for both)."""
    from .errors import InputError
    from .intake import parse_inputs

    if getattr(args, "principal", None) or getattr(args, "vault", None):
        if args.inputs:
            raise InputError("--principal", "give either INPUT files or --principal/--vault/--operation, not both")
        missing = [f for f in ("principal", "vault", "operation") if not getattr(args, f)]
        if missing:
            raise InputError("--" + missing[0], "is required with --principal/--vault/--operation")
        _check_operation(args.operation)
        request = {"principal_id": args.principal, "vault": args.vault, "operation": args.operation,
                   "object": args.object}
        return Batch(parse_inputs([("--principal/--vault/--operation", json.dumps(request).encode())]))
    if getattr(args, "operation", None):
        raise InputError("--operation", "is used with --principal and --vault, not with INPUT files")
    return _parse_batch(args)


PROGRESS_FROM = 20        # batches of fewer distinct denials finish before a progress line would help
PROGRESS_EVERY_S = 0.2    # the progress line is redrawn at most this often (seconds)


class Progress:
    """Progress of a long batch on standard error (count, rate, ETA), only when standard error is a terminal and
    the output is text: never in JSON, never when piped or captured."""

    def __init__(self, label: str, enabled: bool) -> None:
        import time

        self._label, self._enabled, self._start, self._last = label, enabled, time.monotonic(), 0.0
        self.shown = False

    @staticmethod
    def wanted(output: str | None) -> bool:
        return _fmt(output) == "text" and sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if not self._enabled or total < PROGRESS_FROM or (done < total and now - self._last < PROGRESS_EVERY_S):
            return
        self._last = now
        sys.stderr.write("\r" + progress_line(self._label, done, total, now - self._start) + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _run(batch: Coroutine[Any, Any, tuple[Any, dict[str, str]]], progress: Progress,
         notes: Sequence[str]) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """Run one diagnose/remediate batch with its progress line; the result, the names, and its JSON with intake's
    ``notes`` first."""
    import asyncio

    try:
        result, names = asyncio.run(batch)
    finally:
        progress.close()
    doc: dict[str, Any] = result.to_dict()
    doc["notes"] = list(notes) + doc.get("notes", [])
    return result, names, doc


def progress_line(label: str, done: int, total: int, elapsed: float) -> str:
    """``diagnosing 120/500 (24%), 35.2/s, ETA 11s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f", ETA {round((total - done) / rate)}s" if rate and done < total else ""
    return f"{label} {done}/{total} ({100 * done // max(total, 1)}%), {rate:.1f}/s{eta}"


async def _names(facts: Any, findings: Any) -> dict[str, str]:
    """Display names of the callers and groups the text names (one Graph call; {} without Graph)."""
    from .render.findings import principal_ids

    ids = principal_ids(findings)
    lookup = getattr(facts, "display_names", None)
    if not ids or lookup is None:
        return {}
    try:
        names: dict[str, str] = await lookup(ids)
    except Exception:   # names only make the text friendlier: never fail the command for them
        return {}
    return names


def cmd_diagnose(args: argparse.Namespace) -> int:

    from .backends import fact_source
    from .render.findings import report
    from .service import diagnose

    parsed = _denials_from_args(args)
    text = _fmt(args.output) == "text"
    progress = Progress("diagnosing", Progress.wanted(args.output))

    async def go() -> tuple[Any, dict[str, str]]:
        async with fact_source(args.snapshot, args.subscription) as facts:
            got = await diagnose(parsed.denials, facts, progress=progress, entry="cli")
            return got, (await _names(facts, got.findings) if text else {})

    result, names, doc = _run(go(), progress, parsed.notes)
    doc["stats"]["skipped"] = parsed.skipped
    _emit(doc, lambda: report(result.findings, result.stats, (*parsed.notes, *result.notes), names), args.output)
    return 2 if parsed.unusable else 0


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def remediate_exit(findings: Any, requested: bool, unusable: bool) -> int:
    """3 when Azure refused a write, else 2 when an input was unusable (--keep-going), else 4 when --apply was
    refused for any finding (by any rule, ``mode`` included), else 0."""
    from .render.findings import outcome_counts, refusals

    if outcome_counts(findings)["failed"]:
        return 3
    if unusable:
        return 2
    return 4 if requested and refusals(findings, requested) else 0


def cmd_remediate(args: argparse.Namespace) -> int:
    import getpass

    from .apply import ApplyContext
    from .backends import fact_source, open_grants, open_slots
    from .guard import load_policy
    from .model import Proof
    from .render.findings import apply_summary, report
    from .service import remediate
    from .store.grants import EMULATOR

    policy = load_policy(args.policy)
    parsed = _denials_from_args(args)
    grants = open_grants(args.state)
    text = _fmt(args.output) == "text"
    progress = Progress("diagnosing", Progress.wanted(args.output))

    async def go() -> tuple[Any, dict[str, str]]:
        async with open_slots(args.state) as slots:
            # --apply is an operator's explicit act: it stands in for audit evidence (every other rule holds).
            operator = Proof("operator", f"kv-remediate remediate --apply by {getpass.getuser()}") if args.apply \
                else None
            ctx = ApplyContext(policy=policy, grants=grants, slots=slots, now=_now(), requested=args.apply,
                               actor=("emulator" if args.snapshot else None), operator=operator,
                               backend=EMULATOR if args.snapshot else None)
            async with fact_source(args.snapshot, args.subscription, snapshot_out=args.snapshot_out) as facts:
                got = await remediate(parsed.denials, facts, ctx, progress=progress, entry="cli")
                return got, (await _names(facts, got.findings) if text else {})

    result, names, doc = _run(go(), progress, parsed.notes)
    summary = apply_summary(result.findings, args.apply, bool(args.snapshot), args.snapshot_out)
    if args.snapshot and args.apply and not args.snapshot_out:
        doc["notes"].append("the changes were made in the bundled emulator only and are gone with it; "
                            "--snapshot-out FILE keeps the tenant as it stands after the run")
    _emit(doc, lambda: report(result.findings, result.stats, (*parsed.notes, *result.notes), names) + "\n\n" + summary,
          args.output)
    return remediate_exit(result.findings, args.apply, bool(parsed.unusable))


def cmd_grants(args: argparse.Namespace) -> int:
    import asyncio

    from .backends import open_grants
    from .render.grants import grants_table

    grants = open_grants(args.state)
    records = grants.list(limit=args.limit)
    doc = {"schema": "kv-remediate/grants@1", "grants": [r.to_dict() for r in records]}
    names: dict[str, str] = {}
    if args.snapshot and records and _fmt(args.output) == "text":
        from .backends import fact_source

        async def lookup() -> dict[str, str]:
            async with fact_source(args.snapshot) as facts:
                found: dict[str, str] = await facts.display_names([r.principal_id or "" for r in records])
                return found
        names = asyncio.run(lookup())
    now = _now()
    _emit(doc, lambda: grants_table(records, now, names), args.output)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    import asyncio

    from .apply import reconcile, revoke, revoke_expired
    from .backends import fact_source, open_grants
    from .errors import InputError
    from .facts.writes import ArmWriter
    from .outcome import Revocation
    from .render.grants import revocations_text
    from .store.grants import EMULATOR

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
            if ids and _fmt(args.output) == "text":
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
    _emit(doc, text, args.output)
    return 3 if any(r.error for r in results) else 0


def cmd_operations(args: argparse.Namespace) -> int:
    """The catalogue's operation names with their data action and access-policy permission."""
    from . import catalog
    from .render.grants import permissions_words
    from .render.table import aligned

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
    _emit(doc, text, args.output)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    from importlib import resources

    from .backends import fact_source
    from .intake import parse_inputs
    from .render.findings import table
    from .service import diagnose

    demo = resources.files("remediate").joinpath("demo")
    inputs = sorted((f.name, f.read_bytes()) for f in demo.joinpath("inputs").iterdir() if f.is_file())
    parsed = parse_inputs(inputs)
    text = _fmt(args.output) == "text"

    async def go(tenant: str) -> Any:
        async with fact_source(tenant) as facts:
            result = await diagnose(parsed.denials, facts)
            # one more Graph call, only for the people reading the text
            names = await _names(facts, result.findings) if text else {}
        return result, names

    with resources.as_file(demo.joinpath("tenant.json")) as tenant:
        result, names = asyncio.run(go(str(tenant)))
    doc = result.to_dict()
    doc["notes"] = list(parsed.notes) + doc.get("notes", [])
    _emit(doc, lambda: "kv-remediate demo: the bundled sample tenant (5 vaults, 12 principals) and "
          f"{len(inputs)} inputs\n\n" + table(result.findings, result.stats, names), args.output)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .localhost.supervisor import serve

    return serve(host=args.host, port=args.port, snapshot=args.snapshot, workers=args.workers,
                 function_key=args.function_key, insecure_no_key=args.insecure_no_key,
                 worker_restarts=args.worker_restarts)


_OUTPUT_HELP = "text (a person reads it; the default on a terminal) or json (the default when piped)"
_SNAPSHOT_HELP = ("serve a tenant described in FILE from the bundled emulator instead of Azure (docs/snapshot.md); "
                  "without it, Azure with DefaultAzureCredential")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join("  " + line for line in lines)


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=["text", "json"], help=_OUTPUT_HELP)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a file with an alert, audit-log records or error text, or - for standard input; several "
                        "files are one batch (none: standard input)")
    p.add_argument("--keep-going", action="store_true",
                   help="process the usable inputs of the batch and list the unusable ones in notes (exit 2 still); "
                        "default: one unusable input stops the whole batch")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    _add_inputs(p)
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--subscription", action="append", metavar="ID",
                   help="subscription to search for vaults (repeatable; default: AZURE_SUBSCRIPTION_IDS)")
    p.add_argument("--principal", metavar="OID", help="instead of INPUT: the caller's object id (a GUID)")
    p.add_argument("--vault", metavar="NAME_OR_ID", help="instead of INPUT: the vault's name or resource id")
    p.add_argument("--operation", metavar="NAME",
                   help="instead of INPUT: what was denied, e.g. SecretGet, KeyDecrypt (`kv-remediate operations`)")
    p.add_argument("--object", metavar="KIND/NAME", help="instead of INPUT: the object, e.g. secrets/db-password")
    _add_output(p)
    _add_cap_args(p)


def _add_cap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-denials", type=int, metavar="N",
                   help="refuse an input that yields more than N denials (default: KV_REMEDIATE_MAX_DENIALS, "
                        "else no cap; 0: no cap)")
    p.add_argument("--max-principals", type=int, metavar="N",
                   help="refuse a batch naming more than N distinct principals (default: "
                        "KV_REMEDIATE_MAX_PRINCIPALS, else no cap; 0: no cap)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="kv-remediate", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"kv-remediate {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="what the input says, no Azure calls", formatter_class=fmt,
                       description="Show the denials an input holds (who, which vault and object, which operation), "
                                   "without calling Azure.",
                       epilog=_examples("kv-remediate parse error.txt",
                                        "kv-remediate parse alert.json rows.json --output json | jq '.denials[]'",
                                        "kv-remediate parse exports/*.json --keep-going   # skip unusable files"))
    _add_inputs(p)
    _add_output(p)
    _add_cap_args(p)
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("diagnose", help="why it failed, and the least-privilege fix", formatter_class=fmt,
                       description="Find why each denial happened, with the evidence read from Azure, and the "
                                   "least-privilege fix (az and Bicep). Changes nothing.",
                       epilog=_examples(
                           "kv-remediate diagnose error.txt",
                           "kv-remediate diagnose --principal f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879 --vault kv-payments "
                           "--operation SecretGet --object secrets/db-password",
                           "kv-remediate diagnose alert.json --snapshot tenant.json   # offline, against a snapshot",
                           "kv-remediate diagnose rows.json --output json | jq -r '.findings[].plan.commands.az'"))
    _add_batch_args(p)
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("remediate", help="diagnose, then apply what policy allows", formatter_class=fmt,
                       description="Diagnose, then (with --apply and a policy whose mode is apply) make the fixes "
                                   "every policy rule allows; ends with what was applied, already granted, refused "
                                   "(by which rule) and failed. Exit 4 when anything was refused, 3 when Azure "
                                   "refused a write.",
                       epilog=_examples(
                           "kv-remediate remediate alert.json --policy policy.yaml            # what would be done",
                           "kv-remediate remediate alert.json --policy policy.yaml --apply",
                           "kv-remediate remediate rows.json --snapshot t.json --policy p.yaml --apply "
                           "--snapshot-out after.json"))
    _add_batch_args(p)
    p.add_argument("--policy", metavar="FILE",
                   help="remediation policy, YAML or JSON (docs/policy.md; default: KV_REMEDIATE_POLICY, else "
                        "suggest only)")
    p.add_argument("--apply", action="store_true",
                   help="apply the plans policy allows (default: only suggest)")
    p.add_argument("--snapshot-out", metavar="FILE",
                   help="with --snapshot: write the tenant as it stands after the run (else the emulator's changes "
                        "are gone when it stops)")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    p.set_defaults(func=cmd_remediate)
    _add_record_commands(sub, fmt)
    return parser


def _add_record_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """The commands that read or undo the record, and the ones that show or serve: grants, revoke, operations,
    demo, serve."""
    p = sub.add_parser("grants", help="the audit trail of applied, refused and revoked grants", formatter_class=fmt,
                       description="List the grant records: state, expiry, principal, role or permissions, scope "
                                   "and cause, newest first, with the ids `revoke --grant` takes.",
                       epilog=_examples("kv-remediate grants", "kv-remediate grants --limit 20",
                                        "kv-remediate grants --snapshot tenant.json   # principals by name",
                                        "kv-remediate grants --output json | jq '.grants[] | "
                                        "select(.outcome==\"applied\")'"))
    p.add_argument("--snapshot", metavar="FILE",
                   help="read principals' display names from this tenant snapshot (records live in the state store)")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the N newest records")
    _add_output(p)
    p.set_defaults(func=cmd_grants)

    p = sub.add_parser("revoke", help="remove expired grants, or one recorded grant", formatter_class=fmt,
                       description="Undo what kv-remediate granted: the role assignment it created, or exactly the "
                                   "access-policy permissions it added (others' permissions stay).",
                       epilog=_examples("kv-remediate revoke --expired",
                                        "kv-remediate revoke --grant 0b9f2c4e-...   # an id from `kv-remediate grants`",
                                        "kv-remediate revoke --reconcile   # what the app's timer does"))
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expired", action="store_true", help="revoke every grant whose time limit has passed")
    g.add_argument("--grant", metavar="ID", help="revoke this one grant (an id from `kv-remediate grants`)")
    g.add_argument("--reconcile", action="store_true",
                   help="what the revocation timer does: settle intents a crash left pending (reading Azure), "
                        "revoke expired grants, delete expired role assignments labelled as ours with no record")
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--snapshot-out", metavar="FILE",
                   help="with --snapshot: write the tenant as it stands after the run")
    p.add_argument("--state", metavar="FILE", help="grant audit database (default ~/.kv-remediate/state.db)")
    _add_output(p)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("operations", help="the operation names, with their data action and access-policy permission",
                       formatter_class=fmt,
                       description="List the Key Vault operations kv-remediate knows (the audit log's OperationName, "
                                   "what --operation takes), each with the RBAC data action and the access-policy "
                                   "permission it needs.",
                       epilog=_examples("kv-remediate operations", "kv-remediate operations --kind keys",
                                        "kv-remediate operations --output json | jq -r '.operations[].name'"))
    p.add_argument("--kind", choices=["keys", "secrets", "certificates", "storage"], help="only this object kind")
    _add_output(p)
    p.set_defaults(func=cmd_operations)

    p = sub.add_parser("demo", help="the main job on the bundled sample tenant", formatter_class=fmt,
                       description="Diagnose the bundled sample inputs against the bundled sample tenant (5 vaults, "
                                   "12 principals) in the local emulator: no Azure account needed.",
                       epilog=_examples("kv-remediate demo", "kv-remediate demo --output json | jq '.stats'"))
    _add_output(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="the function app's routes and queue worker on loopback (like func start)",
                       formatter_class=fmt,
                       description="Run the function app's HTTP routes and queue worker on loopback, as `func start` "
                                   "would (README, \"Local serve\"). Without a storage setting (AzureWebJobsStorage) "
                                   "it starts the bundled Azurite (in memory) and stops it on exit.",
                       epilog=_examples("kv-remediate serve --snapshot remediate/demo/tenant.json",
                                        "kv-remediate serve --port 7072 --workers 2"))
    p.add_argument("--snapshot", metavar="FILE", help=_SNAPSHOT_HELP)
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7071, help="port to listen on (default 7071, as func start)")
    p.add_argument("--workers", type=int, default=1, help="queue worker processes (0: HTTP only)")
    p.add_argument("--function-key", metavar="KEY",
                   help="the function key routes require (default: KV_REMEDIATE_FUNCTION_KEY, else a random key "
                        "generated and printed at start)")
    p.add_argument("--insecure-no-key", action="store_true",
                   help="accept requests without a function key (Host/Origin checks and CSRF refusal still apply)")
    p.add_argument("--worker-restarts", type=int, default=5, metavar="N",
                   help="restart a dead worker process at most N times within 5 minutes (back-off 1, 2, 4... s); "
                        "past that, serve stops with exit 1 (default 5; 0: never restart)")
    p.set_defaults(func=cmd_serve)


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
