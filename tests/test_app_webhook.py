"""Secure webhook on POST /api/alerts (through `serve`): an Entra ID bearer token, checked before anything else,
against the tenant's keys published over loopback HTTPS. Valid → 202; wrong audience, wrong issuer, expired, bad
signature or no token → 401 with the error JSON and nothing queued."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from azure.storage.queue import QueueServiceClient
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from remediate.app import runtime
from remediate.app.webhook_auth import JwksCache, WebhookAuthenticator, WebhookAuthSettings, http_fetcher
from remediate.serve import HttpServer, load_app
from tests.test_app_support import DEMO, app_environment, call

TENANT = "28f841eb-fe15-511b-b0ce-7c31211ef512"
AUDIENCE = "api://kv-remediate-webhook"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGED = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(*, key: rsa.RSAPrivateKey = KEY, iss: str | None = None, aud: str = AUDIENCE,
           exp: timedelta = timedelta(hours=1)) -> str:
    now = datetime.now(UTC)
    issued = int((now - timedelta(minutes=5)).timestamp())
    claims = {"iss": iss or f"https://sts.windows.net/{TENANT}/", "aud": aud, "tid": TENANT, "sub": "azure-monitor",
              "iat": issued, "nbf": issued, "exp": int((now + exp).timestamp())}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def jwks() -> Iterator[tuple[str, ssl.SSLContext]]:
    """The tenant's signing keys on a loopback HTTPS server whose throw-away CA the client trusts."""
    ca = trustme.CA()
    body = json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "use": "sig"}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{TENANT}/discovery/v2.0/keys", client_ctx
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secured(azurite: str, monkeypatch: pytest.MonkeyPatch, jwks: tuple[str, ssl.SSLContext]) -> Iterator[str]:
    """`serve` with the secure webhook on (settings set; keys fetched from the loopback JWKS)."""
    url, ctx = jwks
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json", KV_REMEDIATE_WEBHOOK_AUDIENCE=AUDIENCE,
                         KV_REMEDIATE_WEBHOOK_TENANT=TENANT):
        settings = WebhookAuthSettings(tenant=TENANT, audiences=(AUDIENCE,), jwks_url=url)
        runtime.install(runtime.Runtime(authenticator=WebhookAuthenticator(settings,
                                                                           JwksCache(http_fetcher(context=ctx)))))
        server = HttpServer(load_app(), port=0).start()
        try:
            yield server.base_url + "/api/alerts"
        finally:
            server.stop()


ALERT = (DEMO / "inputs" / "10_log_alert_v2.json").read_bytes()


def _queued(conn: str) -> int:
    queue = QueueServiceClient.from_connection_string(conn).get_queue_client(runtime.DENIALS_QUEUE)
    return int(queue.get_queue_properties().approximate_message_count)


def test_valid_token_is_accepted(secured: str, azurite: str) -> None:
    # given a token from the tenant's key for our audience; when the alert is posted with it; then 202
    status, doc = call(secured, ALERT, headers={"Authorization": f"Bearer {_token()}"})
    assert (status, doc) == (202, {"accepted": 1})
    assert _queued(azurite) == 1


@pytest.mark.parametrize("headers, reason", [
    ({"Authorization": f"Bearer {_token(aud='api://someone-else')}"}, "wrong_audience"),
    ({"Authorization": f"Bearer {_token(iss='https://sts.windows.net/00000000-0000-0000-0000-000000000000/')}"},
     "wrong_issuer"),
    ({"Authorization": f"Bearer {_token(exp=timedelta(minutes=-10))}"}, "expired"),
    ({"Authorization": f"Bearer {_token(key=FORGED)}"}, "bad_signature"),
    ({}, "missing_token"),
])
def test_invalid_or_missing_token_is_refused_before_anything_else(secured: str, azurite: str,
                                                                   headers: dict[str, str], reason: str) -> None:
    # given a request whose token is wrong in one way (or missing); when posted
    status, doc = call(secured, ALERT, headers=headers)
    # then 401 with the error JSON naming why, and nothing was queued
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED" and f"({reason})" in doc["error"]["message"]
    assert _queued(azurite) == 0


def test_unauthenticated_junk_is_401_not_400(secured: str) -> None:
    # given no token and a body that is not even JSON; then the token is checked first: 401, not 400
    status, doc = call(secured, b"{junk")
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"


def test_half_configured_secure_webhook_never_leaves_the_route_open(azurite: str, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    # given only the audience setting (the tenant is missing)
    with app_environment(monkeypatch, azurite, DEMO / "tenant.json", KV_REMEDIATE_WEBHOOK_AUDIENCE=AUDIENCE):
        server = HttpServer(load_app(), port=0).start()
        try:
            # when an alert is posted; then it is refused as a configuration error, and health names the setting
            status, doc = call(server.base_url + "/api/alerts", ALERT)
            assert status == 500 and doc["error"]["code"] == "BAD_CONFIG"
            assert _queued(azurite) == 0
            status, health = call(server.base_url + "/api/health", method="GET")
            assert status == 200 and health["status"] == "degraded"
            assert [p["setting"] for p in health["problems"]] == ["KV_REMEDIATE_WEBHOOK_TENANT"]
            assert AUDIENCE not in json.dumps(health)
        finally:
            server.stop()
