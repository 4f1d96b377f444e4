"""The CLI's inputs and outputs: reading INPUT files, the batch intake makes of them, the progress line on a
terminal, and printing JSON or text."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_INPUT_BYTES = 4 * 1024 * 1024


def read_inputs(paths: Sequence[str]) -> list[tuple[str, bytes]]:
    """Read every INPUT (a path or ``-``) before anything is processed: a bad one fails the batch."""
    from ..errors import InputError

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


def fmt(output: str | None) -> str:
    return output or ("text" if sys.stdout.isatty() else "json")


def emit(doc: dict[str, Any], text: str | Callable[[], str], output: str | None) -> None:
    """One JSON document, or the text a person reads (``text`` may be built only when it is needed)."""
    if fmt(output) == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        body = text() if callable(text) else text
        sys.stdout.write(body if body.endswith("\n") else body + "\n")


def caps(args: argparse.Namespace) -> dict[str, int | None]:
    """Intake caps for an operator's batch: the flags, else the app's settings when set, else none (an export of
    thousands of audit rows is a normal CLI input; the app, which takes unauthenticated alerts, keeps defaults)."""
    import os

    from ..errors import InputError
    from ..intake.limits import MAX_DENIALS_SETTING, MAX_PRINCIPALS_SETTING

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


def parse_batch(args: argparse.Namespace) -> Batch:
    """The batch: all or nothing, or with ``--keep-going`` every usable input (the others become notes; the
    batch-wide principal cap still holds over what is kept)."""
    from ..errors import InputError, TooLargeError
    from ..intake import parse_inputs
    from ..intake.limits import principal_key
    from ..model import ParseResult

    limits = caps(args)
    if not getattr(args, "keep_going", False):
        return Batch(parse_inputs(read_inputs(args.inputs), **limits))
    denials: list[Any] = []
    skipped, notes, unusable = 0, list[str](), list[str]()
    for path in args.inputs or ["-"]:
        try:
            got = parse_inputs(read_inputs([path]), **limits)
        except InputError as exc:
            unusable.append(exc.message)
            continue
        denials += got.denials
        skipped += got.skipped
        notes += got.notes
    cap = limits.get("max_principals")
    distinct = {k for k in (principal_key(d.principal) for d in denials) if k}
    if cap is not None and len(distinct) > cap:
        raise TooLargeError("the batch", "distinct principals", len(distinct), cap,
                            "split the batch or raise --max-principals")
    return Batch(ParseResult(tuple(denials), skipped, tuple(notes)), unusable)


def check_operation(name: str) -> None:
    """An unknown --operation names the nearest known ones (`decrypt` -> KeyDecrypt)."""
    from .. import catalog
    from ..errors import InputError

    if catalog.operation(name) is not None:
        return
    near = catalog.nearest_operations(name)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    raise InputError("--operation", f"{name!r} is not a Key Vault operation name; {hint}"
                     "`kv-remediate operations` lists them all")


def denials_from_args(args: argparse.Namespace) -> Batch:
    """The batch: INPUT files, or the runbook flags turned into a runbook request (one parser for both)."""
    from ..errors import InputError
    from ..intake import parse_inputs

    if getattr(args, "principal", None) or getattr(args, "vault", None):
        if args.inputs:
            raise InputError("--principal", "give either INPUT files or --principal/--vault/--operation, not both")
        missing = [f for f in ("principal", "vault", "operation") if not getattr(args, f)]
        if missing:
            raise InputError("--" + missing[0], "is required with --principal/--vault/--operation")
        check_operation(args.operation)
        request = {"principal_id": args.principal, "vault": args.vault, "operation": args.operation,
                   "object": args.object}
        return Batch(parse_inputs([("--principal/--vault/--operation", json.dumps(request).encode())]))
    if getattr(args, "operation", None):
        raise InputError("--operation", "is used with --principal and --vault, not with INPUT files")
    return parse_batch(args)


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
        return fmt(output) == "text" and sys.stderr.isatty()

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


def run_batch(batch: Coroutine[Any, Any, tuple[Any, dict[str, str]]], progress: Progress,
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


async def display_names(facts: Any, findings: Any) -> dict[str, str]:
    """Display names of the callers and groups the text names (one Graph call; {} without Graph)."""
    from ..render.findings import principal_ids

    ids = principal_ids(findings)
    lookup = getattr(facts, "display_names", None)
    if not ids or lookup is None:
        return {}
    try:
        names: dict[str, str] = await lookup(ids)
    except Exception:   # names only make the text friendlier: never fail the command for them
        return {}
    return names
