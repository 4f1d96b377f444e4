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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kv-remediate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kv-remediate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="what the input says, no Azure calls")
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--output", choices=["text", "json"])
    p.set_defaults(func=cmd_parse)
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
