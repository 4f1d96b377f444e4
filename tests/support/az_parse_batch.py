"""Run many ``az`` command lines through one Azure CLI process (the azcli tool venv's python, not the app's).

Used by test_az_cli_parse.py: a CLI process costs about a second to start, a command in a warm one a few
milliseconds. Each line gets a fresh ``AzCli`` (as azure-cli's own test harness does) and its outcome: the exit
code, the exception the CLI's handler got (the login stop is a CLIError "Please run 'az login' to setup account.")
and the messages logged at warning level or above (argument errors). Reads a JSON list of argv lists on stdin
(each starting with "az"), writes a JSON list of results on stdout.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(argv: list[str]) -> dict[str, Any]:
    """One command line: exit code, the handled exception, warnings and errors, and what went to stderr."""
    from azure.cli.core import get_default_cli

    seen: list[str] = []
    records = _Records()
    root = logging.getLogger("cli")
    root.addHandler(records)
    err, saved = io.StringIO(), sys.stderr
    sys.stderr = err
    try:
        cli = get_default_cli()
        handler = cli.exception_handler

        def record(ex: BaseException) -> int:
            seen.append(f"{type(ex).__name__}: {ex}")
            return int(handler(ex))

        cli.exception_handler = record
        try:
            code = cli.invoke(argv[1:], out_file=io.StringIO())
        except SystemExit as ex:          # argparse's exit on an argument error
            code = ex.code if isinstance(ex.code, int) else 2
    finally:
        sys.stderr = saved
        root.removeHandler(records)
    return {"argv": argv, "code": code, "exception": seen[0] if seen else None, "messages": records.messages,
            "stderr": err.getvalue()[-2000:]}


def main() -> None:
    argvs = json.load(sys.stdin)
    json.dump([run(a) for a in argvs], sys.stdout)


if __name__ == "__main__":
    main()
