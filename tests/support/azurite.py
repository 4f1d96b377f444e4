"""Start and stop a private Azurite (Azure Storage emulator) on free loopback ports, for tests and benchmarks.

Azurite is installed into the repository's ./node_modules by ``tools/install_azurite.sh`` (run by ``make test``).
Everything listens on 127.0.0.1 and keeps its data in memory; the process is ours and is stopped by pid.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# The well-known development storage account (public, documented by Microsoft for the emulator).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

NOT_INSTALLED = (
    f"Azurite is not installed ({AZURITE_BIN} is missing): run `make test`, "
    "or `bash tools/install_azurite.sh` to install it into ./node_modules"
)


class AzuriteError(RuntimeError):
    """Azurite could not be started (not installed, or it did not open its ports in time)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def connection_string(blob_port: int, queue_port: int, table_port: int) -> str:
    """The devstoreaccount1 connection string with explicit loopback endpoints (no UseDevelopmentStorage ports)."""
    base = f"http://127.0.0.1:{{port}}/{ACCOUNT_NAME}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base.format(port=blob_port)};"
        f"QueueEndpoint={base.format(port=queue_port)};"
        f"TableEndpoint={base.format(port=table_port)};"
    )


@dataclass
class Azurite:
    """A running Azurite process and how to reach it."""

    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    workdir: tempfile.TemporaryDirectory[str]
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = Path(self.workdir.name) / "azurite.log"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop our Azurite process (terminate, then kill after 10 s) and remove its work directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.workdir.cleanup()


def start_azurite(timeout: float = 30.0, attempts: int = 3, *, skip_api_version_check: bool = True) -> Azurite:
    """Start Azurite on free loopback ports and return once blob, queue and table ports accept connections.

    ``skip_api_version_check=False`` leaves out ``--skipApiVersionCheck``: Azurite then refuses storage SDKs newer
    than itself, as a user's plain ``npx azurite`` does (for the tests of that error's advice).

    Ports are picked free just before the start; a lost race (port taken meanwhile) is retried with new ports.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteError(NOT_INSTALLED)
    last = ""
    for _ in range(attempts):
        ports = [_free_port() for _ in range(3)]
        while len(set(ports)) < 3:
            ports = [_free_port() for _ in range(3)]
        blob, queue, table = ports
        workdir = tempfile.TemporaryDirectory(prefix="azurite-")
        log = open(Path(workdir.name) / "azurite.log", "wb")  # noqa: SIM115 - handed to the child process
        args = [
            str(AZURITE_BIN),
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
            "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent", "--loose",
        ]
        if not skip_api_version_check:
            args.remove("--skipApiVersionCheck")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=workdir.name)
        log.close()
        azurite = Azurite(process, blob, queue, table, workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if all(_accepts(p) for p in ports):
                return azurite
            time.sleep(0.05)
        last = f"exit code {process.poll()}, log: {azurite.log_tail()}"
        azurite.stop()
    raise AzuriteError(f"Azurite did not open its ports on 127.0.0.1 within {timeout:.0f} s ({last})")
