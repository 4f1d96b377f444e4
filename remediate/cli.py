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


def cmd_parse(args: argparse.Namespace) -> int:
    from .intake import parse_inputs
    from .render.denials import denials_table

    result = parse_inputs(_read_inputs(args.inputs))
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
    return parse_inputs(_read_inputs(args.inputs))


async def _diagnose(denials: Any, snapshot: str | None, subscriptions: Sequence[str] | None) -> Any:
    from .service import diagnose
    from .wiring import EmulatorRun, live_facts, subscriptions_from_env

    if snapshot:
        with EmulatorRun(snapshot) as run:
            async with run.facts() as facts:
                return await diagnose(denials, facts)
    async with live_facts(subscriptions_from_env(subscriptions)) as facts:
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


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    from importlib import resources

    from .intake import parse_inputs
    from .render.findings import table

    demo = resources.files("remediate").joinpath("demo")
    inputs = sorted((f.name, f.read_bytes()) for f in demo.joinpath("inputs").iterdir() if f.is_file())
    parsed = parse_inputs(inputs)
    with resources.as_file(demo.joinpath("tenant.json")) as tenant:
        result = asyncio.run(_diagnose(parsed.denials, str(tenant), None))
    doc = result.to_dict()
    _emit(doc, "kv-remediate demo: the bundled sample tenant (5 vaults, 12 principals) and "
          f"{len(inputs)} inputs\n\n" + table(result.findings, result.stats), args.output)
    return 0


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--snapshot", metavar="FILE", help="a tenant snapshot served by the bundled ARM emulator")
    p.add_argument("--subscription", action="append", help="subscription to search (repeatable)")
    p.add_argument("--principal", metavar="OID")
    p.add_argument("--vault", metavar="NAME_OR_ID")
    p.add_argument("--operation", metavar="NAME")
    p.add_argument("--object", metavar="KIND/NAME")
    p.add_argument("--output", choices=["text", "json"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kv-remediate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kv-remediate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="what the input says, no Azure calls")
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--output", choices=["text", "json"])
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("diagnose", help="why it failed, and the least-privilege fix")
    _add_batch_args(p)
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("demo", help="the main job on the bundled sample tenant")
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_demo)
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
