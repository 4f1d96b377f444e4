"""``kv-remediate serve`` itself: settings, the function key, the snapshot refusal on an Azure host, and the
processes (this HTTP server, ``FUNCTIONS_WORKER_PROCESS_COUNT - 1`` more on the shared port, ``--workers N`` queue
workers as ``python -m remediate.localhost http-process|worker``), stopped together on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..app.settings import snapshot_in_azure
from ..errors import ConfigError
from .discovery import load_app, load_local_settings
from .http import HttpServer
from .pump import run_worker

KEY_SETTING = "KV_REMEDIATE_FUNCTION_KEY"


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
    """One worker process: pump the app's queues until SIGTERM/SIGINT."""
    _logging()
    load_local_settings()
    refuse_snapshot_in_azure()
    app = load_app()
    stop = threading.Event()
    run_worker(app, stop)
    _wait_for_signal(stop)
    return 0


def http_main(host: str, port: int) -> int:
    """One more HTTP process on a shared port (``FUNCTIONS_WORKER_PROCESS_COUNT`` > 1) until SIGTERM/SIGINT."""
    _logging()
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
    if key is not None and len(key) < 16:
        raise ConfigError(f"serve: the function key ({'--function-key' if function_key else KEY_SETTING}) is "
                          "shorter than 16 characters; use a longer random key, or omit it to have one generated")
    return key or secrets.token_urlsafe(32)


def serve(*, host: str = "127.0.0.1", port: int = 7071, snapshot: str | None = None, workers: int = 1,
          function_key: str | None = None, insecure_no_key: bool = False) -> int:
    """Serve the app on ``host:port`` with ``workers`` queue-worker processes until interrupted.

    A function key is always required (given, from ``KV_REMEDIATE_FUNCTION_KEY``, or generated and printed),
    unless ``insecure_no_key``. Like the Functions host, ``FUNCTIONS_WORKER_PROCESS_COUNT`` (default 1) Python
    processes run the HTTP functions; they share the port (SO_REUSEPORT), so one process's GIL does not cap the app.
    """
    _logging()
    if snapshot:
        os.environ["KV_REMEDIATE_SNAPSHOT"] = str(Path(snapshot).resolve())
    load_local_settings()
    refuse_snapshot_in_azure()
    os.environ.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    generated = not insecure_no_key and not function_key and not (os.environ.get(KEY_SETTING) or "").strip()
    key = resolve_key(function_key, insecure_no_key)
    if key:
        os.environ[KEY_SETTING] = key
    else:
        os.environ.pop(KEY_SETTING, None)
    processes = max(1, int(os.environ.get("FUNCTIONS_WORKER_PROCESS_COUNT") or 1))
    app = load_app()
    server = HttpServer(app, host=host, port=port, function_key=key, reuse_port=processes > 1).start()
    bound = server.base_url.rsplit(":", 1)[1]
    children = [subprocess.Popen([sys.executable, "-m", "remediate.localhost", "http-process", "--host", host,
                                  "--port", bound], env=dict(os.environ)) for _ in range(processes - 1)]
    children += [subprocess.Popen([sys.executable, "-m", "remediate.localhost", "worker"], env=dict(os.environ))
                 for _ in range(max(0, workers))]
    routes = ", ".join(f"{'/'.join(sorted(r.methods))} {server.function_host.prefix}/{r.route}"
                       for r in server.function_host.routes)
    sys.stderr.write(f"kv-remediate serve: {server.base_url} ({routes}); {processes} HTTP process(es), {workers} "
                     f"worker process(es); function key "
                     f"{'required' if key else 'NOT CHECKED (--insecure-no-key)'}\n")
    if key and generated:
        sys.stderr.write(f"kv-remediate serve: generated function key (send it as header x-functions-key or query "
                         f"code): {key}\n")
    stop = threading.Event()
    try:
        _wait_for_signal(stop)
    finally:
        server.stop()
        for child in children:
            child.terminate()
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
    return 0


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
    args = parser.parse_args(argv)
    if args.mode == "worker":
        if args.snapshot:
            os.environ["KV_REMEDIATE_SNAPSHOT"] = str(Path(args.snapshot).resolve())
        return worker_main()
    if args.mode == "http-process":
        return http_main(args.host, args.port)
    return serve(host=args.host, port=args.port, snapshot=args.snapshot, workers=args.workers,
                 function_key=args.function_key, insecure_no_key=args.insecure_no_key)

