"""Entra ID test helpers (no tests here): RSA keys made here, RS256 access tokens shaped like Entra's (v1 and v2
issuers, ``roles``, ``appid``/``azp``, ``oid``), and the tenant's JWKS on a loopback HTTPS server whose throw-away
CA the client trusts. Fake credentials only; nothing leaves loopback."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from remediate.app.webhook_auth import (
    ACTION_GROUPS_APP_ID,
    ACTION_GROUPS_ROLE,
    APPLY_ROLE,
    WebhookAuthenticator,
    WebhookAuthSettings,
    signing_keys,
)
from tests.support.loopback import JsonHandler

TENANT = "28f841eb-fe15-511b-b0ce-7c31211ef512"
WEBHOOK_AUDIENCE = "api://kv-remediate-webhook"
API_AUDIENCE = "api://kv-remediate"
OPERATOR_OID = "0a1b2c3d-0000-4000-8000-00000000a11c"
OPERATOR_APPID = "0a1b2c3d-0000-4000-8000-00000000a99c"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGED = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}


# One keyword per header field or claim a test forges, each defaulted to the valid token (64 call sites name
# only what they break).
def token(*, key: rsa.RSAPrivateKey = KEY, kid: str = "k1", tenant: str = TENANT, iss: str | None = None,  # noqa: PLR0913
          aud: str = WEBHOOK_AUDIENCE, roles: list[str] | None = None, appid: str | None = ACTION_GROUPS_APP_ID,
          azp: str | None = None, oid: str = "5d2a0000-0000-4000-8000-0000000000a6",
          exp: timedelta = timedelta(hours=1), nbf: timedelta = timedelta(minutes=-5), alg: str = "RS256",
          now: datetime | None = None, drop: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> str:
    """An access token; defaults: Action Groups' token for the webhook audience with its role, valid for 1 h."""
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": iss or f"https://sts.windows.net/{tenant}/", "aud": aud, "tid": tenant, "oid": oid, "sub": oid,
        "iat": int((now - timedelta(minutes=5)).timestamp()), "nbf": int((now + nbf).timestamp()),
        "exp": int((now + exp).timestamp()),
        "roles": [ACTION_GROUPS_ROLE] if roles is None else roles}
    if appid is not None:
        claims["appid"] = appid
    if azp is not None:
        claims["azp"] = azp
    claims.update(extra or {})
    for name in drop:
        claims.pop(name, None)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def operator_token(**kw: Any) -> str:
    """An operator's token for the app's own audience holding KvRemediate.Apply."""
    base: dict[str, Any] = {"aud": API_AUDIENCE, "roles": [APPLY_ROLE], "appid": OPERATOR_APPID, "oid": OPERATOR_OID}
    return token(**{**base, **kw})


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@contextlib.contextmanager
def jwks_server(keys: list[dict[str, Any]] | None = None) -> Iterator[tuple[str, ssl.SSLContext, list[str]]]:
    """The tenant's signing keys over loopback HTTPS: (JWKS URL, client SSL context, request paths seen). The keys
    served are ``keys`` as it is at each request, so a test can publish a new key (rollover)."""
    ca = trustme.CA()
    published = keys if keys is not None else [jwk(KEY, "k1")]
    hits: list[str] = []

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.reply({"keys": published})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    # a 20 ms shutdown poll (the default 0.5 s made every test using the JWKS wait up to half a second at its end)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{TENANT}/discovery/v2.0/keys", client_ctx, hits
    finally:
        server.shutdown()
        server.server_close()


def webhook_authenticator(url: str, ctx: ssl.SSLContext) -> WebhookAuthenticator:
    """The secure webhook's validator (Action Groups' app and role) with keys from the loopback JWKS."""
    settings = WebhookAuthSettings(tenant=TENANT, audiences=(WEBHOOK_AUDIENCE,), jwks_url=url)
    return WebhookAuthenticator(settings, signing_keys(url, ssl_context=ctx))


def api_authenticator(url: str, ctx: ssl.SSLContext) -> WebhookAuthenticator:
    """The apply route's validator (any app of the tenant, role KvRemediate.Apply) with the loopback JWKS."""
    settings = WebhookAuthSettings(tenant=TENANT, audiences=(API_AUDIENCE,), jwks_url=url, roles=(APPLY_ROLE,),
                                   app_ids=(), tenant_setting="KV_REMEDIATE_API_TENANT",
                                   audience_setting="KV_REMEDIATE_API_AUDIENCE", purpose="apply")
    return WebhookAuthenticator(settings, signing_keys(url, ssl_context=ctx))


API_SETTINGS = {"KV_REMEDIATE_API_AUDIENCE": API_AUDIENCE, "KV_REMEDIATE_API_TENANT": TENANT}
WEBHOOK_SETTINGS = {"KV_REMEDIATE_WEBHOOK_AUDIENCE": WEBHOOK_AUDIENCE, "KV_REMEDIATE_WEBHOOK_TENANT": TENANT}
