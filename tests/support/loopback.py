"""The loopback guard (no tests here): in this process, a connection or a name lookup that could leave the machine
fails the test at once, naming the address.

Tests reach only loopback (127.0.0.0/8, ::1) and unix sockets: the emulator, Azurite, the app, the JWKS and token
endpoints. The guard wraps ``socket.socket.connect``/``connect_ex``/``sendto`` (sync clients, asyncio and aiohttp
all end there) and ``socket.getaddrinfo`` (where a name becomes the address a client connects to): an IP literal
must be loopback; ``localhost`` is resolved and every answer must be loopback; any other name is refused before it
is looked up, because the lookup itself would leave the machine. The instance metadata address 169.254.169.254 is
named as such (something built a managed-identity credential: tests use fake credentials only).

A refusal raises ``pytest.fail``'s exception (a ``BaseException``, so no ``except Exception`` in the code under test
swallows it) and is recorded, so the root conftest fails the test even when the refusal happened on another thread.
Subprocesses are not guarded (the patch lives in this process); the tests that start them point their proxies at
a closed loopback port instead (``tests.support.app.LOOPBACK_ONLY``, ``tests.support.live.live_env``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

IMDS = "169.254.169.254"
ALLOWED = "tests reach only loopback (127.0.0.0/8, ::1) and unix sockets"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_loopback_ip(host: str) -> bool:
    """Whether ``host`` is a loopback IP literal (IPv4-mapped IPv6 included)."""
    ip = _ip(host)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback(address: Any) -> bool:
    """Whether a socket address (host, port, ...) is on this machine."""
    return is_loopback_ip(str(address[0]))


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _describe(what: str, target: object) -> str:
    host = str(target[0]) if isinstance(target, tuple) and target else str(target)
    if _ip(host) == ipaddress.ip_address(IMDS):
        return (f"{what} {target!r}: the instance metadata address ({IMDS}); a managed-identity credential was "
                "built, and tests use fake credentials only")
    return f"{what} {target!r}: not loopback; {ALLOWED}"


class Guard:
    """The refusals seen since the last ``take()``; the patches are installed by ``installed()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: list[str] = []

    def refuse(self, message: str) -> None:
        """Record the refusal and fail the caller at once."""
        with self._lock:
            self._refused.append(message)
        pytest.fail(f"loopback guard: {message}", pytrace=False)

    def take(self) -> list[str]:
        """The refusals recorded since the last call (and forget them)."""
        with self._lock:
            refused, self._refused = self._refused, []
        return refused

    def check_address(self, sock: socket.socket, address: Any, what: str) -> None:
        family = sock.family
        if family == getattr(socket, "AF_UNIX", None):
            return
        if family not in (socket.AF_INET, socket.AF_INET6):
            self.refuse(f"{what} {address!r} on address family {family!r}: {ALLOWED}")
        host = str(address[0])
        if is_loopback_ip(host):
            return
        if _is_localhost(host):   # connect() resolves a name itself: check what it would resolve to
            self.check_lookup(host, what)
            return
        self.refuse(_describe(what, address))

    def check_lookup(self, host: str, what: str = "name lookup of") -> None:
        """``host`` may be looked up: a loopback literal, or localhost resolving only to loopback."""
        if is_loopback_ip(host):
            return
        if not _is_localhost(host):
            self.refuse(_describe(what, host) if _ip(host) else
                        f"{what} {host!r}: only loopback literals and localhost may be resolved (the lookup "
                        f"itself would leave the machine); {ALLOWED}")
        for *_, sockaddr in _real_getaddrinfo(host, None):
            if not is_loopback(sockaddr):
                self.refuse(f"{what} {host!r} answered {sockaddr[0]!r}: not loopback; {ALLOWED}")


GUARD = Guard()
_real_getaddrinfo = socket.getaddrinfo


@contextlib.contextmanager
def installed() -> Iterator[Guard]:
    """Wrap the socket functions for as long as the context lasts."""
    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto

    def connect(self: socket.socket, address: Any) -> None:
        GUARD.check_address(self, address, "connect to")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        GUARD.check_address(self, address, "connect to")
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        GUARD.check_address(self, args[-1], "datagram to")
        return real_sendto(self, data, *args)

    def getaddrinfo(host: bytes | str | None, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "", b""):
            GUARD.check_lookup(host.decode() if isinstance(host, bytes) else str(host))
        return _real_getaddrinfo(host, *args, **kwargs)

    patches = pytest.MonkeyPatch()
    patches.setattr(socket.socket, "connect", connect)
    patches.setattr(socket.socket, "connect_ex", connect_ex)
    patches.setattr(socket.socket, "sendto", sendto)
    patches.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield GUARD
    finally:
        patches.undo()


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet handler of a loopback test server that answers JSON (the token endpoint, the JWKS server)."""

    def reply(self, doc: Any, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
