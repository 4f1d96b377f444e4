"""Command line: parse arguments, call one core function, render. No logic lives here: the arguments are in
``args``, the commands in ``commands``, reading inputs and printing in ``batch``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import RemediateError
from .args import build_parser

__all__ = ["build_parser", "main"]


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

