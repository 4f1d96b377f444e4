"""The bundled HTTPS emulator: ARM, Microsoft Graph (``/v1.0``) and Log Analytics (``/v1``) on one loopback port.

``aiohttp.web``'s low-level server (no router: every request goes to :meth:`Emulator._dispatch`, which routes by
path family as Azure's front doors do) on a few event loops in daemon threads, HTTP/1.1 keep-alive, with TLS
from a throw-away ``trustme`` CA made once per process. The real SDK clients are pointed at it with
``base_url=emu.base_url`` and ``connection_verify=emu.ca_file`` and a fake credential.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import threading
import urllib.parse
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from remediate.emulator import routes_arm, routes_graph, routes_hsm, routes_logs
from remediate.emulator.credential import AsyncFakeCredential, FakeCredential
from remediate.emulator.listener import HSM_SUFFIXES, Listener, answer, drop, tls
from remediate.emulator.snapshot import Faults, Snapshot, load_snapshot
from remediate.emulator.state import ArmError, TenantState
from remediate.emulator.wire import Request, Response

log = logging.getLogger("remediate.emulator")
_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "PATCH"})

_HALF = 0.5   # an injected server error is a 500 or a 503 with even odds



def hsm_host(host: str) -> tuple[str, str] | None:
    """(hsm name, suffix) of a Managed HSM host (a port is ignored), or None."""
    h = host.rsplit(":", 1)[0].lower().rstrip(".") if not host.startswith("[") else ""
    for suffix in HSM_SUFFIXES:
        if h.endswith("." + suffix) and h.count(".") == suffix.count(".") + 1:
            return h[: -len(suffix) - 1], suffix
    return None


@functools.cache
def _transport_class() -> Any:
    """An ``AioHttpTransport`` whose session's connector holds one client SSLContext and resolves every Managed HSM
    host of the snapshot to the emulator (imported lazily)."""
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

    return EmulatorAioHttpTransport


def _unquoted(value: str) -> str:
    """A query value with the SDK's re-quoting of a nextLink's values undone (up to three encodings deep)."""
    for _ in range(3):
        if "%" not in value:
            break
        value = urllib.parse.unquote(value)
    return value


def _json_body(raw: bytes, code: str) -> Any:
    """The request's JSON body (None when empty); a body that is not JSON is a 400 with the service's ``code``."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ArmError(400, code, f"The request content was invalid: {e}") from e


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
        self._listener: Listener | None = None

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
        if self._listener is None:
            self._listener = Listener(self._handle, tls()[0])
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- public surface ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the emulator is not running; call start() or use it as a context manager")
        return self._listener.port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: ARM at the root, Graph under ``/v1.0``, Log Analytics under ``/v1``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str:
        """PEM file of the throw-away CA that signed the server certificate."""
        return tls()[1]

    @property
    def request_count(self) -> int:
        """Every request received, faults included."""
        with self._count_lock:
            return self._requests

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (each costs a TLS handshake; keep-alive keeps this low)."""
        listener = self._listener
        return 0 if listener is None else listener.accepted

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

    # ---- the handler --------------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One request: counted, then the injected fault or latency, then :meth:`_dispatch`."""
        method = request.method.upper()
        if method not in _METHODS:  # not a request any route serves (and not counted, as before)
            return answer(501, {"error": {"code": "NotImplemented", "message": f"The HTTP method '{method}' is "
                                           "not supported by the emulator."}})
        self._count()
        raw = await request.read()
        fault, lost = self._decide(method)
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        if fault == "reset":
            return drop(request)
        if fault == "throttle":
            retry = self._faults.retry_after_s
            return answer(429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled "
                                           "as the limit has been reached for operation type - "
                                           "Read_ObservationWindow_00:05:00. For more information, see - "
                                           "https://aka.ms/srpthrottlinglimits"}},
                           {"Retry-After": str(int(retry) if float(retry).is_integer() else retry)})
        if fault in ("500", "503"):
            code = "InternalServerError" if fault == "500" else "ServiceUnavailable"
            return answer(int(fault), {"error": {"code": code, "message": "The server encountered an internal "
                                                  "error. Please retry the request (injected by the emulator)."}})
        hsm = hsm_host(request.headers.get("Host") or "")
        if hsm is not None:
            resp = self._dispatch_hsm(method, request.raw_path, raw, hsm, bool(request.headers.get("Authorization")))
        else:
            resp = self._dispatch(method, request.raw_path, raw)
        if lost and resp.write and resp.status < HTTPStatus.BAD_REQUEST:
            return drop(request)
        return answer(resp.status, resp.body, resp.headers)

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
                fault = "500" if self._rng.random() < _HALF else "503"
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
            body = _json_body(raw, "BadParameter")
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
            query[k.lower()] = _unquoted(v)
        low = path.lower()
        family = "graph" if low.startswith("/v1.0/") else "logs" if low.startswith("/v1/") else "arm"
        try:
            body = _json_body(raw, "InvalidRequestContent")
            req = Request(method, path, query, body, self.base_url, self._state.snap.emulator.page_size)
            if family == "graph":
                return routes_graph.handle(self._state, req)
            if family == "logs":
                return routes_logs.handle(self._state, req)
            return routes_arm.handle(self._state, req)
        except ArmError as e:
            graph_unrouted = family == "graph" and e.status == HTTPStatus.BAD_REQUEST and \
                "Resource not found for the segment" in e.message
            if e.code in ("InvalidResourceType", "PathNotFoundError", "UnsupportedQuery") or graph_unrouted:
                self.unrouted.append(f"{method} {path}")
            return Response(e.status, _error_body(family, e), e.headers)
        except Exception as e:  # a bug in the emulator: answer like ARM would, and make it visible
            log.exception("emulator: %s %s failed", method, path)
            return Response(500, {"error": {"code": "InternalServerError", "message": f"emulator error: {e!r}"}})
