"""The bundled HTTPS emulator: ARM, Microsoft Graph (``/v1.0``) and Log Analytics (``/v1``) on one loopback port.

A threaded stdlib server (one daemon thread per connection, HTTP/1.1 keep-alive, TCP_NODELAY, a deep listen
backlog) with TLS from a throw-away ``trustme`` CA made once per process. The real SDK clients are pointed at
it with ``base_url=emu.base_url`` and ``connection_verify=emu.ca_file`` and a fake credential.
"""

from __future__ import annotations

import atexit
import json
import logging
import random
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from remediate.emulator import routes_arm, routes_graph, routes_hsm, routes_logs
from remediate.emulator.credential import AsyncFakeCredential, FakeCredential
from remediate.emulator.snapshot import Faults, Snapshot, load_snapshot
from remediate.emulator.state import ArmError, TenantState
from remediate.emulator.wire import Request, Response

log = logging.getLogger("remediate.emulator")

HSM_SUFFIXES = ("managedhsm.azure.net", "managedhsm.usgovcloudapi.net", "managedhsm.azure.cn")
"""Managed HSM data-plane host suffixes (clouds.py); ``{name}.{suffix}`` is served here, on loopback."""


def hsm_host(host: str) -> tuple[str, str] | None:
    """(hsm name, suffix) of a Managed HSM host (a port is ignored), or None."""
    h = host.rsplit(":", 1)[0].lower().rstrip(".") if not host.startswith("[") else ""
    for suffix in HSM_SUFFIXES:
        if h.endswith("." + suffix) and h.count(".") == suffix.count(".") + 1:
            return h[: -len(suffix) - 1], suffix
    return None

_TLS_LOCK = threading.Lock()
_TLS: tuple[ssl.SSLContext, str] | None = None


def _tls() -> tuple[ssl.SSLContext, str]:
    """The server TLS context and the CA file, generated once per process (trustme, loopback names only)."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            import trustme

            ca = trustme.CA()
            # The Managed HSM data plane is addressed by its real host name, resolved to loopback by the emulator's
            # own transport (HSM_SUFFIXES): the certificate covers those names too.
            cert = ca.issue_cert("127.0.0.1", "localhost", "::1", *(f"*.{s}" for s in HSM_SUFFIXES))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(ctx)
            folder = tempfile.mkdtemp(prefix="kv-remediate-emulator-")
            atexit.register(shutil.rmtree, folder, True)
            ca_file = str(Path(folder) / "ca.pem")
            ca.cert_pem.write_to_path(ca_file)
            _TLS = (ctx, ca_file)
        return _TLS


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, emulator: Emulator, ctx: ssl.SSLContext) -> None:
        self.emulator = emulator
        self.ssl_context = ctx
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        self.accepted = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake runs in the connection's own thread, so a slow client never blocks accept().
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.sockets_lock:
            self.open_sockets.add(tls)
            self.accepted += 1
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("emulator: connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kv-remediate-emulator"
    sys_version = ""
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _drop(self) -> None:
        """Close the connection without answering (an abortive close, as a reset connection looks)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None or status == 204 else body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if not any(k.lower() == "x-ms-request-id" for k in (headers or {})):
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _serve(self) -> None:
        emu = self.server.emulator
        emu._count()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        method = self.command.upper()
        fault, lost = emu._decide(method)
        if emu._latency_s > 0:
            time.sleep(emu._latency_s)
        if fault == "reset":
            self._drop()
            return
        if fault == "throttle":
            retry = emu._faults.retry_after_s
            self._send(429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled as "
                             "the limit has been reached for operation type - Read_ObservationWindow_00:05:00. For "
                             "more information, see - https://aka.ms/srpthrottlinglimits"}},
                       {"Retry-After": str(int(retry) if float(retry).is_integer() else retry)})
            return
        if fault in ("500", "503"):
            code = "InternalServerError" if fault == "500" else "ServiceUnavailable"
            self._send(int(fault), {"error": {"code": code, "message": "The server encountered an internal error. "
                                              "Please retry the request (injected by the emulator)."}})
            return
        hsm = hsm_host(self.headers.get("Host") or "")
        if hsm is not None:
            resp = emu._dispatch_hsm(method, self.path, raw, hsm, bool(self.headers.get("Authorization")))
        else:
            resp = emu._dispatch(method, self.path, raw)
        if lost and resp.write and resp.status < 400:
            self._drop()
            return
        self._send(resp.status, resp.body, resp.headers)


_TRANSPORT: Any = None


def _transport_class() -> Any:
    """An ``AioHttpTransport`` whose session's connector holds one client SSLContext and resolves every Managed HSM
    host of the snapshot to the emulator (imported lazily)."""
    global _TRANSPORT
    if _TRANSPORT is None:
        import socket as _socket

        import aiohttp
        from aiohttp.abc import AbstractResolver, ResolveResult
        from azure.core.pipeline.transport import AioHttpTransport

        class LoopbackResolver(AbstractResolver):  # type: ignore[misc]
            """``{hsm}.managedhsm.azure.net`` (and the other clouds' suffixes) -> 127.0.0.1:PORT when the snapshot
            has that HSM; any other name does not resolve (nothing leaves loopback)."""

            def __init__(self, emulator: Emulator) -> None:
                self._emulator = emulator

            async def resolve(self, host: str, port: int = 0,
                              family: _socket.AddressFamily = _socket.AF_INET) -> list[ResolveResult]:
                found = hsm_host(host)
                if found is None or not self._emulator.knows_hsm(found[0]):
                    raise OSError(f"the emulator resolves no host {host!r} (only its Managed HSMs)")
                return [ResolveResult(hostname=host, host="127.0.0.1", port=self._emulator.port,
                                      family=_socket.AF_INET, proto=0, flags=_socket.AI_NUMERICHOST)]

            async def close(self) -> None:
                return None

        class EmulatorAioHttpTransport(AioHttpTransport):  # type: ignore[misc]
            """Owns a session whose connector trusts the emulator's CA; requests keep ``verify=True``."""

            def __init__(self, ctx: ssl.SSLContext, emulator: Emulator | None = None, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self._emulator_ssl = ctx
                self._emulator = emulator

            async def open(self) -> None:
                if not getattr(self, "session", None):
                    resolver = LoopbackResolver(self._emulator) if self._emulator is not None else None
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=self._emulator_ssl, limit=256, resolver=resolver),
                        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False)
                await super().open()

        _TRANSPORT = EmulatorAioHttpTransport
    return _TRANSPORT


def _error_body(family: str, e: ArmError) -> dict[str, Any]:
    if family == "graph":
        return {"error": {"code": e.code, "message": e.message,
                          "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                         "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}}}
    if family == "logs":
        return {"error": {"code": e.code, "message": e.message, "correlationId": str(uuid.uuid4())}}
    # "hsm": Key Vault's data-plane error, {"error": {"code", "message"}} (the message carries the Activity ID)
    return {"error": {"code": e.code, "message": e.message}}


class Emulator:
    """An HTTPS stand-in for ARM, Graph and Log Analytics serving one tenant snapshot on 127.0.0.1.

    ``Emulator(snapshot)`` accepts a :class:`Snapshot`, a dict or a file path. Keyword options override the
    snapshot's ``emulator`` object: ``latency_ms``, ``faults``, ``seed``, ``page_size``, ``graph``.
    Use as a context manager, or ``start()`` / ``stop()``.

    Clients: sync ``Client(emu.credential(), sub, base_url=emu.base_url, connection_verify=emu.ca_file)``;
    async ``Client(emu.async_credential(), sub, base_url=emu.base_url, transport=emu.async_transport())``
    (``connection_verify=emu.ca_file`` works too but opens a new TLS connection for every request).
    Faults are decided before a request has any effect; ``Faults.lost_response_rate`` (off by default) is the
    one exception: it applies a write and then drops the connection, for idempotency tests.
    """

    def __init__(self, snapshot: Snapshot | dict[str, Any] | str | Path | None = None, *,
                 latency_ms: float | None = None, faults: Faults | None = None, seed: int | None = None,
                 page_size: int | None = None, graph: bool | None = None) -> None:
        snap = load_snapshot(snapshot if snapshot is not None else {})
        self._state = TenantState(snap)
        self._rng = random.Random(snap.emulator.seed)
        self._rng_lock = threading.Lock()
        self.configure(latency_ms=latency_ms, faults=faults, seed=seed, page_size=page_size, graph=graph)
        self._count_lock = threading.Lock()
        self._requests = 0
        self.unrouted: list[str] = []  # "METHOD path" of every request no route served (gaps show up in tests)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration ----------------------------------------------------------------------------------
    @property
    def _faults(self) -> Faults:
        return self._state.snap.emulator.faults

    @property
    def _latency_s(self) -> float:
        return self._state.snap.emulator.latency_ms / 1000.0

    def configure(self, *, latency_ms: float | None = None, faults: Faults | None = None,
                  seed: int | None = None, page_size: int | None = None, graph: bool | None = None) -> None:
        """Change latency, faults, RNG seed, page size or Graph permission while running."""
        opts = self._state.snap.emulator
        with self._rng_lock:
            if latency_ms is not None:
                opts.latency_ms = latency_ms
            if faults is not None:
                opts.faults = faults
            if seed is not None:
                opts.seed = seed
                self._rng.seed(seed)
            if page_size is not None:
                opts.page_size = page_size
            if graph is not None:
                self._state.snap.graph = graph

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        """Listen on a free loopback port and serve from a background thread."""
        if self._server is not None:
            return self
        ctx, _ = _tls()
        self._server = _Server(self, ctx)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"kv-remediate-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.sockets_lock:
            socks = list(server.open_sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- public surface ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: ARM at the root, Graph under ``/v1.0``, Log Analytics under ``/v1``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str:
        """PEM file of the throw-away CA that signed the server certificate."""
        return _tls()[1]

    @property
    def request_count(self) -> int:
        """Every request received, faults included."""
        with self._count_lock:
            return self._requests

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (each costs a TLS handshake; keep-alive keeps this low)."""
        server = self._server
        if server is None:
            return 0
        with server.sockets_lock:
            return server.accepted

    def reset_count(self) -> None:
        """Start counting requests from zero."""
        with self._count_lock:
            self._requests = 0

    def tenant(self) -> dict[str, Any]:
        """The tenant as it stands now, in snapshot format."""
        return self._state.to_dict()

    @property
    def state(self) -> TenantState:
        """The live tenant state (for tests that need to look inside; mutate only under ``state.lock``)."""
        return self._state

    def credential(self) -> FakeCredential:
        """A sync fake credential for the sync SDK clients."""
        return FakeCredential()

    def async_credential(self) -> AsyncFakeCredential:
        """An async fake credential for the ``.aio`` SDK clients."""
        return AsyncFakeCredential()

    def async_transport(self) -> Any:
        """An aiohttp transport for one ``.aio`` client that trusts the CA *and keeps connections alive*.

        Why: with ``connection_verify=<ca file>`` azure-core's ``AioHttpTransport`` builds a new SSLContext for
        every request, and aiohttp keys its connection pool on that context, so every call opens a new TCP+TLS
        connection (~10 ms each here, measured). Pass ``transport=emu.async_transport()`` (one per client, it
        is closed with the client) instead of ``connection_verify`` to reuse connections.
        """
        return _transport_class()(ssl.create_default_context(cafile=self.ca_file), self)

    # ---- internals used by the handler ------------------------------------------------------------------
    def _count(self) -> None:
        with self._count_lock:
            self._requests += 1

    def _decide(self, method: str) -> tuple[str | None, bool]:
        """The fault for this request, decided before it has any effect, and whether a write's answer is lost."""
        f = self._faults
        with self._rng_lock:
            r = self._rng.random()
            fault: str | None = None
            if r < f.reset_rate:
                fault = "reset"
            elif r < f.reset_rate + f.throttle_rate:
                fault = "throttle"
            elif r < f.reset_rate + f.throttle_rate + f.error_rate:
                fault = "500" if self._rng.random() < 0.5 else "503"
            lost = fault is None and method in ("PUT", "DELETE", "POST", "PATCH") and f.lost_response_rate > 0 \
                and self._rng.random() < f.lost_response_rate
        return fault, lost

    def _dispatch_hsm(self, method: str, target: str, raw: bytes, hsm: tuple[str, str], authorized: bool) -> Response:
        """One Managed HSM data-plane request: the 401 challenge without a token (Key Vault's challenge protocol:
        the SDK first sends the request without a body or token), else the local RBAC routes."""
        name, suffix = hsm
        if not authorized:
            return Response(401, None, routes_hsm.challenge(suffix, self._state.snap.tenant_id))
        split = urllib.parse.urlsplit(target)
        query = {k.lower(): v for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)}
        try:
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ArmError(400, "BadParameter", f"The request content was invalid: {e}") from e
            req = Request(method, urllib.parse.unquote(split.path), query, body, f"https://{name}.{suffix}",
                          self._state.snap.emulator.page_size)
            return routes_hsm.handle(self._state, req, name)
        except ArmError as e:
            if e.code == "NotFound":
                self.unrouted.append(f"{method} https://{name}.{suffix}{split.path}")
            return Response(e.status, _error_body("hsm", e), e.headers)
        except Exception as e:
            log.exception("emulator: HSM %s %s failed", method, target)
            return Response(500, {"error": {"code": "InternalServerError", "message": f"emulator error: {e!r}"}})

    def knows_hsm(self, name: str) -> bool:
        """True when the snapshot has an HSM of this name (else its host does not resolve, as in DNS)."""
        return self._state.hsm_by_name(name) is not None

    def _dispatch(self, method: str, target: str, raw: bytes) -> Response:
        split = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(split.path)
        query: dict[str, str] = {}
        for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            for _ in range(3):  # the SDK re-quotes query values of a nextLink; undo any double encoding
                if "%" not in v:
                    break
                v = urllib.parse.unquote(v)
            query[k.lower()] = v
        low = path.lower()
        family = "graph" if low.startswith("/v1.0/") else "logs" if low.startswith("/v1/") else "arm"
        try:
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {e}") from e
            req = Request(method, path, query, body, self.base_url, self._state.snap.emulator.page_size)
            if family == "graph":
                return routes_graph.handle(self._state, req)
            if family == "logs":
                return routes_logs.handle(self._state, req)
            return routes_arm.handle(self._state, req)
        except ArmError as e:
            if e.code in ("InvalidResourceType", "PathNotFoundError", "UnsupportedQuery") or (
                    family == "graph" and e.status == 400 and "Resource not found for the segment" in e.message):
                self.unrouted.append(f"{method} {path}")
            return Response(e.status, _error_body(family, e), e.headers)
        except Exception as e:  # a bug in the emulator: answer like ARM would, and make it visible
            log.exception("emulator: %s %s failed", method, path)
            return Response(500, {"error": {"code": "InternalServerError", "message": f"emulator error: {e!r}"}})
