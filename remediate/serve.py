"""``kv-remediate serve``: the function app's own decorated functions, run on loopback the way ``func start`` runs
them, for runbook development, tests and benchmarks. No handler is implemented twice: every route and the queue
worker are found in ``function_app.app.get_functions()`` and called with ``azure.functions`` objects.

- HTTP: a threaded server (TCP_NODELAY, deep backlog, HTTP/1.1 keep-alive) on ``127.0.0.1:7071`` maps
  ``/{routePrefix}/{route}`` (host.json, default ``api``) to the function whose trigger has that route and method.
  Async functions run on one event loop (as the Python worker runs them), sync ones on the request's thread.
  Function keys: ``serve`` always requires one on routes above ANONYMOUS (``code`` query or ``x-functions-key``):
  ``--function-key`` or ``KV_REMEDIATE_FUNCTION_KEY``, else a random key is generated and printed at start;
  ``--insecure-no-key`` turns the check off (then browser-shaped simple requests are refused, see below).
  (``HttpServer`` embedded in tests checks a key only when given one.)
- Browser safety (any mode): the ``Host`` header must name a loopback address or name (or the bound host) with the
  bound port, which defeats DNS rebinding; a request whose ``Origin`` is not this server's, or whose
  ``Sec-Fetch-Site`` is ``cross-site``/``same-site``, is refused (403), so no web page can call the routes; without
  a key, a POST with a CORS "simple" content type (``text/plain``, form encodings) from a browser (``Origin``,
  ``Referer``, ``Sec-Fetch-*`` or a ``Mozilla/`` user agent) is refused as cross-site request forgery.
- Bodies: ``Content-Length`` (digits only) or ``Transfer-Encoding: chunked`` (hex sizes only, never negative, never
  past ``MAX_BODY`` in total), not both; anything else is 400, over the limit 413. Every error, 5xx included, is
  the app's error JSON.
- Queue: for each queue trigger, a pump receives messages from the trigger's queue (its ``connection`` setting,
  Azurite locally), invokes the function with a ``func.QueueMessage``, deletes the message on success and on
  failure makes it visible again after host.json's ``visibilityTimeout``, or moves it to ``<queue>-poison`` once
  its dequeue count reaches ``maxDequeueCount``, as the Functions host does. ``--workers N`` runs N pump
  processes (``python -m remediate.serve worker``), so several "instances" share the queue and the claims table.

Settings come from the environment, then ``local.settings.json`` ``Values`` (as ``func start`` reads them);
``--snapshot FILE`` sets ``KV_REMEDIATE_SNAPSHOT``. A snapshot on an Azure host (``WEBSITE_INSTANCE_ID``,
``WEBSITE_SITE_NAME`` present) is a ConfigError: ``serve`` refuses to start.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hmac
import inspect
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from .app.settings import host_settings, snapshot_in_azure
from .errors import ConfigError

log = logging.getLogger("kv_remediate.serve")

KEY_SETTING = "KV_REMEDIATE_FUNCTION_KEY"
ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 8 * 1024 * 1024
MAX_LINE = 4096
"""Longest chunk-size or trailer line read (a chunk size is at most 16 hex digits plus extensions)."""
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_DIGITS = re.compile(r"^[0-9]{1,19}$")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
"""Content types a browser sends cross-origin without a CORS preflight (the "simple request" CSRF vector)."""


class BadRequest(Exception):
    """An HTTP framing error in the request (answered 400 or 413, never passed to a function)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def load_app() -> func.FunctionApp:
    """The FunctionApp of ``function_app.py`` (the repository root is put on ``sys.path`` when needed).

    Installed without the repository (no function_app.py next to the package), the same blueprints are
    registered on a FunctionApp built the way function_app.py builds it.
    """
    if (ROOT / "function_app.py").exists():
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import function_app

        found: func.FunctionApp = function_app.app
        return found
    global _INSTALLED_APP
    if _INSTALLED_APP is None:
        _INSTALLED_APP = blueprint_app()
    return _INSTALLED_APP


_INSTALLED_APP: func.FunctionApp | None = None


def blueprint_app() -> func.FunctionApp:
    """A new FunctionApp with the app's blueprints, built exactly as function_app.py builds it."""
    from .app.registry import build_app

    return build_app()


def load_local_settings(path: Path = Path("local.settings.json")) -> list[str]:
    """Put ``Values`` of local.settings.json into the environment (existing variables win); returns the names."""
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    except (OSError, ValueError, AttributeError):
        return []
    added = []
    for k, v in values.items():
        if isinstance(v, str) and v and k not in os.environ:
            os.environ[k] = v
            added.append(k)
    return added


# --- the functions of the app -----------------------------------------------------------------------------------

_FUNCTIONS: dict[int, list[Any]] = {}
_FUNCTIONS_LOCK = threading.Lock()


def app_functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()``, indexed once per app as the Functions host does.

    azure-functions remembers the names it has seen in ``functions_bindings`` and refuses a second call (every
    name would look duplicated); it is cleared around our call so other callers (tests, tools) still can.
    """
    with _FUNCTIONS_LOCK:
        found = _FUNCTIONS.get(id(app))
        if found is None:
            app.functions_bindings = None
            try:
                found = _FUNCTIONS[id(app)] = list(app.get_functions())
            finally:
                app.functions_bindings = None
        return found


def _params(fn: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(fn).parameters)


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP-triggered function: where it listens and who may call it."""

    name: str
    methods: frozenset[str]
    route: str
    pattern: re.Pattern[str]
    auth_level: str
    fn: Callable[..., Any]
    arg: str


@dataclass(frozen=True)
class QueueTrigger:
    """One queue-triggered function: the queue, its connection setting and the argument names."""

    name: str
    queue_name: str
    connection: str
    fn: Callable[..., Any]
    arg: str
    wants_context: bool


def _route_regex(template: str) -> re.Pattern[str]:
    """A Functions route template (``items/{id}``, ``{id:int}``, ``{rest?}``) as a regex with named groups."""
    out = []
    for part in re.split(r"(\{[^}]+\})", template.strip("/")):
        if part.startswith("{"):
            name = part[1:-1].split(":")[0].rstrip("?")
            out.append(f"(?P<{name}>[^/]*)" if part.endswith("?}") else f"(?P<{name}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def http_routes(app: func.FunctionApp) -> list[HttpRoute]:
    """Every HTTP-triggered function of ``app``."""
    out = []
    for f in app_functions(app):
        trig = f.get_trigger().get_dict_repr()
        if trig.get("type") != "httpTrigger":
            continue
        template = str(trig.get("route") or f.get_function_name())
        methods = frozenset(_value(m).upper() for m in (trig.get("methods") or ["GET", "POST"]))
        out.append(HttpRoute(f.get_function_name(), methods, template, _route_regex(template),
                             _value(trig.get("authLevel") or "function").lower(), f.get_user_function(),
                             str(trig["name"])))
    return out


def queue_triggers(app: func.FunctionApp) -> list[QueueTrigger]:
    """Every queue-triggered function of ``app``."""
    out = []
    for f in app_functions(app):
        trig = f.get_trigger().get_dict_repr()
        if trig.get("type") != "queueTrigger":
            continue
        fn = f.get_user_function()
        out.append(QueueTrigger(f.get_function_name(), str(trig["queueName"]),
                                str(trig.get("connection") or "AzureWebJobsStorage"), fn, str(trig["name"]),
                                "context" in _params(fn)))
    return out


class _Context(func.Context):
    """The invocation context handed to functions that ask for one."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local  # pragma: no cover - not used by the app

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(ROOT)

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class LoopThread:
    """One asyncio event loop in a daemon thread: where async functions run, as in the Python worker."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._thread = threading.Thread(target=self._run, name="kv-remediate-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                                             thread_name_prefix="kv-io"))
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def add_closer(self, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``close()`` on this loop when it stops (async clients must be closed on their loop)."""
        self._closers.append(close)

    def stop(self) -> None:
        """Close the async clients bound to this loop (the runtime's and any added closer's), then stop it."""
        from .app import services

        rt = services.current()
        if self.loop.is_running():
            for close in [*self._closers, *([rt.aclose] if rt is not None else [])]:
                with contextlib.suppress(Exception):
                    self.submit(close()).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Await an async function, or run a sync one in the loop's executor."""
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    return await asyncio.to_thread(fn, **kwargs)


# --- HTTP ---------------------------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"error": {"code": code, "message": message}}), status_code=status,
                             mimetype="application/json", charset="utf-8", headers=headers)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _is_loopback_name(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` of a Host header or an origin's netloc; None when unreadable."""
    try:
        parts = urllib.parse.urlsplit("//" + value.strip())
        return (parts.hostname or "", parts.port)
    except ValueError:
        return None


class FunctionHost:
    """Dispatches HTTP requests to the app's HTTP functions, after the Host, Origin and key checks."""

    def __init__(self, app: func.FunctionApp, loop: LoopThread, *, function_key: str | None = None,
                 route_prefix: str | None = None, bound_host: str = "127.0.0.1") -> None:
        self.routes = http_routes(app)
        self.loop = loop
        self.function_key = function_key
        self.bound_host = bound_host
        prefix = host_settings()["route_prefix"] if route_prefix is None else route_prefix
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    def _authorized(self, route: HttpRoute, headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
        if route.auth_level == "anonymous" or not self.function_key:
            return True
        given = params.get("code") or _header(headers, "x-functions-key") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())

    def _our_host(self, value: str | None, port: int) -> bool:
        """Whether ``value`` (a Host header or origin netloc) names this server: loopback (or the bound host)
        with the bound port. Anything else may be a DNS-rebinding page reaching loopback through its own name."""
        found = _host_port(value or "")
        if found is None or not found[0]:
            return False
        name, given_port = found
        if given_port != port:
            return False
        return _is_loopback_name(name) or name.lower() == self.bound_host.strip("[]").lower()

    def refusal(self, method: str, headers: Mapping[str, str], base_url: str,
                keyed: bool) -> func.HttpResponse | None:
        """Why a request is refused before routing (Host, Origin, CSRF), or None. ``keyed``: it carries the key."""
        port = urllib.parse.urlsplit(base_url).port or 80
        host = _header(headers, "host")
        if not self._our_host(host, port):
            return _error(421 if host else 400, "BAD_HOST", f"the Host header {host!r} does not name this server "
                          f"(a loopback address or name with port {port}); refused to defeat DNS rebinding")
        origin = _header(headers, "origin")
        if origin is not None:
            url = urllib.parse.urlsplit(origin.strip())
            if url.scheme != "http" or not self._our_host(url.netloc, port):
                return _error(403, "CROSS_ORIGIN", f"requests from the web origin {origin!r} are refused: serve "
                              "answers only local tools, never a browser page of another origin")
        site = (_header(headers, "sec-fetch-site") or "").strip().lower()
        if site in ("cross-site", "same-site"):
            return _error(403, "CROSS_ORIGIN", f"a {site} browser request is refused (Sec-Fetch-Site)")
        browser = any(_header(headers, h) is not None for h in ("origin", "referer", "sec-fetch-mode",
                                                                 "sec-fetch-site", "sec-fetch-dest"))
        browser = browser or (_header(headers, "user-agent") or "").startswith("Mozilla/")
        ctype = (_header(headers, "content-type") or "").split(";")[0].strip().lower()
        if not keyed and browser and method not in ("GET", "HEAD", "OPTIONS") and (not ctype or ctype in SIMPLE_TYPES):
            return _error(403, "CSRF", f"a browser-shaped {method} with content type {ctype or '(none)'} and no "
                          "function key is refused (cross-site request forgery); send the key, or use a tool with "
                          "Content-Type: application/json")
        return None

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
               base_url: str) -> func.HttpResponse:
        """The response of the function the request is routed to (errors as the app's error JSON)."""
        try:
            return self._handle(method, target, headers, body, base_url)
        except Exception:
            log.exception("kv-remediate serve: handling %s %s failed", method, target[:200])
            return _error(500, "INTERNAL", "unexpected error while handling the request; see the serve log")

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
                base_url: str) -> func.HttpResponse:
        url = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(url.path)
        early = self.refusal(method, headers, base_url, keyed=True)  # Host and Origin, before anything else
        if early is not None:
            return early
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            return _error(404, "NOT_FOUND", f"no function at {path}")
        rel = path[len(self.prefix):].strip("/")
        matches = [(r, m) for r in self.routes if (m := r.pattern.match(rel))]
        if not matches:
            return _error(404, "NOT_FOUND", f"no function at {path}")
        found = [(r, m) for r, m in matches if method in r.methods]
        if not found:
            allowed = ", ".join(sorted({x for r, _ in matches for x in r.methods}))
            return _error(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path} (allowed: {allowed})",
                          {"Allow": allowed})
        route, match = found[0]
        params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        keyed = bool(self.function_key) and route.auth_level != "anonymous" and self._authorized(route, headers,
                                                                                                  params)
        refused = self.refusal(method, headers, base_url, keyed)
        if refused is not None:
            return refused
        if not self._authorized(route, headers, params):
            return _error(401, "UNAUTHORIZED", "missing or wrong function key (query 'code' or header "
                          "'x-functions-key')")
        req = func.HttpRequest(method, base_url + target, headers=dict(headers), params=params,
                               route_params={k: v for k, v in match.groupdict().items() if v is not None},
                               body=body)
        try:
            if inspect.iscoroutinefunction(route.fn):
                response = self.loop.submit(route.fn(**{route.arg: req})).result()
            else:
                response = route.fn(**{route.arg: req})
        except Exception:
            log.exception("kv-remediate serve: function %s raised", route.name)
            return _error(500, "INTERNAL", f"function {route.name} failed; see the serve log")
        if not isinstance(response, func.HttpResponse):
            return _error(500, "INTERNAL", f"function {route.name} returned no HTTP response")
        return response


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], host: FunctionHost, *, reuse_port: bool = False) -> None:
        self.host = host
        self.reuse_port = reuse_port
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.reuse_port:  # several processes share the port; the kernel spreads connections among them
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("kv-remediate serve: connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kv-remediate-serve"
    sys_version = ""
    timeout = 120
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: " + format, *args)

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest(400, "BAD_CHUNK", f"a chunk-size or trailer line is over {MAX_LINE} bytes")
        if not line.endswith(b"\n"):
            raise BadRequest(400, "BAD_CHUNK", "the chunked body ended before its last chunk")
        return line

    def _chunked(self) -> bytes:
        """A ``Transfer-Encoding: chunked`` body: hex sizes only (no sign, no ``0x``), never past MAX_BODY."""
        chunks: list[bytes] = []
        total = 0
        while True:
            text = self._line().split(b";")[0].strip()
            if not _HEX.match(text):
                raise BadRequest(400, "BAD_CHUNK", f"chunk size {text[:20]!r} is not a hexadecimal number")
            size = int(text, 16)
            if size == 0:
                while self._line().strip():  # trailer fields, up to the empty line
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise BadRequest(413, "BODY_TOO_LARGE", f"the request body is over {MAX_BODY} bytes")
            data = self.rfile.read(size)
            if len(data) != size:
                raise BadRequest(400, "BAD_CHUNK", "the chunked body ended inside a chunk")
            chunks.append(data)
            if self.rfile.readline(3).strip():
                raise BadRequest(400, "BAD_CHUNK", "a chunk is longer than its size says")

    def _body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        length_header = self.headers.get("Content-Length")
        if encoding:
            if encoding != "chunked":
                raise BadRequest(400, "BAD_FRAMING", f"Transfer-Encoding {encoding!r} is not supported (chunked only)")
            if length_header is not None:
                raise BadRequest(400, "BAD_FRAMING", "both Content-Length and Transfer-Encoding are set")
            return self._chunked()
        if length_header is None:
            return b""
        if not _DIGITS.match(length_header.strip()):
            raise BadRequest(400, "BAD_FRAMING", f"Content-Length {length_header[:30]!r} is not a number")
        length = int(length_header)
        if length > MAX_BODY:
            raise BadRequest(413, "BODY_TOO_LARGE", f"the request body is over {MAX_BODY} bytes")
        data = self.rfile.read(length) if length > 0 else b""
        if len(data) != length:
            raise BadRequest(400, "BAD_FRAMING", "the body is shorter than its Content-Length")
        return data

    def _serve(self) -> None:
        try:
            try:
                body = self._body()
            except BadRequest as bad:
                self.close_connection = True
                self._send(_error(bad.status, bad.code, bad.message))
                return
            host, port = (str(x) for x in self.server.server_address[:2])
            response = self.server.host.handle(self.command.upper(), self.path, dict(self.headers.items()), body,
                                               f"http://{host}:{port}")
        except Exception:
            log.exception("kv-remediate serve: request failed")
            self.close_connection = True
            response = _error(500, "INTERNAL", "unexpected error while handling the request; see the serve log")
        self._send(response)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors of the server itself (bad request line, unsupported method...) as the error JSON."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":  # unparsed request: answer with headers
            self.request_version = "HTTP/1.0"
        try:
            self._send(_error(code, "BAD_REQUEST" if code < 500 else "SERVER_ERROR",
                              message or explain or f"HTTP {code}"))
        except Exception:  # the connection is gone
            log.debug("kv-remediate serve: could not send error %s", code, exc_info=True)

    def _send(self, response: func.HttpResponse) -> None:
        data = response.get_body() or b""
        self.send_response(response.status_code)
        ctype = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
        headers = {k.lower(): v for k, v in response.headers.items()}
        headers.setdefault("content-type", ctype)
        for k, v in headers.items():
            if k not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class HttpServer:
    """The app's HTTP functions on a loopback port (``port=0``: a free one); ``start()``/``stop()``."""

    def __init__(self, app: func.FunctionApp, *, host: str = "127.0.0.1", port: int = 7071,
                 function_key: str | None = None, loop: LoopThread | None = None, reuse_port: bool = False) -> None:
        self.loop = loop or LoopThread()
        self._own_loop = loop is None
        self.function_host = FunctionHost(app, self.loop, function_key=function_key, bound_host=host)
        self._server = _Server((host, port), self.function_host, reuse_port=reuse_port)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = (str(x) for x in self._server.server_address[:2])
        return f"http://{host}:{port}"

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kv-remediate-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._own_loop:
            self.loop.stop()


# --- queue --------------------------------------------------------------------------------------------------------


class QueuePump:
    """Runs one queue-triggered function against its Storage queue, with the host's retry and poison rules."""

    def __init__(self, trigger: QueueTrigger, loop: LoopThread, *, env: Mapping[str, str] | None = None,
                 concurrency: int | None = None, retry_delay: float | None = None,
                 max_dequeue_count: int | None = None, poll_max: float = 1.0, lease_seconds: int = 300) -> None:
        from .store.azure import queue_client, queue_service_client, storage_settings

        host = host_settings()
        self.trigger = trigger
        self.loop = loop
        self.concurrency = concurrency or max(1, host["batch_size"] + host["new_batch_threshold"])
        self.retry_delay = host["visibility_timeout"] if retry_delay is None else retry_delay
        self.max_dequeue_count = max_dequeue_count or host["max_dequeue_count"]
        self.poll_max = poll_max
        self.lease_seconds = lease_seconds
        self._settings = storage_settings(os.environ if env is None else env, prefix=trigger.connection)
        service = queue_service_client(self._settings)
        self.queue = queue_client(service, trigger.queue_name)
        queue_client(service, f"{trigger.queue_name}-poison")
        self._settlers: tuple[Any, ...] | None = None  # async (queue, poison, credential), opened on the loop
        self._inflight = 0
        self._cond = threading.Condition()
        loop.add_closer(self._close_settlers)
        self.processed = 0
        self.failed = 0
        self.poisoned = 0

    def _settle_clients(self) -> tuple[Any, Any]:
        """Async clients of the queue and its poison queue, on the loop: settling a message costs no thread hop."""
        if self._settlers is None:
            from .store.azure import async_credential, async_queue_client

            credential = async_credential(self._settings) if self._settings.identity_based else None
            self._settlers = (async_queue_client(self._settings, self.trigger.queue_name, credential=credential),
                              async_queue_client(self._settings, f"{self.trigger.queue_name}-poison",
                                                 credential=credential), credential)
        return self._settlers[0], self._settlers[1]

    async def _close_settlers(self) -> None:
        settlers, self._settlers = self._settlers, None
        for client in settlers or ():
            if client is not None:
                await client.close()

    async def _invoke(self, m: Any) -> None:
        try:
            msg = QueueMessage(  # type: ignore[no-untyped-call]
                id=m.id, body=(m.content or "").encode(), dequeue_count=m.dequeue_count,
                expiration_time=m.expires_on, insertion_time=m.inserted_on, time_next_visible=m.next_visible_on,
                pop_receipt=m.pop_receipt)
            kwargs: dict[str, Any] = {self.trigger.arg: msg}
            if self.trigger.wants_context:
                kwargs["context"] = _Context(self.trigger.name)
            queue, poison = self._settle_clients()
            try:
                await _call(self.trigger.fn, kwargs)
            except Exception as exc:
                self.failed += 1
                if (m.dequeue_count or 1) >= self.max_dequeue_count:
                    log.warning("kv-remediate serve: moving message %s to %s-poison after %d attempts (%s)", m.id,
                                self.trigger.queue_name, m.dequeue_count, type(exc).__name__)
                    await poison.send_message(m.content)
                    await queue.delete_message(m.id, m.pop_receipt)
                    self.poisoned += 1
                else:
                    await queue.update_message(m.id, m.pop_receipt, visibility_timeout=int(self.retry_delay))
                return
            await queue.delete_message(m.id, m.pop_receipt)
            self.processed += 1
        except Exception:
            log.exception("kv-remediate serve: settling message %s failed; it reappears after its lease", m.id)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def poll_once(self) -> int:
        """Receive up to the free capacity and start those invocations; returns how many were received."""
        with self._cond:
            free = self.concurrency - self._inflight
        if free <= 0:
            return 0
        messages = list(self.queue.receive_messages(messages_per_page=min(32, free), max_messages=min(32, free),
                                                    visibility_timeout=self.lease_seconds))
        with self._cond:
            self._inflight += len(messages)
        for m in messages:
            self.loop.submit(self._invoke(m))
        return len(messages)

    def _wait_capacity(self, stop: threading.Event) -> None:
        low = max(1, self.concurrency // 2)
        with self._cond:
            while self._inflight >= low and not stop.is_set():
                self._cond.wait(0.1)

    def idle(self) -> bool:
        with self._cond:
            return self._inflight == 0

    def run(self, stop: threading.Event) -> None:
        """Pump until ``stop`` is set: poll with back-off when the queue is empty (10 ms up to ``poll_max``)."""
        delay = 0.01
        while not stop.is_set():
            self._wait_capacity(stop)
            try:
                got = self.poll_once()
            except Exception as exc:
                log.warning("kv-remediate serve: receiving from queue '%s' failed (%s); retrying",
                            self.trigger.queue_name, type(exc).__name__)
                got = 0
            if got:
                delay = 0.01
                continue
            stop.wait(delay)
            delay = min(self.poll_max, delay * 2)

    def drain(self, *, timeout: float = 60.0) -> int:
        """Process until the queue has no message (visible or not) and nothing is in flight (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll_once() == 0:
                if self.idle() and self.queue.get_queue_properties().approximate_message_count == 0:
                    return self.processed
                time.sleep(0.02)
        raise TimeoutError(f"queue '{self.trigger.queue_name}' not drained within {timeout} s")


def run_worker(app: func.FunctionApp, stop: threading.Event, *, loop: LoopThread | None = None,
               **pump_kw: Any) -> list[QueuePump]:
    """Pump every queue trigger of ``app`` in background threads until ``stop`` is set."""
    loop = loop or LoopThread()
    pumps = [QueuePump(t, loop, **pump_kw) for t in queue_triggers(app)]
    for p in pumps:
        threading.Thread(target=p.run, args=(stop,), name=f"kv-remediate-pump-{p.trigger.name}", daemon=True).start()
    return pumps


# --- entry points -------------------------------------------------------------------------------------------------


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
    children = [subprocess.Popen([sys.executable, "-m", "remediate.serve", "http-process", "--host", host,
                                  "--port", bound], env=dict(os.environ)) for _ in range(processes - 1)]
    children += [subprocess.Popen([sys.executable, "-m", "remediate.serve", "worker"], env=dict(os.environ))
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
    """``python -m remediate.serve [worker]``: the server (as ``kv-remediate serve``) or one worker process."""
    parser = argparse.ArgumentParser(prog="python -m remediate.serve")
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


if __name__ == "__main__":
    raise SystemExit(main())
