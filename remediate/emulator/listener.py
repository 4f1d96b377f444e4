"""The emulator's HTTP side: TLS from a throw-away ``trustme`` CA, a loopback port whose connections are served by
``aiohttp.web``'s low-level server on a few event-loop threads, and the two ways a request ends (an answer with
Azure's headers, or a dropped connection)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

log = logging.getLogger("remediate.emulator")
_T = TypeVar("_T")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
"""What answers one request (``Emulator._handle``)."""

HSM_SUFFIXES = ("managedhsm.azure.net", "managedhsm.usgovcloudapi.net", "managedhsm.azure.cn")
"""Managed HSM data-plane host suffixes (clouds.py); ``{name}.{suffix}`` is served here, on loopback."""
_TLS_LOCK = threading.Lock()
_LINGER_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: closing the socket sends a TCP reset, as a dropped connection looks to the client."""


def tls() -> tuple[ssl.SSLContext, str]:
    """The server TLS context and the CA file, generated once per process (trustme: loopback names and the Managed
    HSM host names the emulator's own transport resolves to loopback); the lock makes "once" hold across threads
    (a cache alone may run the maker twice, and two CAs would not match)."""
    with _TLS_LOCK:
        return _make_tls()


@functools.cache
def _make_tls() -> tuple[ssl.SSLContext, str]:
    import trustme

    ca = trustme.CA()
    # The Managed HSM data plane is addressed by its real host name, resolved to loopback by the emulator's own
    # transport (HSM_SUFFIXES above): the certificate covers those names too.
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1", *(f"*.{s}" for s in HSM_SUFFIXES))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    folder = tempfile.mkdtemp(prefix="kv-remediate-emulator-")
    atexit.register(shutil.rmtree, folder, True)
    ca_file = str(Path(folder) / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    return ctx, ca_file


class EventLoop:
    """One asyncio event loop in a daemon thread with aiohttp's low-level server for the connections it is given."""

    def __init__(self, handler: Handler, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = web.Server(handler, loop=self.loop, access_log=None, keepalive_timeout=120)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def adopt(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        """Serve an accepted connection on this loop (the TLS handshake included)."""
        try:
            await self.loop.connect_accepted_socket(self.server, conn, ssl=ctx)
        except (OSError, ssl.SSLError):  # a client that went away or spoke no TLS
            log.debug("emulator: connection failed before its first request", exc_info=True)
            conn.close()

    async def close_connections(self) -> None:
        for handler in self.server.connections:  # open connections end now, as a process exiting ends them
            handler.force_close()
        await self.server.shutdown(0.05)
        # A connection still in its TLS handshake is a task of this loop: end it here, before the loop closes
        # (left to the garbage collector it would close its transport on a closed loop).
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        try:
            self.run(self.close_connections())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=2)
            self.loop.close()


class Listener:
    """A loopback port whose connections are spread over up to ``LOOPS`` event-loop threads (round robin; a loop
    is started with the first connection it gets, so a test with one client runs one).

    Why several loops: the SDK clients in tests and benchmarks run in the same process, often in several threads;
    one server thread waits for the GIL at every wake-up (measured: about two thirds of the threaded server's
    throughput with 8 client threads), several wait side by side, as the former threaded server's threads did.
    """

    LOOPS = 8

    def __init__(self, handler: Handler, ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._ctx = ctx
        self._handler = handler
        self._loops = [self._new_loop(0)]
        self._acceptor = self._loops[0].run(self._start_accepting())

    def _new_loop(self, index: int) -> EventLoop:
        return EventLoop(self._handler, f"kv-remediate-emulator-{self.port}-{index}")

    async def _start_accepting(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError:  # out of file descriptors, or the like: the listen backlog holds the rest meanwhile
                log.warning("emulator: accepting a connection failed", exc_info=True)
                await asyncio.sleep(0.05)
                continue
            if self.accepted < self.LOOPS and self.accepted >= len(self._loops):
                self._loops.append(self._new_loop(self.accepted))
            target = self._loops[self.accepted % len(self._loops)]
            self.accepted += 1
            asyncio.run_coroutine_threadsafe(target.adopt(conn, self._ctx), target.loop)

    async def _stop_accepting(self) -> None:
        self._acceptor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._acceptor
        self.sock.close()

    def close(self) -> None:
        try:
            self._loops[0].run(self._stop_accepting())
        finally:
            for each in self._loops:
                each.stop()


def drop(request: web.BaseRequest) -> web.Response:
    """Close the connection without answering (an abortive close, as a reset connection looks)."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        transport.abort()
    return web.Response(status=500)  # never sent: the connection is gone


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if body is None or status == HTTPStatus.NO_CONTENT:
        data = b""
    else:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = {"Server": "kv-remediate-emulator", "x-ms-request-id": str(uuid.uuid4())}
    if data:
        out["Content-Type"] = "application/json; charset=utf-8"
    out.update(headers or {})
    return web.Response(status=status, body=data or None, headers=out)
