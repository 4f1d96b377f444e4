"""``kv-remediate serve`` itself: settings, the function key, the snapshot refusal on an Azure host, the storage
(configured, else the bundled Azurite started here: ``azurite.py``), and the processes (this HTTP server,
``FUNCTIONS_WORKER_PROCESS_COUNT - 1`` more on the shared port, ``--workers N`` queue workers as
``python -m remediate.localhost http-process|worker``), supervised (``children.py``: a dead one is restarted within
a bound, else serve stops naming it) and stopped together on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
import textwrap
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..app.parts import STATE_SETTING
from ..app.settings import STORAGE_CONNECTION, snapshot_in_azure
from ..errors import ConfigError, RemediateError, ServeError
from . import azurite
from .azurite import EmbeddedAzurite
from .children import PARENT_SETTING, Child, RestartPolicy, Supervisor, die_with_parent
from .discovery import load_app, load_local_settings
from .http import HttpServer
from .pump import run_worker

KEY_SETTING = "KV_REMEDIATE_FUNCTION_KEY"
log = logging.getLogger("kv_remediate.serve")

MIN_KEY_LENGTH = 16   # a shorter function key is guessable; serve refuses it

def _logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)


def _wait_for_signal(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.is_set():
        stop.wait(0.5)


def refuse_snapshot_in_azure(env: Mapping[str, str] | None = None) -> None:
    """ConfigError when ``KV_REMEDIATE_SNAPSHOT`` is set on an Azure host: never serve a snapshot there."""
    problem = snapshot_in_azure(os.environ if env is None else env)
    if problem:
        raise ConfigError(f"setting KV_REMEDIATE_SNAPSHOT {problem}")


def worker_main() -> int:
    """One worker process: pump the app's queues until SIGTERM/SIGINT. A start that fails (storage refused or
    unreachable, a bad setting) is one line on stderr naming the cause and exit 1 (serve restarts it); the
    traceback only with debug logging."""
    _logging()
    die_with_parent()
    try:
        load_local_settings()
        refuse_snapshot_in_azure()
        app = load_app()
        stop = threading.Event()
        run_worker(app, stop)
    except RemediateError as exc:
        log.error("kv-remediate serve: the queue worker cannot start: %s", exc.message)
        log.debug("kv-remediate serve: the worker's start failed", exc_info=True)
        return 1
    except Exception as exc:
        log.error("kv-remediate serve: the queue worker cannot start: %s: %s", type(exc).__name__, exc)
        log.debug("kv-remediate serve: the worker's start failed", exc_info=True)
        return 1
    _wait_for_signal(stop)
    return 0


def http_main(host: str, port: int) -> int:
    """One more HTTP process on a shared port (``FUNCTIONS_WORKER_PROCESS_COUNT`` > 1) until SIGTERM/SIGINT."""
    _logging()
    die_with_parent()
    server = HttpServer(load_app(), host=host, port=port, function_key=os.environ.get(KEY_SETTING) or None,
                        reuse_port=True).start()
    try:
        _wait_for_signal(threading.Event())
    finally:
        server.stop()
    return 0


def resolve_key(function_key: str | None, insecure_no_key: bool, env: Mapping[str, str] | None = None) -> str | None:
    """The function key ``serve`` requires: the given one, else ``KV_REMEDIATE_FUNCTION_KEY``, else a new random
    one (printed at start); None only with ``insecure_no_key``. Both a key and ``insecure_no_key`` is an error."""
    env = os.environ if env is None else env
    key = function_key or (env.get(KEY_SETTING) or "").strip() or None
    if insecure_no_key:
        if function_key:
            raise ConfigError("serve: --function-key and --insecure-no-key contradict each other; give one")
        return None
    if key is not None and len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"serve: the function key ({'--function-key' if function_key else KEY_SETTING}) is "
                          f"shorter than {MIN_KEY_LENGTH} characters; use a longer random key, or omit it to have one "
                          "generated")
    return key or secrets.token_urlsafe(32)


STORAGE_NAMES = ("", "__accountName", "__tableServiceUri", "__queueServiceUri")
"""The settings that configure the app's storage (``AzureWebJobsStorage`` and its identity-based forms)."""


def storage_configured(env: Mapping[str, str]) -> str | None:
    """The first storage setting present in ``env`` (``__`` may be written ``:``, any case), else None."""
    lowered = {k.lower().replace(":", "__"): v for k, v in env.items() if (v or "").strip()}
    return next((STORAGE_CONNECTION + s for s in STORAGE_NAMES if (STORAGE_CONNECTION + s).lower() in lowered), None)


def _storage(stack: contextlib.ExitStack) -> tuple[EmbeddedAzurite | None, str]:
    """The configured storage, else the bundled Azurite started here (stopped by ``stack``); and what it is."""
    setting = storage_configured(os.environ)
    if setting is not None:
        return None, f"configured ({setting}); serve starts no Azurite" + _loopback_silent()
    embedded = azurite.start()
    stack.callback(embedded.stop)
    os.environ[STORAGE_CONNECTION] = embedded.connection_string
    return embedded, (f"embedded Azurite {azurite.version()}, in memory on {embedded.endpoints}; "
                      "stopped with serve")


def _loopback_silent() -> str:
    """A warning when the configured queue endpoint is on loopback and nothing listens there (an Azurite the user
    meant to start, e.g. ``UseDevelopmentStorage=true``); else nothing. The worker would wait out the SDK's retries."""
    from ..store.azure import storage_settings

    try:
        found = storage_settings(os.environ, prefix=STORAGE_CONNECTION)
        fields = dict(p.split("=", 1) for p in (found.connection_string or "").split(";") if "=" in p)
        url = urllib.parse.urlsplit(fields.get("QueueEndpoint") or found.queue_service_uri or "")
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    except (ConfigError, ValueError):
        return ""  # health and the worker name the unusable setting
    if host not in ("127.0.0.1", "localhost") or azurite.accepts(port, host):
        return ""
    return (f"; WARNING: nothing listens on {host}:{port} (its queue endpoint): start that Azurite, or remove the "
            "setting to have serve start its own")


def _key_source(function_key: str | None, insecure_no_key: bool) -> str:
    if insecure_no_key:
        return "NOT CHECKED (--insecure-no-key)"
    if function_key:
        return "required (--function-key)"
    if (os.environ.get(KEY_SETTING) or "").strip():
        return f"required ({KEY_SETTING})"
    return "required (generated, printed below)"


def _banner(server: HttpServer, lines: Sequence[tuple[str, str]]) -> str:
    """What serve runs, one fact a line, wrapped to 120 columns."""
    routes = ", ".join(f"{'/'.join(sorted(r.methods))} {server.function_host.prefix}/{r.route}"
                       for r in server.function_host.routes)
    rows = [("listening", server.base_url), ("routes", routes), *lines]
    out = []
    for label, text in rows:
        out += textwrap.wrap(text, 120, initial_indent=f"kv-remediate serve: {label + ':':<13} ",
                             subsequent_indent=" " * 34, break_on_hyphens=False, break_long_words=False)
    return "\n".join(out) + "\n"


def _supervise(supervisor: Supervisor, embedded: EmbeddedAzurite | None) -> int:
    """Watch the children (restarting within their policy) and Azurite until SIGTERM/SIGINT: 0; ServeError
    naming the part when one cannot be kept running."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(0.2):
        failure = supervisor.poll()
        if failure is None and embedded is not None and embedded.exited() is not None:
            failure = (f"the embedded Azurite exited with code {embedded.exited()} (the app has no storage); its "
                       f"log: {embedded.log_tail() or '(empty)'}")
        if failure:
            raise ServeError(failure + "; serve stopped")
    return 0


def serve(*, host: str = "127.0.0.1", port: int = 7071, snapshot: str | None = None, workers: int = 1,
          function_key: str | None = None, insecure_no_key: bool = False, worker_restarts: int = 5) -> int:
    """Serve the app on ``host:port`` with ``workers`` queue-worker processes until interrupted.

    A function key is always required (given, from ``KV_REMEDIATE_FUNCTION_KEY``, or generated and printed),
    unless ``insecure_no_key``. Like the Functions host, ``FUNCTIONS_WORKER_PROCESS_COUNT`` (default 1) Python
    processes run the HTTP functions; they share the port (SO_REUSEPORT), so one process's GIL does not cap the app.
    Without a storage setting the bundled Azurite is started and stopped with serve. A child that dies is restarted
    (``worker_restarts`` times within 5 minutes at most); past that, ServeError (exit 1) names it.
    """
    _logging()
    if snapshot:
        os.environ["KV_REMEDIATE_SNAPSHOT"] = str(Path(snapshot).resolve())
    load_local_settings()
    refuse_snapshot_in_azure()
    key_source = _key_source(function_key, insecure_no_key)
    key = resolve_key(function_key, insecure_no_key)
    if key:
        os.environ[KEY_SETTING] = key
    else:
        os.environ.pop(KEY_SETTING, None)
    processes = max(1, int(os.environ.get("FUNCTIONS_WORKER_PROCESS_COUNT") or 1))
    with contextlib.ExitStack() as stack:
        embedded, storage = _storage(stack)
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kv-remediate-serve-")))
        supervisor = Supervisor(state_dir / "parts.json")
        supervisor.write()
        os.environ[STATE_SETTING] = str(supervisor.state_file)
        os.environ[PARENT_SETTING] = str(os.getpid())
        server = HttpServer(load_app(), host=host, port=port, function_key=key, reuse_port=processes > 1).start()
        stack.callback(server.stop)
        bound = server.base_url.rsplit(":", 1)[1]
        policy = RestartPolicy(max_restarts=max(0, worker_restarts))
        env = dict(os.environ)
        for i in range(processes - 1):
            supervisor.add(Child("http", i + 2, [sys.executable, "-m", "remediate.localhost", "http-process",
                                                 "--host", host, "--port", bound], env, policy))
        for i in range(max(0, workers)):
            supervisor.add(Child("worker", i + 1, [sys.executable, "-m", "remediate.localhost", "worker"], env,
                                 policy))
        stack.callback(supervisor.stop)
        supervisor.start()
        snap = os.environ.get("KV_REMEDIATE_SNAPSHOT")
        sys.stderr.write(_banner(server, [
            ("function key", key_source),
            ("storage", storage),
            ("facts", f"snapshot {snap} (the bundled emulator; nothing reaches Azure)" if snap
             else "live Azure (DefaultAzureCredential)"),
            ("processes", f"{processes} HTTP, {workers} queue worker(s); a dead one is restarted (at most "
                          f"{policy.max_restarts} times within {policy.window:.0f} s); Ctrl-C stops everything"),
        ]))
        if key and key_source.endswith("(generated, printed below)"):
            sys.stderr.write(f"kv-remediate serve: generated function key (x-functions-key header): {key}\n")
        sys.stderr.flush()
        return _supervise(supervisor, embedded)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m remediate.localhost [worker]``: the server (as ``kv-remediate serve``) or one worker process."""
    parser = argparse.ArgumentParser(prog="python -m remediate.localhost")
    parser.add_argument("mode", nargs="?", choices=["http", "worker", "http-process"], default="http")
    parser.add_argument("--snapshot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--function-key")
    parser.add_argument("--insecure-no-key", action="store_true")
    parser.add_argument("--worker-restarts", type=int, default=5)
    args = parser.parse_args(argv)
    if args.mode == "worker":
        if args.snapshot:
            os.environ["KV_REMEDIATE_SNAPSHOT"] = str(Path(args.snapshot).resolve())
        return worker_main()
    if args.mode == "http-process":
        return http_main(args.host, args.port)
    return serve(host=args.host, port=args.port, snapshot=args.snapshot, workers=args.workers,
                 function_key=args.function_key, insecure_no_key=args.insecure_no_key,
                 worker_restarts=args.worker_restarts)

