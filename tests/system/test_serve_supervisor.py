"""`kv-remediate serve` as a user runs it (issue 14, "The local path"): one command with no storage configured
starts its own Azurite and leaves nothing behind; the worker processes an alert end to end; a killed worker makes
/api/health degraded naming it and is restarted; a worker that keeps dying stops serve with exit 1 naming it.

Each serve is a subprocess in its own session, stopped (and, failing that, its process group and recorded children
killed) in the fixture's teardown, whatever the test did; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from remediate.app import settings as app_settings
from remediate.app.parts import STATE_SETTING
from remediate.errors import ConfigError
from remediate.localhost import azurite as embedded
from remediate.localhost.supervisor import KEY_SETTING, serve
from tests.support.app import DEMO, LOOPBACK_ONLY, ROOT, call

ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()
START_TIMEOUT = 90.0
"""A cold serve (Azurite, the app, a worker) on this shared 2-core machine; it usually takes under 10 s."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None,
             every: float = 0.1) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds, else a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    pytest.fail(f"{what} not within {timeout:.0f} s; serve's log: {tail}")


@dataclass
class Served:
    """A running `kv-remediate serve` subprocess: its base URL, log, key and the child pids seen."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    seen: set[int] = field(default_factory=set)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> dict[str, Any] | None:
        try:
            status, doc = call(self.base + "/api/health", method="GET")
        except OSError:
            return None
        return doc if status == 200 else None

    def key(self) -> str:
        found = re.search(r"generated function key .*: (\S+)$", self.text(), re.MULTILINE)
        assert found, self.text()
        return found.group(1)

    def children(self) -> dict[int, str]:
        found = children(self.proc.pid)
        self.seen |= set(found)
        return found

    def worker_pid(self) -> int | None:
        return next((p for p, cmd in self.children().items() if "remediate.localhost worker" in cmd), None)

    def stop(self) -> int:
        """SIGTERM (as Ctrl-C would be handled), bounded; then anything left is killed."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=45)
        finally:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            for pid in self.seen:
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def serve_env(**extra: str) -> dict[str, str]:
    """The user's environment with no storage setting and no key (loopback proxies only), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().startswith(app_settings.STORAGE_CONNECTION.lower()) and k != KEY_SETTING}
    return {**env, **LOOPBACK_ONLY, "PYTHONPATH": str(ROOT), **extra}


@contextlib.contextmanager
def run_serve(tmp_path: Path, *args: str, **extra: str) -> Iterator[Served]:
    """`kv-remediate serve --snapshot demo ARGS` in ``tmp_path`` (no local.settings.json), stopped after."""
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "remediate.cli", "serve", "--port", str(port), "--snapshot",
                                 str(DEMO / "tenant.json"), *args], cwd=str(tmp_path), env=serve_env(**extra),
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        yield served
    finally:
        served.stop()


def started(served: Served) -> dict[str, Any]:
    """Wait until serve answers health with its worker running; that health document."""
    def ready() -> dict[str, Any] | None:
        assert served.proc.poll() is None, served.text()
        doc = served.health()
        served.children()
        return doc if doc and doc["parts"] and all(p["state"] == "running" for p in doc["parts"]) else None

    found: dict[str, Any] = wait_for("serve answering /api/health", ready, START_TIMEOUT, served.log)
    return found


def test_serve_without_storage_runs_its_own_azurite_processes_an_alert_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    # given no storage setting anywhere (environment, local.settings.json)
    with run_serve(tmp_path) as served:
        # when serve starts; then it says what it runs: the URL, the key, an embedded Azurite, the snapshot
        health = started(served)
        text = served.text()
        assert f"listening:    {served.base}" in text and "function key: required (generated" in text
        assert "storage:      embedded Azurite 3.35.0, in memory on 127.0.0.1" in text
        assert "facts:        snapshot " in text and all(len(line) <= 120 for line in text.splitlines()[:12])
        assert health["status"] == "ok" and [(p["part"], p["state"]) for p in health["parts"]] == [
            ("worker", "running")]
        kids = served.children()
        [azurite_pid] = [p for p, cmd in kids.items() if "azurite" in cmd]
        assert all(a in kids[azurite_pid] for a in ("--inMemoryPersistence", "--disableTelemetry",
                                                     "--skipApiVersionCheck", "--blobHost 127.0.0.1",
                                                     "--queueHost 127.0.0.1", "--tableHost 127.0.0.1"))

        # when an alert is posted with the key it printed
        status, doc = call(served.base + "/api/alerts", ALERT,
                           headers={"Content-Type": "application/json", "x-functions-key": served.key()})
        # then it is accepted, and the worker process diagnoses it through the embedded Azurite's queue
        assert (status, doc) == (202, {"accepted": 1})
        wait_for("the worker's finding", lambda: "kv-remediate finding " in served.text(), 60, served.log)
        assert "MISSING_ROLE_ASSIGNMENT" in served.text() and "Traceback" not in served.text()

        # when serve is stopped as Ctrl-C stops it
        code = served.stop()
    # then it exits 0 and no process it started is left (Azurite, the worker)
    assert code == 0, served.text()
    assert served.seen and not [p for p in served.seen if alive(p)]


def test_a_killed_worker_makes_health_degraded_naming_it_and_is_restarted(tmp_path: Path) -> None:
    with run_serve(tmp_path) as served:
        started(served)
        worker = served.worker_pid()
        assert worker is not None
        # when the worker process is killed
        os.kill(worker, signal.SIGKILL)

        # then health is degraded, naming the worker and what happened to it
        def degraded() -> dict[str, Any] | None:
            doc = served.health()
            return doc if doc and doc["status"] == "degraded" else None

        doc = wait_for("health degraded", degraded, 10, served.log, every=0.05)
        [part] = doc["parts"]
        assert (part["part"], part["instance"], part["state"]) == ("worker", 1, "restarting")
        assert "killed by SIGKILL" in part["detail"] and "restart 1 of at most 5" in part["detail"]
        # and the supervisor restarts it: a new worker process, health ok again, serve still running
        health = started(served)
        assert health["status"] == "ok" and served.worker_pid() not in (None, worker)
        assert served.proc.poll() is None


def test_a_worker_that_keeps_dying_stops_serve_with_exit_1_naming_it(tmp_path: Path) -> None:
    # given storage configured with a value the worker cannot use (it dies at every start)
    with run_serve(tmp_path, "--worker-restarts", "1",
                   **{app_settings.STORAGE_CONNECTION: "UseDevelopmentStorage"}) as served:
        # when serve runs; then it restarts the worker once, and then stops with exit 1 naming the part
        code = wait_for("serve to stop", served.proc.poll, START_TIMEOUT, served.log, every=0.2)
        text = served.text()
        assert code == 1, text
        assert "storage:      configured (AzureWebJobsStorage)" in text and "embedded Azurite" not in text
        assert "the queue worker cannot start: setting AzureWebJobsStorage does not look like" in text
        assert "restarting worker 1" in text
        assert re.search(r"kv-remediate serve: the worker 1 process exited with code 1; it died 2 times within "
                         r"300 s; not restarted again; see its error above; serve stopped$", text, re.MULTILINE)
        assert "Traceback" not in text
    assert not [p for p in served.seen if alive(p)]


def test_without_azurite_installed_serve_says_how_to_install_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # given no storage setting and no bundled Azurite
    for name in [k for k in os.environ if k.lower().startswith(app_settings.STORAGE_CONNECTION.lower())]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(KEY_SETTING, "serve-test-key-0123456789abcdef")
    monkeypatch.setattr(embedded, "AZURITE_BIN", tmp_path / "node_modules" / ".bin" / "azurite")
    monkeypatch.chdir(tmp_path)
    # when serve starts; then one clear ConfigError (exit 2) says how to install it, before anything listens
    with pytest.raises(ConfigError, match=r"`make test` or `bash tools/install_azurite.sh` \(needs Node.js 20") as exc:
        serve(port=0, workers=0)
    assert exc.value.exit_code == 2 and "AzureWebJobsStorage" in exc.value.message


def test_configured_loopback_storage_that_nobody_serves_is_named_at_start(tmp_path: Path) -> None:
    # given storage configured on a loopback port where nothing listens (an Azurite the user forgot to start)
    port = _free_port()
    conn = (f"DefaultEndpointsProtocol=http;AccountName={embedded.ACCOUNT_NAME};AccountKey={embedded.ACCOUNT_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{port}/{embedded.ACCOUNT_NAME};"
            f"TableEndpoint=http://127.0.0.1:{port}/{embedded.ACCOUNT_NAME};")
    with run_serve(tmp_path, "--workers", "0", **{app_settings.STORAGE_CONNECTION: conn}) as served:
        # when serve starts; then it uses that storage (no Azurite of its own) and says nothing answers there
        wait_for("serve's banner", lambda: "processes:" in served.text(), START_TIMEOUT, served.log)
        text = served.text()
        assert "configured (AzureWebJobsStorage); serve starts no Azurite; WARNING: nothing listens on" in text
        assert f"127.0.0.1:{port}" in text.replace("\n" + " " * 34, " ")
        assert not [cmd for cmd in served.children().values() if "azurite" in cmd]
        assert served.stop() == 0


def test_a_killed_serve_leaves_no_process_behind(tmp_path: Path) -> None:
    with run_serve(tmp_path) as served:
        started(served)
        kids = served.children()
        [azurite_pid] = [p for p, cmd in kids.items() if "azurite" in cmd]
        worker = served.worker_pid()
        assert worker is not None
        # (the directories a killed serve cannot remove, removed by the test: Azurite's, and serve's state)
        environ = dict(v.split("=", 1) for v in Path(f"/proc/{worker}/environ").read_text().split("\0") if "=" in v)
        litter = [Path(f"/proc/{azurite_pid}/cwd").resolve(), Path(environ[STATE_SETTING]).parent]
        try:
            # when serve itself is killed (no chance to stop anything)
            os.kill(served.proc.pid, signal.SIGKILL)
            served.proc.wait(timeout=30)
            # then its Azurite and worker stop too (they are told when their parent dies)
            wait_for("serve's children to stop", lambda: not [p for p in kids if alive(p)], 30, served.log)
        finally:
            for directory in litter:
                if directory.name.startswith("kv-remediate-"):
                    shutil.rmtree(directory, ignore_errors=True)
