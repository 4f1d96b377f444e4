"""`serve`'s own safety (issue 15 finding 12): a key unless --insecure-no-key, Host and Origin checks (DNS rebinding,
cross-origin pages), no text/plain CSRF without a key, strict body framing (a chunk size of -1 once read past the
body limit), a snapshot on an Azure host refuses to start, and every error (5xx too) as the error JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient

from remediate.app import settings as app_settings
from remediate.errors import ConfigError
from remediate.localhost.discovery import load_app
from remediate.localhost.http import MAX_BODY, HttpServer
from remediate.localhost.supervisor import resolve_key, serve
from tests.support.app import DEMO, LOOPBACK_ONLY, ROOT, app_environment

ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()
KEY = "serve-test-key-0123456789abcdef"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"


@pytest.fixture(params=["keyed", "insecure"])
def server(request: pytest.FixtureRequest, azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpServer]:
    """The app on loopback, with a function key or without one (as --insecure-no-key runs it)."""
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json"):
        srv = HttpServer(load_app(), port=0, function_key=KEY if request.param == "keyed" else None).start()
        try:
            yield srv
        finally:
            srv.stop()


def raw(srv: HttpServer, head: str, body: bytes = b"") -> tuple[int, dict[str, Any] | None]:
    """Send ``head`` (request line and headers, CRLF added) and ``body`` as they are; the status and JSON body."""
    port = int(srv.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"application/json" in headers.lower(), data[:300]
    return int(status_line.split()[1]), json.loads(payload) if payload else None


def post(srv: HttpServer, path: str = "/api/alerts", body: bytes = ALERT, *, key: bool = True,
         **headers: str) -> tuple[int, dict[str, Any] | None]:
    port = srv.base_url.rsplit(":", 1)[1]
    fields = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Content-Length": str(len(body)),
              **({"x-functions-key": KEY} if key and srv.function_host.function_key else {}), **headers}
    fields = {k: v for k, v in fields.items() if v != ""}
    return raw(srv, f"POST {path} HTTP/1.1\n" + "\n".join(f"{k}: {v}" for k, v in fields.items()), body)


def queued(conn: str) -> int:
    queue = QueueServiceClient.from_connection_string(conn).get_queue_client(app_settings.DENIALS_QUEUE)
    return int(queue.get_queue_properties().approximate_message_count)


def test_a_plain_local_request_is_served(server: HttpServer, azurite: str) -> None:
    # given a tool on this machine (no browser headers); then the alert is accepted
    assert post(server) == (202, {"accepted": 1}) and queued(azurite) == 1


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1", "localhost",
                                  "127.0.0.1:{port}@evil.example", "", "[::2]:{port}"])
def test_a_host_other_than_loopback_with_our_port_is_refused(server: HttpServer, azurite: str, host: str) -> None:
    # given a request naming another host (DNS rebinding) or another port, or no Host at all
    port = server.base_url.rsplit(":", 1)[1]
    status, doc = post(server, Host=host.format(port=port))
    # then it is refused before any function runs
    assert status in (400, 421) and doc is not None and doc["error"]["code"] == "BAD_HOST"
    assert queued(azurite) == 0


@pytest.mark.parametrize("host", ["localhost:{port}", "[::1]:{port}", "127.0.0.1:{port}", "LOCALHOST:{port}"])
def test_loopback_names_with_our_port_are_accepted(server: HttpServer, host: str) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    assert post(server, Host=host.format(port=port))[0] == 202


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost:1"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_cross_origin_browser_requests_are_refused_even_with_the_key(server: HttpServer, azurite: str,
                                                                     headers: dict[str, str]) -> None:
    status, doc = post(server, **headers)
    assert status == 403 and doc is not None and doc["error"]["code"] == "CROSS_ORIGIN"
    assert queued(azurite) == 0


def test_same_origin_is_accepted(server: HttpServer) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    assert post(server, Origin=f"http://127.0.0.1:{port}", **{"Sec-Fetch-Site": "same-origin"})[0] == 202


@pytest.mark.parametrize("ctype", ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", ""])
@pytest.mark.parametrize("marker", [{"User-Agent": BROWSER}, {"Referer": "http://evil.example/"},
                                    {"Sec-Fetch-Mode": "no-cors"}])
def test_simple_browser_requests_without_a_key_are_refused(server: HttpServer, azurite: str, ctype: str,
                                                           marker: dict[str, str]) -> None:
    # given a browser-shaped "simple" POST (no preflight) that carries no function key
    status, doc = post(server, key=False, **{"Content-Type": ctype}, **marker)
    assert doc is not None and queued(azurite) == 0
    if server.function_host.function_key:
        assert status in (401, 403)  # keyed: refused as forgery, or for the missing key
    else:
        assert status == 403 and doc["error"]["code"] == "CSRF"


def test_text_from_a_local_tool_is_still_accepted_without_a_key(server: HttpServer) -> None:
    # given curl-like text/plain (no browser markers); then it is served (with the key when there is one)
    status, _ = post(server, "/api/diagnose", b"Status: 403 (Forbidden)", **{"Content-Type": "text/plain",
                                                                            "User-Agent": "curl/8.5.0"})
    assert status in (200, 400)


def _chunked(srv: HttpServer, chunks: bytes, path: str = "/api/alerts", **extra: str) -> tuple[int, Any]:
    port = srv.base_url.rsplit(":", 1)[1]
    fields = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Transfer-Encoding": "chunked",
              **({"x-functions-key": KEY} if srv.function_host.function_key else {}), **extra}
    return raw(srv, f"POST {path} HTTP/1.1\n" + "\n".join(f"{k}: {v}" for k, v in fields.items()), chunks)


def test_a_valid_chunked_body_is_read(server: HttpServer, azurite: str) -> None:
    half = len(ALERT) // 2
    body = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (half, ALERT[:half], len(ALERT) - half,
                                                                        ALERT[half:])
    assert _chunked(server, body) == (202, {"accepted": 1}) and queued(azurite) == 1


@pytest.mark.parametrize("chunks, status, code", [
    (b"-1\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n", 400, "BAD_CHUNK"),      # once: read past the body limit
    (b"+10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", 400, "BAD_CHUNK"),
    (b"0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", 400, "BAD_CHUNK"),
    (b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", 400, "BAD_CHUNK"),
    (b"zz\r\n\r\n", 400, "BAD_CHUNK"),
    (b"10\r\nshort", 400, "BAD_CHUNK"),                                    # ends inside a chunk
    (b"%x\r\n" % (MAX_BODY + 1), 413, "BODY_TOO_LARGE"),                  # announced over the limit: not read
    (b"ffffffffffffffff\r\n", 413, "BODY_TOO_LARGE"),
    (b"f" * 5000 + b"\r\n", 400, "BAD_CHUNK"),                            # an endless size line
])
def test_bad_chunk_sizes_are_refused_before_reading(server: HttpServer, azurite: str, chunks: bytes, status: int,
                                                    code: str) -> None:
    got_status, doc = _chunked(server, chunks)
    assert (got_status, doc and doc["error"]["code"]) == (status, code)
    assert queued(azurite) == 0


@pytest.mark.parametrize("headers, status", [
    ({"Content-Length": "-1"}, 400),
    ({"Content-Length": "+5"}, 400),
    ({"Content-Length": "abc"}, 400),
    ({"Content-Length": str(MAX_BODY + 1)}, 413),
    ({"Transfer-Encoding": "gzip, chunked"}, 400),
])
def test_bad_content_length_or_framing_is_refused(server: HttpServer, headers: dict[str, str], status: int) -> None:
    assert post(server, body=b"", **headers)[0] == status


def test_both_content_length_and_chunked_is_refused(server: HttpServer) -> None:
    assert _chunked(server, b"0\r\n\r\n", **{"Content-Length": "5"})[0] == 400


def test_protocol_errors_are_error_json(server: HttpServer) -> None:
    # given requests the HTTP server itself rejects (bad version, unknown method); then the error JSON, not HTML
    assert raw(server, "GET /api/health HTTP/9.9")[0] == 505
    port = server.base_url.rsplit(":", 1)[1]
    status, doc = raw(server, f"BREW /api/health HTTP/1.1\nHost: 127.0.0.1:{port}")
    assert status == 501 and doc is not None and "error" in doc


def test_an_unexpected_failure_is_a_500_error_json_without_traceback(server: HttpServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # given a function host whose dispatch fails unexpectedly
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(server.function_host, "_handle", boom)
    status, doc = post(server)
    assert status == 500 and doc is not None and doc["error"]["code"] == "INTERNAL"
    assert "secret internal detail" not in json.dumps(doc) and "Traceback" not in json.dumps(doc)


def test_key_resolution() -> None:
    # given no key anywhere: a random one; the setting: that one; --insecure-no-key: none; a short key: refused
    generated = resolve_key(None, False, {})
    assert generated and len(generated) >= 32 and generated != resolve_key(None, False, {})
    assert resolve_key(None, False, {"KV_REMEDIATE_FUNCTION_KEY": KEY}) == KEY
    assert resolve_key(None, True, {"KV_REMEDIATE_FUNCTION_KEY": KEY}) is None
    with pytest.raises(ConfigError, match="16"):
        resolve_key("short", False, {})
    with pytest.raises(ConfigError, match="contradict"):
        resolve_key(KEY, True, {})


@pytest.mark.parametrize("azure_env", [{"WEBSITE_INSTANCE_ID": "0a1b2c"}, {"WEBSITE_SITE_NAME": "kv-remediate"}])
def test_a_snapshot_on_an_azure_host_refuses_to_start(azure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, azurite: str) -> None:
    # given KV_REMEDIATE_SNAPSHOT with the Functions host's environment
    for k, v in azure_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    # when serve starts; then a ConfigError names the setting, before anything listens
    with pytest.raises(ConfigError, match="KV_REMEDIATE_SNAPSHOT"):
        serve(port=0, snapshot=str(DEMO / "tenant.json"), workers=0)
    # and through the CLI: exit 2 with the reason
    env = {**os.environ, **LOOPBACK_ONLY, **azure_env, "PYTHONPATH": str(ROOT),
           app_settings.STORAGE_CONNECTION: azurite}
    proc = subprocess.run([sys.executable, "-m", "remediate.cli", "serve", "--port", "0", "--snapshot",
                           str(DEMO / "tenant.json"), "--workers", "0"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=str(tmp_path), check=False)
    assert proc.returncode == 2 and "Azure host" in proc.stderr
    # and in the app itself (e.g. deployed with the setting): health names it, and routes refuse to read facts
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json", **azure_env):
        srv = HttpServer(load_app(), port=0).start()
        try:
            port = srv.base_url.rsplit(":", 1)[1]
            status, health = raw(srv, f"GET /api/health HTTP/1.1\nHost: 127.0.0.1:{port}")
            assert health is not None and any(p["setting"] == "KV_REMEDIATE_SNAPSHOT" and "refuses" in p["problem"]
                                              for p in health["problems"])
            status, doc = post(srv, "/api/diagnose", json.dumps({
                "principal_id": "f5cc68ab-42e1-5ea1-9f30-8c0bb96e5879", "vault": "kv-payments",
                "operation": "SecretGet"}).encode())
            assert status == 500 and doc is not None and doc["error"]["code"] == "BAD_CONFIG"
        finally:
            srv.stop()


def test_a_form_post_from_our_own_page_is_not_taken_for_forgery(server: HttpServer) -> None:
    # given a browser form post whose Origin is this server (the findings page's Approve/Reject buttons)
    port = server.base_url.rsplit(":", 1)[1]
    status, doc = post(server, key=False, **{"Content-Type": "application/x-www-form-urlencoded",
                                             "User-Agent": BROWSER, "Origin": f"http://127.0.0.1:{port}",
                                             "Sec-Fetch-Site": "same-origin"})
    # then serve's forgery check lets it through to the route (accepted; keyed: refused for the missing key only)
    assert (status, doc) == (202, {"accepted": 1}) if not server.function_host.function_key else \
        (status == 401 and doc is not None and doc["error"]["code"] == "UNAUTHORIZED")
