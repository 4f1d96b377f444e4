"""Secure webhook tokens: real RS256 signatures with keys made here, JWKS served over loopback HTTPS."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from remediate.app.webhook_auth import (
    JwksCache,
    WebhookAuthenticator,
    WebhookAuthSettings,
    authenticator_from_env,
    http_fetcher,
    keys_from_jwks,
    validate_token,
)
from remediate.errors import ConfigError, WebhookAuthError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://kv-remediate-webhook"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY, ROLLED_KEY = _key(), _key(), _key()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}


def token(*, key: rsa.RSAPrivateKey = KEY, kid: str = "k1", iss: str | None = None, aud: str = AUDIENCE,
          exp: timedelta = timedelta(hours=1), nbf: timedelta = timedelta(minutes=-5), alg: str = "RS256") -> str:
    claims = {"iss": iss or f"https://sts.windows.net/{TENANT}/", "aud": aud, "tid": TENANT,
              "sub": "azure-monitor", "iat": int((NOW - timedelta(minutes=5)).timestamp()),
              "nbf": int((NOW + nbf).timestamp()), "exp": int((NOW + exp).timestamp())}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


SETTINGS = WebhookAuthSettings(tenant=TENANT, audiences=(AUDIENCE,))
KEYS = keys_from_jwks({"keys": [jwk(KEY, "k1"), {"kty": "EC", "kid": "ec"}, {"kty": "RSA"}]})


def reason(tok: str, keys: Mapping[str, Any] = KEYS, now: datetime = NOW) -> str:
    with pytest.raises(WebhookAuthError) as info:
        validate_token(tok, settings=SETTINGS, keys=keys, now=now)
    assert info.value.status == 401 and info.value.reason in str(info.value)
    return info.value.reason


def test_valid_v1_and_v2_tokens_are_accepted() -> None:
    # given tokens from the tenant's key with the v1 and the v2 issuer
    for iss in (f"https://sts.windows.net/{TENANT}/", f"https://login.microsoftonline.com/{TENANT}/v2.0"):
        # when validated; then the claims come back
        claims = validate_token(token(iss=iss), settings=SETTINGS, keys=KEYS, now=NOW)
        assert claims["tid"] == TENANT and claims["iss"] == iss


def test_each_invalid_token_is_rejected_with_its_reason() -> None:
    # given tokens each wrong in one way; when validated; then each is rejected naming what is wrong
    assert reason(token(aud="api://someone-else")) == "wrong_audience"
    assert reason(token(iss="https://sts.windows.net/00000000-0000-0000-0000-000000000000/")) == "wrong_issuer"
    assert reason(token(iss=f"https://login.microsoftonline.com/{TENANT}/")) == "wrong_issuer"
    assert reason(token(exp=timedelta(minutes=-2))) == "expired"
    assert reason(token(nbf=timedelta(minutes=5))) == "not_yet_valid"
    assert reason(token(key=OTHER_KEY)) == "bad_signature"
    assert reason(token(kid="unknown")) == "unknown_key"
    assert reason("not.a.jwt") == "malformed"
    assert reason(jwt.encode({"aud": AUDIENCE}, "secret-long-enough-for-hmac-sha256-32b", algorithm="HS256",
                             headers={"kid": "k1"})) == "unsupported_alg"


def test_small_clock_skew_is_tolerated() -> None:
    # given a token that expired 30 s ago and one valid from 30 s in the future; then both pass (60 s leeway)
    validate_token(token(exp=timedelta(seconds=-30)), settings=SETTINGS, keys=KEYS, now=NOW)
    validate_token(token(nbf=timedelta(seconds=30)), settings=SETTINGS, keys=KEYS, now=NOW)


def test_missing_or_non_bearer_authorization_is_rejected() -> None:
    # given an authenticator with a fetcher that must not be called
    def no_fetch(url: str) -> Mapping[str, Any]:
        raise AssertionError("no key fetch for a request without a token")

    auth = WebhookAuthenticator(SETTINGS, JwksCache(no_fetch))
    # when requests carry no token, or not a bearer one; then missing_token
    for headers in ({}, {"Authorization": ""}, {"authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        with pytest.raises(WebhookAuthError) as info:
            auth.authenticate(headers, NOW)
        assert info.value.reason == "missing_token"


def test_keys_are_cached_and_refetched_once_on_rollover() -> None:
    # given a JWKS endpoint that starts publishing a new key after the first fetch
    published = {"keys": [jwk(KEY, "k1")]}
    calls: list[str] = []

    def fetch(url: str) -> Mapping[str, Any]:
        calls.append(url)
        return published

    auth = WebhookAuthenticator(SETTINGS, JwksCache(fetch, ttl=timedelta(hours=1), min_refresh=timedelta(minutes=1)))
    # when many valid requests arrive; then the keys are fetched once
    for _ in range(5):
        auth.authenticate({"Authorization": f"Bearer {token()}"}, NOW)
    assert calls == [f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"]
    # when the tenant rolls to a new key; then one re-fetch picks it up
    published = {"keys": [jwk(KEY, "k1"), jwk(ROLLED_KEY, "k2")]}
    later = NOW + timedelta(minutes=2)
    auth.authenticate({"Authorization": f"Bearer {token(key=ROLLED_KEY, kid='k2')}"}, later)
    assert len(calls) == 2
    # and unknown kids do not make every request fetch again (at most once per min_refresh)
    for _ in range(5):
        with pytest.raises(WebhookAuthError):
            auth.authenticate({"Authorization": f"Bearer {token(kid='k9')}"}, later)
    assert len(calls) == 2
    # and the TTL expiry refreshes
    auth.authenticate({"Authorization": f"Bearer {token()}"}, NOW + timedelta(minutes=59))
    auth.authenticate({"Authorization": f"Bearer {token(exp=timedelta(hours=3))}"}, NOW + timedelta(hours=2, minutes=3))
    assert len(calls) == 3


def test_key_fetch_failure_rejects_with_keys_unavailable() -> None:
    # given a fetcher that fails; when a token arrives; then it is refused with a reason saying keys are unavailable
    def broken(url: str) -> Mapping[str, Any]:
        raise OSError("connection refused")

    auth = WebhookAuthenticator(SETTINGS, JwksCache(broken))
    with pytest.raises(WebhookAuthError) as info:
        auth.authenticate({"Authorization": f"Bearer {token()}"}, NOW)
    assert info.value.reason == "keys_unavailable" and "connection refused" in str(info.value)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, ssl.SSLContext, list[str]]]:
    """A loopback HTTPS server publishing the JWKS (certificate from a throwaway CA the client trusts)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"keys": [jwk(KEY, "k1")]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{TENANT}/discovery/v2.0/keys", client_ctx, hits
    finally:
        server.shutdown()
        server.server_close()


def test_end_to_end_over_loopback_https(jwks_server: tuple[str, ssl.SSLContext, list[str]]) -> None:
    # given the real HTTPS fetcher pointed at the loopback JWKS
    url, ctx, hits = jwks_server
    settings = WebhookAuthSettings(tenant=TENANT, audiences=("other", AUDIENCE), jwks_url=url)
    auth = WebhookAuthenticator(settings, JwksCache(http_fetcher(context=ctx)))
    # when a valid token and then a forged one arrive
    claims = auth.authenticate({"Authorization": f"Bearer {token()}"}, NOW)
    with pytest.raises(WebhookAuthError) as info:
        auth.authenticate({"Authorization": f"Bearer {token(key=OTHER_KEY)}"}, NOW)
    # then the valid one passes, the forged one fails on its signature, and the keys were fetched once
    assert claims["aud"] == AUDIENCE and info.value.reason == "bad_signature"
    assert len(hits) == 1


def test_http_fetcher_refuses_plain_http() -> None:
    # given the real fetcher; when asked for an http:// URL; then it refuses before any connection
    with pytest.raises(ValueError, match="non-HTTPS"):
        http_fetcher()("http://127.0.0.1:9/keys")


def test_settings_from_env() -> None:
    # given neither setting: disabled; both: enabled with the tenant's issuers; one: a configuration error
    assert authenticator_from_env({}) is None
    auth = authenticator_from_env({"KV_REMEDIATE_WEBHOOK_AUDIENCE": "a, api://b",
                                   "KV_REMEDIATE_WEBHOOK_TENANT": TENANT}, fetcher=lambda url: {"keys": []})
    assert auth is not None and auth.settings.audiences == ("a", "api://b")
    assert auth.settings.issuers[1] == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    with pytest.raises(ConfigError, match="KV_REMEDIATE_WEBHOOK_TENANT"):
        authenticator_from_env({"KV_REMEDIATE_WEBHOOK_AUDIENCE": "a"})
    with pytest.raises(ConfigError):
        WebhookAuthSettings(tenant="evil/../x", audiences=("a",))
