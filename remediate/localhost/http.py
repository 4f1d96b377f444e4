"""The local host's HTTP side: requests routed to the app's HTTP functions on loopback, after the Host, Origin,
CSRF and function-key checks, with strict body framing; every error (5xx included) is the app's error JSON.

A threaded stdlib server (TCP_NODELAY, deep backlog, HTTP/1.1 keep-alive), not ``aiohttp.web`` as the emulator
is: the refusals tests/test_serve_security.py proves need what aiohttp's llhttp parser does not give. It never
exposes a chunk's announced size (an announced chunk over ``MAX_BODY`` is refused here before it is read); a bad
chunk size arriving after the headers is raised in the protocol, not into the running handler's body, so the
handler waits; and a half-closed connection is closed unanswered. A prototype on ``web.Server`` with a
``RequestHandler`` subclass (``eof_received``, ``handle_error``) still failed 38 of the 107 tests.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func

from ..app.settings import host_settings
from .discovery import HttpRoute, http_routes
from .invoke import LoopThread

log = logging.getLogger("kv_remediate.serve")

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
        # A browser names the page a request comes from in Origin; one checked above to be this server is a form
        # of our own pages (the findings page's decisions, which carry their own CSRF token), never another site's.
        same_origin = origin is not None and site in ("", "same-origin")
        if not keyed and browser and not same_origin and method not in ("GET", "HEAD", "OPTIONS") \
                and (not ctype or ctype in SIMPLE_TYPES):
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
        routed = self._route(method, path)
        if isinstance(routed, func.HttpResponse):
            return routed
        route, match = routed
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
        return self._invoke(route, req)

    def _route(self, method: str, path: str) -> tuple[HttpRoute, re.Match[str]] | func.HttpResponse:
        """The route and its match for ``method`` on ``path``, or the 404/405 answer."""
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
        return found[0]

    def _invoke(self, route: HttpRoute, req: func.HttpRequest) -> func.HttpResponse:
        """Run the function on its loop (async) or here (sync); a raise or a non-response is the error JSON."""
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
            self._send(_error(code, "BAD_REQUEST" if code < HTTPStatus.INTERNAL_SERVER_ERROR else "SERVER_ERROR",
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
