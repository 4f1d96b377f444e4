"""The embedded storage of ``kv-remediate serve``: the bundled Azurite (``node_modules/.bin/azurite``, installed by
``tools/install_azurite.sh``), started when no storage is configured and stopped with ``serve``.

Its flags, and why (the same ones tests/support/azurite.py starts it with):

- ``--blobHost/--queueHost/--tableHost 127.0.0.1`` and free ports picked just before the start: loopback only, and
  never in the way of an Azurite the user runs on 10000-10002.
- ``--inMemoryPersistence``: nothing written to disk; the queue and tables are gone when serve stops.
- ``--disableTelemetry``: Azurite 3.35 collects telemetry unless told not to (its ``--help``); nothing leaves the
  machine.
- ``--skipApiVersionCheck``: the pinned azure-storage-queue (12.18) sends ``x-ms-version: 2026-10-06``, newer than
  the newest Azurite 3.35 accepts (2025-11-05); without the flag every queue call is refused with 400
  ``InvalidHeaderValue`` and the worker dies at start.
- ``--loose``: ignore headers and query parameters Azurite does not implement rather than refuse the request.
- ``--silent``: no access log; its own output goes to a log file in a private temporary directory (its working
  directory), shown when it fails to start or exits.

On Linux the process also receives SIGTERM when serve dies (``children.with_parent``), so even a killed ``serve``
leaves no Azurite behind.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError, ServeError
from .children import with_parent
from .discovery import ROOT

AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
FLAGS = ("--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent", "--loose")
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""The well-known development storage account (public, documented by Microsoft for the emulator)."""


def not_installed(binary: Path) -> str:
    """What to do when the bundled Azurite is missing."""
    return (f"no storage is configured (AzureWebJobsStorage) and the bundled Azurite is not installed "
            f"({binary} is missing). Install it with `make test` or `bash tools/install_azurite.sh` (needs Node.js "
            "20 with npm), or set AzureWebJobsStorage to a storage account's connection string")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 at this moment."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` accepts a TCP connection now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def version(binary: Path | None = None) -> str:
    """The installed Azurite's version (from its package.json), or ``?``."""
    binary = binary or AZURITE_BIN
    try:
        doc = json.loads((binary.parent.parent / "azurite" / "package.json").read_text(encoding="utf-8"))
        return str(doc.get("version") or "?")
    except (OSError, ValueError, AttributeError):
        return "?"


class EmbeddedAzurite:
    """Azurite run by serve: in memory, on free loopback ports, stopped by ``stop()`` (and with serve)."""

    def __init__(self, process: subprocess.Popen[bytes], ports: list[int],
                 workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.process = process
        self.blob_port, self.queue_port, self.table_port = ports
        self.workdir = workdir
        self.log_path = Path(workdir.name) / "azurite.log"

    @property
    def connection_string(self) -> str:
        """The devstoreaccount1 connection string with this Azurite's loopback endpoints."""
        base = f"http://127.0.0.1:{{port}}/{ACCOUNT_NAME}"
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={base.format(port=self.blob_port)};QueueEndpoint={base.format(port=self.queue_port)};"
                f"TableEndpoint={base.format(port=self.table_port)};")

    @property
    def endpoints(self) -> str:
        return f"127.0.0.1 blob {self.blob_port}, queue {self.queue_port}, table {self.table_port}"

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def exited(self) -> int | None:
        """Its exit code once it has exited, else None."""
        return self.process.poll()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.workdir.cleanup()


def _launch(binary: Path, ports: list[int]) -> EmbeddedAzurite:
    blob, queue, table = ports
    workdir = tempfile.TemporaryDirectory(prefix="kv-remediate-azurite-")
    args = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1",
            "--queuePort", str(queue), "--tableHost", "127.0.0.1", "--tablePort", str(table), *FLAGS]
    with open(Path(workdir.name) / "azurite.log", "wb") as log:
        process = subprocess.Popen(with_parent(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=workdir.name, start_new_session=True)
    return EmbeddedAzurite(process, ports, workdir)


def start(binary: Path | None = None, *, timeout: float = 60.0, attempts: int = 3) -> EmbeddedAzurite:
    """Start Azurite and return once its blob, queue and table ports accept connections.

    ConfigError (exit 2) when it is not installed; a port taken between the pick and the start is retried with
    new ports; ServeError with its log when it never opens them."""
    binary = binary or AZURITE_BIN
    if not binary.exists():
        raise ConfigError(not_installed(binary), "AzureWebJobsStorage")
    last = ""
    for _ in range(attempts):
        azurite = _launch(binary, _free_ports(3))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and azurite.exited() is None:
            if all(accepts(p) for p in (azurite.blob_port, azurite.queue_port, azurite.table_port)):
                return azurite
            time.sleep(0.05)
        last = f"exit code {azurite.exited()}; its log: {azurite.log_tail() or '(empty)'}"
        azurite.stop()
    raise ServeError(f"the bundled Azurite did not open its ports on 127.0.0.1 within {timeout:.0f} s "
                       f"({last})")
